"""GenAI spans -> event rows: the mapping of `mapping`, done per span at receiver speed.

A row is a tuple in `COLUMNS` order rather than a dict, and the attributes are read in one
pass: each attribute name is looked up once in a table of what it means (a slot the
mapping reads, with its rank among the names of that fact; an attribution field or tag;
a hint that the span is GenAI; or nothing), which the mapper extends with the names it
meets. Protobuf spans are read in place (`protobuf_row`), decoding only the values the
mapping uses; decoded spans (`Span`, from OTLP/JSON) take the same path (`span_row`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from ..events import ATTRIBUTION_FIELDS, MAX_TOKENS, USAGE_UNKNOWN_TAG
from ..money import MONEY_SCALE
from ..redact import quoted, redact_text, tag_value
from .mapping import (
    AGENT_NAME,
    BILLED,
    CACHE_READ,
    CACHE_WRITE,
    INPUT,
    INPUT_AUDIO,
    MODEL_CALL_KINDS,
    NOT_A_MODEL_CALL,
    OPERATION,
    OPERATIONS,
    OUTPUT,
    OUTPUT_AUDIO,
    PROVIDER,
    PROVIDERS,
    REASONING,
    REQUEST_MODEL,
    RESPONSE_MODEL,
    SDK_NAME,
    SERVICE_TIER,
    SPAN_KIND,
    UNCACHED_ANTHROPIC_INPUT_SDKS,
    AttributeMapping,
    ResourceFields,
    Span,
    SpanError,
    resource_fields,
    text,
)

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
    OPERATION,
    ("error.type",),
    ("http.response.status_code",),
    SDK_NAME,
    SPAN_KIND,
    AGENT_NAME,
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
    _SDK_NAME,
    _SPAN_KIND,
    _AGENT_NAME,
) = range(len(_SLOT_NAMES))
_USAGE_SLOTS = (_INPUT, _OUTPUT, _CACHE_READ, _CACHE_WRITE, _REASONING, _INPUT_AUDIO, _OUTPUT_AUDIO)
NO_USAGE = "the span reports no token usage (no gen_ai.usage.* count)"
"""The `usage_unknown` tag of a successful call whose span has no usage: stored unpriced, never as $0."""
_MAX_AMOUNT_DIGITS = 6
"""A billed amount of a million dollars or more for one call is not one (the ledger holds less)."""
_AMOUNT_QUANTUM = Decimal(1).scaleb(-(MONEY_SCALE + 6))
"""Finer digits than this are rounded off: the ledger keeps MONEY_SCALE of them."""
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
            raise SpanError(f"{name}: expected a token count, got {quoted(name, value)}") from exc
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
        self._targets: dict[str, str] = {}
        """For the MAPPED names met: the field or `tag:<name>` each sets."""

    def resource(self, attributes: Mapping[str, Any] | ResourceFields) -> _Resource:
        fields = (
            attributes
            if isinstance(attributes, ResourceFields)
            else resource_fields(attributes, self.mapping)
        )
        return _Resource(tuple(fields.fields.get(name) for name in ROW_ATTRIBUTION), fields.tags)

    def kind(self, name: str) -> tuple[int, int]:
        """(slot, rank) of an attribute the mapping reads, else MAPPED, GENAI_HINT or OTHER."""
        kind = self._kinds.get(name)
        if kind is None:
            target = self.mapping.target(name)
            if target is not None:
                kind = MAPPED
                if len(self._targets) < KEY_CACHE_SIZE:
                    self._targets[name] = target
            elif name.startswith(("gen_ai.", "llm.")):
                kind = GENAI_HINT
            else:
                kind = OTHER
            if len(self._kinds) < KEY_CACHE_SIZE + len(_SLOTS):
                self._kinds[name] = kind
        return kind

    def _target(self, name: str) -> str:
        target = self.mapping.target(name)
        assert target is not None, f"{name} was classified as mapped"
        return target

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
                    value = kv.value
                    which = value.WhichOneof("value")
                    decoded = getattr(value, which) if which in _SCALARS else any_value(value)
                    if decoded is not None and decoded != "":  # an empty value counts as absent
                        ranks[slot] = rank
                        values[slot] = decoded
            elif slot == -1:
                if mapped is None:
                    mapped = []
                mapped.append((self._targets.get(name) or self._target(name), any_value(kv.value)))
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
                if rank < ranks[slot] and value is not None and value != "":
                    ranks[slot] = rank
                    values[slot] = value
            elif slot == -1:
                if mapped is None:
                    mapped = []
                mapped.append((self._targets.get(name) or self._target(name), value))
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
        `mapped` are (target, value) of the attributes that set attribution fields and tags.
        """
        operation, call = _operation(values)
        if not call:
            return None
        requested = values[_REQUEST_MODEL]
        responded = values[_RESPONSE_MODEL]
        if requested is None and responded is None:
            if values[_INPUT] is None and values[_OUTPUT] is None:
                return None  # a GenAI-flavoured span that is not a model call (e.g. a framework step)
            if values[_AGENT_NAME] is not None and values[_OPERATION] is None:
                # An agent's total (pydantic-ai's `agent run`): its calls have spans of their own.
                return None
            raise SpanError("gen_ai.request.model: missing (the span reports token usage but names no model)")
        if len(trace_id) != 32 or len(span_id) != 16 or not trace_id.strip("0") or not span_id.strip("0"):
            # The event id is made of these ids: spans without valid ones would all share one id,
            # and every one after the first would be dropped as a duplicate of a different call.
            raise SpanError(_invalid_ids(trace_id, span_id))
        model = text(requested if requested is not None else responded)
        served = None
        if responded is not None:
            served = text(responded)
            if served == model:
                served = None
        input_tokens = _count(values, ranks, _INPUT)
        cache_read = _count(values, ranks, _CACHE_READ)
        cache_write = _count(values, ranks, _CACHE_WRITE)
        provider = values[_PROVIDER]
        if provider is not None:
            provider_name = text(provider).lower()
            provider = PROVIDERS.get(provider_name, provider_name)
            if provider == "anthropic" and (
                cache_read + cache_write > input_tokens
                or (
                    values[_SDK_NAME] is not None and text(values[_SDK_NAME]) in UNCACHED_ANTHROPIC_INPUT_SDKS
                )
            ):
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
                "timeout" if error_type is not None and "timeout" in text(error_type).lower() else "error"
            )
        http_status = values[_HTTP_STATUS]
        if type(http_status) is not int or not 100 <= http_status <= 599:
            http_status = None
        tier = values[_SERVICE_TIER]
        if tier is not None:
            tier = text(tier).lower()
            if tier in ("default", "auto", "scale"):
                tier = "standard"
        billed = values[_BILLED]
        if billed is not None:
            billed = _amount(_SLOT_NAMES[_BILLED][ranks[_BILLED]], billed)
        attribution = resource.attribution
        span_tags: dict[str, str] | None = None
        if mapped is not None:
            merged: list[str | None] | None = None
            for target, value in mapped:
                if value is None:
                    continue
                if target.startswith("tag:"):
                    if span_tags is None:
                        span_tags = {}
                    span_tags[target[4:]] = tag_value(target[4:], text(value))
                else:
                    if merged is None:
                        merged = list(attribution)
                    merged[_ATTRIBUTION_INDEX[target]] = redact_text(text(value))
            if merged is not None:
                attribution = tuple(merged)
        if status is None and all(values[slot] is None for slot in _USAGE_SLOTS):
            # A call that says nothing of its usage (a stream without usage, an instrumentation
            # that reports none) is stored unpriced with the reason, not priced as zero tokens.
            span_tags = {**(span_tags or {}), USAGE_UNKNOWN_TAG: NO_USAGE}
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


