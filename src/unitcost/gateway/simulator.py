"""A simulated OpenAI + Anthropic upstream (`unitcost simulate-provider`).

It is a simulator, not a model: it answers instantly (or after a configured latency) with a
made-up reply, but its payloads, usage objects, stream events and errors have the shapes of
the real APIs, so a gateway, an SDK or a benchmark can be tested end to end without keys.

- OpenAI: `/v1/chat/completions` (stream with `stream_options.include_usage`), `/v1/responses`
  (stream ends with `response.completed`), `/v1/embeddings`, `/v1/models`;
  usage has `prompt_tokens_details.cached_tokens` and `completion_tokens_details.reasoning_tokens`.
- Anthropic: `/v1/messages` (stream: message_start ... message_delta, message_stop); usage
  has uncached `input_tokens`, `cache_read_input_tokens`, `cache_creation_input_tokens` and
  the `cache_creation` 5m/1h split; `/v1/messages/count_tokens` (`{"input_tokens": N}`).
- An answer cut by the request's max tokens (sim:output above it) ends as each API says so:
  Chat `finish_reason: "length"`, Responses `status: "incomplete"` with
  `incomplete_details.reason: "max_output_tokens"` (stream: `response.incomplete`),
  Anthropic `stop_reason: "max_tokens"`.

Behaviour is steered by directives written anywhere in the prompt text, so they pass
through any client and gateway unchanged:

    sim:cached=1024        cached (read) prompt tokens
    sim:reasoning=200      reasoning tokens (part of the output tokens)
    sim:cache_write_5m=N   Anthropic 5-minute cache writes; sim:cache_write_1h=N one-hour writes
    sim:output=N           output tokens the answer wants (default 16), cut at the max tokens
    sim:status=429         always answer this HTTP error (429, 500, 503, 529, 400, ...)
    sim:fail_first=2       fail the first 2 requests with this prompt (503 unless sim:status names one)
    sim:latency_ms=300     extra service time for this request
    sim:chunk_ms=100       pause between the events of a stream
    sim:input=N            report N prompt tokens (default: about one per 4 characters)

Prompt tokens are estimated (one per four characters plus framing), not tokenised: the
simulator is a stand-in for an upstream's *accounting*, which is what the gateway records.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import orjson

from .httpserver import Request, Response
from .records import new_event_id
from .tokens import prompt_texts

_DIRECTIVE = re.compile(r"sim:(\w+)=([\w.\-]+)")
_ANTHROPIC_ERRORS = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}
_OPENAI_ERRORS = {400: "invalid_request_error", 401: "invalid_request_error", 429: "rate_limit_exceeded"}


def _hex_id() -> str:
    """Random hex like uuid4().hex, from a pooled buffer: uuid4 costs a getrandom(2) per id,
    and this process shares the benchmark machine's cores with what it measures."""
    return new_event_id()


def _json(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(payload), status, headers)


def _events(chunks: AsyncIterator[bytes], pause_s: float) -> Response:
    paced = _paced(chunks, pause_s) if pause_s else chunks
    return Response(b"", 200, {"cache-control": "no-cache"}, "text/event-stream", paced)


async def _paced(chunks: AsyncIterator[bytes], pause_s: float) -> AsyncIterator[bytes]:
    first = True
    async for chunk in chunks:
        if not first:
            await asyncio.sleep(pause_s)
        first = False
        yield chunk


def _sse(name: str | None, payload: Any) -> bytes:
    data = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    return (f"event: {name}\n".encode() if name else b"") + b"data: " + data + b"\n\n"


class Plan:
    """What to answer for one request: token counts, reply, latency, error."""

    def __init__(self, body: Mapping[str, Any], default_latency_s: float, seen: Counter[str]) -> None:
        texts = prompt_texts(body)
        joined = " ".join(texts)
        directives = {k: v for k, v in _DIRECTIVE.findall(joined)}
        messages = body.get("messages")
        framing = 3 + 4 * (len(messages) if isinstance(messages, list) else 1)
        estimate = sum(len(t) for t in texts) // 4 + framing
        self.input = int(directives.get("input", estimate))
        self.cached = min(int(directives.get("cached", 0)), self.input)
        self.write_5m = int(directives.get("cache_write_5m", 0))
        self.write_1h = int(directives.get("cache_write_1h", 0))
        self.input = max(self.input, self.cached + self.write_5m + self.write_1h)
        cap = next(
            (
                body[k]
                for k in ("max_completion_tokens", "max_tokens", "max_output_tokens")
                if isinstance(body.get(k), int)
            ),
            None,
        )
        wanted = int(directives.get("output", 16))
        self.output = wanted if cap is None else min(wanted, cap)
        self.cut = self.output < wanted
        """The answer stops at the request's max tokens, not where the model would have."""
        self.reasoning = min(int(directives.get("reasoning", 0)), self.output)
        self.latency_s = default_latency_s + int(directives.get("latency_ms", 0)) / 1000
        self.chunk_s = int(directives.get("chunk_ms", 0)) / 1000
        self.status = int(directives["status"]) if "status" in directives else None
        if "fail_first" in directives and self.status is None:
            seen[joined] += 1
            if seen[joined] <= int(directives["fail_first"]):
                self.status = int(directives.get("fail_status", 503))
        model = str(body.get("model", "sim"))
        visible = max(self.output - self.reasoning, 1)
        self.reply = f"[{model}] " + " ".join(["ok"] * max(visible - 3, 1))
        self.model = model


