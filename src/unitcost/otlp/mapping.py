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


@dataclass
class Span:
    """The parts of an OTLP span the mapping reads, whatever the wire encoding was."""

    trace_id: str
    span_id: str
    parent_span_id: str
    name: str
    start_ns: int
    end_ns: int
    attributes: dict[str, Any]
    error: bool


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ",".join(_text(v) for v in value)
    return str(value)


def _first(attrs: Mapping[str, Any], names: tuple[str, ...]) -> tuple[str, Any] | None:
    for name in names:
        value = attrs.get(name)
        if value is not None:
            return name, value
    return None


def _tokens(attrs: Mapping[str, Any], names: tuple[str, ...]) -> int:
    found = _first(attrs, names)
    if found is None:
        return 0
    name, value = found
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


def is_genai(attrs: Mapping[str, Any]) -> bool:
    return any(name.startswith(("gen_ai.", "llm.")) for name in attrs)


def span_to_event(
    span: Span, resource: Mapping[str, Any], mapping: AttributeMapping, now: datetime | None = None
) -> dict[str, Any] | None:
    """The event for one span; None when it is not a model call; SpanError when it is one but unusable."""
    attrs = span.attributes
    if not is_genai(attrs):
        return None
    operation = attrs.get("gen_ai.operation.name")
    if operation in NOT_A_MODEL_CALL:
        return None
    requested = _first(attrs, REQUEST_MODEL)
    responded = _first(attrs, RESPONSE_MODEL)
    has_usage = _first(attrs, INPUT + OUTPUT) is not None
    if requested is None and responded is None:
        if not has_usage:
            return None  # a GenAI-flavoured span that is not a model call (e.g. a framework step)
        raise SpanError("gen_ai.request.model: missing (the span reports token usage but names no model)")
    model = _text((requested or responded)[1])  # type: ignore[index]
    served = _text(responded[1]) if responded is not None else None
    event: dict[str, Any] = {
        "event_id": f"otlp:{span.trace_id}:{span.span_id}",
        "model": model,
        "operation": _text(operation) if operation else "chat",
        "trace_id": span.trace_id or None,
        "parent_id": span.parent_span_id or None,
        "input_tokens": _tokens(attrs, INPUT),
        "output_tokens": _tokens(attrs, OUTPUT),
        "cache_read_tokens": _tokens(attrs, CACHE_READ),
        "cache_write_5m_tokens": _tokens(attrs, CACHE_WRITE),
        "reasoning_tokens": _tokens(attrs, REASONING),
        "input_audio_tokens": _tokens(attrs, INPUT_AUDIO),
        "output_audio_tokens": _tokens(attrs, OUTPUT_AUDIO),
    }
    if served and served != model:
        event["served_model"] = served
    provider = _first(attrs, PROVIDER)
    if provider is not None:
        name = _text(provider[1]).lower()
        event["provider"] = PROVIDERS.get(name, name)
    if event.get("provider") == "anthropic":
        parts = event["cache_read_tokens"] + event["cache_write_5m_tokens"]
        if parts > event["input_tokens"]:
            event["input_tokens"] += parts
    if span.start_ns:
        event["ts"] = datetime.fromtimestamp(span.start_ns / 1e9, UTC)
        if span.end_ns >= span.start_ns:
            event["latency_ms"] = (span.end_ns - span.start_ns) / 1e6
    else:
        event["ts"] = now or datetime.now(UTC)
    if span.error or attrs.get("error.type") is not None:
        event["status"] = "timeout" if "timeout" in _text(attrs.get("error.type", "")).lower() else "error"
    status_code = attrs.get("http.response.status_code")
    if isinstance(status_code, int) and not isinstance(status_code, bool):
        event["http_status"] = status_code
    tier = _first(attrs, SERVICE_TIER)
    if tier is not None:
        text = _text(tier[1]).lower()
        event["service_tier"] = "standard" if text in ("default", "auto", "scale") else text
    billed = _first(attrs, BILLED)
    if billed is not None:
        try:
            event["billed_cost"] = Decimal(_text(billed[1]))
        except InvalidOperation as exc:
            raise SpanError(f"{billed[0]}: not an amount: {billed[1]!r}") from exc
    tags: dict[str, str] = {"span_id": span.span_id} if span.span_id else {}
    mapping.apply(resource, event, tags)
    mapping.apply(attrs, event, tags)
    if tags:
        event["tags"] = tags
    return event
