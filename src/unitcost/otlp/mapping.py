"""GenAI spans -> event records.

Attribute names, old and new, that carry the same fact (first present wins):

- provider: `gen_ai.provider.name` (semconv >= 1.37), `gen_ai.system` (older),
  OpenInference `llm.provider`/`llm.system`;
- model: `gen_ai.request.model`, else `gen_ai.response.model`, else OpenInference `llm.model_name`;
  a different `gen_ai.response.model` is kept as `served_model`;
- input: `gen_ai.usage.input_tokens`, `gen_ai.usage.prompt_tokens`, `llm.token_count.prompt`;
- output: `gen_ai.usage.output_tokens`, `gen_ai.usage.completion_tokens`, `llm.token_count.completion`;
- cache read: `gen_ai.usage.cache_read.input_tokens`, `gen_ai.usage.cache_read_input_tokens`,
  `llm.token_count.prompt_details.cache_read`;
- cache write: `gen_ai.usage.cache_creation.input_tokens`, `gen_ai.usage.cache_write.input_tokens`,
  `gen_ai.usage.cache_creation_input_tokens`, `llm.token_count.prompt_details.cache_write`;
- reasoning: `gen_ai.usage.reasoning.output_tokens`, `gen_ai.usage.reasoning_tokens`,
  `llm.token_count.completion_details.reasoning`.

The semantic conventions define input tokens as the whole prompt, cached included. Some
Anthropic instrumentations copy Anthropic's uncached count; when the cache parts of an
Anthropic span exceed its input, the input is read that way and the parts are added.

Agent and tool spans (`invoke_agent`, `execute_tool`, `create_agent`) are not calls to a
model, and an agent span's usage, when present, repeats its children's: they are ignored
and counted, like spans with no GenAI attributes at all.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from ..events import ATTRIBUTION_FIELDS, MAX_TOKENS

INPUT = ("gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens", "llm.token_count.prompt")
OUTPUT = ("gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens", "llm.token_count.completion")
CACHE_READ = (
    "gen_ai.usage.cache_read.input_tokens",
    "gen_ai.usage.cache_read_input_tokens",
    "llm.token_count.prompt_details.cache_read",
)
CACHE_WRITE = (
    "gen_ai.usage.cache_creation.input_tokens",
    "gen_ai.usage.cache_write.input_tokens",
    "gen_ai.usage.cache_creation_input_tokens",
    "llm.token_count.prompt_details.cache_write",
)
REASONING = (
    "gen_ai.usage.reasoning.output_tokens",
    "gen_ai.usage.reasoning_tokens",
    "llm.token_count.completion_details.reasoning",
)
INPUT_AUDIO = ("gen_ai.usage.input_audio_tokens", "llm.token_count.prompt_details.audio")
OUTPUT_AUDIO = ("gen_ai.usage.output_audio_tokens", "llm.token_count.completion_details.audio")
PROVIDER = ("gen_ai.provider.name", "gen_ai.system", "llm.provider", "llm.system")
REQUEST_MODEL = ("gen_ai.request.model", "llm.model_name")
RESPONSE_MODEL = ("gen_ai.response.model",)
SERVICE_TIER = (
    "openai.response.service_tier",
    "gen_ai.openai.response.service_tier",
    "openai.request.service_tier",
    "gen_ai.openai.request.service_tier",
)
BILLED = ("gen_ai.usage.cost", "llm.cost.total")
NOT_A_MODEL_CALL = frozenset({"invoke_agent", "execute_tool", "create_agent"})

# Semantic-convention provider names -> genai-prices provider ids.
PROVIDERS: Mapping[str, str] = {
    "openai": "openai",
    "anthropic": "anthropic",
    "gcp.gemini": "google",
    "gcp.vertex_ai": "google",
    "gcp.gen_ai": "google",
    "gemini": "google",
    "vertex_ai": "google",
    "vertexai": "google",
    "google": "google",
    "aws.bedrock": "aws",
    "bedrock": "aws",
    "azure.ai.openai": "azure",
    "azure.ai.inference": "azure",
    "az.ai.openai": "azure",
    "az.ai.inference": "azure",
    "azure": "azure",
    "deepseek": "deepseek",
    "mistral_ai": "mistral",
    "mistralai": "mistral",
    "mistral": "mistral",
    "groq": "groq",
    "x_ai": "x-ai",
    "xai": "x-ai",
    "cohere": "cohere",
    "perplexity": "perplexity",
    "openrouter": "openrouter",
    "together": "together",
    "together_ai": "together",
    "fireworks": "fireworks",
    "cerebras": "cerebras",
}

DEFAULT_ATTRIBUTES: Mapping[str, str] = {
    "service.name": "app",
    "deployment.environment.name": "environment",
    "deployment.environment": "environment",
    "enduser.id": "user",
    "user.id": "user",
    "session.id": "session_id",
    "gen_ai.conversation.id": "session_id",
    **{f"unitcost.{name}": name for name in ATTRIBUTION_FIELDS},
}
"""Attribute -> event field. `unitcost.<field>` attributes set that field; `unitcost.tag.<x>` a free tag."""

TARGETS = frozenset({*ATTRIBUTION_FIELDS, "session_id"})


class SpanError(ValueError):
    """A GenAI span that cannot become an event; the message names the attribute."""


@dataclass(frozen=True)
class AttributeMapping:
    """How resource and span attributes become attribution fields and tags."""

    fields: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_ATTRIBUTES))
    """attribute name -> event field (team, app, feature, user, ...) or `tag:<name>`."""

    def __post_init__(self) -> None:
        for name, target in self.fields.items():
            if target not in TARGETS and not (target.startswith("tag:") and len(target) > 4):
                raise ValueError(
                    f"[otlp.attributes] {name!r} = {target!r}: the target must be one of "
                    f"{', '.join(sorted(TARGETS))} or tag:<name>"
                )

    @classmethod
    def from_config(cls, section: Mapping[str, Any]) -> AttributeMapping:
        """`[otlp.attributes]` table: `"k8s.namespace.name" = "team"`, `"region" = "tag:region"`."""
        merged = dict(DEFAULT_ATTRIBUTES)
        for name, value in dict(section.get("attributes", {})).items():
            merged[str(name)] = str(value)
        return cls(merged)

    def apply(self, attrs: Mapping[str, Any], event: dict[str, Any], tags: dict[str, str]) -> None:
        for name, value in attrs.items():
            if value is None:
                continue
            target = self.fields.get(name)
            if target is None:
                if name.startswith("unitcost.tag."):
                    tags[name[13:]] = _text(value)
                continue
            if target.startswith("tag:"):
                tags[target[4:]] = _text(value)
            else:
                event[target] = _text(value)


@dataclass(slots=True)
class Span:
    """The parts of an OTLP span the mapping reads, with decoded attribute values (OTLP/JSON, tests).

    Protobuf requests skip this object: `SpanMapper.protobuf_row` reads the wire messages in
    place, decoding only the attributes the mapping uses.
    """

    trace_id: str
    span_id: str
    parent_span_id: str
    name: str
    start_ns: int
    end_ns: int
    attributes: Mapping[str, Any]
    error: bool


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ",".join(_text(v) for v in value)
    return str(value)


# --------------------------------------------------------------------------- event rows

ROW_ATTRIBUTION: tuple[str, ...] = (*ATTRIBUTION_FIELDS, "session_id")
COLUMNS: tuple[str, ...] = (
    "event_id",
    "ts",
    "trace_id",
    "parent_id",
    "provider",
    "model",
    "served_model",
    "operation",
    "service_tier",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_5m_tokens",
    "reasoning_tokens",
    "input_audio_tokens",
    "output_audio_tokens",
    "latency_ms",
    "status",
    "http_status",
    "billed_cost",
    "span_id",
    "tags",
    *ROW_ATTRIBUTION,
)
"""What a row holds about a span, in order: the event fields it fills, but `ts` in microseconds
since the epoch (UTC), `billed_cost` as decimal text, and the event's tags as `span_id` plus
`tags`, which is None when the span id is the only tag and else every tag as (name, value)
pairs. None = absent. A row is a tuple, not a dict: a batch of rows becomes columns with one
`zip(*rows)` (`columns.rows_table`)."""

Row = tuple[Any, ...]
_ATTRIBUTION_INDEX = {name: i for i, name in enumerate(ROW_ATTRIBUTION)}

# The attributes the mapping reads, as slots; each attribute name -> (slot, rank): the lowest
# rank present fills the slot.
_SLOT_NAMES: tuple[tuple[str, ...], ...] = (
    INPUT,
    OUTPUT,
    CACHE_READ,
    CACHE_WRITE,
    REASONING,
    INPUT_AUDIO,
    OUTPUT_AUDIO,
    PROVIDER,
    REQUEST_MODEL,
    RESPONSE_MODEL,
    SERVICE_TIER,
    BILLED,
    ("gen_ai.operation.name",),
    ("error.type",),
    ("http.response.status_code",),
)
(
    _INPUT,
    _OUTPUT,
    _CACHE_READ,
    _CACHE_WRITE,
    _REASONING,
    _INPUT_AUDIO,
    _OUTPUT_AUDIO,
    _PROVIDER,
    _REQUEST_MODEL,
    _RESPONSE_MODEL,
    _SERVICE_TIER,
    _BILLED,
    _OPERATION,
    _ERROR_TYPE,
    _HTTP_STATUS,
) = range(len(_SLOT_NAMES))
N_SLOTS = len(_SLOT_NAMES)
_SLOTS: dict[str, tuple[int, int]] = {
    name: (slot, rank) for slot, names in enumerate(_SLOT_NAMES) for rank, name in enumerate(names)
}
# What an attribute that fills no slot is: mapped to a field or tag, a hint that the span is
# GenAI, or nothing to the mapping. Slots are (slot, rank) with slot >= 0.
MAPPED: tuple[int, int] = (-1, 0)
GENAI_HINT: tuple[int, int] = (-2, 0)
OTHER: tuple[int, int] = (-3, 0)
KEY_CACHE_SIZE = 4096
"""Attribute names remembered with their meaning; a client sending ever-new names cannot grow it further."""

NO_RANK = len(max(_SLOT_NAMES, key=len))
"""Rank of a slot no attribute filled (every real rank is lower)."""
_SCALARS = frozenset({"string_value", "int_value", "bool_value", "double_value"})


def _tokens(name: str, value: Any) -> int:
    if isinstance(value, bool):
        raise SpanError(f"{name}: expected a token count, got {value!r}")
    if isinstance(value, float):
        if not value.is_integer():
            raise SpanError(f"{name}: expected a whole token count, got {value!r}")
        value = int(value)
    if isinstance(value, str):
        try:
            value = int(value.strip())
        except ValueError as exc:
            raise SpanError(f"{name}: expected a token count, got {value[:60]!r}") from exc
    if not isinstance(value, int):
        raise SpanError(f"{name}: expected a token count, got {type(value).__name__}")
    if value < 0:
        raise SpanError(f"{name}: negative token count {value}")
    if value > MAX_TOKENS:
        raise SpanError(f"{name}: {value} tokens is not a plausible count for one call")
    return value


def _count(values: list[Any], ranks: list[int], slot: int) -> int:
    value = values[slot]
    if type(value) is int and 0 <= value <= MAX_TOKENS:  # the usual case, checked first
        return value
    if value is None:
        return 0
    return _tokens(_SLOT_NAMES[slot][ranks[slot]], value)


@dataclass(frozen=True)
class ResourceFields:
    """What a resource's attributes contribute to each of its spans' events (computed once per resource)."""

    fields: Mapping[str, str]
    tags: Mapping[str, str]

    @property
    def attribution(self) -> tuple[str | None, ...]:
        """The `ROW_ATTRIBUTION` values, in row order."""
        return tuple(self.fields.get(name) for name in ROW_ATTRIBUTION)


def resource_fields(resource: Mapping[str, Any], mapping: AttributeMapping) -> ResourceFields:
    fields: dict[str, Any] = {}
    tags: dict[str, str] = {}
    mapping.apply(resource, fields, tags)
    return ResourceFields(fields, tags)


@dataclass(slots=True)
class _Resource:
    """A resource's contribution in the form rows take it."""

    attribution: tuple[str | None, ...]
    tags: Mapping[str, str]


