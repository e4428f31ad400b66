"""Opt-in instrumentation of the official `openai` and `anthropic` clients.

`unitcost.instrument()` wraps the `create` methods of OpenAI Chat Completions, Responses and
Embeddings and Anthropic Messages (sync and async), so every call is recorded with the
attribution of the enclosing `unitcost.tags(...)` block, with no change at call sites.
Streams are passed through chunk by chunk and recorded when they end; the body of a
`with_streaming_response` call is read by the caller and its usage taken as it passes by.
Failed calls are recorded as errors (zero tokens) with their HTTP status, and the exception is
re-raised; each attempt the SDK retries is recorded as a failed attempt, and the next one as its
retry. Recording problems never break the caller's call: they are logged.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import importlib
import inspect
import logging
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from ..events import USAGE_UNKNOWN_TAG
from . import tagging
from .recorder import Recorder, recorder
from .responses import (
    NO_FINAL_USAGE,
    UnrecognisedResponseError,
    final_usage_missing,
    get,
    normalise_response,
)

log = logging.getLogger("unitcost.instrument")

_RAW_RESPONSE_HEADER = "X-Stainless-Raw-Response"

# (module, class, methods). `create` and `parse` return a response (or, with stream=True, a
# stream); Anthropic's `stream()` helper returns a stream manager. OpenAI's `stream()` helpers
# call `create` themselves, so they are not wrapped again. `beta.chat` is the same class as `chat`.
_TARGETS: dict[str, tuple[tuple[str, str, tuple[str, ...]], ...]] = {
    "openai": (
        ("openai.resources.chat.completions", "Completions", ("create", "parse")),
        ("openai.resources.chat.completions", "AsyncCompletions", ("create", "parse")),
        ("openai.resources.responses", "Responses", ("create", "parse")),
        ("openai.resources.responses", "AsyncResponses", ("create", "parse")),
        ("openai.resources.beta.responses.responses", "Responses", ("create",)),
        ("openai.resources.beta.responses.responses", "AsyncResponses", ("create",)),
        ("openai.resources.embeddings", "Embeddings", ("create",)),
        ("openai.resources.embeddings", "AsyncEmbeddings", ("create",)),
    ),
    "anthropic": (
        ("anthropic.resources.messages", "Messages", ("create", "parse", "stream")),
        ("anthropic.resources.messages", "AsyncMessages", ("create", "parse", "stream")),
        ("anthropic.resources.beta.messages", "Messages", ("create", "parse", "stream")),
        ("anthropic.resources.beta.messages", "AsyncMessages", ("create", "parse", "stream")),
    ),
}
# Each SDK sleeps in `_sleep_for_retry` between a failed attempt and its retry: the moment to
# record the attempt that failed.
_RETRY_SLEEP = "_sleep_for_retry"
_CLIENTS: dict[str, tuple[tuple[str, str], ...]] = {
    "openai": (("openai._base_client", "SyncAPIClient"), ("openai._base_client", "AsyncAPIClient")),
    "anthropic": (("anthropic._base_client", "SyncAPIClient"), ("anthropic._base_client", "AsyncAPIClient")),
}
_ORIGINAL = "__unitcost_original__"


def _patch_targets(sdk: str) -> Iterator[tuple[str, type, str]]:
    """(where, class, method name) of what instrument() wraps in `sdk`, for the classes installed."""
    for module_name, class_name, names in _TARGETS[sdk]:
        for name in names:
            yield from _found(module_name, class_name, name)
    for module_name, class_name in _CLIENTS[sdk]:
        yield from _found(module_name, class_name, _RETRY_SLEEP)


def _found(module_name: str, class_name: str, name: str) -> Iterator[tuple[str, type, str]]:
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError):
        return
    if name in cls.__dict__:
        yield f"{module_name}.{class_name}.{name}", cls, name


def instrument(*, openai: bool = True, anthropic: bool = True, into: Recorder | None = None) -> list[str]:
    """Patch the installed SDKs. Returns what was instrumented. Calling it twice changes nothing."""
    done: list[str] = []
    for sdk, wanted in (("openai", openai), ("anthropic", anthropic)):
        if not wanted:
            continue
        for where, cls, name in _patch_targets(sdk):
            method = cls.__dict__[name]
            if hasattr(method, _ORIGINAL):
                continue
            setattr(cls, name, _wrapped(method, name, cls.__name__, into))
            done.append(where)
    return done


def _wrapped(
    method: Callable[..., Any], name: str, class_name: str, into: Recorder | None
) -> Callable[..., Any]:
    if name == _RETRY_SLEEP:
        wrapped = _retry_sleep_wrapper(method)
    elif name == "stream":
        wrapped = _stream_helper_wrapper(method, into)
    elif class_name.startswith("Async"):
        wrapped = _async_wrapper(method, into)
    else:
        wrapped = _wrapper(method, into)
    setattr(wrapped, _ORIGINAL, method)
    return wrapped


def uninstrument() -> None:
    for sdk in _TARGETS:
        for _, cls, name in _patch_targets(sdk):
            method = cls.__dict__[name]
            if hasattr(method, _ORIGINAL):
                setattr(cls, name, getattr(method, _ORIGINAL))


def _safe_record(into: Recorder | None, response: Any, context: Mapping[str, Any], **fields: Any) -> None:
    target = into or recorder()
    try:
        try:
            with tagging.restored(context):
                target.record(response, **fields)
        except UnrecognisedResponseError as exc:
            if not fields.get("model"):
                raise
            # The call was made and may well be billed: keep it, unpriced with the reason
            # (`usage_unknown`), rather than lose it or price it as zero tokens.
            with tagging.restored(context):
                _record_usage_unknown(target, str(exc), fields)
    except Exception as exc:  # recording must never break the call it observes
        log.warning("unitcost: call not recorded: %s", exc)


def _record_usage_unknown(target: Recorder, reason: str, fields: dict[str, Any]) -> None:
    tags = {**fields.get("tags", {}), USAGE_UNKNOWN_TAG: reason}
    target.record(None, **{**fields, "tags": tags})


def _raw_kind(kwargs: dict[str, Any]) -> str | None:
    """`with_raw_response` ("true", "raw") or `with_streaming_response` ("stream") calls."""
    headers = kwargs.get("extra_headers")
    value = headers.get(_RAW_RESPONSE_HEADER) if isinstance(headers, dict) else None
    return value if isinstance(value, str) else None


@dataclass
class _Attempt:
    """The attempt under way of one instrumented call. The SDKs retry inside the call: each
    failed attempt is recorded when the SDK sleeps before its retry, and the next attempt is
    recorded as its retry (`attempt`, `retry_of`)."""

    into: Recorder | None
    model: str | None
    started: float = field(default_factory=time.perf_counter)
    number: int = 1
    retry_of: str | None = None
    context: Mapping[str, Any] = field(default_factory=tagging.current)
    """The `unitcost.tags` in force when the call was made: a stream read after the block ended
    (returned to a web framework that streams it) is still the block's call."""

    def fields(self) -> dict[str, Any]:
        """The event fields of this attempt, ending now."""
        fields: dict[str, Any] = {
            "latency_ms": self.elapsed_ms(),
            "_requested_model": self.model,
            "_context": self.context,
            "attempt": self.number,
        }
        if self.retry_of is not None:
            fields["retry_of"] = self.retry_of
        return fields

    def elapsed_ms(self) -> float:
        return (time.perf_counter() - self.started) * 1000.0

    def failed(self, response: Any, error: BaseException | None) -> None:
        """Record this attempt as failed (the SDK retries it) and start the next one."""
        event_id = uuid.uuid4().hex
        fields = self.fields()
        if response is not None:  # an HTTP error status the SDK retries (408, 409, 429, 5xx)
            fields.update(status="error", http_status=getattr(response, "status_code", None))
            _finish(self.into, None, {**fields, "input_tokens": 0, "output_tokens": 0, "event_id": event_id})
        else:  # a timeout or a connection error
            _finish(self.into, error, {**fields, "event_id": event_id})
        self.number += 1
        self.retry_of = event_id