def _operation(values: list[Any]) -> tuple[str | None, bool]:
    """The span's operation (None: chat, the default) and whether the span is a call to a model.

    An OpenInference span kind other than LLM or EMBEDDING (AGENT, CHAIN, TOOL, ...) is no call
    even when it carries token counts: they total its calls', which have spans of their own.
    """
    operation = values[_OPERATION]
    if operation is not None:
        operation = text(operation)
        operation = OPERATIONS.get(operation, operation)
        if operation in NOT_A_MODEL_CALL:
            return operation, False
    kind = values[_SPAN_KIND]
    if kind is not None:
        kind = text(kind).upper()
        if kind not in MODEL_CALL_KINDS:
            return operation, False
        operation = operation or MODEL_CALL_KINDS[kind]
    return operation, True


def _invalid_ids(trace_id: str, span_id: str) -> str:
    if len(trace_id) != 32 or not trace_id.strip("0"):
        return f"traceId: {_id_problem(trace_id, 16)}; a span needs a valid trace id to be recorded once"
    return f"spanId: {_id_problem(span_id, 8)}; a span needs a valid span id to be recorded once"


def _id_problem(hex_id: str, size: int) -> str:
    if not hex_id:
        return "missing"
    if len(hex_id) != 2 * size:
        return f"expected {size} bytes, got {len(hex_id) // 2}"
    return "all zeros (an invalid id)"


def _amount(name: str, value: Any) -> str:
    """A billed amount as plain decimal text (the ledger's checks type it); SpanError when it is none."""
    try:
        amount = Decimal(text(value))
    except InvalidOperation as exc:
        raise SpanError(f"{name}: not an amount: {quoted(name, value)}") from exc
    if not amount.is_finite():
        raise SpanError(f"{name}: not an amount: {quoted(name, value)}")
    if amount and amount.adjusted() >= _MAX_AMOUNT_DIGITS:
        # Checked before formatting: "1e999999999" would be a billion digits of text.
        raise SpanError(f"{name}: not a plausible amount for one call: {quoted(name, text(value))}")
    exponent = amount.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -(MONEY_SCALE + 6):
        amount = amount.quantize(_AMOUNT_QUANTUM)
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
