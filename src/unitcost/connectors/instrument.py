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
import logging
import time
from collections.abc import Callable
from typing import Any

from .recorder import Recorder, recorder

log = logging.getLogger("unitcost.instrument")

_TARGETS: dict[str, tuple[tuple[str, str], ...]] = {
    "openai": (
        ("openai.resources.chat.completions", "Completions"),
        ("openai.resources.chat.completions", "AsyncCompletions"),
        ("openai.resources.responses", "Responses"),
        ("openai.resources.responses", "AsyncResponses"),
    ),
    "anthropic": (
        ("anthropic.resources.messages", "Messages"),
        ("anthropic.resources.messages", "AsyncMessages"),
    ),
}
_ORIGINAL = "__unitcost_original__"


def instrument(*, openai: bool = True, anthropic: bool = True, into: Recorder | None = None) -> list[str]:
    """Patch the installed SDKs. Returns what was instrumented. Calling it twice changes nothing."""
    done: list[str] = []
    for sdk, wanted in (("openai", openai), ("anthropic", anthropic)):
        if not wanted:
            continue
        for module_name, class_name in _TARGETS[sdk]:
            try:
                cls = getattr(importlib.import_module(module_name), class_name)
            except (ImportError, AttributeError):
                continue
            method = cls.__dict__.get("create")
            if method is None or hasattr(method, _ORIGINAL):
                continue
            wrapped = (
                _async_wrapper(method, into) if class_name.startswith("Async") else _wrapper(method, into)
            )
            setattr(wrapped, _ORIGINAL, method)
            cls.create = wrapped
            done.append(f"{module_name}.{class_name}.create")
    return done


def uninstrument() -> None:
    for targets in _TARGETS.values():
        for module_name, class_name in targets:
            try:
                cls = getattr(importlib.import_module(module_name), class_name)
            except (ImportError, AttributeError):
                continue
            method = cls.__dict__.get("create")
            if method is not None and hasattr(method, _ORIGINAL):
                cls.create = getattr(method, _ORIGINAL)


def _safe_record(into: Recorder | None, response: Any, **fields: Any) -> None:
    try:
        (into or recorder()).record(response, **fields)
    except Exception as exc:  # recording must never break the call it observes
        log.warning("unitcost: call not recorded: %s", exc)


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


def _wrapper(method: Callable[..., Any], into: Recorder | None) -> Callable[..., Any]:
    @functools.wraps(method)
    def create(self: Any, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            result = method(self, *args, **kwargs)
        except Exception as exc:
            _finish(into, exc, _call_fields(kwargs, started))
            raise
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
        if kwargs.get("stream"):
            return _RecordedStream(result, into, kwargs.get("model"), started)
        _finish(into, result, _call_fields(kwargs, started))
        return result

    return create


class _RecordedStream:
    """Passes a stream's chunks through and records the call when the stream is exhausted."""

    def __init__(self, stream: Any, into: Recorder | None, model: str | None, started: float) -> None:
        self._stream = stream
        self._into = into
        self._model = model
        self._started = started
        self._chunks: list[Any] = []
        self._ttft: float | None = None
        self._done = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)

    def _seen(self, chunk: Any) -> None:
        if self._ttft is None:
            self._ttft = (time.perf_counter() - self._started) * 1000.0
        self._chunks.append(chunk)

    def _end(self) -> None:
        if self._done:
            return
        self._done = True
        if not self._chunks:
            return
        fields: dict[str, Any] = {
            "latency_ms": (time.perf_counter() - self._started) * 1000.0,
            "ttft_ms": self._ttft,
            "_requested_model": self._model,
        }
        _finish(self._into, self._chunks, fields)

    def __iter__(self) -> Any:
        for chunk in self._stream:
            self._seen(chunk)
            yield chunk
        self._end()

    async def __aiter__(self) -> Any:
        async for chunk in self._stream:
            self._seen(chunk)
            yield chunk
        self._end()

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
