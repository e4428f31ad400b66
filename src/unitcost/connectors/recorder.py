"""`unitcost.record(response, team=..., ...)`: one provider response -> one ledger event.

The caller pays for reading the usage out of the response and appending to a list;
checking, pricing and writing happen on a background thread in batches (see `writer`),
and whatever is still buffered is flushed when the interpreter exits.
"""

from __future__ import annotations

import atexit

# The first write of a short script happens at exit, in `_flush_at_exit`: the write path then
# imports modules (pyarrow's pandas check imports pandas, which imports this) and this one
# registers an exit hook of its own, which Python refuses once it is shutting down. Imported
# here, while it may, so that the last write does not fail once and log a retry.
import concurrent.futures.thread  # noqa: F401
import threading
import uuid
import weakref
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..events import FIELD_BY_NAME
from ..redact import tag_value
from . import tagging
from .responses import UnrecognisedResponseError, normalise_response
from .unwritten import Unwritten
from .writer import BatchWriter

if TYPE_CHECKING:
    from ..api import Ledger


class Recorder:
    """Buffers events from provider responses and writes them to a ledger in the background."""

    def __init__(
        self,
        ledger: str | Path | Ledger | None = None,
        *,
        flush_interval: float = 1.0,
        max_batch: int = 5_000,
        source: str = "sdk",
        defaults: Mapping[str, Any] | None = None,
        keep_dir: str | Path | None = None,
    ) -> None:
        """`keep_dir`: where events go when the ledger cannot be written (default: beside a DuckDB
        ledger, `<ledger>.unwritten/`); the next successful write adds them (see `unwritten`)."""
        self.target = ledger
        self.defaults = dict(defaults or {})
        self._buffer: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._handed_over = 0
        """Events given to the writer so far: what it has written should add up to them."""
        self.max_batch = max_batch
        self.flush_interval = flush_interval
        # Typed columns keep the writer's share of the GIL small, so callers are not held up;
        # a batch with a wrongly typed field falls back to the general path, which names it.
        self.unwritten = Unwritten(ledger, keep_dir)
        self._writer = BatchWriter(
            self._open, source=source, typed=True, name="unitcost-recorder", unwritten=self.unwritten
        )
        self._stop = threading.Event()
        self._ticker = threading.Thread(target=self._tick, name="unitcost-recorder-tick", daemon=True)
        self._ticker.start()
        self.closed = False
        _LIVE.add(self)  # flushed at exit, like the default one, should the app not close it

    def _open(self) -> Ledger:
        from ..api import Ledger

        if isinstance(self.target, Ledger):
            return _Borrowed(self.target)  # type: ignore[return-value]
        return Ledger(self.target)

    def _tick(self) -> None:
        while not self._stop.wait(self.flush_interval):
            self._hand_over()

    # ------------------------------------------------------------------ the caller's side

    def record(self, response: Any = None, /, **fields: Any) -> str:
        """Record one call. Returns its event_id. Raises ValueError when the response has no usable usage.

        `fields` are event fields (team, feature, user, unit, unit_id, tags={...}, trace_id,
        latency_ms, model for errors, ...); unknown names become free tags.
        """
        event = normalise_response(response) if response is not None else {}
        context = tagging.current()
        if context or self.defaults:
            event = {**self.defaults, **context, **event}
        for name, value in fields.items():
            if value is None:
                continue
            # A free tag never holds a credential (`unitcost.redact`): `api_key=...` keeps its name only.
            if name == "tags":
                event["tags"] = {
                    **event.get("tags", {}),
                    **{str(k): tag_value(str(k), str(v)) for k, v in value.items()},
                }
            elif name in tagging.CONTEXT_FIELDS:
                event[name] = tagging.attribution_value(value)
            elif name in FIELD_BY_NAME:
                # Explicit fields win over the response (a model alias, a provider the server hides).
                event[name] = value
            else:
                event.setdefault("tags", {})[name] = tag_value(name, str(value))
        if not event.get("model"):
            raise UnrecognisedResponseError("model: the response does not name the model; pass model=...")
        event.setdefault("event_id", uuid.uuid4().hex)
        event.setdefault("ts", datetime.now(UTC))
        if event.get("provider") is None:
            event.pop("provider", None)
        with self._lock:
            if self.closed:
                # Buffered now, it would never be written: say so rather than lose it quietly.
                raise RuntimeError("this unitcost recorder is closed: its events would not be written")
            self._buffer.append(event)
            full = len(self._buffer) >= self.max_batch
        if full:
            self._hand_over()
        return str(event["event_id"])

    def _hand_over(self) -> int:
        """Give the buffer to the writer; the number of events given to it so far."""
        with self._lock:
            batch, self._buffer = self._buffer, []
            if batch:
                # Under the lock, so that the count never runs ahead of the writer's queue.
                self._writer.submit(batch, wait=False)
                self._handed_over += len(batch)
            return self._handed_over

    def flush(self, timeout: float | None = 30.0) -> bool:
        """Write everything recorded so far. True when it is all in the ledger (or was rejected);
        False on timeout, or when the ledger could not be written after the writer's retries
        (`last_error` says why; the log says how many events, and the file they were kept in
        under `keep_dir` until a later write adds them)."""
        expected = self._hand_over()
        if not self._writer.flush(timeout):
            return False
        # Events given up after the retries are in no commit: what was written falls short.
        return self._writer.events_written >= expected

    def close(self) -> None:
        with self._lock:
            if self.closed:
                return
            self.closed = True
        self._stop.set()
        self._hand_over()
        self._writer.close()

    @property
    def last_error(self) -> BaseException | None:
        return self._writer.last_error


class _Borrowed:
    """A caller's Ledger used by the writer thread without closing it."""

    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger

    def ingestor(self) -> Any:
        return self._ledger.ingestor()

    def close(self) -> None:
        """The caller owns the ledger."""


# --------------------------------------------------------------------------- module-level API


_LIVE: weakref.WeakSet[Recorder] = weakref.WeakSet()
"""Every recorder not yet closed: the exit hook writes what each still holds."""


class _Default:
    """The process-wide recorder behind `unitcost.record`, created on first use."""

    recorder: Recorder | None = None
    lock = threading.Lock()


def configure(ledger: str | Path | Ledger | None = None, **options: Any) -> Recorder:
    """Choose where `unitcost.record` writes (default: $UNITCOST_LEDGER, the config file, the user ledger)."""
    with _Default.lock:
        if _Default.recorder is not None:
            _Default.recorder.close()
        _Default.recorder = Recorder(ledger, **options)
        return _Default.recorder


def recorder() -> Recorder:
    current = _Default.recorder
    if current is None:
        with _Default.lock:
            if _Default.recorder is None:
                _Default.recorder = Recorder()
            current = _Default.recorder
    return current


def record(response: Any = None, /, **fields: Any) -> str:
    """Record a provider response (OpenAI, Anthropic, Gemini, OpenRouter, OpenAI-compatible) as a priced event."""
    return recorder().record(response, **fields)


def flush(timeout: float | None = 30.0) -> bool:
    current = _Default.recorder
    return current.flush(timeout) if current is not None else True


@atexit.register
def _flush_at_exit() -> None:
    """The default recorder and every `Recorder(...)` the app made and did not close: their
    buffered events are written, or kept on disk when the ledger cannot take them (see `writer`)."""
    for live in list(_LIVE):
        live.close()
