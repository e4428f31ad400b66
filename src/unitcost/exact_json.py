"""JSON text of exact values, for every reader of unitcost's output (the CLI, the HTTP API).

Decimals are written as their exact digits, as strings: a JSON number would be read back as
a binary float by most clients, and a finance export must add up to the cent. Dates and
times are ISO 8601.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any


def json_default(value: Any) -> Any:
    """orjson's `default=` for the values unitcost's answers hold."""
    if isinstance(value, Decimal):
        return format(value.normalize(), "f") if value == value.to_integral() else format(value, "f")
    if isinstance(value, datetime | date):
        return value.isoformat()
    raise TypeError(type(value).__name__)