_ATTEMPT: contextvars.ContextVar[_Attempt | None] = contextvars.ContextVar("unitcost_attempt", default=None)


@contextlib.contextmanager
def _attempting(attempt: _Attempt) -> Iterator[_Attempt]:
    token = _ATTEMPT.set(attempt)
    try:
        yield attempt
    finally:
        _ATTEMPT.reset(token)


@contextlib.contextmanager
def _ending(end: Callable[..., None]) -> Iterator[None]:
    """Around a pass-through iteration of a body: `end()` when the caller stops reading (break,
    close, garbage collection), `end(error=...)` when the source fails, `end(finished=True)`
    when it is read to its end."""
    try:
        yield
    except GeneratorExit:
        end()
        raise
    except Exception as exc:
        end(error=exc)
        raise
    end(finished=True)


def _retry_sleep_wrapper(method: Callable[..., Any]) -> Callable[..., Any]:
    """The SDK is about to retry: the attempt that failed is recorded, and the retry is the next one."""

    def before(kwargs: dict[str, Any]) -> _Attempt | None:
        attempt = _ATTEMPT.get()
        if attempt is not None:
            try:  # called inside the SDK's `except`: the error is the one being handled
                attempt.failed(kwargs.get("response"), sys.exc_info()[1])
            except Exception as exc:  # recording must never break the call it observes
                log.warning("unitcost: failed attempt not recorded: %s", exc)
        return attempt

    if inspect.iscoroutinefunction(method):

        @functools.wraps(method)
        async def async_sleep(self: Any, *args: Any, **kwargs: Any) -> Any:
            attempt = before(kwargs)
            result = await method(self, *args, **kwargs)
            if attempt is not None:
                attempt.started = time.perf_counter()
            return result

        return async_sleep

    @functools.wraps(method)
    def sleep(self: Any, *args: Any, **kwargs: Any) -> Any:
        attempt = before(kwargs)
        result = method(self, *args, **kwargs)
        if attempt is not None:
            attempt.started = time.perf_counter()
        return result

    return sleep


