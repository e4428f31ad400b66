"""Provider responses -> event fields, in the totals-with-subsets convention.

Accepts the objects of the official SDKs (`openai`, `anthropic`, `google-genai`) and the
plain JSON the HTTP APIs return, streamed or not:

- OpenAI Chat Completions (`object: chat.completion`, or the chunks of a stream whose last
  chunk carries `usage` when `stream_options.include_usage` is set): `prompt_tokens` is the
  whole prompt and `prompt_tokens_details.cached_tokens` part of it; `completion_tokens`
  includes `completion_tokens_details.reasoning_tokens`.
- OpenAI Embeddings (`object: list` with `usage.prompt_tokens`): input tokens only.
- OpenAI Responses (`object: response`, or the `response.completed` stream event):
  `input_tokens` ⊇ `input_tokens_details.cached_tokens`, `output_tokens` ⊇
  `output_tokens_details.reasoning_tokens`.
- Anthropic Messages (`type: message`, or the `message_start`/`message_delta` stream
  events): `input_tokens` counts only the uncached prompt, so the total is
  `input_tokens + cache_read_input_tokens + cache_creation_input_tokens`, and the cache
  write is split 5m/1h by `cache_creation.ephemeral_{5m,1h}_input_tokens`.
- Gemini `generateContent` (`usageMetadata`, camelCase JSON or the SDK's snake_case):
  `promptTokenCount` ⊇ `cachedContentTokenCount`; `candidatesTokenCount` excludes
  `thoughtsTokenCount`, so the output total is their sum.
- OpenRouter (OpenAI shape plus `usage.cost` in USD): the cost is kept as `billed_cost`.
- OpenAI-compatible servers (vLLM, llama.cpp, TGI, Ollama's /v1): the OpenAI shape, often
  without details; Ollama's native `/api/chat` (`prompt_eval_count`, `eval_count`) too.
- Batch results: a line of an OpenAI Batch output/error file (`custom_id`, `response.body`) or
  an Anthropic Message Batches result (`custom_id`, `result`): the call inside, at the batch tier.
- Error bodies (`{"error": {...}}`) and SDK exceptions: a failed attempt, zero tokens.

Field access works on dicts and SDK objects alike and reads only what it needs, which
keeps `unitcost.record` cheap (no `model_dump`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from ..events import MAX_TOKENS


class UnrecognisedResponseError(ValueError):
    """The object is not a response shape unitcost knows how to read usage from."""


_MISSING = object()


def get(obj: Any, key: str, default: Any = None) -> Any:
    """obj[key] for mappings, obj.key for SDK objects; `default` when absent or None."""
    if obj is None:
        return default
    if type(obj) is dict or isinstance(obj, Mapping):
        value = obj.get(key)
    elif hasattr(obj, "__pydantic_fields__"):
        # The SDKs' pydantic models keep declared fields in __dict__ and the ones they do not
        # declare (e.g. OpenRouter's `cost`) in __pydantic_extra__; reading both directly
        # avoids pydantic's slow __getattr__ for absent names.
        value = obj.__dict__.get(key)
        if value is None:
            extra = obj.__pydantic_extra__
            value = extra.get(key) if extra else None
    else:
        value = getattr(obj, key, None)
    return default if value is None else value


def _int(value: Any, what: str) -> int:
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise UnrecognisedResponseError(f"{what}: expected a token count, got {value!r}")
    try:
        number = int(value)
    except ValueError as exc:
        raise UnrecognisedResponseError(f"{what}: expected a token count, got {value!r}") from exc
    if number < 0 or number != float(value):
        raise UnrecognisedResponseError(f"{what}: expected a non-negative whole count, got {value!r}")
    if number > MAX_TOKENS:
        raise UnrecognisedResponseError(f"{what}: {number} is not a plausible count for one call")
    return number


def _tier(value: Any) -> str | None:
    if not value:
        return None
    text = str(value).lower()
    if text in ("default", "auto", "standard", "standard_only", "on_demand"):
        return "standard"
    if text in ("flex", "priority", "batch"):
        return text
    return None


def _money(value: Any, what: str) -> Decimal | None:
    if value is None:
        return None
    try:
        amount = Decimal(str(value))
    except InvalidOperation as exc:
        raise UnrecognisedResponseError(f"{what}: not an amount: {value!r}") from exc
    if not amount.is_finite() or amount < 0:
        raise UnrecognisedResponseError(f"{what}: not a valid cost: {value!r}")
    return amount


# --------------------------------------------------------------------------- usage shapes


def openai_chat_usage(usage: Any) -> dict[str, Any]:
    """Chat Completions usage (also OpenRouter and OpenAI-compatible servers)."""
    prompt = get(usage, "prompt_tokens_details")
    completion = get(usage, "completion_tokens_details")
    fields: dict[str, Any] = {
        "input_tokens": _int(get(usage, "prompt_tokens"), "usage.prompt_tokens"),
        "output_tokens": _int(get(usage, "completion_tokens"), "usage.completion_tokens"),
        "cache_read_tokens": _int(get(prompt, "cached_tokens"), "usage.prompt_tokens_details.cached_tokens"),
        "input_audio_tokens": _int(get(prompt, "audio_tokens"), "usage.prompt_tokens_details.audio_tokens"),
        "input_image_tokens": _int(get(prompt, "image_tokens"), "usage.prompt_tokens_details.image_tokens"),
        "reasoning_tokens": _int(
            get(completion, "reasoning_tokens"), "usage.completion_tokens_details.reasoning_tokens"
        ),
        "output_audio_tokens": _int(
            get(completion, "audio_tokens"), "usage.completion_tokens_details.audio_tokens"
        ),
    }
    fields.update(_openai_cache_writes(prompt, "usage.prompt_tokens_details"))
    cost = get(usage, "cost")
    if cost is not None:  # OpenRouter reports what it charged, in USD
        fields["billed_cost"] = _money(cost, "usage.cost")
    return fields


def _openai_cache_writes(details: Any, where: str) -> dict[str, int]:
    """OpenAI's cache writes: 12-hour retention goes to the long-lived write column, the rest
    (30-minute retention) to the short one. Without a write price both cost the input price."""
    written = _int(get(details, "cache_write_tokens"), f"{where}.cache_write_tokens")
    split = get(details, "cache_write_tokens_details")
    long_lived = _int(get(split, "ttl_12h_tokens"), f"{where}.cache_write_tokens_details.ttl_12h_tokens")
    long_lived = min(long_lived, written)
    return {"cache_write_5m_tokens": written - long_lived, "cache_write_1h_tokens": long_lived}


def openai_responses_usage(usage: Any) -> dict[str, Any]:
    inp = get(usage, "input_tokens_details")
    out = get(usage, "output_tokens_details")
    return _openai_cache_writes(inp, "usage.input_tokens_details") | {
        "input_tokens": _int(get(usage, "input_tokens"), "usage.input_tokens"),
        "output_tokens": _int(get(usage, "output_tokens"), "usage.output_tokens"),
        "cache_read_tokens": _int(get(inp, "cached_tokens"), "usage.input_tokens_details.cached_tokens"),
        "reasoning_tokens": _int(
            get(out, "reasoning_tokens"), "usage.output_tokens_details.reasoning_tokens"
        ),
    }


def anthropic_usage(usage: Any) -> dict[str, Any]:
    """Anthropic reports the uncached prompt alone: the total adds cache reads and writes."""
    uncached = _int(get(usage, "input_tokens"), "usage.input_tokens")
    read = _int(get(usage, "cache_read_input_tokens"), "usage.cache_read_input_tokens")
    written = _int(get(usage, "cache_creation_input_tokens"), "usage.cache_creation_input_tokens")
    split = get(usage, "cache_creation")
    if split is not None:
        w5 = _int(get(split, "ephemeral_5m_input_tokens"), "usage.cache_creation.ephemeral_5m_input_tokens")
        w1h = _int(get(split, "ephemeral_1h_input_tokens"), "usage.cache_creation.ephemeral_1h_input_tokens")
        if w5 + w1h != written:
            # The split is the detail; when the two disagree the remainder is a 5-minute write (the default).
            w5 = max(written - w1h, w5)
            written = w5 + w1h
    else:
        w5, w1h = written, 0
    server_tools = get(usage, "server_tool_use")
    fields: dict[str, Any] = {
        "input_tokens": uncached + read + written,
        "cache_read_tokens": read,
        "cache_write_5m_tokens": w5,
        "cache_write_1h_tokens": w1h,
        "output_tokens": _int(get(usage, "output_tokens"), "usage.output_tokens"),
        "reasoning_tokens": _int(
            get(get(usage, "output_tokens_details"), "thinking_tokens"),
            "usage.output_tokens_details.thinking_tokens",
        ),
        "web_searches": _int(
            get(server_tools, "web_search_requests"), "usage.server_tool_use.web_search_requests"
        ),
    }
    tier = _tier(get(usage, "service_tier"))
    if tier:
        fields["service_tier"] = tier
    return fields


def gemini_usage(meta: Any) -> dict[str, Any]:
    """Gemini usageMetadata; accepts the REST camelCase and the Python SDK's snake_case."""

    def pick(camel: str, snake: str) -> int:
        value = get(meta, camel)
        return _int(value if value is not None else get(meta, snake), f"usageMetadata.{camel}")

    prompt = pick("promptTokenCount", "prompt_token_count")
    tool_prompt = pick("toolUsePromptTokenCount", "tool_use_prompt_token_count")
    candidates = pick("candidatesTokenCount", "candidates_token_count")
    thoughts = pick("thoughtsTokenCount", "thoughts_token_count")
    return {
        "input_tokens": prompt + tool_prompt,
        "cache_read_tokens": pick("cachedContentTokenCount", "cached_content_token_count"),
        "output_tokens": candidates + thoughts,
        "reasoning_tokens": thoughts,
    }


