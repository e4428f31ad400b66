"""Provider usage payloads -> unitcost usage fields (totals with subsets).

OpenAI reports `prompt_tokens` (or `input_tokens`) as the whole prompt with `cached_tokens`
inside it: already totals-with-subsets. Anthropic reports `input_tokens` as the *uncached*
part only, with cache reads and cache writes beside it, so the total is their sum.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _sub(obj: Any, key: str) -> Mapping[str, Any]:
    value = obj.get(key) if isinstance(obj, Mapping) else None
    return value if isinstance(value, Mapping) else {}


def openai_usage(usage: Mapping[str, Any] | None) -> dict[str, int]:
    """Chat Completions, Responses and Embeddings usage objects."""
    if not isinstance(usage, Mapping):
        return {}
    if "prompt_tokens" in usage:  # chat completions, embeddings
        inp, out = _int(usage.get("prompt_tokens")), _int(usage.get("completion_tokens"))
        in_details, out_details = (
            _sub(usage, "prompt_tokens_details"),
            _sub(usage, "completion_tokens_details"),
        )
    else:  # responses API
        inp, out = _int(usage.get("input_tokens")), _int(usage.get("output_tokens"))
        in_details, out_details = _sub(usage, "input_tokens_details"), _sub(usage, "output_tokens_details")
    return {
        "input_tokens": inp,
        "cache_read_tokens": min(_int(in_details.get("cached_tokens")), inp),
        "input_audio_tokens": min(_int(in_details.get("audio_tokens")), inp),
        "output_tokens": out,
        "reasoning_tokens": min(_int(out_details.get("reasoning_tokens")), out),
        "output_audio_tokens": min(_int(out_details.get("audio_tokens")), out),
    }


def anthropic_usage(usage: Mapping[str, Any] | None) -> dict[str, int]:
    """Messages API usage (also the merged message_start + message_delta usage of a stream)."""
    if not isinstance(usage, Mapping):
        return {}
    uncached = _int(usage.get("input_tokens"))
    read = _int(usage.get("cache_read_input_tokens"))
    written = _int(usage.get("cache_creation_input_tokens"))
    creation = _sub(usage, "cache_creation")
    write_1h = _int(creation.get("ephemeral_1h_input_tokens"))
    write_5m = _int(creation.get("ephemeral_5m_input_tokens")) if creation else written
    server_tools = _sub(usage, "server_tool_use")
    return {
        "input_tokens": uncached + read + max(written, write_5m + write_1h),
        "cache_read_tokens": read,
        "cache_write_5m_tokens": write_5m,
        "cache_write_1h_tokens": write_1h,
        "output_tokens": _int(usage.get("output_tokens")),
        "web_searches": _int(server_tools.get("web_search_requests")),
    }


def merge_anthropic_stream_usage(start: Mapping[str, Any], delta: Mapping[str, Any]) -> dict[str, Any]:
    """message_delta carries the final (cumulative) counts; message_start the prompt side."""
    merged = dict(start)
    for key, value in delta.items():
        if value is not None:
            merged[key] = value
    return merged
