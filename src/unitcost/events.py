"""UsageEvent: one attempt of one LLM call, and the schema every source is normalised to.

Usage follows the totals-with-subsets convention of OpenTelemetry GenAI and genai-prices:
`input_tokens` is every token of the prompt, and `cache_read_tokens`, the cache writes and
the audio/image input tokens are parts of it; `output_tokens` is every generated token and
`reasoning_tokens` and audio/image output tokens are parts of it. Nothing is counted twice.
Cached audio or image tokens are counted in both their modality and `cache_read_tokens`,
and once more in `cache_audio_read_tokens` / `cache_image_read_tokens`, which is the overlap.

`FIELDS` below is the single description of an event: the file formats, the ledger
tables of every backend and the documentation are all derived from it.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any, Literal

import pyarrow as pa

from .money import MONEY_ARROW_TYPE

MAX_TOKENS = 100_000_000
"""Above this a token count is treated as absurd: no model takes or produces 100M tokens in one call."""
MAX_COUNT = 1_000_000
"""Upper bound for per-call counters (web searches, requests in one aggregated row)."""


class Status(StrEnum):
    OK = "ok"
    ERROR = "error"
    TIMEOUT = "timeout"
    CANCELLED = "cancelled"


class ServiceTier(StrEnum):
    STANDARD = "standard"
    BATCH = "batch"
    FLEX = "flex"
    PRIORITY = "priority"


Kind = Literal["str", "int", "float", "bool", "ts", "map", "money", "tokens", "count"]


@dataclass(frozen=True)
class Field:
    name: str
    kind: Kind
    doc: str
    required: bool = False
    default: Any = None
    choices: tuple[str, ...] | None = None
    group: str = "identity"


def _f(name: str, kind: Kind, doc: str, group: str, **kw: Any) -> Field:
    return Field(name=name, kind=kind, doc=doc, group=group, **kw)


TOKEN_FIELDS: tuple[str, ...] = (
    "input_tokens",
    "cache_read_tokens",
    "cache_write_5m_tokens",
    "cache_write_1h_tokens",
    "input_audio_tokens",
    "cache_audio_read_tokens",
    "input_image_tokens",
    "cache_image_read_tokens",
    "output_tokens",
    "reasoning_tokens",
    "output_audio_tokens",
    "output_image_tokens",
)
COUNT_FIELDS: tuple[str, ...] = ("web_searches", "requests")
USAGE_FIELDS: tuple[str, ...] = TOKEN_FIELDS + COUNT_FIELDS
PRICING_INPUTS: tuple[str, ...] = (
    "ts",
    "provider",
    "model",
    "served_model",
    "service_tier",
    "cache_hit",
    "tags",  # a source's `usage_unknown` keeps the call unpriced
    *USAGE_FIELDS,
)
"""The event columns the batch pricer reads (`pricing.batch.price_table`)."""

ATTRIBUTION_FIELDS: tuple[str, ...] = (
    "team",
    "app",
    "feature",
    "user",
    "customer",
    "environment",
    "unit",
    "unit_id",
)

FIELDS: tuple[Field, ...] = (
    # identity
    _f(
        "event_id",
        "str",
        "Idempotency key: re-ingesting an event with the same id changes nothing.",
        "identity",
        required=True,
    ),
    _f(
        "ts",
        "ts",
        "When the call started, UTC. RFC 3339 string; a naive time is read as UTC; a number is Unix seconds.",
        "identity",
        required=True,
    ),
    _f("trace_id", "str", "Trace the call belongs to (agent run, request).", "identity"),
    _f("session_id", "str", "Conversation or session.", "identity"),
    _f("parent_id", "str", "Parent span or event.", "identity"),
    # what
    _f(
        "provider",
        "str",
        "Provider id as in genai-prices (openai, anthropic, google, deepseek, ...). "
        "Inferred from the model when missing.",
        "what",
    ),
    _f("model", "str", "Model as requested.", "what", required=True),
    _f("served_model", "str", "Model the provider reports having served, when different.", "what"),
    _f("operation", "str", "chat, responses, messages, embeddings, ...", "what", default="chat"),
    _f(
        "service_tier",
        "str",
        "Billing tier of the call.",
        "what",
        default="standard",
        choices=tuple(t.value for t in ServiceTier),
    ),
    # usage
    _f("input_tokens", "tokens", "All prompt tokens, cached or not.", "usage", default=0),
    _f(
        "cache_read_tokens",
        "tokens",
        "Part of input_tokens read from the provider's prompt cache.",
        "usage",
        default=0,
    ),
    _f(
        "cache_write_5m_tokens",
        "tokens",
        "Part of input_tokens written to a 5-minute cache.",
        "usage",
        default=0,
    ),
    _f(
        "cache_write_1h_tokens",
        "tokens",
        "Part of input_tokens written to a 1-hour cache.",
        "usage",
        default=0,
    ),
    _f("input_audio_tokens", "tokens", "Part of input_tokens that is audio.", "usage", default=0),
    _f("cache_audio_read_tokens", "tokens", "Audio tokens that were also cache reads.", "usage", default=0),
    _f("input_image_tokens", "tokens", "Part of input_tokens that is images.", "usage", default=0),
    _f("cache_image_read_tokens", "tokens", "Image tokens that were also cache reads.", "usage", default=0),
    _f("output_tokens", "tokens", "All generated tokens, reasoning included.", "usage", default=0),
    _f("reasoning_tokens", "tokens", "Part of output_tokens spent reasoning.", "usage", default=0),
    _f("output_audio_tokens", "tokens", "Part of output_tokens that is audio.", "usage", default=0),
    _f("output_image_tokens", "tokens", "Part of output_tokens that is images.", "usage", default=0),
    _f("web_searches", "count", "Server-side web searches billed with the call.", "usage", default=0),
    _f(
        "requests",
        "count",
        "Requests this row stands for (1 for a call; more for pre-aggregated rows).",
        "usage",
        default=1,
    ),
    # outcome
    _f(
        "status",
        "str",
        "Outcome of the attempt.",
        "outcome",
        default="ok",
        choices=tuple(s.value for s in Status),
    ),
    _f("http_status", "int", "HTTP status returned by the provider.", "outcome"),
    _f("latency_ms", "float", "Total latency in milliseconds.", "outcome"),
    _f("ttft_ms", "float", "Time to first token in milliseconds.", "outcome"),
    _f("attempt", "int", "1 for the first attempt, 2 for the first retry, ...", "outcome", default=1),
    _f("retry_of", "str", "event_id of the attempt this one retries.", "outcome"),
    _f("fallback_from", "str", "Model or upstream this call fell back from.", "outcome"),
    _f("escalated_from", "str", "Model this call escalated from (routing).", "outcome"),
    _f("cache_hit", "bool", "Served from unitcost's own response cache (cost 0).", "outcome", default=False),
    # attribution
    _f("team", "str", "Team that owns the spend.", "attribution"),
    _f("app", "str", "Application or service.", "attribution"),
    _f("feature", "str", "Product feature.", "attribution"),
    _f("user", "str", "End user.", "attribution"),
    _f("customer", "str", "Customer or tenant.", "attribution"),
    _f("environment", "str", "prod, staging, dev, ...", "attribution"),
    _f("unit", "str", "Business unit kind: ticket, document, task, ...", "attribution"),
    _f("unit_id", "str", "Business unit id: which ticket, which document.", "attribution"),
    _f("tags", "map", "Free string tags.", "attribution"),
    # money supplied by the source
    _f(
        "billed_cost",
        "money",
        "Cost the provider or source tool reported, USD, kept for reconciliation.",
        "money",
    ),
    _f(
        "currency",
        "str",
        "Currency of billed_cost. Only USD is accepted.",
        "money",
        default="USD",
        choices=("USD",),
    ),
)

FIELD_BY_NAME: Mapping[str, Field] = {f.name: f for f in FIELDS}

USAGE_UNKNOWN_TAG = "usage_unknown"
"""A tag a source sets when the provider reported no usage for the call (the gateway does, for a
reply without usage or a stream cut before it): the call is stored unpriced, its value being
the reason, never priced as zero tokens."""

# Columns unitcost computes when it prices an event; sources never set them.
COST_COLUMNS: tuple[str, ...] = (
    "cost",
    "cost_input",
    "cost_cache_read",
    "cost_cache_write_5m",
    "cost_cache_write_1h",
    "cost_output",
    "cost_reasoning",
    "cost_other",
    "cache_savings",
    "avoided_cost",
)
_COST_DOCS: Mapping[str, str] = {
    "cost": "Total cost in USD (DECIMAL(18, 12)); NULL when no price applies, never 0 for unknown.",
    "cost_input": "Uncached input tokens.",
    "cost_cache_read": "Input tokens read from the prompt cache.",
    "cost_cache_write_5m": "Prompt-cache writes with a 5-minute lifetime.",
    "cost_cache_write_1h": "Prompt-cache writes with a 1-hour lifetime.",
    "cost_output": "Output tokens other than reasoning.",
    "cost_reasoning": "Reasoning tokens (at the output price unless the model prices them apart).",
    "cost_other": "Audio and image tokens, web searches, per-request fees.",
    "cache_savings": "What prompt caching saved against paying every cached token as uncached input "
    "(negative when cache writes cost more than they saved).",
    "avoided_cost": "For a response served from unitcost's own cache (cost 0): what the call would have cost.",
}
PRICED_FIELDS: tuple[Field, ...] = (
    *(Field(name, "money", _COST_DOCS[name], group="priced") for name in COST_COLUMNS),
    Field(
        "price_ref",
        "str",
        "Which price was applied: layer, provider/model, tier, window and the date it is effective from.",
        group="priced",
    ),
    Field("unpriced_reason", "str", "Why no price applies (set exactly when cost is NULL).", group="priced"),
    Field("priced_provider", "str", "Provider of the price-book entry that matched.", group="priced"),
    Field("priced_model", "str", "Model id of the price-book entry that matched.", group="priced"),
    Field(
        "source", "str", "Where the event came from (file name, python, gateway, otlp, ...).", group="priced"
    ),
    Field("ingested_at", "ts", "When the event entered the ledger.", group="priced"),
)
LEDGER_FIELDS: tuple[Field, ...] = FIELDS + PRICED_FIELDS

_ARROW_TYPES: Mapping[str, pa.DataType] = {
    "str": pa.string(),
    "int": pa.int64(),
    "tokens": pa.int64(),
    "count": pa.int64(),
    "float": pa.float64(),
    "bool": pa.bool_(),
    "ts": pa.timestamp("us", tz="UTC"),
    "map": pa.map_(pa.string(), pa.string()),
    "money": MONEY_ARROW_TYPE,
}


def arrow_type(kind: Kind) -> pa.DataType:
    return _ARROW_TYPES[kind]


EVENT_SCHEMA = pa.schema([pa.field(f.name, arrow_type(f.kind)) for f in FIELDS])
LEDGER_SCHEMA = pa.schema([pa.field(f.name, arrow_type(f.kind)) for f in LEDGER_FIELDS])


@dataclass(slots=True)
class UsageEvent:
    """One attempt of one call, as a Python object. Files and servers use the same fields."""

    model: str
    provider: str | None = None
    ts: datetime = field(default_factory=lambda: datetime.now(UTC))
    event_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    trace_id: str | None = None
    session_id: str | None = None
    parent_id: str | None = None
    served_model: str | None = None
    operation: str = "chat"
    service_tier: str = "standard"
    input_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_5m_tokens: int = 0
    cache_write_1h_tokens: int = 0
    input_audio_tokens: int = 0
    cache_audio_read_tokens: int = 0
    input_image_tokens: int = 0
    cache_image_read_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0
    output_audio_tokens: int = 0
    output_image_tokens: int = 0
    web_searches: int = 0
    requests: int = 1
    status: str = "ok"
    http_status: int | None = None
    latency_ms: float | None = None
    ttft_ms: float | None = None
    attempt: int = 1
    retry_of: str | None = None
    fallback_from: str | None = None
    escalated_from: str | None = None
    cache_hit: bool = False
    team: str | None = None
    app: str | None = None
    feature: str | None = None
    user: str | None = None
    customer: str | None = None
    environment: str | None = None
    unit: str | None = None
    unit_id: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    billed_cost: Decimal | None = None
    currency: str = "USD"

    def to_record(self) -> dict[str, Any]:
        """A plain dict with every field, ready for the ingest path."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


def events_to_arrow(records: list[Mapping[str, Any]]) -> pa.Table:
    """Arrow table in EVENT_SCHEMA from already-typed records (Python objects, not text)."""
    columns: dict[str, list[Any]] = {f.name: [] for f in FIELDS}
    for record in records:
        for f in FIELDS:
            value = record.get(f.name, f.default)
            if f.kind == "map":
                value = list((value or {}).items())
            columns[f.name].append(value)
    return pa.Table.from_pydict(columns, schema=EVENT_SCHEMA)
