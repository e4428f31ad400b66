"""Provider response shapes (as published in each API reference) -> totals-with-subsets usage."""

from __future__ import annotations

import copy
from decimal import Decimal

import anthropic.types
import httpx
import openai
import openai.types.chat
import openai.types.responses
import pytest

from fake_providers import (
    ANTHROPIC_USAGE,
    anthropic_events,
    anthropic_message,
    chat_chunks,
    chat_completion,
    response_object,
)
from unitcost.connectors.responses import UnrecognisedResponseError, normalise_response

GEMINI = {
    "candidates": [
        {
            "content": {"parts": [{"text": "Hi"}], "role": "model"},
            "finishReason": "STOP",
            "index": 0,
        }
    ],
    "usageMetadata": {
        "promptTokenCount": 20412,
        "cachedContentTokenCount": 16384,
        "candidatesTokenCount": 310,
        "thoughtsTokenCount": 1210,
        "totalTokenCount": 21932,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 20412}],
    },
    "modelVersion": "gemini-2.5-pro",
    "responseId": "mAitaLmkHPPlz7IPvtfUqQ4",
}

OPENROUTER = {
    "id": "gen-1756743299-8HqQZ5OSNqbHLw6lVdhH",
    "provider": "Anthropic",
    "model": "anthropic/claude-sonnet-4",
    "object": "chat.completion",
    "created": 1756743299,
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi"}, "finish_reason": "stop"}],
    "usage": {
        "prompt_tokens": 14,
        "completion_tokens": 12,
        "total_tokens": 26,
        "cost": 0.000222,
        "is_byok": False,
        "prompt_tokens_details": {"cached_tokens": 0},
        "cost_details": {"upstream_inference_cost": None},
        "completion_tokens_details": {"reasoning_tokens": 0},
    },
}

VLLM = {
    "id": "chatcmpl-b9f3e2c0a1d84e6f",
    "object": "chat.completion",
    "created": 1756743299,
    "model": "meta-llama/Llama-3.1-8B-Instruct",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 42, "total_tokens": 50, "completion_tokens": 8, "prompt_tokens_details": None},
    "prompt_logprobs": None,
}


def test_openai_chat_completion_cached_and_reasoning() -> None:
    fields = normalise_response(chat_completion("o4-mini"))
    assert fields["provider"] == "openai"
    assert fields["model"] == "o4-mini"
    assert (fields["input_tokens"], fields["cache_read_tokens"]) == (1834, 1024)
    assert (fields["output_tokens"], fields["reasoning_tokens"]) == (412, 256)
    assert fields["service_tier"] == "standard"
    assert fields["operation"] == "chat"


def test_openai_sdk_object_reads_like_the_json() -> None:
    payload = chat_completion("gpt-4o")
    obj = openai.types.chat.ChatCompletion.model_validate(payload)
    assert normalise_response(obj) == normalise_response(payload)


def test_openai_stream_final_chunk_usage() -> None:
    chunks = chat_chunks("gpt-4o-mini")
    fields = normalise_response(chunks)
    assert (fields["input_tokens"], fields["cache_read_tokens"], fields["reasoning_tokens"]) == (
        1834,
        1024,
        256,
    )
    sdk_chunks = [openai.types.chat.ChatCompletionChunk.model_validate(c) for c in chunks]
    assert normalise_response(sdk_chunks) == fields


def test_openai_stream_without_usage_says_how_to_get_it() -> None:
    with pytest.raises(UnrecognisedResponseError, match="include_usage"):
        normalise_response(chat_chunks("gpt-4o")[:-1])


def test_openai_responses_api_and_its_completed_event() -> None:
    payload = response_object("o3")
    fields = normalise_response(payload)
    assert fields["operation"] == "responses"
    assert (fields["input_tokens"], fields["cache_read_tokens"]) == (5120, 4096)
    assert (fields["output_tokens"], fields["reasoning_tokens"]) == (900, 640)
    assert (fields["cache_write_5m_tokens"], fields["cache_write_1h_tokens"]) == (0, 1024)
    events = [
        {"type": "response.created", "sequence_number": 0, "response": {**payload, "usage": None}},
        {
            "type": "response.output_text.delta",
            "sequence_number": 1,
            "delta": "Hi",
            "item_id": "m",
            "output_index": 0,
        },
        {"type": "response.completed", "sequence_number": 2, "response": payload},
    ]
    assert normalise_response(events) == fields
    sdk = openai.types.responses.Response.model_validate(payload)
    assert normalise_response(sdk) == fields


def test_anthropic_message_converts_uncached_input_and_splits_cache_writes() -> None:
    fields = normalise_response(anthropic_message("claude-sonnet-4-6"))
    u = ANTHROPIC_USAGE
    total = u["input_tokens"] + u["cache_read_input_tokens"] + u["cache_creation_input_tokens"]
    assert fields["input_tokens"] == total == 14810
    assert fields["cache_read_tokens"] == 12000
    assert (fields["cache_write_5m_tokens"], fields["cache_write_1h_tokens"]) == (500, 2000)
    assert (fields["output_tokens"], fields["reasoning_tokens"]) == (733, 412)
    assert fields["provider"] == "anthropic"
    sdk = anthropic.types.Message.model_validate(anthropic_message("claude-sonnet-4-6"))
    assert normalise_response(sdk) == fields


