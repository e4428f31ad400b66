"""Decoding OTLP requests in worker processes.

Decoding protobuf and mapping spans is pure-Python work that holds the interpreter lock. In
the server's own process it competes with the ledger writer thread, whose many short calls
into DuckDB and Arrow each need the lock back: every one can wait for the decoder's time
slice, and commits stretch. In worker processes the decoding runs beside the writer instead.

A worker receives the body as it came (still compressed: decompressing is work too) and
returns `Decoded`, whose typed columns pickle as Arrow buffers. A worker that dies (killed,
out of memory) breaks the pool: the requests it held answer 503 (retryable) and the pool is
started again, so one bad request cannot take the receiver down.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import multiprocessing.connection
import os
import threading
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from .extract import Decoded, decode_request
from .mapping import AttributeMapping
from .rows import SpanMapper


class WorkerLostError(RuntimeError):
    """The worker decoding a request died before answering (the request may be retried)."""


_worker: dict[str, SpanMapper] = {}
"""In a worker process: its mapper, which remembers attribute names across requests."""


def _start_worker(mapping: AttributeMapping) -> None:
    _worker["mapper"] = SpanMapper(mapping)
    parent = multiprocessing.parent_process()
    if parent is not None:
        threading.Thread(
            target=_exit_with, args=(parent.sentinel,), name="unitcost-parent-watch", daemon=True
        ).start()


def _exit_with(parent_sentinel: int) -> None:
    """Ends the worker when the server is gone. A server that stops cleanly shuts its pool down,
    but one killed (SIGKILL, the OOM killer) cannot, and its workers would otherwise wait on
    their task queue for ever: the pool's queue is inherited at both ends, so no end-of-file
    ever comes."""
    multiprocessing.connection.wait([parent_sentinel])
    os._exit(0)


def _decode(body: bytes, content_type: str, encoding: str | None) -> Decoded:
    return decode_request(body, content_type, encoding, _worker["mapper"])


def _ready() -> bool:
    return "mapper" in _worker


class DecodePool:
    """`workers` processes that turn request bodies into `Decoded` requests."""

    def __init__(self, mapping: AttributeMapping, workers: int) -> None:
        self.mapping = mapping
        self.workers = workers
        self._lock = threading.Lock()
        self._executor = self._start(wait=True)

    def _start(self, *, wait: bool) -> ProcessPoolExecutor:
        # A fresh interpreter, not a fork: the server has threads (the writer, DuckDB's) that
        # a fork would copy in whatever state they are in.
        executor = ProcessPoolExecutor(
            self.workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_start_worker,
            initargs=(self.mapping,),
        )
        ready = [executor.submit(_ready) for _ in range(self.workers)]  # starts the processes
        if wait:  # at start-up, so the first request does not wait for them
            for future in ready:
                future.result()
        return executor

    async def decode(self, body: bytes, content_type: str, encoding: str | None) -> Decoded:
        executor = self._executor
        try:
            return await asyncio.get_running_loop().run_in_executor(
                executor, _decode, body, content_type, encoding
            )
        except BrokenProcessPool as exc:
            with self._lock:
                if self._executor is executor:  # the first to notice starts a new pool
                    executor.shutdown(wait=False, cancel_futures=True)
                    # Not waiting for the new workers: the event loop goes on, and requests
                    # queue in the new pool until its workers are up.
                    self._executor = self._start(wait=False)
            raise WorkerLostError("the worker decoding the request stopped") from exc

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