# --------------------------------------------------------------------------- whole responses


def _openrouter(response: Any, usage: Any) -> bool:
    return (
        get(usage, "cost") is not None
        or str(get(response, "id", "")).startswith("gen-")
        or get(response, "provider") is not None
    )


def _chat(response: Any, usage: Any, operation: str) -> dict[str, Any]:
    fields = openai_chat_usage(usage)
    model = get(response, "model")
    fields.update(model=model, operation=operation)
    if _openrouter(response, usage):
        fields["provider"] = "openrouter"
    else:
        fields["provider"] = _openai_or_unknown(response)
    tier = _tier(get(response, "service_tier"))
    if tier:
        fields["service_tier"] = tier
    return fields


def _embeddings(response: Any, usage: Any) -> dict[str, Any]:
    """OpenAI Embeddings (`object: list`): the input is all there is to bill; no output tokens."""
    fields = openai_chat_usage(usage)
    fields.update(model=get(response, "model"), operation="embeddings")
    if fields.get("billed_cost") is not None:  # OpenRouter's embeddings report their cost too
        fields["provider"] = "openrouter"
    return fields


def _openai_or_unknown(response: Any) -> str | None:
    # OpenAI's own ids are chatcmpl-*/resp_* and it reports system_fingerprint; compatible servers
    # (vLLM, llama.cpp, TGI) copy the shape, so the provider is left to the price book or the caller.
    ident = str(get(response, "id", ""))
    if ident.startswith(("chatcmpl-", "resp_")) and get(response, "system_fingerprint", "").startswith("fp_"):
        return "openai"
    return None


