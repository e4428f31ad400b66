"""A fake upstream that answers like the OpenAI and Anthropic APIs, and a helper to serve ASGI apps.

Payloads follow the providers' API references: Chat Completions with
`prompt_tokens_details.cached_tokens` and `completion_tokens_details.reasoning_tokens`, the
final stream chunk with `usage` and no choices (`stream_options.include_usage`), Responses
with `input_tokens_details`/`output_tokens_details`, Anthropic Messages with uncached
`input_tokens` + `cache_read_input_tokens` + `cache_creation_input_tokens` and its
`cache_creation.ephemeral_5m/1h_input_tokens` split, the `message_start`/`message_delta`
stream events, and each API's error body. OpenRouter (`/api/v1`, its real base path) answers in
the OpenAI shape with its usage accounting: cache writes in
`prompt_tokens_details.cache_write_tokens` and what it charged, in USD, as `usage.cost`.

A directive in the prompt makes an answer go wrong the ways real upstreams do:
`fake:no-usage` (no usage object, and no usage chunk in a stream even when asked, as
OpenAI-compatible servers that ignore `stream_options` do), `fake:stream-break` (the
connection drops halfway through a stream), `fake:stream-stall` (a stream stops sending
halfway and waits until the client goes away), `fake:failed` (a Responses stream ends in
`response.failed`).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

# What the fake reports, so tests can compare the ledger with it exactly.
CHAT_USAGE = {
    "prompt_tokens": 1834,
    "completion_tokens": 412,
    "total_tokens": 2246,
    "prompt_tokens_details": {"cached_tokens": 1024, "audio_tokens": 0},
    "completion_tokens_details": {
        "reasoning_tokens": 256,
        "audio_tokens": 0,
        "accepted_prediction_tokens": 0,
        "rejected_prediction_tokens": 0,
    },
}
RESPONSES_USAGE = {
    "input_tokens": 5120,
    "input_tokens_details": {
        "cached_tokens": 4096,
        "cache_write_tokens": 1024,
        "cache_write_tokens_details": {"ttl_30m_tokens": 0, "ttl_12h_tokens": 1024},
    },
    "output_tokens": 900,
    "output_tokens_details": {"reasoning_tokens": 640},
    "total_tokens": 6020,
}
ANTHROPIC_USAGE = {
    "input_tokens": 310,
    "cache_creation_input_tokens": 2500,
    "cache_read_input_tokens": 12000,
    "cache_creation": {"ephemeral_5m_input_tokens": 500, "ephemeral_1h_input_tokens": 2000},
    "output_tokens": 733,
    "output_tokens_details": {"thinking_tokens": 412},
    "service_tier": "standard",
}

# Usage of a Responses call that failed after part of the answer: the prompt and what was
# generated before the failure are reported (and billed).
FAILED_RESPONSES_USAGE = {
    "input_tokens": 5120,
    "input_tokens_details": {"cached_tokens": 4096},
    "output_tokens": 35,
    "output_tokens_details": {"reasoning_tokens": 0},
    "total_tokens": 5155,
}
OPENROUTER_USAGE = {
    "prompt_tokens": 14810,
    "completion_tokens": 733,
    "total_tokens": 15543,
    "cost": 0.0249,
    "is_byok": False,
    "prompt_tokens_details": {"cached_tokens": 12000, "cache_write_tokens": 2500, "audio_tokens": 0},
    "cost_details": {"upstream_inference_cost": None},
    "completion_tokens_details": {"reasoning_tokens": 0},
}

_DIRECTIVE = re.compile(r"fake:([a-z-]+)")


async def read_whole_body(receive: Any) -> tuple[bytes, Any]:
    """The whole body of an ASGI HTTP request, and a `receive` that gives it again: a wrapper
    of the fake provider reads the body first, then passes the request on."""
    body, more = b"", True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)

    async def replay() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    return body, replay


def directive(body: Any) -> str | None:
    """The `fake:NAME` directive written anywhere in the request, if any."""
    found = _DIRECTIVE.search(orjson.dumps(body).decode())
    return found.group(1) if found else None


def chat_completion(model: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG",
        "object": "chat.completion",
        "created": 1741570283,
        "model": f"{model}-2024-08-06" if model == "gpt-4o" else model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello.", "refusal": None, "annotations": []},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": CHAT_USAGE,
        "service_tier": "default",
        "system_fingerprint": "fp_fc9f1d7035",
    }


def chat_chunks(model: str) -> list[dict[str, Any]]:
    base = {
        "id": "chatcmpl-123",
        "object": "chat.completion.chunk",
        "created": 1694268190,
        "model": model,
        "system_fingerprint": "fp_44709d6fcb",
        "service_tier": "default",
    }
    return [
        {
            **base,
            "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}],
        },
        {**base, "choices": [{"index": 0, "delta": {"content": "Hello"}, "finish_reason": None}]},
        {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
        {**base, "choices": [], "usage": CHAT_USAGE},
    ]


def response_object(model: str) -> dict[str, Any]:
    return {
        "id": "resp_67ccd2bed1ec8190b14f964abc0542670bb6a6b452d3795b",
        "object": "response",
        "created_at": 1741476542,
        "status": "completed",
        "error": None,
        "incomplete_details": None,
        "instructions": None,
        "max_output_tokens": None,
        "model": model,
        "output": [
            {
                "type": "message",
                "id": "msg_67ccd2bf17f0819081ff3bb2cf6508e60bb6a6b452d3795b",
                "status": "completed",
                "role": "assistant",
                "content": [{"type": "output_text", "text": "Hi.", "annotations": []}],
            }
        ],
        "parallel_tool_calls": True,
        "previous_response_id": None,
        "reasoning": {"effort": "medium", "summary": None},
        "store": True,
        "temperature": 1.0,
        "text": {"format": {"type": "text"}},
        "tool_choice": "auto",
        "tools": [],
        "top_p": 1.0,
        "truncation": "disabled",
        "usage": RESPONSES_USAGE,
        "user": None,
        "metadata": {},
        "service_tier": "default",
    }


def openrouter_completion(model: str) -> dict[str, Any]:
    return {
        "id": "gen-1756743299-8HqQZ5OSNqbHLw6lVdhH",
        "provider": "Anthropic",
        "model": model,
        "object": "chat.completion",
        "created": 1756743299,
        "choices": [
            {
                "index": 0,
                "logprobs": None,
                "finish_reason": "stop",
                "native_finish_reason": "end_turn",
                "message": {"role": "assistant", "content": "Hi", "refusal": None, "reasoning": None},
            }
        ],
        "usage": OPENROUTER_USAGE,
    }


def response_events(model: str, *, failed: bool = False) -> list[dict[str, Any]]:
    """A Responses API stream: response.created ... response.completed (or response.failed)."""
    done = response_object(model)
    created = {**done, "status": "in_progress", "output": [], "usage": None}
    message_id = done["output"][0]["id"]
    if failed:
        done = {
            **done,
            "status": "failed",
            "output": [],
            "error": {"code": "server_error", "message": "The model failed to generate a response."},
            "usage": FAILED_RESPONSES_USAGE,
        }
    delta = {
        "type": "response.output_text.delta",
        "item_id": message_id,
        "output_index": 0,
        "content_index": 0,
        "delta": "Hi.",
    }
    events = [
        {"type": "response.created", "response": created},
        {"type": "response.in_progress", "response": created},
        delta,
        {"type": "response.failed" if failed else "response.completed", "response": done},
    ]
    return [{**event, "sequence_number": number} for number, event in enumerate(events)]


def anthropic_message(model: str) -> dict[str, Any]:
    return {
        "id": "msg_013Zva2CMHLNnXjNJJKqJ2EF",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": "Hi!"}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": ANTHROPIC_USAGE,
    }


def anthropic_events(model: str) -> list[dict[str, Any]]:
    start_usage = {**ANTHROPIC_USAGE, "output_tokens": 1}
    return [
        {
            "type": "message_start",
            "message": {
                "id": "msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY",
                "type": "message",
                "role": "assistant",
                "content": [],
                "model": model,
                "stop_reason": None,
                "stop_sequence": None,
                "usage": start_usage,
            },
        },
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "ping"},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hello"}},
        {"type": "content_block_stop", "index": 0},
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": {"output_tokens": ANTHROPIC_USAGE["output_tokens"]},
        },
        {"type": "message_stop"},
    ]


def _sse(events: list[dict[str, Any]], named: bool) -> Iterator[bytes]:
    for event in events:
        prefix = f"event: {event['type']}\n".encode() if named else b""
        yield prefix + b"data: " + orjson.dumps(event) + b"\n\n"
    if not named:
        yield b"data: [DONE]\n\n"


async def _stream(request: Request, events: list[dict[str, Any]], named: bool) -> Response:
    """The events as SSE, or the first half of them followed by the failure the prompt asks for."""
    body = await request.json()
    items = list(_sse(events, named))
    how = directive(body)

    async def produce() -> AsyncIterator[bytes]:
        if how not in ("stream-break", "stream-stall"):
            for item in items:
                yield item
            return
        for item in items[: len(items) // 2]:
            yield item
        if how == "stream-break":
            raise ConnectionAbortedError("the fake upstream drops the connection mid-stream")
        for _ in range(6000):  # a stalled upstream: silent until the client gives up (at most 10 minutes)
            if await request.is_disconnected():
                return
            await asyncio.sleep(0.1)

    return StreamingResponse(produce(), media_type="text/event-stream")


async def _chat(request: Request) -> Response:
    body = await request.json()
    model = body["model"]
    how = directive(body)
    if model == "missing-model":
        return JSONResponse(
            {
                "error": {
                    "message": f"The model `{model}` does not exist or you do not have access to it.",
                    "type": "invalid_request_error",
                    "param": None,
                    "code": "model_not_found",
                }
            },
            status_code=404,
        )
    if body.get("stream"):
        chunks = chat_chunks(model)
        if how == "no-usage" or not (body.get("stream_options") or {}).get("include_usage"):
            chunks = chunks[:-1]
        return await _stream(request, chunks, named=False)
    return JSONResponse(_without_usage(chat_completion(model), how))


def _without_usage(payload: dict[str, Any], how: str | None) -> dict[str, Any]:
    if how == "no-usage":
        del payload["usage"]
    return payload


async def _responses(request: Request) -> Response:
    body = await request.json()
    model = body["model"]
    how = directive(body)
    if body.get("stream"):
        events = response_events(model, failed=how == "failed")
        if how == "no-usage":
            events[-1]["response"]["usage"] = None
        return await _stream(request, events, named=True)
    return JSONResponse(_without_usage(response_object(model), how))


async def _openrouter(request: Request) -> Response:
    body = await request.json()
    return JSONResponse(openrouter_completion(body["model"]))


async def _messages(request: Request) -> Response:
    body = await request.json()
    model = body["model"]
    if model == "overloaded":
        return JSONResponse(
            {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}, status_code=529
        )
    if body.get("stream"):
        return await _stream(request, anthropic_events(model), named=True)
    return JSONResponse(_without_usage(anthropic_message(model), directive(body)))


def fake_provider_app() -> Starlette:
    return Starlette(
        routes=[
            Route("/v1/chat/completions", _chat, methods=["POST"]),
            Route("/v1/responses", _responses, methods=["POST"]),
            Route("/v1/messages", _messages, methods=["POST"]),
            Route("/api/v1/chat/completions", _openrouter, methods=["POST"]),
        ]
    )


class RecordingUpstream:
    """fake_provider_app(), keeping the path of every request it is sent (`seen`), and answering
    the paths of `extra` with their JSON body (endpoints the fake lacks: Anthropic's
    count_tokens, OpenAI's embeddings)."""

    def __init__(self, extra: dict[str, Any] | None = None) -> None:
        self.app = fake_provider_app()
        self.extra = extra or {}
        self.seen: list[str] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        _, replay = await read_whole_body(receive)
        self.seen.append(scope["path"])
        if scope["path"] in self.extra:
            return await JSONResponse(self.extra[scope["path"]])(scope, replay, send)
        return await self.app(scope, replay, send)


@contextlib.contextmanager
def serve_app(app: Any) -> Iterator[str]:
    """Serve an ASGI app with uvicorn on 127.0.0.1 (a free port) in a thread; yields its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(20)
        sock.close()
