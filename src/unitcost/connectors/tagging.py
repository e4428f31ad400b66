"""`unitcost.tags(...)`: attribution for every call made inside a block or a function.

Built on contextvars, so it follows threads' own contexts and asyncio tasks correctly:
tags set in one request handler never leak into another running concurrently.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import inspect
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar

from ..events import ATTRIBUTION_FIELDS
from ..redact import redact_text, tag_value

F = TypeVar("F", bound=Callable[..., Any])

# Fields a tags() block may set besides attribution: they group calls of one run.
CONTEXT_FIELDS: tuple[str, ...] = (*ATTRIBUTION_FIELDS, "trace_id", "session_id")

_current: contextvars.ContextVar[Mapping[str, Any] | None] = contextvars.ContextVar(
    "unitcost_tags", default=None
)
_EMPTY: Mapping[str, Any] = {}


def current() -> Mapping[str, Any]:
    """The attribution in force here: event fields, plus free tags under "tags"."""
    return _current.get() or _EMPTY


@contextlib.contextmanager
def restored(context: Mapping[str, Any]) -> Iterator[None]:
    """The block runs with `context` (what `current()` returned earlier) as the attribution in
    force: a call is recorded with the tags of the block it was made in, even when its stream
    is read, and the call recorded, after that block has ended."""
    token = _current.set(context or None)
    try:
        yield
    finally:
        _current.reset(token)


def attribution_value(value: Any) -> str:
    """What an attribution field may hold: the value as text, any credential in it replaced
    (`user=request.headers["authorization"]` keeps no bearer token), as the gateway and OTLP do."""
    return redact_text(str(value))


def merged(base: Mapping[str, Any], fields: Mapping[str, Any]) -> dict[str, Any]:
    """`fields` over `base`; names that are not event fields become free tags.

    A free tag never holds a credential (`unitcost.redact`): `api_key=...` is kept as
    `api_key = REDACTED`, and a key inside a value (`headers={...}`, a URL) is replaced."""
    out = dict(base)
    free = dict(base.get("tags") or {})
    for name, value in fields.items():
        if value is None:
            continue
        if name == "tags":
            free.update({str(k): tag_value(str(k), str(v)) for k, v in dict(value).items()})
        elif name in CONTEXT_FIELDS:
            out[name] = attribution_value(value)
        else:
            free[name] = tag_value(name, str(value))
    if free:
        out["tags"] = free
    return out


class tags:  # noqa: N801 - reads as a function: `with unitcost.tags(team="search"):`
    """Context manager and decorator: `with unitcost.tags(team="search", unit="ticket", unit_id=t.id):`.

    Known attribution fields (team, app, feature, user, customer, environment, unit,
    unit_id, trace_id, session_id) fill those columns; any other keyword becomes a free tag.
    Nested blocks add to and override the outer ones.
    """

    def __init__(self, **fields: Any) -> None:
        self.fields = fields
        # One instance may be entered by concurrent tasks or threads (`SUPPORT = tags(team=...)`,
        # then `with SUPPORT:` in every handler): each entry's token is found again by the value
        # it set, which is the one in force in that task's context when it leaves the block.
        self._tokens: dict[int, contextvars.Token[Mapping[str, Any] | None]] = {}

    def __enter__(self) -> Mapping[str, Any]:
        value = merged(current(), self.fields)
        self._tokens[id(value)] = _current.set(value)
        return value

    def __exit__(self, *exc: object) -> None:
        _current.reset(self._tokens.pop(id(current())))

    def __call__(self, func: F) -> F:
        fields = self.fields
        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                with tags(**fields):
                    return await func(*args, **kwargs)

            return async_wrapper  # type: ignore[return-value]

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with tags(**fields):
                return func(*args, **kwargs)

        return wrapper  # type: ignore[return-value]