class SpanMapper:
    """Spans -> event rows under one attribute mapping. Remembers what each attribute name means.

    Not thread-safe (the name cache); one per receiver, used from one thread.
    """

    def __init__(self, mapping: AttributeMapping | None = None) -> None:
        self.mapping = mapping or AttributeMapping()
        self._kinds: dict[str, tuple[int, int]] = dict(_SLOTS)

    def resource(self, attributes: Mapping[str, Any] | ResourceFields) -> _Resource:
        fields = (
            attributes
            if isinstance(attributes, ResourceFields)
            else resource_fields(attributes, self.mapping)
        )
        return _Resource(fields.attribution, fields.tags)

    def kind(self, name: str) -> tuple[int, int]:
        """(slot, rank) of an attribute the mapping reads, else MAPPED, GENAI_HINT or OTHER."""
        kind = self._kinds.get(name)
        if kind is None:
            if name in self.mapping.fields or name.startswith("unitcost.tag."):
                kind = MAPPED
            elif name.startswith(("gen_ai.", "llm.")):
                kind = GENAI_HINT
            else:
                kind = OTHER
            if len(self._kinds) < KEY_CACHE_SIZE + len(_SLOTS):
                self._kinds[name] = kind
        return kind

    # ------------------------------------------------------------------ by encoding

    def protobuf_row(self, span: Any, resource: _Resource, now_us: int) -> Row | None:
        """A protobuf `Span` message -> its row, reading only the attributes the mapping uses."""
        values: list[Any] = [None] * N_SLOTS
        ranks = [NO_RANK] * N_SLOTS
        mapped: list[tuple[str, Any]] | None = None
        genai = False
        kinds = self._kinds
        for kv in span.attributes:
            name = kv.key
            slot, rank = kinds.get(name) or self.kind(name)
            if slot >= 0:
                genai = True
                if rank < ranks[slot]:
                    ranks[slot] = rank
                    value = kv.value
                    which = value.WhichOneof("value")
                    values[slot] = getattr(value, which) if which in _SCALARS else any_value(value)
            elif slot == -1:
                if mapped is None:
                    mapped = []
                mapped.append((name, any_value(kv.value)))
            elif slot == -2:
                genai = True
        if not genai:
            return None
        return self.row(
            span.trace_id.hex(),
            span.span_id.hex(),
            span.parent_span_id.hex(),
            span.start_time_unix_nano,
            span.end_time_unix_nano,
            span.status.code == STATUS_ERROR,
            values,
            ranks,
            mapped,
            resource,
            now_us,
        )

    def span_row(self, span: Span, resource: _Resource, now_us: int) -> Row | None:
        """A `Span` whose attribute values are decoded -> its row."""
        values: list[Any] = [None] * N_SLOTS
        ranks = [NO_RANK] * N_SLOTS
        mapped: list[tuple[str, Any]] | None = None
        genai = False
        for name, value in span.attributes.items():
            slot, rank = self.kind(name)
            if slot >= 0:
                genai = True
                if rank < ranks[slot]:
                    ranks[slot] = rank
                    values[slot] = value
            elif slot == -1:
                if mapped is None:
                    mapped = []
                mapped.append((name, value))
            elif slot == -2:
                genai = True
        if not genai:
            return None
        return self.row(
            span.trace_id,
            span.span_id,
            span.parent_span_id,
            span.start_ns,
            span.end_ns,
            span.error,
            values,
            ranks,
            mapped,
            resource,
            now_us,
        )

    # ------------------------------------------------------------------ the mapping

    def row(
        self,
        trace_id: str,
        span_id: str,
        parent_id: str,
        start_ns: int,
        end_ns: int,
        error: bool,
        values: list[Any],
        ranks: list[int],
        mapped: list[tuple[str, Any]] | None,
        resource: _Resource,
        now_us: int,
    ) -> Row | None:
        """The row of a GenAI span; None when it is not a model call; SpanError when it is one but unusable.

        `values` holds the value of the attributes the mapping reads, by slot, from the attribute
        of lowest rank present (`ranks`); an attribute whose value is empty counts as absent.
        `mapped` are the attributes mapped to attribution fields and tags.
        """
        operation = values[_OPERATION]
        if operation is not None:
            operation = _text(operation)
            if operation in NOT_A_MODEL_CALL:
                return None
        requested = values[_REQUEST_MODEL]
        responded = values[_RESPONSE_MODEL]
        if requested is None and responded is None:
            if values[_INPUT] is None and values[_OUTPUT] is None:
                return None  # a GenAI-flavoured span that is not a model call (e.g. a framework step)
            raise SpanError("gen_ai.request.model: missing (the span reports token usage but names no model)")
        model = _text(requested if requested is not None else responded)
        served = None
        if responded is not None:
            served = _text(responded)
            if served == model:
                served = None
        input_tokens = _count(values, ranks, _INPUT)
        cache_read = _count(values, ranks, _CACHE_READ)
        cache_write = _count(values, ranks, _CACHE_WRITE)
        provider = values[_PROVIDER]
        if provider is not None:
            provider_name = _text(provider).lower()
            provider = PROVIDERS.get(provider_name, provider_name)
            if provider == "anthropic" and cache_read + cache_write > input_tokens:
                input_tokens += cache_read + cache_write
        if start_ns:
            ts = start_ns // 1000
            latency = (end_ns - start_ns) / 1e6 if end_ns >= start_ns else None
        else:
            ts, latency = now_us, None
        status = None
        error_type = values[_ERROR_TYPE]
        if error or error_type is not None:
            status = (
                "timeout" if error_type is not None and "timeout" in _text(error_type).lower() else "error"
            )
        http_status = values[_HTTP_STATUS]
        if type(http_status) is not int or not 100 <= http_status <= 599:
            http_status = None
        tier = values[_SERVICE_TIER]
        if tier is not None:
            tier = _text(tier).lower()
            if tier in ("default", "auto", "scale"):
                tier = "standard"
        billed = values[_BILLED]
        if billed is not None:
            billed = _amount(_SLOT_NAMES[_BILLED][ranks[_BILLED]], billed)
        attribution = resource.attribution
        span_tags: dict[str, str] | None = None
        if mapped is not None:
            fields: dict[str, str] = {}
            span_tags = {}
            self.mapping.apply(dict(mapped), fields, span_tags)
            if fields:
                merged = list(attribution)
                for name, value in fields.items():
                    merged[_ATTRIBUTION_INDEX[name]] = value
                attribution = tuple(merged)
        tags = None
        if resource.tags or span_tags:
            tag_map = {"span_id": span_id} if span_id else {}
            tag_map.update(resource.tags)
            if span_tags:
                tag_map.update(span_tags)
            tags = list(tag_map.items())
        return (
            f"otlp:{trace_id}:{span_id}",
            ts,
            trace_id or None,
            parent_id or None,
            provider,
            model,
            served,
            operation or "chat",
            tier,
            input_tokens,
            _count(values, ranks, _OUTPUT),
            cache_read,
            cache_write,
            _count(values, ranks, _REASONING),
            _count(values, ranks, _INPUT_AUDIO),
            _count(values, ranks, _OUTPUT_AUDIO),
            latency,
            status,
            http_status,
            billed,
            span_id,
            tags,
            *attribution,
        )


