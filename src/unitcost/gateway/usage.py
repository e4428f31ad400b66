"""Provider usage payloads -> unitcost usage fields (totals with subsets).

The gateway reads usage with the rules `unitcost.record()` uses (`connectors/responses.py`):
one reading of each provider's shape for every source, so a call costs the same whether it
was recorded by the SDK wrapper or seen by the gateway (OpenAI and OpenRouter cache writes,
OpenRouter's `usage.cost` as `billed_cost`, Anthropic thinking tokens as reasoning tokens).

What the gateway adds: a reply whose usage is missing or cannot be read is not zero tokens
but unknown usage, with the reason; and subsets are capped at their totals, because an event
the ledger would reject for an inconsistent count is an event lost.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from ..connectors import responses as record_rules

NO_USAGE = "the provider reported no usage"
NO_FINAL_USAGE = record_rules.NO_FINAL_USAGE

_INPUT_PARTS = (
    "cache_read_tokens",
    "cache_write_5m_tokens",
    "cache_write_1h_tokens",
    "input_audio_tokens",
    "input_image_tokens",
)
_OUTPUT_PARTS = ("reasoning_tokens", "output_audio_tokens", "output_image_tokens")


@dataclass
class Usage:
    tokens: dict[str, int] = field(default_factory=dict)
    billed_cost: Decimal | None = None
    """What the provider says it charged (OpenRouter's `usage.cost`), kept for reconciliation."""
    unknown: str | None = None
    """Why the call's usage is not known; None when it is."""


def _fit(fields: Mapping[str, Any]) -> dict[str, int]:
    """Token counts with each group of subsets capped at what is left of its total."""
    tokens = {name: value for name, value in fields.items() if isinstance(value, int)}
    for total, parts in (("input_tokens", _INPUT_PARTS), ("output_tokens", _OUTPUT_PARTS)):
        room = tokens.get(total, 0)
        for name in parts:
            if name in tokens:
                tokens[name] = min(tokens[name], room)
                room -= tokens[name]
    return tokens


def _read(reader: Any, usage: Any) -> Usage:
    if not isinstance(usage, Mapping):
        return Usage(unknown=NO_USAGE)
    try:
        fields = reader(usage)
    except record_rules.UnrecognisedResponseError as exc:
        return Usage(unknown=f"the provider's usage could not be read: {exc}")
    billed = fields.get("billed_cost")
    return Usage(_fit(fields), billed if isinstance(billed, Decimal) else None)


def openai_usage(usage: Any, operation: str) -> Usage:
    """Chat Completions and Embeddings usage (OpenRouter's too), or the Responses API's."""
    reader = (
        record_rules.openai_responses_usage if operation == "responses" else record_rules.openai_chat_usage
    )
    return _read(reader, usage)


def anthropic_usage(usage: Any) -> Usage:
    """Messages API usage (also the merged message_start + message_delta usage of a stream)."""
    return _read(record_rules.anthropic_usage, usage)


def responses_status(response: Mapping[str, Any]) -> str:
    """A Responses API object's outcome, as `unitcost.record()` reads it: a failed response is an
    error and a cancelled one cancelled; an incomplete one was answered (and billed) in part."""
    status = response.get("status")
    if status == "failed":
        return "error"
    if status == "cancelled":
        return "cancelled"
    return "ok"


def merge_anthropic_stream_usage(start: Mapping[str, Any], delta: Mapping[str, Any]) -> dict[str, Any]:
    """message_delta carries the final (cumulative) counts; message_start the prompt side."""
    merged = dict(start)
    for key, value in delta.items():
        if value is not None:
            merged[key] = value
    return merged