def _finish(into: Recorder | None, response: Any, fields: dict[str, Any]) -> None:
    context = fields.pop("_context", None)
    if context is None:
        context = tagging.current()
    requested = fields.pop("_requested_model", None)
    if requested and not isinstance(response, BaseException):
        # The ledger's `model` is the model as requested; the response names the one served.
        fields["model"] = requested
        served = get(response, "model") if not isinstance(response, (list, tuple)) else None
        if served and served != requested:
            fields["served_model"] = served
    elif requested:
        fields["model"] = requested
    _safe_record(into, response, context, **fields)


def _finish_partial(
    into: Recorder | None, response: Any, fields: dict[str, Any], *, complete: bool, why: str
) -> None:
    """Record a call whose response may be partial (a stream that broke or was closed early) or
    missing: what it reported is kept, and without usage the call is recorded unpriced with `why`."""
    if response is not None and not complete:
        try:  # what arrived so far (Anthropic's message_start has the prompt usage)
            partial = normalise_response(response)
        except UnrecognisedResponseError:
            response = None
        else:  # a part reported up front cannot exceed the output counted so far
            output = partial.get("output_tokens", 0)
            if partial.get("reasoning_tokens", 0) > output:
                fields["reasoning_tokens"] = output
            if final_usage_missing(response):  # kept, but not priced as a one-token answer
                fields["tags"] = {USAGE_UNKNOWN_TAG: NO_FINAL_USAGE}
    if response is None:
        fields["tags"] = {USAGE_UNKNOWN_TAG: why}
    _finish(into, response, fields)