def _amount(name: str, value: Any) -> str:
    """A billed amount as plain decimal text (the ledger's checks type it); SpanError when it is none."""
    try:
        amount = Decimal(_text(value))
    except InvalidOperation as exc:
        raise SpanError(f"{name}: not an amount: {value!r}") from exc
    if not amount.is_finite():
        raise SpanError(f"{name}: not an amount: {value!r}")
    return format(amount, "f")


def any_value(value: Any) -> Any:
    """A protobuf AnyValue -> its Python value (bytes as hex, arrays as lists, key/value lists as dicts)."""
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [any_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: any_value(kv.value) for kv in value.kvlist_value.values}
    if kind == "bytes_value":
        return value.bytes_value.hex()
    return getattr(value, kind)


STATUS_ERROR = 2
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def span_to_event(
    span: Span,
    resource: Mapping[str, Any] | ResourceFields,
    mapping: AttributeMapping,
    now: datetime | None = None,
) -> dict[str, Any] | None:
    """The event for one span, as a dict of the fields it sets; None when it is not a model call;
    SpanError when it is one but unusable. (The receiver builds rows, `SpanMapper.span_row`.)"""
    mapper = SpanMapper(mapping)
    now = now or datetime.now(UTC)
    row = mapper.span_row(span, mapper.resource(resource), (now - _EPOCH) // timedelta(microseconds=1))
    if row is None:
        return None
    event = {name: value for name, value in zip(COLUMNS, row, strict=True) if value is not None}
    event["ts"] = _EPOCH + timedelta(microseconds=row[1])
    span_id, tags = row[COLUMNS.index("span_id") :][:2]
    event.pop("span_id", None)
    event["tags"] = dict(tags) if tags is not None else ({"span_id": span_id} if span_id else {})
    if "billed_cost" in event:
        event["billed_cost"] = Decimal(event["billed_cost"])
    return event