def _responses(response: Any) -> dict[str, Any]:
    usage = get(response, "usage")
    if usage is None:
        raise UnrecognisedResponseError(
            "usage: the Responses API object has no usage (still in progress?); record the completed response"
        )
    fields = openai_responses_usage(usage)
    fields.update(model=get(response, "model"), operation="responses", provider="openai")
    status = get(response, "status")
    if status in ("failed",):
        fields["status"] = "error"
    elif status == "cancelled":
        fields["status"] = "cancelled"
    tier = _tier(get(response, "service_tier"))
    if tier:
        fields["service_tier"] = tier
    return fields


def _anthropic(message: Any) -> dict[str, Any]:
    fields = anthropic_usage(get(message, "usage"))
    fields.update(model=get(message, "model"), operation="messages", provider="anthropic")
    return fields


def _gemini(response: Any, meta: Any) -> dict[str, Any]:
    fields = gemini_usage(meta)
    version = get(response, "modelVersion") or get(response, "model_version")
    fields.update(model=version, operation="generate_content", provider="google")
    return fields


def _error(body: Any) -> dict[str, Any]:
    error = get(body, "error")
    fields: dict[str, Any] = {"status": "error", "input_tokens": 0, "output_tokens": 0}
    code = get(error, "code") if isinstance(error, Mapping) or hasattr(error, "code") else None
    if isinstance(code, int) and 100 <= code <= 599:  # Gemini puts the HTTP status here
        fields["http_status"] = code
    if get(error, "type") == "overloaded_error":
        fields["http_status"] = 529
    return fields