def _ended_by(error: BaseException | None, fields: dict[str, Any]) -> str:
    """Status fields for a stream that ended early; the reason its usage may be missing."""
    if error is not None:
        outcome = normalise_response(error)
        fields.update(status=outcome["status"], http_status=outcome.get("http_status"))
        return f"the stream failed before its usage was reported ({type(error).__name__})"
    fields["status"] = "cancelled"
    return "the stream was closed before its usage was reported"


def _wrapper(method: Callable[..., Any], into: Recorder | None) -> Callable[..., Any]:
    @functools.wraps(method)
    def create(self: Any, *args: Any, **kwargs: Any) -> Any:
        with _attempting(_Attempt(into, kwargs.get("model"))) as attempt:
            try:
                result = method(self, *args, **kwargs)
            except Exception as exc:
                _finish(into, exc, attempt.fields())
                raise
        if _raw_kind(kwargs) not in (None, "stream") and not kwargs.get("stream"):
            # `with_raw_response`: the SDK caches what parse() returns, so the caller gets the
            # same object when it parses in turn.
            try:
                parsed = result.parse()
            except Exception as exc:
                log.warning("unitcost: call not recorded: %s", exc)
                return result
            _finish(into, parsed, attempt.fields())
            return result
        return _observed(result, attempt, kwargs)

    return create


def _async_wrapper(method: Callable[..., Any], into: Recorder | None) -> Callable[..., Any]:
    @functools.wraps(method)
    async def create(self: Any, *args: Any, **kwargs: Any) -> Any:
        with _attempting(_Attempt(into, kwargs.get("model"))) as attempt:
            try:
                result = await method(self, *args, **kwargs)
            except Exception as exc:
                _finish(into, exc, attempt.fields())
                raise
        if _raw_kind(kwargs) not in (None, "stream") and not kwargs.get("stream"):
            try:
                parsed = result.parse()
                if inspect.isawaitable(parsed):  # the SDKs' AsyncAPIResponse
                    parsed = await parsed
            except Exception as exc:
                log.warning("unitcost: call not recorded: %s", exc)
                return result
            _finish(into, parsed, attempt.fields())
            return result
        return _observed(result, attempt, kwargs)

    return create


def _observed(result: Any, attempt: _Attempt, kwargs: dict[str, Any]) -> Any:
    """What the caller gets back, arranged so that the call is recorded once its usage is known."""
    raw = _raw_kind(kwargs)
    if raw == "stream":
        # `with_streaming_response`: the caller reads the body; its usage is taken as it passes.
        _BodyTap.install(result, attempt)
        return result
    if raw is not None and kwargs.get("stream"):
        return _RecordedRawResponse(result, attempt)
    if kwargs.get("stream"):
        return _RecordedStream(result, attempt)
    _finish(attempt.into, result, attempt.fields())
    return result


class _RecordedRawResponse:
    """A raw response to a streamed call: its parse() gives the stream, recorded."""

    def __init__(self, raw: Any, attempt: _Attempt) -> None:
        self._raw = raw
        self._attempt = attempt
        self._parsed: Any = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._raw, name)

    def parse(self, *args: Any, **kwargs: Any) -> Any:
        if self._parsed is None:
            parsed = self._raw.parse(*args, **kwargs)
            if inspect.isawaitable(parsed):
                return self._parse_async(parsed)
            self._parsed = _RecordedStream(parsed, self._attempt)
        return self._parsed

    async def _parse_async(self, parsed: Any) -> Any:
        if self._parsed is None:
            self._parsed = _RecordedStream(await parsed, self._attempt)
        return self._parsed


