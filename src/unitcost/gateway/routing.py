"""Light-by-default routing: a route sends a request to its light model unless a rule
escalates it to the strong one; cascade mode tries light first and escalates when the answer
fails a check (JSON schema, regex or a Python callable)."""

from __future__ import annotations

import functools
import importlib
import re
from collections.abc import Callable, Mapping
from typing import Any

import orjson

from .config import REASONING_EFFORTS, Route
from .tokens import count_prompt, prompt_texts


@functools.lru_cache(maxsize=64)
def load_callable(spec: str) -> Callable[..., Any]:
    module, _, name = spec.partition(":")
    if not module or not name:
        raise ValueError(f"{spec!r} must be 'module:function'")
    func = getattr(importlib.import_module(module), name)
    if not callable(func):
        raise ValueError(f"{spec!r} is not callable")
    return func  # type: ignore[no-any-return]


def escalation_reason(route: Route, body: Mapping[str, Any]) -> str | None:
    """Why this request goes straight to the strong model, or None for the light one."""
    if route.escalate_on_tools and body.get("tools"):
        return "tools"
    if route.keywords:
        text = " ".join(prompt_texts(body)).lower()
        for word in route.keywords:
            if word.lower() in text:
                return f"keyword:{word}"
    if route.max_prompt_tokens is not None and count_prompt(body) > route.max_prompt_tokens:
        return "prompt_length"
    if route.scorer and load_callable(route.scorer)(body):
        return "scorer"
    return None


def _schema_ok(schema: Mapping[str, Any], value: Any) -> bool:
    """The JSON-schema subset answers are checked against: type, required, properties, enum, items."""
    kind = schema.get("type")
    types: dict[str, Any] = {
        "object": dict,
        "array": list,
        "string": str,
        "integer": int,
        "number": (int, float),
        "boolean": bool,
        "null": type(None),
    }
    if kind is not None:
        expected = types.get(kind)
        if expected is None or not isinstance(value, expected):
            return False
        if kind in ("integer", "number") and isinstance(value, bool):
            return False
    if "enum" in schema and value not in schema["enum"]:
        return False
    if isinstance(value, dict):
        if any(name not in value for name in schema.get("required", [])):
            return False
        for name, sub in schema.get("properties", {}).items():
            if name in value and not _schema_ok(sub, value[name]):
                return False
    if isinstance(value, list) and "items" in schema:
        return all(_schema_ok(schema["items"], item) for item in value)
    return True


def answer_passes(route: Route, text: str) -> bool:
    if route.check_regex is not None and not re.search(route.check_regex, text):
        return False
    if route.check_json_schema is not None:
        try:
            value = orjson.loads(text)
        except orjson.JSONDecodeError:
            return False
        if not _schema_ok(route.check_json_schema, value):
            return False
    return not (route.check_callable is not None and not load_callable(route.check_callable)(text))


def answer_text(api: str, payload: Mapping[str, Any]) -> str:
    """The generated text of a non-streamed response in any of the three formats."""
    if api == "anthropic":
        return "".join(b.get("text", "") for b in payload.get("content", []) if isinstance(b, dict))
    choices = payload.get("choices")
    if isinstance(choices, list) and choices:
        message = choices[0].get("message") or {}
        return str(message.get("content") or "")
    parts = []
    for item in payload.get("output", []) or []:
        for block in item.get("content", []) or [] if isinstance(item, dict) else []:
            if isinstance(block, dict) and block.get("type") == "output_text":
                parts.append(block.get("text", ""))
    return "".join(parts)


def apply_caps(route: Route | None, body: dict[str, Any], api: str) -> None:
    """Per-route max_tokens and reasoning-effort caps, applied to the body sent upstream."""
    if route is None:
        return
    if route.max_tokens_cap is not None:
        keys = [k for k in ("max_tokens", "max_completion_tokens", "max_output_tokens") if k in body]
        if not keys:
            keys = ["max_tokens" if api == "anthropic" else "max_completion_tokens"]
            if "input" in body and "messages" not in body:
                keys = ["max_output_tokens"]
        for key in keys:
            current = body.get(key)
            body[key] = (
                min(current, route.max_tokens_cap) if isinstance(current, int) else route.max_tokens_cap
            )
    cap = route.reasoning_effort_cap
    if cap is not None:
        order = {name: i for i, name in enumerate(REASONING_EFFORTS)}
        effort = body.get("reasoning_effort")
        if isinstance(effort, str) and order.get(effort, 99) > order[cap]:
            body["reasoning_effort"] = cap
        reasoning = body.get("reasoning")
        if isinstance(reasoning, dict) and order.get(str(reasoning.get("effort")), -1) > order[cap]:
            body["reasoning"] = {**reasoning, "effort": cap}
