"""How long a server asked to wait before trying again, from its response headers.

Read by the gateway (an upstream provider's 429 or 503) and by the watch's alert sinks (a
webhook receiver's 429 or 503): one reading of the header for both.
"""

from __future__ import annotations

import math
import time
from email.utils import parsedate_to_datetime


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """The wait an HTTP `Retry-After` header asks for (RFC 9110): delay-seconds or an HTTP-date.

    A decimal number of seconds (`1.5`, which some APIs send) is taken too. None when the
    header is absent or says nothing usable (negative, not a number, a date with no zone)."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        return _until(value, time.time() if now is None else now)
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def retry_after_ms_seconds(value: str | None) -> float | None:
    """The wait OpenAI's and Anthropic's `retry-after-ms` header asks for, in seconds: their
    SDKs read it before `retry-after`."""
    if not value:
        return None
    try:
        millis = float(value.strip())
    except ValueError:
        return None
    return millis / 1000 if math.isfinite(millis) and millis >= 0 else None


def _until(date: str, now: float) -> float | None:
    try:
        when = parsedate_to_datetime(date)
    except (TypeError, ValueError):
        return None
    if when is None or when.tzinfo is None:
        return None
    return max(when.timestamp() - now, 0.0)