def _exception(exc: BaseException) -> dict[str, Any]:
    fields: dict[str, Any] = {"status": "error", "input_tokens": 0, "output_tokens": 0}
    status = getattr(exc, "status_code", None)
    if isinstance(status, int):
        fields["http_status"] = status
    name = type(exc).__name__
    if "Timeout" in name:
        fields["status"] = "timeout"
    return fields


_BATCH_NOT_RUN = {"batch_expired": "timeout", "batch_cancelled": "cancelled"}


def _batch_result(line: Any) -> dict[str, Any]:
    """One result of a batch: a line of an OpenAI Batch output or error file (`custom_id`,
    `response.status_code`, `response.body`, `error`) or an Anthropic Message Batches result
    (`custom_id`, `result.type`: succeeded, errored, canceled, expired). Batch calls are billed at
    the batch tier, whatever tier the body names; one never run is billed nothing."""
    result = get(line, "result")
    if result is not None:  # Anthropic
        kind = get(result, "type")
        if kind == "succeeded":
            fields = _anthropic(get(result, "message"))
        elif kind == "errored":
            fields = _error(get(result, "error"))
        elif kind in ("canceled", "expired"):
            status = "cancelled" if kind == "canceled" else "timeout"
            fields = {"status": status, "input_tokens": 0, "output_tokens": 0}
        else:
            raise UnrecognisedResponseError(f"result.type: not a known batch result type: {kind!r}")
    else:  # OpenAI
        response = get(line, "response")
        body = get(response, "body")
        if body is None:  # a request of the error file: never run (expired, cancelled) or refused
            status = _BATCH_NOT_RUN.get(get(get(line, "error"), "code"), "error")
            fields = {"status": status, "input_tokens": 0, "output_tokens": 0}
        else:
            fields = normalise_response(body)
        code = get(response, "status_code")
        if isinstance(code, int) and code >= 400:
            fields.update(status="error", http_status=code)
    fields["service_tier"] = "batch"
    return fields


def _stream(items: list[Any]) -> dict[str, Any]:
    """The chunks or events of a stream, in order: the usage comes from the ones that carry it."""
    first = items[0]
    kind = get(first, "object") or get(first, "type")
    if kind == "chat.completion.chunk":
        with_usage = [c for c in items if get(c, "usage") is not None]
        if not with_usage:
            raise UnrecognisedResponseError(
                "usage: the stream has no usage chunk; request it with stream_options={'include_usage': True}"
            )
        last = with_usage[-1]
        return _chat(last if get(last, "model") else first, get(last, "usage"), "chat")
    if isinstance(kind, str) and kind.startswith("response."):
        done = [
            e
            for e in items
            if get(e, "type") in ("response.completed", "response.failed", "response.incomplete")
        ]
        if not done:
            raise UnrecognisedResponseError("usage: the Responses stream has no response.completed event")
        return _responses(get(done[-1], "response"))
    if kind in ("message_start", "message_delta", "content_block_start", "content_block_delta", "ping"):
        return _anthropic_stream(items)
    if get(first, "usageMetadata") is not None or get(first, "candidates") is not None:
        with_meta = [c for c in items if (get(c, "usageMetadata") or get(c, "usage_metadata")) is not None]
        if not with_meta:
            raise UnrecognisedResponseError("usageMetadata: no chunk of the Gemini stream carries usage")
        last = with_meta[-1]
        return _gemini(last, get(last, "usageMetadata") or get(last, "usage_metadata"))
    raise UnrecognisedResponseError(f"a stream of {kind!r} items is not a known provider stream")


