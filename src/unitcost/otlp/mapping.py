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

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
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

    @classmethod
    def from_config(cls, section: Mapping[str, Any]) -> AttributeMapping:
        """`[otlp.attributes]` table: `"k8s.namespace.name" = "team"`, `"region" = "tag:region"`."""
        merged = dict(DEFAULT_ATTRIBUTES)
        for name, value in dict(section.get("attributes", {})).items():
            target = str(value)
            if target not in TARGETS and not (target.startswith("tag:") and len(target) > 4):
                raise ValueError(
                    f"[otlp.attributes] {name!r} = {target!r}: the target must be one of "
                    f"{', '.join(sorted(TARGETS))} or tag:<name>"
                )
            merged[str(name)] = target
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
    """The parts of an OTLP span the mapping reads, whatever the wire encoding was.

    `attributes` is a mapping of name -> value, or the wire's sequence of key/value messages
    (with `.key` and `.value`); values may stay in their wire form, and `decode` turns one
    into a Python value, so only the attributes the mapping reads are ever decoded.
    """

    trace_id: str
    span_id: str
    parent_span_id: str
    name: str
    start_ns: int
    end_ns: int
    attributes: Mapping[str, Any] | Sequence[Any]
    error: bool
    decode: Callable[[Any], Any] = field(default=lambda value: value)


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ",".join(_text(v) for v in value)
    return str(value)


# Each attribute the mapping reads -> (slot, rank): the lowest rank present fills the slot.
_SLOTS: dict[str, tuple[str, int]] = {}
for _slot, _names in (
    ("input", INPUT),
    ("output", OUTPUT),
    ("cache_read", CACHE_READ),
    ("cache_write", CACHE_WRITE),
    ("reasoning", REASONING),
    ("input_audio", INPUT_AUDIO),
    ("output_audio", OUTPUT_AUDIO),
    ("provider", PROVIDER),
    ("request_model", REQUEST_MODEL),
    ("response_model", RESPONSE_MODEL),
    ("service_tier", SERVICE_TIER),
    ("billed", BILLED),
    ("operation", ("gen_ai.operation.name",)),
    ("error_type", ("error.type",)),
    ("http_status", ("http.response.status_code",)),
):
    for _rank, _name in enumerate(_names):
        _SLOTS[_name] = (_slot, _rank)

_TOKEN_SLOTS = (
    ("input_tokens", "input"),
    ("output_tokens", "output"),
    ("cache_read_tokens", "cache_read"),
    ("cache_write_5m_tokens", "cache_write"),
    ("reasoning_tokens", "reasoning"),
    ("input_audio_tokens", "input_audio"),
    ("output_audio_tokens", "output_audio"),
)


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


@dataclass(frozen=True)
class ResourceFields:
    """What a resource's attributes contribute to each of its spans' events (computed once per resource)."""

    fields: Mapping[str, str]
    tags: Mapping[str, str]


def resource_fields(resource: Mapping[str, Any], mapping: AttributeMapping) -> ResourceFields:
    fields: dict[str, Any] = {}
    tags: dict[str, str] = {}
    mapping.apply(resource, fields, tags)
    return ResourceFields(fields, tags)


def span_to_event(
    span: Span,
    resource: Mapping[str, Any] | ResourceFields,
    mapping: AttributeMapping,
    now: datetime | None = None,
) -> dict[str, Any] | None:
    """The event for one span; None when it is not a model call; SpanError when it is one but unusable."""
    if not isinstance(resource, ResourceFields):
        resource = resource_fields(resource, mapping)
    found: dict[str, tuple[int, str, Any]] = {}
    targets = mapping.fields
    mapped: list[tuple[str, Any]] = []
    genai = False
    attributes = span.attributes
    pairs: Iterable[tuple[str, Any]] = (
        attributes.items() if isinstance(attributes, Mapping) else ((kv.key, kv.value) for kv in attributes)
    )
    for name, raw in pairs:
        slot = _SLOTS.get(name)
        if slot is not None:
            genai = True
            key, rank = slot
            previous = found.get(key)
            if previous is None or rank < previous[0]:
                found[key] = (rank, name, raw)
            continue
        if name in targets or name.startswith("unitcost.tag."):
            mapped.append((name, raw))
        elif not genai and name.startswith(("gen_ai.", "llm.")):
            genai = True
    if not genai:
        return None
    decode = span.decode
    values: dict[str, tuple[str, Any]] = {}
    for key, (_, name, raw) in found.items():
        value = decode(raw)
        if value is not None:
            values[key] = (name, value)
    operation = values.get("operation")
    if operation is not None and operation[1] in NOT_A_MODEL_CALL:
        return None
    requested = values.get("request_model")
    responded = values.get("response_model")
    if requested is None and responded is None:
        if "input" not in values and "output" not in values:
            return None  # a GenAI-flavoured span that is not a model call (e.g. a framework step)
        raise SpanError("gen_ai.request.model: missing (the span reports token usage but names no model)")
    model = _text((requested or responded)[1])  # type: ignore[index]
    event: dict[str, Any] = {
        "event_id": f"otlp:{span.trace_id}:{span.span_id}",
        "model": model,
        "operation": _text(operation[1]) if operation else "chat",
        "trace_id": span.trace_id or None,
        "parent_id": span.parent_span_id or None,
    }
    for field_name, slot_name in _TOKEN_SLOTS:
        found_value = values.get(slot_name)
        event[field_name] = _tokens(*found_value) if found_value is not None else 0
    if responded is not None:
        served = _text(responded[1])
        if served != model:
            event["served_model"] = served
    provider = values.get("provider")
    if provider is not None:
        provider_name = _text(provider[1]).lower()
        event["provider"] = PROVIDERS.get(provider_name, provider_name)
        if event["provider"] == "anthropic":
            parts = event["cache_read_tokens"] + event["cache_write_5m_tokens"]
            if parts > event["input_tokens"]:
                event["input_tokens"] += parts
    if span.start_ns:
        event["ts"] = datetime.fromtimestamp(span.start_ns / 1e9, UTC)
        if span.end_ns >= span.start_ns:
            event["latency_ms"] = (span.end_ns - span.start_ns) / 1e6
    else:
        event["ts"] = now or datetime.now(UTC)
    error_type = values.get("error_type")
    if span.error or error_type is not None:
        event["status"] = "timeout" if error_type and "timeout" in _text(error_type[1]).lower() else "error"
    status_code = values.get("http_status")
    if status_code is not None and type(status_code[1]) is int and 100 <= status_code[1] <= 599:
        event["http_status"] = status_code[1]
    tier = values.get("service_tier")
    if tier is not None:
        text = _text(tier[1]).lower()
        event["service_tier"] = "standard" if text in ("default", "auto", "scale") else text
    billed = values.get("billed")
    if billed is not None:
        try:
            event["billed_cost"] = Decimal(_text(billed[1]))
        except InvalidOperation as exc:
            raise SpanError(f"{billed[0]}: not an amount: {billed[1]!r}") from exc
    tags: dict[str, str] = {"span_id": span.span_id} if span.span_id else {}
    event.update(resource.fields)
    tags.update(resource.tags)
    if mapped:
        mapping.apply({name: decode(raw) for name, raw in mapped}, event, tags)
    event["tags"] = tags
    return event