class _RecordedStream:
    """Passes a stream's chunks through and records the call when the stream ends: exhausted
    (with the usage its last chunks carry), broken by an error (a failed attempt), or closed
    early by the caller (cancelled). A call whose stream reported no usage is recorded with the
    reason (`usage_unknown`), unpriced, never lost or priced as zero tokens."""

    def __init__(self, stream: Any, attempt: _Attempt) -> None:
        self._stream = stream
        self._attempt = attempt
        self._chunks: list[Any] = []
        self._ttft: float | None = None
        self._done = False
        self._iterator: Any = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)

    def _seen(self, chunk: Any) -> None:
        if self._ttft is None:
            self._ttft = self._attempt.elapsed_ms()
        self._chunks.append(chunk)

    def _end(self, *, finished: bool = False, error: BaseException | None = None) -> None:
        if self._done:
            return
        self._done = True
        fields = {**self._attempt.fields(), "ttft_ms": self._ttft}
        why = "the stream ended without any chunk" if finished else _ended_by(error, fields)
        _finish_partial(self._attempt.into, self._chunks or None, fields, complete=finished, why=why)

    def _iterate(self) -> Any:
        with _ending(self._end):
            for chunk in self._stream:
                self._seen(chunk)
                yield chunk

    def __iter__(self) -> Any:
        return self._iterate()

    def __next__(self) -> Any:
        if self._iterator is None:
            self._iterator = self._iterate()
        return next(self._iterator)

    async def _aiterate(self) -> Any:
        with _ending(self._end):
            async for chunk in self._stream:
                self._seen(chunk)
                yield chunk

    def __aiter__(self) -> Any:
        return self._aiterate()

    async def __anext__(self) -> Any:
        if self._iterator is None:
            self._iterator = self._aiterate()
        return await self._iterator.__anext__()

    def close(self) -> Any:
        self._end()
        return self._stream.close()  # a coroutine for the async SDK streams, as the caller expects

    def __enter__(self) -> _RecordedStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self._end()
        self._stream.close()

    async def __aenter__(self) -> _RecordedStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._end()
        await self._stream.close()


# Events of a provider stream that carry usage, or say how the answer ended.
_USAGE_EVENTS = frozenset(
    {"message_start", "message_delta", "response.completed", "response.failed", "response.incomplete"}
)
_LAST_EVENTS = frozenset({"message_stop", "response.completed", "response.failed", "response.incomplete"})
BODY_NOT_READ = "the response body was closed before it was read: its usage is unknown"