class Simulator:
    def __init__(self, *, latency_ms: float = 0.0) -> None:
        self.latency_s = latency_ms / 1000
        self.requests: Counter[str] = Counter()
        self._seen: Counter[str] = Counter()
        self._routes: dict[str, tuple[str, Callable[[Request], Awaitable[Response]]]] = {
            "/v1/chat/completions": ("POST", self.chat),
            "/v1/responses": ("POST", self.responses),
            "/v1/embeddings": ("POST", self.embeddings),
            "/v1/messages": ("POST", self.messages),
            "/v1/messages/count_tokens": ("POST", self.count_tokens),
            "/v1/models": ("GET", self.models),
            "/sim/stats": ("GET", self.stats),
        }

    async def handle(self, request: Request) -> Response:
        """The HTTP server's handler."""
        route = self._routes.get(request.path)
        if route is None or route[0] != request.method:
            return _json({"error": {"message": f"no such endpoint: {request.method} {request.path}"}}, 404)
        return await route[1](request)

    async def _plan(self, request: Request, endpoint: str) -> tuple[dict[str, Any], Plan]:
        self.requests[endpoint] += 1
        body = orjson.loads(request.body)
        plan = Plan(body, self.latency_s, self._seen)
        if plan.latency_s:
            await asyncio.sleep(plan.latency_s)
        return body, plan

    async def stats(self, request: Request) -> Response:
        return _json(dict(self.requests))

    async def models(self, request: Request) -> Response:
        return _json(
            {"object": "list", "data": [{"id": "sim", "object": "model", "created": 0, "owned_by": "sim"}]}
        )

    # ------------------------------------------------------------------ OpenAI

    def _openai_error(self, status: int) -> Response:
        kind = _OPENAI_ERRORS.get(status, "server_error")
        return _json(
            {"error": {"message": f"simulated error {status}", "type": kind, "param": None, "code": kind}},
            status,
            {"retry-after": "0"} if status == 429 else None,
        )

    @staticmethod
    def _chat_usage(plan: Plan) -> dict[str, Any]:
        return {
            "prompt_tokens": plan.input,
            "completion_tokens": plan.output,
            "total_tokens": plan.input + plan.output,
            "prompt_tokens_details": {"cached_tokens": plan.cached, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": plan.reasoning,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }

    async def chat(self, request: Request) -> Response:
        body, plan = await self._plan(request, "chat")
        if plan.status:
            return self._openai_error(plan.status)
        cid, created = "chatcmpl-" + _hex_id()[:24], int(time.time())
        finish = "length" if plan.cut else "stop"
        base = {"id": cid, "object": "chat.completion", "created": created, "model": plan.model}
        if not body.get("stream"):
            message = {"role": "assistant", "content": plan.reply, "refusal": None}
            choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": finish}
            return _json(
                {**base, "choices": [choice], "usage": self._chat_usage(plan), "service_tier": "default"}
            )
        options = body.get("stream_options") or {}
        include = bool(options.get("include_usage"))

        async def events() -> AsyncIterator[bytes]:
            chunk = {**base, "object": "chat.completion.chunk", "system_fingerprint": None}
            extra = {"usage": None} if include else {}
            pieces = [plan.reply[i : i + 12] for i in range(0, len(plan.reply), 12)]
            first = {"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}
            yield _sse(None, {**chunk, "choices": [first], **extra})
            for piece in pieces:
                choice = {"index": 0, "delta": {"content": piece}, "finish_reason": None}
                yield _sse(None, {**chunk, "choices": [choice], **extra})
            last = {"index": 0, "delta": {}, "finish_reason": finish}
            yield _sse(None, {**chunk, "choices": [last], **extra})
            if include:
                yield _sse(None, {**chunk, "choices": [], "usage": self._chat_usage(plan)})
            yield b"data: [DONE]\n\n"

        return _events(events(), plan.chunk_s)

    async def responses(self, request: Request) -> Response:
        body, plan = await self._plan(request, "responses")
        if plan.status:
            return self._openai_error(plan.status)
        rid = "resp_" + _hex_id()
        usage = {
            "input_tokens": plan.input,
            "input_tokens_details": {"cached_tokens": plan.cached},
            "output_tokens": plan.output,
            "output_tokens_details": {"reasoning_tokens": plan.reasoning},
            "total_tokens": plan.input + plan.output,
        }
        text = {"type": "output_text", "text": plan.reply, "annotations": []}
        status = "incomplete" if plan.cut else "completed"
        item: dict[str, Any] = {
            "id": "msg_" + _hex_id(),
            "type": "message",
            "status": status,
            "role": "assistant",
        }
        item["content"] = [text]
        done = {
            "id": rid,
            "object": "response",
            "created_at": int(time.time()),
            "status": status,
            "incomplete_details": {"reason": "max_output_tokens"} if plan.cut else None,
            "model": plan.model,
            "output": [item],
            "usage": usage,
            "parallel_tool_calls": True,
            "tool_choice": "auto",
            "tools": [],
        }
        if not body.get("stream"):
            return _json(done)

        async def events() -> AsyncIterator[bytes]:
            created = {
                **done,
                "status": "in_progress",
                "incomplete_details": None,
                "output": [],
                "usage": None,
            }
            yield _sse(
                "response.created", {"type": "response.created", "sequence_number": 0, "response": created}
            )
            delta = {
                "type": "response.output_text.delta",
                "item_id": item["id"],
                "output_index": 0,
                "content_index": 0,
                "delta": plan.reply,
                "sequence_number": 1,
            }
            yield _sse("response.output_text.delta", delta)
            end = "response.incomplete" if plan.cut else "response.completed"
            yield _sse(end, {"type": end, "sequence_number": 2, "response": done})

        return _events(events(), plan.chunk_s)

    async def embeddings(self, request: Request) -> Response:
        body, plan = await self._plan(request, "embeddings")
        if plan.status:
            return self._openai_error(plan.status)
        inputs = body.get("input")
        count = len(inputs) if isinstance(inputs, list) and inputs and not isinstance(inputs[0], int) else 1
        data = [
            {"object": "embedding", "index": i, "embedding": [0.0, 0.25, -0.5, 1.0]} for i in range(count)
        ]
        usage = {"prompt_tokens": plan.input, "total_tokens": plan.input}
        return _json({"object": "list", "data": data, "model": plan.model, "usage": usage})

    # ------------------------------------------------------------------ Anthropic

    @staticmethod
    def _anthropic_error(status: int) -> Response:
        kind = _ANTHROPIC_ERRORS.get(status, "api_error")
        return _json(
            {"type": "error", "error": {"type": kind, "message": f"simulated error {status}"}},
            status,
            {"retry-after": "0"} if status == 429 else None,
        )

    async def messages(self, request: Request) -> Response:
        body, plan = await self._plan(request, "messages")
        if plan.status:
            return self._anthropic_error(plan.status)
        uncached = plan.input - plan.cached - plan.write_5m - plan.write_1h
        stop_reason = "max_tokens" if plan.cut else "end_turn"
        usage: dict[str, Any] = {
            "input_tokens": uncached,
            "cache_creation_input_tokens": plan.write_5m + plan.write_1h,
            "cache_read_input_tokens": plan.cached,
            "cache_creation": {
                "ephemeral_5m_input_tokens": plan.write_5m,
                "ephemeral_1h_input_tokens": plan.write_1h,
            },
            "output_tokens": plan.output,
            "service_tier": "standard",
        }
        message = {
            "id": "msg_" + _hex_id()[:24],
            "type": "message",
            "role": "assistant",
            "model": plan.model,
            "content": [{"type": "text", "text": plan.reply}],
            "stop_reason": stop_reason,
            "stop_sequence": None,
            "usage": usage,
        }
        if not body.get("stream"):
            return _json(message)

        async def events() -> AsyncIterator[bytes]:
            start = {**message, "content": [], "stop_reason": None, "usage": {**usage, "output_tokens": 1}}
            yield _sse("message_start", {"type": "message_start", "message": start})
            block = {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
            yield _sse("content_block_start", block)
            yield _sse("ping", {"type": "ping"})
            for i in range(0, len(plan.reply), 12):
                delta = {"type": "text_delta", "text": plan.reply[i : i + 12]}
                yield _sse("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta})
            yield _sse("content_block_stop", {"type": "content_block_stop", "index": 0})
            final_usage = {
                "output_tokens": plan.output,
                "input_tokens": uncached,
                "cache_creation_input_tokens": plan.write_5m + plan.write_1h,
                "cache_read_input_tokens": plan.cached,
            }
            ending: dict[str, Any] = {
                "type": "message_delta",
                "delta": {"stop_reason": stop_reason, "stop_sequence": None},
            }
            yield _sse("message_delta", {**ending, "usage": final_usage})
            yield _sse("message_stop", {"type": "message_stop"})

        return _events(events(), plan.chunk_s)

    async def count_tokens(self, request: Request) -> Response:
        """Anthropic's token count: the prompt's tokens as a message would report them in total."""
        _, plan = await self._plan(request, "count_tokens")
        if plan.status:
            return self._anthropic_error(plan.status)
        return _json({"input_tokens": plan.input})
