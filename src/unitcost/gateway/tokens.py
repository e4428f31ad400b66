"""Offline token counts for worst-case reservations.

`bpe-openai` ships its encodings in the wheel: nothing is downloaded at run time. For models
of other providers o200k is an estimate; the reservation error this leaves is what the
budget guarantee is stated against (limit + one reservation error).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import orjson

# Per-message framing tokens in chat formats (role markers, separators).
_PER_MESSAGE = 4
_PER_REQUEST = 3


@functools.lru_cache(maxsize=1)
def _encoding() -> Any:
    import bpe_openai  # type: ignore[import-untyped]

    return bpe_openai.get_encoding("o200k_base")


def count_text(text: str) -> int:
    if not text:
        return 0
    return len(_encoding().encode_ordinary(text))


def _texts(value: Any, out: list[str]) -> None:
    """Every string in a content structure (text parts, tool arguments, system blocks)."""
    if isinstance(value, str):
        out.append(value)
    elif isinstance(value, list):
        for item in value:
            _texts(item, out)
    elif isinstance(value, Mapping):
        for key, item in value.items():
            if key in ("type", "role", "cache_control", "id", "tool_call_id", "tool_use_id"):
                continue
            _texts(item, out)


def prompt_texts(body: Mapping[str, Any]) -> list[str]:
    texts: list[str] = []
    for key in ("system", "instructions", "messages", "input", "prompt"):
        if key in body:
            _texts(body[key], texts)
    return texts


def count_prompt(body: Mapping[str, Any]) -> int:
    """Tokens of the prompt of a chat, responses, messages or embeddings request."""
    messages = body.get("messages")
    framing = _PER_REQUEST + _PER_MESSAGE * (len(messages) if isinstance(messages, list) else 1)
    tools = body.get("tools")
    tool_tokens = count_text(orjson.dumps(tools).decode()) if tools else 0
    return sum(count_text(t) for t in prompt_texts(body)) + framing + tool_tokens


def requested_output_cap(body: Mapping[str, Any]) -> int | None:
    for key in ("max_completion_tokens", "max_tokens", "max_output_tokens"):
        value = body.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None
