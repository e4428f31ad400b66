"""Gateway events: who called, what it used, what it cost, as ledger records."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from ..events import ATTRIBUTION_FIELDS, USAGE_UNKNOWN_TAG, ServiceTier
from ..money import pico_to_usd
from ..pricing.book import PriceBook
from ..redact import tag_value

_TIERS = frozenset(t.value for t in ServiceTier)
_TIER_ALIASES = {"default": "standard", "auto": "standard", "scale": "priority"}
TAGS_HEADER = "x-unitcost-tags"
TRACE_HEADER = "x-unitcost-trace-id"
SESSION_HEADER = "x-unitcost-session-id"
UNIT_HEADER = "x-unitcost-unit"
MAX_TAGS = 32
HELD_TAG = "reserved_usd"
"""On a call whose usage is unknown: the reservation its budget lines keep (USD), which is how
they keep it after a restart too (see `restore.py`)."""
RESERVED_TAGS = frozenset(
    {
        "key",
        "gateway_model",
        "blocked_by_budget",
        "escalation",
        "downgraded_from",
        "downgraded_by",
        "budget_alert",
        USAGE_UNKNOWN_TAG,
        HELD_TAG,
    }
)
"""Tags the gateway writes itself. Budgets and their restore after a restart read some of them,
so a client may not send them (`x-unitcost-tags`): they would be taken for the gateway's word."""


def parse_tags(header: str | None) -> dict[str, str]:
    """`feature=rerank,customer=acme` -> {"feature": "rerank", "customer": "acme"}.

    A tag never holds a credential (`unitcost.redact`): `api_key=sk-...` is kept as
    `api_key = REDACTED`, a key inside a value is replaced. Redacted before the value is cut,
    so a cut key cannot slip past the rule."""
    tags: dict[str, str] = {}
    if not header:
        return tags
    for part in header.split(",")[:MAX_TAGS]:
        name, sep, value = part.partition("=")
        name, value = name.strip(), value.strip()
        if sep and name and value:
            tags[name[:64]] = tag_value(name, value)[:256]
    return tags


def attribution(headers: Mapping[str, str], key: Any, environment: str | None) -> dict[str, Any]:
    """Attribution fields from the virtual key and the request headers (headers name features, keys own spend)."""
    tags = parse_tags(headers.get(TAGS_HEADER))
    attrs: dict[str, Any] = {}
    for name in ATTRIBUTION_FIELDS:
        if name in tags and name not in ("unit", "unit_id"):
            attrs[name] = tags.pop(name)
    if key is not None:
        attrs["key"] = key.name
        for name in ("team", "user", "app", "environment"):
            if getattr(key, name):
                attrs[name] = getattr(key, name)
    if environment and "environment" not in attrs:
        attrs["environment"] = environment
    unit = headers.get(UNIT_HEADER)
    if unit:
        kind, sep, unit_id = unit.partition(":")
        attrs["unit"] = kind.strip()[:64] if sep else "unit"
        attrs["unit_id"] = (unit_id if sep else kind).strip()[:256]
    trace = headers.get(TRACE_HEADER)
    attrs["trace"] = trace[:256] if trace else None
    session = headers.get(SESSION_HEADER)
    attrs["session"] = session[:256] if session else None
    attrs["tags"] = tags
    return attrs


class _Entropy:
    """os.urandom read 4 KiB at a time: one system call per 256 event ids instead of one each."""

    def __init__(self) -> None:
        self.buffer = b""
        self.position = 0

    def take(self, size: int) -> bytes:
        if self.position + size > len(self.buffer):
            self.buffer, self.position = os.urandom(4096), 0
        chunk = self.buffer[self.position : self.position + size]
        self.position += size
        return chunk

    def forget(self) -> None:
        self.buffer, self.position = b"", 0


_ENTROPY = _Entropy()
os.register_at_fork(after_in_child=_ENTROPY.forget)  # a forked child must not reuse the parent's bytes