NO_FINAL_USAGE = (
    "the stream ended before its final usage (message_delta): the answer's output tokens are not known"
)


def final_usage_missing(response: Any) -> bool:
    """An Anthropic answer cut before message_delta: the prompt's counts are known, but its output
    count is message_start's placeholder (1 token), and Anthropic bills what it generated."""
    if isinstance(response, (list, tuple)):
        kinds = {get(e, "type") for e in response}
        return "message_start" in kinds and "message_delta" not in kinds
    return get(response, "type") == "message" and get(response, "stop_reason") is None


def _anthropic_stream(events: list[Any]) -> dict[str, Any]:
    """message_start carries the prompt usage; each message_delta the cumulative output (and,
    since 2025, possibly updated input counts). The last value of each field wins."""
    start = next((e for e in events if get(e, "type") == "message_start"), None)
    if start is None:
        raise UnrecognisedResponseError("message_start: the Anthropic stream has no message_start event")
    message = get(start, "message")
    usage: dict[str, Any] = {}
    for source in [
        get(message, "usage"),
        *(get(e, "usage") for e in events if get(e, "type") == "message_delta"),
    ]:
        if source is None:
            continue
        for key in (
            "input_tokens",
            "output_tokens",
            "cache_read_input_tokens",
            "cache_creation_input_tokens",
            "cache_creation",
            "server_tool_use",
            "service_tier",
            "output_tokens_details",
        ):
            value = get(source, key)
            if value is not None:
                usage[key] = value
    fields = anthropic_usage(usage)
    fields.update(model=get(message, "model"), operation="messages", provider="anthropic")
    return fields


def normalise_response(response: Any) -> dict[str, Any]:
    """Event fields (model, provider, operation, usage, status, billed_cost) read from one response.

    Raises UnrecognisedResponseError with the reason when the shape is not known or a count is invalid.
    """
    if isinstance(response, BaseException):
        return _exception(response)
    if isinstance(response, (list, tuple)):
        if not response:
            raise UnrecognisedResponseError("an empty stream has no usage")
        return _stream(list(response))
    if get(response, "custom_id") is not None and (
        get(response, "result") is not None or get(response, "response") is not None or get(response, "error")
    ):
        return _batch_result(response)
    if get(response, "error") is not None and get(response, "usage") is None:
        return _error(response)
    kind = get(response, "object")
    usage = get(response, "usage")
    if kind == "chat.completion" or (
        kind is None and usage is not None and get(usage, "prompt_tokens") is not None
    ):
        if usage is None:
            raise UnrecognisedResponseError("usage: the chat completion has no usage")
        return _chat(response, usage, "chat")
    if kind == "chat.completion.chunk":
        return _stream([response])
    if kind == "text_completion":
        return _chat(response, usage, "text_completion")
    if kind == "list" and usage is not None and get(usage, "prompt_tokens") is not None:
        return _embeddings(response, usage)
    if kind == "response":
        return _responses(response)
    rtype = get(response, "type")
    if rtype == "message":
        return _anthropic(response)
    if isinstance(rtype, str) and rtype.startswith("response."):
        return _stream([response])
    meta = get(response, "usageMetadata") or get(response, "usage_metadata")
    if meta is not None:
        return _gemini(response, meta)
    if get(response, "prompt_eval_count") is not None or get(response, "eval_count") is not None:
        # Ollama's native API
        return {
            "model": get(response, "model"),
            "operation": "chat",
            "input_tokens": _int(get(response, "prompt_eval_count"), "prompt_eval_count"),
            "output_tokens": _int(get(response, "eval_count"), "eval_count"),
        }
    if isinstance(response, Iterable) and not isinstance(response, (str, bytes, Mapping)):
        raise UnrecognisedResponseError(
            "a live stream cannot be read twice: pass the list of chunks you received, or use unitcost.instrument()"
        )
    raise UnrecognisedResponseError(
        f"not a known provider response ({type(response).__name__}): expected an OpenAI, Anthropic, Gemini, "
        "OpenRouter or OpenAI-compatible response"
    )
