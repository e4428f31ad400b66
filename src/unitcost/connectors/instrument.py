"""Opt-in instrumentation of the official `openai` and `anthropic` clients.

`unitcost.instrument()` wraps the `create` methods of OpenAI Chat Completions and
Responses and Anthropic Messages (sync and async), so every call is recorded with the
attribution of the enclosing `unitcost.tags(...)` block, with no change at call sites.
Streams are passed through chunk by chunk and recorded when they end. Failed calls are
recorded as errors (zero tokens) with their HTTP status, and the exception is re-raised.
Recording problems never break the caller's call: they are logged.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import logging
import time
from collections.abc import Callable
from typing import Any

from ..events import USAGE_UNKNOWN_TAG
from .recorder import Recorder, recorder
from .responses import NO_FINAL_USAGE, UnrecognisedResponseError, final_usage_missing, normalise_response

log = logging.getLogger("unitcost.instrument")

_RAW_RESPONSE_HEADER = "X-Stainless-Raw-Response"

# (module, class, methods). `create` and `parse` return a response (or, with stream=True, a
# stream); Anthropic's `stream()` helper returns a stream manager. OpenAI's `stream()` helpers
# call `create` themselves, so they are not wrapped again.
_TARGETS: dict[str, tuple[tuple[str, str, tuple[str, ...]], ...]] = {
    "openai": (
        ("openai.resources.chat.completions", "Completions", ("create", "parse")),
        ("openai.resources.chat.completions", "AsyncCompletions", ("create", "parse")),
        ("openai.resources.responses", "Responses", ("create", "parse")),
        ("openai.resources.responses", "AsyncResponses", ("create", "parse")),
    ),
    "anthropic": (
        ("anthropic.resources.messages", "Messages", ("create", "parse", "stream")),
        ("anthropic.resources.messages", "AsyncMessages", ("create", "parse", "stream")),
        ("anthropic.resources.beta.messages", "Messages", ("create", "parse", "stream")),
        ("anthropic.resources.beta.messages", "AsyncMessages", ("create", "parse", "stream")),
    ),
}
_ORIGINAL = "__unitcost_original__"


def instrument(*, openai: bool = True, anthropic: bool = True, into: Recorder | None = None) -> list[str]:
    """Patch the installed SDKs. Returns what was instrumented. Calling it twice changes nothing."""
    done: list[str] = []
    for sdk, wanted in (("openai", openai), ("anthropic", anthropic)):
        if not wanted:
            continue
        for module_name, class_name, names in _TARGETS[sdk]:
            try:
                cls = getattr(importlib.import_module(module_name), class_name)
            except (ImportError, AttributeError):
                continue
            for name in names:
                method = cls.__dict__.get(name)
                if method is None or hasattr(method, _ORIGINAL):
                    continue
                if name == "stream":
                    wrapped = _stream_helper_wrapper(method, into)
                elif class_name.startswith("Async"):
                    wrapped = _async_wrapper(method, into)
                else:
                    wrapped = _wrapper(method, into)
                setattr(wrapped, _ORIGINAL, method)
                setattr(cls, name, wrapped)
                done.append(f"{module_name}.{class_name}.{name}")
    return done


def uninstrument() -> None:
    for targets in _TARGETS.values():
        for module_name, class_name, names in targets:
            try:
                cls = getattr(importlib.import_module(module_name), class_name)
            except (ImportError, AttributeError):
                continue
            for name in names:
                method = cls.__dict__.get(name)
                if method is not None and hasattr(method, _ORIGINAL):
                    setattr(cls, name, getattr(method, _ORIGINAL))


def _safe_record(into: Recorder | None, response: Any, **fields: Any) -> None:
    target = into or recorder()
    try:
        try:
            target.record(response, **fields)
        except UnrecognisedResponseError as exc:
            if not fields.get("model"):
                raise
            # The call was made and may well be billed: keep it, unpriced with the reason
            # (`usage_unknown`), rather than lose it or price it as zero tokens.
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


def _call_fields(kwargs: dict[str, Any], started: float) -> dict[str, Any]:
    return {"latency_ms": (time.perf_counter() - started) * 1000.0, "_requested_model": kwargs.get("model")}


def _finish(into: Recorder | None, response: Any, fields: dict[str, Any]) -> None:
    requested = fields.pop("_requested_model", None)
    if requested and not isinstance(response, BaseException):
        # The ledger's `model` is the model as requested; the response names the one served.
        fields["model"] = requested
        served = getattr(response, "model", None)
        if served and served != requested:
            fields["served_model"] = served
    elif requested:
        fields["model"] = requested
    _safe_record(into, response, **fields)


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
        started = time.perf_counter()
        try:
            result = method(self, *args, **kwargs)
        except Exception as exc:
            _finish(into, exc, _call_fields(kwargs, started))
            raise
        raw = _raw_kind(kwargs)
        if raw == "stream":
            return result  # the caller reads the body itself; reading it here would consume it
        if raw is not None:
            # `with_raw_response`: the SDK caches what parse() returns, so the caller gets the
            # same object (or, for a stream, the recorded stream) when it parses in turn.
            if kwargs.get("stream"):
                return _RecordedRawResponse(result, into, kwargs.get("model"), started)
            try:
                parsed = result.parse()
            except Exception as exc:
                log.warning("unitcost: call not recorded: %s", exc)
                return result
            _finish(into, parsed, _call_fields(kwargs, started))
            return result
        if kwargs.get("stream"):
            return _RecordedStream(result, into, kwargs.get("model"), started)
        _finish(into, result, _call_fields(kwargs, started))
        return result

    return create


def _async_wrapper(method: Callable[..., Any], into: Recorder | None) -> Callable[..., Any]:
    @functools.wraps(method)
    async def create(self: Any, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            result = await method(self, *args, **kwargs)
        except Exception as exc:
            _finish(into, exc, _call_fields(kwargs, started))
            raise
        raw = _raw_kind(kwargs)
        if raw == "stream":
            return result
        if raw is not None:
            if kwargs.get("stream"):
                return _RecordedRawResponse(result, into, kwargs.get("model"), started)
            try:
                parsed = result.parse()
                if inspect.isawaitable(parsed):  # anthropic's AsyncAPIResponse
                    parsed = await parsed
            except Exception as exc:
                log.warning("unitcost: call not recorded: %s", exc)
                return result
            _finish(into, parsed, _call_fields(kwargs, started))
            return result
        if kwargs.get("stream"):
            return _RecordedStream(result, into, kwargs.get("model"), started)
        _finish(into, result, _call_fields(kwargs, started))
        return result

    return create


class _RecordedRawResponse:
    """A raw response to a streamed call: its parse() gives the stream, recorded."""

    def __init__(self, raw: Any, into: Recorder | None, model: str | None, started: float) -> None:
        self._raw = raw
        self._into = into
        self._model = model
        self._started = started
        self._parsed: Any = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._raw, name)

    def parse(self, *args: Any, **kwargs: Any) -> Any:
        if self._parsed is None:
            parsed = self._raw.parse(*args, **kwargs)
            if inspect.isawaitable(parsed):
                return self._parse_async(parsed)
            self._parsed = _RecordedStream(parsed, self._into, self._model, self._started)
        return self._parsed

    async def _parse_async(self, parsed: Any) -> Any:
        if self._parsed is None:
            self._parsed = _RecordedStream(await parsed, self._into, self._model, self._started)
        return self._parsed


class _RecordedStream:
    """Passes a stream's chunks through and records the call when the stream ends: exhausted
    (with the usage its last chunks carry), broken by an error (a failed attempt), or closed
    early by the caller (cancelled). A call whose stream reported no usage is recorded with the
    reason (`usage_unknown`), unpriced, never lost or priced as zero tokens."""

    def __init__(self, stream: Any, into: Recorder | None, model: str | None, started: float) -> None:
        self._stream = stream
        self._into = into
        self._model = model
        self._started = started
        self._chunks: list[Any] = []
        self._ttft: float | None = None
        self._done = False
        self._iterator: Any = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)

    def _seen(self, chunk: Any) -> None:
        if self._ttft is None:
            self._ttft = (time.perf_counter() - self._started) * 1000.0
        self._chunks.append(chunk)

    def _end(self, *, finished: bool = False, error: BaseException | None = None) -> None:
        if self._done:
            return
        self._done = True
        fields: dict[str, Any] = {
            "latency_ms": (time.perf_counter() - self._started) * 1000.0,
            "ttft_ms": self._ttft,
            "_requested_model": self._model,
        }
        why = "the stream ended without any chunk" if finished else _ended_by(error, fields)
        _finish_partial(self._into, self._chunks or None, fields, complete=finished, why=why)

    def _iterate(self) -> Any:
        try:
            for chunk in self._stream:
                self._seen(chunk)
                yield chunk
        except GeneratorExit:  # the caller stopped reading (break, close, garbage collection)
            self._end()
            raise
        except Exception as exc:
            self._end(error=exc)
            raise
        self._end(finished=True)

    def __iter__(self) -> Any:
        return self._iterate()

    def __next__(self) -> Any:
        if self._iterator is None:
            self._iterator = self._iterate()
        return next(self._iterator)

    async def _aiterate(self) -> Any:
        try:
            async for chunk in self._stream:
                self._seen(chunk)
                yield chunk
        except GeneratorExit:
            self._end()
            raise
        except Exception as exc:
            self._end(error=exc)
            raise
        self._end(finished=True)

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
        self._model = model
        self._started = time.perf_counter()
        self._stream: Any = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._manager, name)

    def _fields(self) -> dict[str, Any]:
        return {"latency_ms": (time.perf_counter() - self._started) * 1000.0, "_requested_model": self._model}

    def _record(self, error: BaseException | None) -> None:
        try:
            message = self._stream.current_message_snapshot if self._stream is not None else None
        except (AssertionError, AttributeError):  # no message_start arrived
            message = None
        complete = message is not None and getattr(message, "stop_reason", None) is not None
        fields = self._fields()
        why = ""
        if not complete:
            # An error of the SDK or its HTTP client failed the call; any other ended the caller's block.
            sdk_error = error if error is not None and _from_sdk(error) else None
            why = _ended_by(sdk_error, fields)
        _finish_partial(self._into, message, fields, complete=complete, why=why)

    def __enter__(self) -> Any:
        self._started = time.perf_counter()
        try:
            self._stream = self._manager.__enter__()
        except Exception as exc:
            _finish(self._into, exc, self._fields())
            raise
        return self._stream

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> Any:
        try:
            return self._manager.__exit__(exc_type, exc, tb)
        finally:
            self._record(exc)

    async def __aenter__(self) -> Any:
        self._started = time.perf_counter()
        try:
            self._stream = await self._manager.__aenter__()
        except Exception as exc:
            _finish(self._into, exc, self._fields())
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
