"""GenAI spans -> event records: which attributes mean what (the rows themselves: `rows`).

Attribute names, old and new, that carry the same fact (first present wins):

- provider: `gen_ai.provider.name` (semconv >= 1.37), `gen_ai.system` (older, and OpenLLMetry's),
  OpenInference `llm.provider`/`llm.system`;
- model: `gen_ai.request.model`, OpenInference `llm.request.model_name`, `llm.model_name`,
  `embedding.model_name`, else the response model; a different response model
  (`gen_ai.response.model`, `llm.response.model_name`) is kept as `served_model`, which prices
  the call when the price book knows it;
- input: `gen_ai.usage.input_tokens`, `gen_ai.usage.prompt_tokens`, `llm.token_count.prompt`;
- output: `gen_ai.usage.output_tokens`, `gen_ai.usage.completion_tokens`, `llm.token_count.completion`;
- cache read: `gen_ai.usage.cache_read.input_tokens`, `gen_ai.usage.cache_read_input_tokens`,
  `llm.token_count.prompt_details.cache_read` (`.cache_input`), pydantic-ai's
  `gen_ai.usage.details.cache_read_tokens` (`.cache_read_input_tokens`, `.cached_tokens`);
- cache write: `gen_ai.usage.cache_creation.input_tokens`, `gen_ai.usage.cache_write.input_tokens`,
  `gen_ai.usage.cache_creation_input_tokens`, `llm.token_count.prompt_details.cache_write`,
  `gen_ai.usage.details.cache_write_tokens` (`.cache_creation_input_tokens`);
- reasoning: `gen_ai.usage.reasoning.output_tokens`, `gen_ai.usage.reasoning_tokens`,
  `llm.token_count.completion_details.reasoning`, `llm.usage.reasoning_tokens`,
  `gen_ai.usage.details.reasoning_tokens`;
- operation: `gen_ai.operation.name`, else OpenLLMetry's `llm.request.type` (`completion` ->
  text_completion, `embedding` -> embeddings), else `embeddings` for an OpenInference
  EMBEDDING span, else chat.

The semantic conventions define input tokens as the whole prompt, cached included. Some
Anthropic instrumentations copy Anthropic's uncached count; when the cache parts of an
Anthropic span exceed its input, the input is read that way and the parts are added. OpenLIT
(`telemetry.sdk.name = openlit` on its spans) always reports the uncached count, so its
Anthropic spans are completed whatever the sizes.

Spans that are not calls to a model are ignored and counted, like spans with no GenAI
attributes at all: agent, tool and workflow operations (`invoke_agent`, `execute_tool`,
`create_agent`, `invoke_workflow`) and retrievals (`retrieval`), OpenInference spans of
another kind than LLM or EMBEDDING (AGENT, CHAIN, TOOL, ...), and a span that names an agent
(`gen_ai.agent.name`) and reports usage but neither model nor operation (pydantic-ai's
`agent run`). An agent's usage, when present, repeats its calls': counting it would count
them twice.

Only the attributes above and the mapped ones (`AttributeMapping`) are read; everything else
a span carries (headers, invocation parameters, prompts and answers) is never looked at.
A mapping may not name a credential (`http.request.header.authorization`, `*api_key*`, ...):
it is refused when the config is read. Nor may it name a prompt or answer attribute
(`BODY_ATTRIBUTES`) unless `[otlp] store_bodies = true` turns that on. Free tags pass
`redact.tag_value` (a `unitcost.tag.api_key` is stored as REDACTED), and a credential in a
mapped field's value (an `enduser.id` holding a bearer token) is replaced, as in tags.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..events import ATTRIBUTION_FIELDS
from ..redact import redact_text, secret_name, tag_value

INPUT = ("gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens", "llm.token_count.prompt")
OUTPUT = ("gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens", "llm.token_count.completion")
CACHE_READ = (
    "gen_ai.usage.cache_read.input_tokens",
    "gen_ai.usage.cache_read_input_tokens",
    "llm.token_count.prompt_details.cache_read",
    "llm.token_count.prompt_details.cache_input",
    "gen_ai.usage.details.cache_read_tokens",
    "gen_ai.usage.details.cache_read_input_tokens",
    "gen_ai.usage.details.cached_tokens",
)
CACHE_WRITE = (
    "gen_ai.usage.cache_creation.input_tokens",
    "gen_ai.usage.cache_write.input_tokens",
    "gen_ai.usage.cache_creation_input_tokens",
    "llm.token_count.prompt_details.cache_write",
    "gen_ai.usage.details.cache_write_tokens",
    "gen_ai.usage.details.cache_creation_input_tokens",
)
REASONING = (
    "gen_ai.usage.reasoning.output_tokens",
    "gen_ai.usage.reasoning_tokens",
    "llm.token_count.completion_details.reasoning",
    "llm.usage.reasoning_tokens",
    "gen_ai.usage.details.reasoning_tokens",
)
INPUT_AUDIO = (
    "gen_ai.usage.input_audio_tokens",
    "llm.token_count.prompt_details.audio",
    "gen_ai.usage.details.input_audio_tokens",
)
OUTPUT_AUDIO = (
    "gen_ai.usage.output_audio_tokens",
    "llm.token_count.completion_details.audio",
    "gen_ai.usage.details.output_audio_tokens",
)
PROVIDER = ("gen_ai.provider.name", "gen_ai.system", "llm.provider", "llm.system")
REQUEST_MODEL = ("gen_ai.request.model", "llm.request.model_name", "llm.model_name", "embedding.model_name")
RESPONSE_MODEL = ("gen_ai.response.model", "llm.response.model_name")
OPERATION = ("gen_ai.operation.name", "llm.request.type")
OPERATIONS: Mapping[str, str] = {"completion": "text_completion", "embedding": "embeddings"}
"""OpenLLMetry's `llm.request.type` values -> the semantic conventions' operation names."""
SPAN_KIND = ("openinference.span.kind",)
AGENT_NAME = ("gen_ai.agent.name",)
SERVICE_TIER = (
    "openai.response.service_tier",
    "gen_ai.openai.response.service_tier",
    "openai.request.service_tier",
    "gen_ai.openai.request.service_tier",
)
BILLED = ("gen_ai.usage.cost", "llm.cost.total")
SDK_NAME = ("telemetry.sdk.name",)
UNCACHED_ANTHROPIC_INPUT_SDKS = frozenset({"openlit"})
"""Instrumentations (their span's `telemetry.sdk.name`) that report an Anthropic call's
`gen_ai.usage.input_tokens` as Anthropic's uncached count, beside the cache reads and writes."""
NOT_A_MODEL_CALL = frozenset({"invoke_agent", "execute_tool", "create_agent", "invoke_workflow", "retrieval"})
"""Operations (`gen_ai.operation.name`) that are not calls to a model: an agent's or a workflow's
usage, when present, repeats that of the calls under it, and a retrieval queries a data source."""
MODEL_CALL_KINDS: Mapping[str, str | None] = {"LLM": None, "EMBEDDING": "embeddings", "UNKNOWN": None}
"""OpenInference span kinds that are model calls, with the operation each implies. The others
(AGENT, CHAIN, TOOL, RETRIEVER, RERANKER, GUARDRAIL, EVALUATOR, PROMPT) are not, and an
instrumentation may total its calls' usage on them (smolagents' AGENT span does)."""

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
    "togetherai": "together",  # OpenLLMetry's `gen_ai.system` "TogetherAI"
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

BODY_ATTRIBUTES = (
    # OpenTelemetry GenAI (opt-in content, semconv >= 1.37, and the older span-event attributes)
    "gen_ai.input.messages",
    "gen_ai.output.messages",
    "gen_ai.system_instructions",
    "gen_ai.tool.call.arguments",
    "gen_ai.tool.call.result",
    "gen_ai.prompt",
    "gen_ai.completion",
    # OpenInference
    "input.value",
    "output.value",
    "llm.input_messages",
    "llm.output_messages",
    "llm.prompts",
    "llm.prompt_template.variables",
    "embedding.embeddings",
    "retrieval.documents",
    # OpenLLMetry (Traceloop), Vercel AI SDK
    "traceloop.entity.input",
    "traceloop.entity.output",
    "ai.prompt",
    "ai.response.text",
)
"""Attributes (and their indexed parts, `gen_ai.prompt.0.content`) holding prompts and answers."""


def body_attribute(name: str) -> bool:
    return any(name == body or name.startswith(body + ".") for body in BODY_ATTRIBUTES)


class SpanError(ValueError):
    """A GenAI span that cannot become an event; the message names the attribute."""


@dataclass(frozen=True)
class AttributeMapping:
    """How resource and span attributes become attribution fields and tags."""

    fields: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_ATTRIBUTES))
    """attribute name -> event field (team, app, feature, user, ...) or `tag:<name>`."""
    store_bodies: bool = False
    """`[otlp] store_bodies`: whether prompt and answer attributes may be mapped at all."""

    def __post_init__(self) -> None:
        for name, target in self.fields.items():
            if target not in TARGETS and not (target.startswith("tag:") and len(target) > 4):
                raise ValueError(
                    f"[otlp.attributes] {name!r} = {target!r}: the target must be one of "
                    f"{', '.join(sorted(TARGETS))} or tag:<name>"
                )
            if secret_name(name) or secret_name(target.removeprefix("tag:")):
                raise ValueError(
                    f"[otlp.attributes] {name!r} = {target!r}: it names a credential, and unitcost "
                    "never stores credentials; map an attribute that identifies the caller instead "
                    "(e.g. a key alias or a team)"
                )
            if body_attribute(name) and not self.store_bodies:
                raise ValueError(
                    f"[otlp.attributes] {name!r} = {target!r}: it holds prompts or answers, which are "
                    "not stored unless you turn that on with store_bodies = true in [otlp]"
                )

    @classmethod
    def from_config(cls, section: Mapping[str, Any]) -> AttributeMapping:
        """`[otlp.attributes]` table: `"k8s.namespace.name" = "team"`, `"region" = "tag:region"`."""
        merged = dict(DEFAULT_ATTRIBUTES)
        attributes = section.get("attributes", {})
        if not isinstance(attributes, Mapping):
            raise ValueError(
                f"[otlp] attributes = {attributes!r}: expected a table of attribute name = field, "
                'e.g. [otlp.attributes] "k8s.namespace.name" = "team"'
            )
        for name, value in attributes.items():
            merged[str(name)] = str(value)
        store_bodies = section.get("store_bodies", False)
        if not isinstance(store_bodies, bool):
            raise ValueError(f"[otlp] store_bodies = {store_bodies!r}: expected true or false")
        return cls(merged, store_bodies)

    def target(self, name: str) -> str | None:
        """The event field, or `tag:<name>`, that an attribute sets; None when it sets nothing."""
        target = self.fields.get(name)
        if target is None and name.startswith("unitcost.tag."):
            return "tag:" + name[13:]
        return target

    def apply(self, attrs: Mapping[str, Any], event: dict[str, Any], tags: dict[str, str]) -> None:
        for name, value in attrs.items():
            target = self.target(name)
            if value is None or target is None:
                continue
            if target.startswith("tag:"):
                tags[target[4:]] = tag_value(target[4:], text(value))
            else:
                event[target] = redact_text(text(value))


@dataclass(slots=True)
class Span:
    """The parts of an OTLP span the mapping reads, with decoded attribute values (OTLP/JSON, tests).

    Protobuf requests skip this object: `rows.SpanMapper.protobuf_row` reads the wire messages
    in place, decoding only the attributes the mapping uses.
    """

    trace_id: str
    span_id: str
    parent_span_id: str
    name: str
    start_ns: int
    end_ns: int
    attributes: Mapping[str, Any]
    error: bool


def text(value: Any) -> str:
    """An attribute value as the text of an event field or tag (arrays joined by commas)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ",".join(text(v) for v in value)
    return str(value)


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