def test_anthropic_without_split_is_a_5m_write() -> None:
    payload = anthropic_message("claude-3-5-haiku-latest")
    payload["usage"] = {"input_tokens": 10, "cache_creation_input_tokens": 90, "output_tokens": 5}
    fields = normalise_response(payload)
    assert (fields["input_tokens"], fields["cache_write_5m_tokens"], fields["cache_write_1h_tokens"]) == (
        100,
        90,
        0,
    )


def test_anthropic_stream_events() -> None:
    fields = normalise_response(anthropic_events("claude-sonnet-4-6"))
    assert fields == normalise_response(anthropic_message("claude-sonnet-4-6"))


def test_anthropic_web_search_counts() -> None:
    payload = anthropic_message("claude-sonnet-4-6")
    payload["usage"] = {**payload["usage"], "server_tool_use": {"web_search_requests": 3}}
    assert normalise_response(payload)["web_searches"] == 3


def test_gemini_rest_and_sdk_snake_case() -> None:
    fields = normalise_response(GEMINI)
    assert fields["provider"] == "google"
    assert fields["model"] == "gemini-2.5-pro"
    assert (fields["input_tokens"], fields["cache_read_tokens"]) == (20412, 16384)
    # candidatesTokenCount excludes the thoughts: the output total is both
    assert (fields["output_tokens"], fields["reasoning_tokens"]) == (1520, 1210)
    snake = {
        "model_version": "gemini-2.5-pro",
        "usage_metadata": {
            "prompt_token_count": 20412,
            "cached_content_token_count": 16384,
            "candidates_token_count": 310,
            "thoughts_token_count": 1210,
        },
    }
    assert normalise_response(snake) == fields
    streamed = [{**GEMINI, "usageMetadata": {"promptTokenCount": 20412}}, GEMINI]
    assert normalise_response(streamed) == fields


def test_openrouter_cost_is_billed_cost() -> None:
    fields = normalise_response(OPENROUTER)
    assert fields["provider"] == "openrouter"
    assert fields["billed_cost"] == Decimal("0.000222")
    assert fields["model"] == "anthropic/claude-sonnet-4"
    # Through the openai SDK (OpenRouter is used with it), `cost` is an undeclared extra field.
    sdk = openai.types.chat.ChatCompletion.model_validate(OPENROUTER)
    assert normalise_response(sdk)["billed_cost"] == Decimal("0.000222")


def test_openai_compatible_server_leaves_provider_open() -> None:
    fields = normalise_response(VLLM)
    assert fields["provider"] is None
    assert (fields["input_tokens"], fields["output_tokens"], fields["cache_read_tokens"]) == (42, 8, 0)
    ollama = {
        "model": "llama3.2",
        "created_at": "2025-01-01T00:00:00Z",
        "done": True,
        "prompt_eval_count": 26,
        "eval_count": 290,
    }
    assert normalise_response(ollama)["input_tokens"] == 26


def test_error_bodies_and_exceptions_are_failed_attempts() -> None:
    openai_error = {
        "error": {"message": "Rate limit", "type": "requests", "param": None, "code": "rate_limit_exceeded"}
    }
    assert normalise_response(openai_error)["status"] == "error"
    anthropic_error = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    assert normalise_response(anthropic_error)["http_status"] == 529
    gemini_error = {"error": {"code": 429, "message": "Resource exhausted", "status": "RESOURCE_EXHAUSTED"}}
    assert normalise_response(gemini_error)["http_status"] == 429
    request = httpx.Request("POST", "https://api.openai.com/v1/chat/completions")
    exc = openai.RateLimitError("slow down", response=httpx.Response(429, request=request), body=None)
    fields = normalise_response(exc)
    assert (fields["status"], fields["http_status"], fields["input_tokens"]) == ("error", 429, 0)
    assert normalise_response(openai.APITimeoutError(request))["status"] == "timeout"


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda p: p["usage"].__setitem__("prompt_tokens", -3), "usage.prompt_tokens"),
        (lambda p: p["usage"].__setitem__("completion_tokens", "many"), "usage.completion_tokens"),
        (lambda p: p["usage"].__setitem__("completion_tokens", 1.5), "usage.completion_tokens"),
    ],
)
def test_invalid_counts_are_named(mutate, message) -> None:
    payload = copy.deepcopy(chat_completion("gpt-4o"))
    mutate(payload)
    with pytest.raises(UnrecognisedResponseError, match=message):
        normalise_response(payload)


def test_unknown_shapes_are_refused_clearly() -> None:
    with pytest.raises(UnrecognisedResponseError, match="not a known provider response"):
        normalise_response({"hello": "world"})
    with pytest.raises(UnrecognisedResponseError, match="empty stream"):
        normalise_response([])
    with pytest.raises(UnrecognisedResponseError, match="read twice"):
        normalise_response(iter([1, 2]))