class _BodyTap:
    """Reads the usage of a `with_streaming_response` call from its body while the caller reads it.

    The caller may read the body any way the SDK offers (`parse()`, `read()`, `json()`,
    `iter_bytes()`, `iter_lines()`, a streamed body's events): all of them go through the HTTP
    response's `iter_bytes`/`aiter_bytes`, which the tap wraps on that one response object. The
    bytes pass through unchanged; a JSON body is kept until it ends, an event stream is parsed as
    it goes and only its usage-bearing events are kept. The call is recorded once, when the body
    ends, fails, or is closed (the SDK's context manager closes it on exit).
    """

    def __init__(self, attempt: _Attempt, content_type: str) -> None:
        self._attempt = attempt
        self._sse = "text/event-stream" in content_type
        self._headers_ms = attempt.elapsed_ms()
        self._buffer = bytearray()  # a JSON body, or the unfinished line of an event stream
        self._data: list[bytes] = []  # data lines of the event being read
        self._first: Any = None
        self._kept: list[Any] = []
        self._error_event: Any = None
        self._last_seen = False  # the stream's own end marker ([DONE], message_stop, ...)
        self._ttft: float | None = None
        self._unreadable: str | None = None
        self._in_client = False
        self._done = False

    @classmethod
    def install(cls, api_response: Any, attempt: _Attempt) -> None:
        try:
            http = api_response.http_response
            tap = cls(attempt, str(http.headers.get("content-type", "")))
            http.iter_bytes = tap._tapped_iter(http.iter_bytes)
            http.aiter_bytes = tap._tapped_aiter(http.aiter_bytes)
            http.close = tap._tapped_close(http.close)
            http.aclose = tap._tapped_aclose(http.aclose)
        except Exception as exc:  # an SDK whose response is shaped otherwise: say so, never break the call
            log.warning("unitcost: streaming response not recorded: %s", exc)

    # ------------------------------------------------------------------ the caller's reads

    def _tapped_iter(self, original: Callable[..., Iterator[bytes]]) -> Callable[..., Iterator[bytes]]:
        def iter_bytes(*args: Any, **kwargs: Any) -> Iterator[bytes]:
            with _ending(self._end), contextlib.closing(original(*args, **kwargs)) as chunks:  # type: ignore[type-var]
                while True:
                    with self._pulling():
                        chunk = next(chunks, None)
                    if chunk is None:
                        break
                    self._seen(chunk)
                    yield chunk

        return iter_bytes

    def _tapped_aiter(self, original: Callable[..., Any]) -> Callable[..., AsyncIterator[bytes]]:
        async def aiter_bytes(*args: Any, **kwargs: Any) -> AsyncIterator[bytes]:
            with _ending(self._end):
                async with contextlib.aclosing(original(*args, **kwargs)) as chunks:
                    while True:
                        with self._pulling():
                            chunk = await anext(chunks, None)
                        if chunk is None:
                            break
                        self._seen(chunk)
                        yield chunk

        return aiter_bytes

    @contextlib.contextmanager
    def _pulling(self) -> Iterator[None]:
        """While the HTTP client reads: it closes the response itself at the body's end or on an
        error, and the read that follows says which; a close at any other time is the caller's."""
        self._in_client = True
        try:
            yield
        finally:
            self._in_client = False

    def _tapped_close(self, original: Callable[[], None]) -> Callable[[], None]:
        def close() -> None:
            try:
                original()
            finally:
                if not self._in_client:
                    self._end()

        return close

    def _tapped_aclose(self, original: Callable[[], Any]) -> Callable[[], Any]:
        async def aclose() -> None:
            try:
                await original()
            finally:
                if not self._in_client:
                    self._end()

        return aclose

    # ------------------------------------------------------------------ reading the usage

    def _seen(self, chunk: bytes) -> None:
        if self._done or self._unreadable is not None:
            return  # a body read again from the SDK's copy (read() then iter_bytes()) is not new
        try:
            if self._ttft is None:
                self._ttft = self._attempt.elapsed_ms()
            self._buffer += chunk
            if self._sse:
                self._read_lines()
        except Exception as exc:  # the call goes on; it is recorded with the reason
            self._unreadable = f"the response body could not be read for its usage: {exc}"

    def _read_lines(self) -> None:
        *lines, rest = self._buffer.split(b"\n")
        self._buffer = bytearray(rest)
        for raw in lines:
            line = raw.rstrip(b"\r")
            if not line:
                self._event_ended()
            elif line.startswith(b"data:"):
                value = line[5:]
                self._data.append(bytes(value[1:] if value.startswith(b" ") else value))

    def _event_ended(self) -> None:
        if not self._data:
            return
        data = b"\n".join(self._data)
        self._data = []
        if data == b"[DONE]":
            self._last_seen = True
            return
        event = orjson.loads(data)
        if not isinstance(event, dict):
            return
        kind = event.get("type")
        if kind == "error" or event.get("error") is not None:
            self._error_event, self._last_seen = event, True
        elif kind in _LAST_EVENTS:
            self._last_seen = True
        if self._first is None:
            self._first = event  # names the model, and the kind of stream
        elif event.get("usage") is not None or kind in _USAGE_EVENTS:
            self._kept.append(event)

    # ------------------------------------------------------------------ recording

    def _end(self, *, finished: bool = False, error: BaseException | None = None) -> None:
        if self._done:
            return
        self._done = True
        try:
            self._record(finished, error)
        except Exception as exc:  # recording must never break the call it observes
            log.warning("unitcost: call not recorded: %s", exc)

    def _record(self, finished: bool, error: BaseException | None) -> None:
        into = self._attempt.into
        fields = self._attempt.fields()
        if self._unreadable is not None:
            fields["tags"] = {USAGE_UNKNOWN_TAG: self._unreadable}
            _finish(into, None, fields)
        elif self._sse:
            self._record_events(fields, finished, error)
        elif finished:
            fields["latency_ms"] = self._headers_ms  # the whole answer was made before its headers
            _finish(into, orjson.loads(bytes(self._buffer)), fields)
        else:
            why = _ended_by(error, fields) if error is not None else BODY_NOT_READ
            fields.setdefault("status", "ok")  # a whole answer was made, and billed, unread or not
            fields["tags"] = {USAGE_UNKNOWN_TAG: why}
            _finish(into, None, fields)

    def _record_events(self, fields: dict[str, Any], finished: bool, error: BaseException | None) -> None:
        if finished:  # a last event may lack its blank line
            self._buffer += b"\n\n"
            self._read_lines()
        events = [self._first, *self._kept] if self._first is not None else []
        fields["ttft_ms"] = self._ttft
        if self._error_event is not None and not self._kept:
            _finish(self._attempt.into, self._error_event, fields)  # the provider failed the call mid-stream
            return
        complete = self._last_seen or (finished and error is None)
        why = "the stream ended without any event" if complete else _ended_by(error, fields)
        _finish_partial(self._attempt.into, events or None, fields, complete=complete, why=why)