def new_event_id() -> str:
    """A random (version 4) UUID as 32 hex digits, like `uuid.uuid4().hex`."""
    raw = bytearray(_ENTROPY.take(16))
    raw[6] = (raw[6] & 0x0F) | 0x40
    raw[8] = (raw[8] & 0x3F) | 0x80
    return raw.hex()


def service_tier(value: Any) -> str:
    tier = _TIER_ALIASES.get(str(value), str(value)) if value else "standard"
    return tier if tier in _TIERS else "standard"


@dataclass
class Priced:
    cost: Decimal | None
    pico: int
    """Cost in pico-USD for budgets (0 when unpriced)."""
    cache_savings_pico: int = 0
    """What prompt caching saved on the call (negative: cache writes cost more), as the ledger's
    `cache_savings`, in pico-USD (0 when unpriced)."""


def price(
    book: PriceBook, provider: str, model: str, usage: Mapping[str, int], tier: str, served: str | None
) -> Priced:
    try:
        priced = book.total_and_savings_pico(model, usage, provider=provider, tier=tier, served_model=served)
    except ValueError:
        return Priced(None, 0)
    if priced is None:
        return Priced(None, 0)
    pico, savings = priced
    return Priced(pico_to_usd(pico), pico, savings)


@dataclass
class Attempt:
    """One attempt of one call, ready to become a ledger record."""

    provider: str
    model: str
    operation: str
    attempt: int = 1
    status: str = "ok"
    http_status: int | None = None
    usage: dict[str, int] = field(default_factory=dict)
    served_model: str | None = None
    tier: str = "standard"
    latency_ms: float | None = None
    ttft_ms: float | None = None
    retry_of: str | None = None
    fallback_from: str | None = None
    escalated_from: str | None = None
    cache_hit: bool = False
    billed_cost: Decimal | None = None
    usage_unknown: str | None = None
    """Why the usage of this attempt is not known (the reply had none, or none that reads)."""
    extra_tags: dict[str, str] = field(default_factory=dict)
    event_id: str = field(default_factory=new_event_id)
    ts: datetime = field(default_factory=lambda: datetime.now(UTC))

    def record(self, attrs: Mapping[str, Any], public_model: str) -> dict[str, Any]:
        """The ledger record: fields that are None are left out (built directly, without a
        filtering pass: this runs for every request)."""
        tags = dict(attrs.get("tags") or {})
        tags.update(self.extra_tags)
        if attrs.get("key"):
            tags["key"] = attrs["key"]
        if public_model != self.model:
            tags["gateway_model"] = public_model
        if self.usage_unknown is not None:
            tags[USAGE_UNKNOWN_TAG] = self.usage_unknown
        record: dict[str, Any] = {
            "event_id": self.event_id,
            "ts": self.ts.isoformat().replace("+00:00", "Z"),
            "provider": self.provider,
            "model": self.model,
            "operation": self.operation,
            "service_tier": self.tier,
            "status": self.status,
            "attempt": self.attempt,
            "cache_hit": self.cache_hit,
            "tags": tags,
        }
        served = self.served_model if self.served_model and self.served_model != self.model else None
        optional = (
            ("trace_id", attrs.get("trace")),
            ("session_id", attrs.get("session")),
            ("served_model", served),
            ("http_status", self.http_status),
            ("latency_ms", self.latency_ms),
            ("ttft_ms", self.ttft_ms),
            ("retry_of", self.retry_of),
            ("fallback_from", self.fallback_from),
            ("escalated_from", self.escalated_from),
        )
        for name, value in optional:
            if value is not None:
                record[name] = value
        for name, value in self.usage.items():
            if value is not None:
                record[name] = value
        if self.billed_cost is not None:
            record["billed_cost"] = str(self.billed_cost)  # exact decimal text: JSON has no decimals
        for name in ATTRIBUTION_FIELDS:
            value = attrs.get(name)
            if value is not None:
                record[name] = value
        return record