def _stream_helper_wrapper(method: Callable[..., Any], into: Recorder | None) -> Callable[..., Any]:
    """Anthropic's `messages.stream(...)`: the manager it returns records the call on exit."""

    @functools.wraps(method)
    def stream(self: Any, *args: Any, **kwargs: Any) -> Any:
        return _RecordedStreamManager(method(self, *args, **kwargs), into, kwargs.get("model"))

    return stream


class _RecordedStreamManager:
    """Wraps a `MessageStreamManager` (sync or async): the message the stream accumulated (usage
    included) is recorded when the `with` block ends, as cancelled if the stream had not finished."""

    def __init__(self, manager: Any, into: Recorder | None, model: str | None) -> None:
        self._manager = manager
        self._into = into
        self._attempt = _Attempt(into, model)
        self._stream: Any = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._manager, name)

    def _record(self, error: BaseException | None) -> None:
        try:
            message = self._stream.current_message_snapshot if self._stream is not None else None
        except (AssertionError, AttributeError):  # no message_start arrived
            message = None
        complete = message is not None and getattr(message, "stop_reason", None) is not None
        fields = self._attempt.fields()
        why = ""
        if not complete:
            # An error of the SDK or its HTTP client failed the call; any other ended the caller's block.
            sdk_error = error if error is not None and _from_sdk(error) else None
            why = _ended_by(sdk_error, fields)
        _finish_partial(self._into, message, fields, complete=complete, why=why)

    def __enter__(self) -> Any:
        self._attempt = _Attempt(self._into, self._attempt.model)
        with _attempting(self._attempt):  # the request is sent, and retried, here
            try:
                self._stream = self._manager.__enter__()
            except Exception as exc:
                _finish(self._into, exc, self._attempt.fields())
                raise
        return self._stream

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> Any:
        try:
            return self._manager.__exit__(exc_type, exc, tb)
        finally:
            self._record(exc)

    async def __aenter__(self) -> Any:
        self._attempt = _Attempt(self._into, self._attempt.model)
        with _attempting(self._attempt):
            try:
                self._stream = await self._manager.__aenter__()
            except Exception as exc:
                _finish(self._into, exc, self._attempt.fields())
                raise
        return self._stream

    async def __aexit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> Any:
        try:
            return await self._manager.__aexit__(exc_type, exc, tb)
        finally:
            self._record(exc)


def _from_sdk(error: BaseException) -> bool:
    module = type(error).__module__.split(".", 1)[0]
    return module in ("anthropic", "openai", "httpx", "httpx2", "httpcore")
