"""One thread that owns the ledger's write connection and ingests in batches.

A DuckDB ledger has one writer at a time, and the ingest path is cheapest per event on
large batches. Every producer (the in-process recorder, each OTLP request) hands its
records to this thread, which takes everything waiting, ingests it in one call and then
resolves each producer's future with that producer's share of the summary. A producer
that waits on its future knows its events are committed: that is how the OTLP receiver
acknowledges only what is durably in the ledger.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import pyarrow as pa

from ..ingest.normalise import Rejection
from ..ledger.duckdb_store import YIELD_POLL_S
from .typed import ingest_typed

if TYPE_CHECKING:
    from ..api import Ledger
    from .unwritten import Unwritten

log = logging.getLogger("unitcost.writer")

T = TypeVar("T")


@dataclass
class BatchResult:
    """What happened to one producer's records."""

    submitted: int
    accepted: int = 0
    duplicates: int = 0
    rejections: list[Rejection] = field(default_factory=list)
    """Positions are 1-based within the producer's own records."""

    @property
    def rejected(self) -> int:
        return len(self.rejections)


@dataclass
class _Job:
    records: Sequence[Mapping[str, Any]] | pa.Table
    """Python records, or a table of typed columns named like event fields (servers)."""
    future: Future[BatchResult] | None

    @property
    def size(self) -> int:
        return self.records.num_rows if isinstance(self.records, pa.Table) else len(self.records)


class BatchWriter:
    """Background batch writer. `submit` never blocks on the ledger; `flush` waits for it."""

    def __init__(
        self,
        ledger_factory: Callable[[], Ledger],
        *,
        source: str,
        max_batch: int = 20_000,
        linger_s: float = 0.0,
        typed: bool = False,
        name: str = "unitcost-writer",
        unwritten: Unwritten | None = None,
    ) -> None:
        self._factory = ledger_factory
        self.source = source
        self.max_batch = max_batch
        self.linger_s = linger_s
        self.typed = typed
        """Records hold already-typed values (servers): skip the JSON round trip (see `typed`)."""
        self._jobs: list[_Job] = []
        self._calls: list[tuple[Callable[[Ledger], Any], Future[Any]]] = []
        self._cond = threading.Condition()
        self._closing = False
        self._busy = False
        self._ledger: Ledger | None = None
        self.failures = 0
        self._attempts = 0
        self.commits = 0
        """Ingest calls made: with `events_written`, how well concurrent producers share commits."""
        self.events_written = 0
        self.events_unpriced = 0
        """Events written without a price (cost NULL, with the reason): a server's /metrics shows them."""
        self.write_seconds = 0.0
        """Wall time spent writing (checks, pricing, commit): against the elapsed time, how busy the writer is."""
        self.last_error: BaseException | None = None
        self._unwritten = unwritten
        """Where fire-and-forget records go when the ledger cannot take them (None: they are lost)."""
        self.events_kept = 0
        """Records written to `unwritten` instead of the ledger."""
        self._add_kept = unwritten is not None  # kept records (of an earlier run too) wait for a write
        self._kept_files: dict[Path, int] = {}  # this writer's kept files, and their records
        self._writing: list[_Job] = []
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ producers

    def submit(self, records: Sequence[Mapping[str, Any]], *, wait: bool = True) -> Future[BatchResult]:
        """Queue records; the future resolves once they are committed (or raises the write error)."""
        return self._submit(_Job(records, Future() if wait else None))

    def submit_table(self, table: pa.Table) -> Future[BatchResult]:
        """Queue typed columns (any subset of the event fields, one event per row); the future
        resolves once they are committed. The tables waiting together are concatenated into
        one commit, so they must give a field the same type."""
        return self._submit(_Job(table, Future()))

    def _submit(self, job: _Job) -> Future[BatchResult]:
        with self._cond:
            if self._closing:
                raise RuntimeError("the ledger writer is closed")
            self._jobs.append(job)
            self._cond.notify()
        if job.future is None:
            done: Future[BatchResult] = Future()
            done.set_result(BatchResult(job.size))
            return done
        return job.future

    def call(self, fn: Callable[[Ledger], T]) -> Future[T]:
        """Run `fn(ledger)` on the writer's thread, between two commits: other work of a server
        that owns the ledger (the watch loop of `unitcost serve`) uses the one write connection
        without racing the ingest. The future holds what `fn` returns or raises."""
        future: Future[T] = Future()
        with self._cond:
            if self._closing:
                raise RuntimeError("the ledger writer is closed")
            self._calls.append((fn, future))
            self._cond.notify()
        return future

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything submitted so far is written. False on timeout."""
        with self._cond:
            self._cond.notify_all()
            return self._cond.wait_for(lambda: not self._jobs and not self._busy, timeout)

    def close(self, timeout: float | None = 30.0) -> None:
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join(timeout)
        if self._thread.is_alive() and self._unwritten is not None:
            # Still waiting for the ledger: what it holds would die with the process. The batch
            # under way is kept too; should it commit after all, adding it again changes nothing.
            with self._cond:
                stranded = [job for job in [*self._writing, *self._jobs] if job.future is None]
                self._jobs = [job for job in self._jobs if job.future is not None]
            if stranded:
                self._give_up(stranded, TimeoutError(f"the ledger was still not written after {timeout} s"))
            return
        if self._ledger is not None:
            self._ledger.close()
            self._ledger = None

    @property
    def pending(self) -> int:
        with self._cond:
            return sum(j.size for j in self._jobs)

    # ------------------------------------------------------------------ the thread

    def _take(self) -> list[_Job]:
        """The jobs of the next commit; none after `YIELD_POLL_S` without work (or when calls wait)."""
        with self._cond:
            if not self._jobs and not self._calls and not self._closing:
                # Not for ever: an idle writer still looks, now and then, for a command that
                # waits for the ledger (see `_yield`).
                self._cond.wait(YIELD_POLL_S)
            if self._calls or not self._jobs:
                return []  # the calls first (see _run); the jobs wait for the next turn
            if self.linger_s and not self._closing:
                # Let concurrent producers join the batch: fewer, larger commits.
                self._cond.wait_for(
                    lambda: self._closing or sum(j.size for j in self._jobs) >= self.max_batch,
                    self.linger_s,
                )
            taken: list[_Job] = []
            size = 0
            while self._jobs and (not taken or size + self._jobs[0].size <= self.max_batch):
                job = self._jobs.pop(0)
                taken.append(job)
                size += job.size
            self._busy = bool(taken)
            return taken

    def _run(self) -> None:
        while True:
            self._yield()
            jobs = self._take()
            self._run_calls()
            if not jobs:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()
                    if self._closing and not self._jobs and not self._calls:
                        return
                continue
            self._writing = jobs
            try:
                # Tables and records are ingested apart (one commit each), in the order they came.
                for _, run in itertools.groupby(jobs, key=lambda job: isinstance(job.records, pa.Table)):
                    self._write(list(run))
            finally:
                with self._cond:
                    self._writing = []
                    self._busy = False
                    self._cond.notify_all()

    def _yield(self) -> None:
        """Between two commits: give a DuckDB ledger up to a command that asked for it (`unitcost
        report`, `alerts ack`), which would otherwise wait until this process stops. The next
        commit takes it back; meanwhile the producers' records wait in the queue."""
        # A ledger the application lent the recorder stays the application's to give up.
        give_up = getattr(self._ledger, "yield_to_waiters", None)
        if give_up is None:
            return
        try:
            give_up()
        except Exception:  # closing a connection should not fail; if it does, keep writing
            log.exception("unitcost: could not give the ledger up to a waiting command")

    def _run_calls(self) -> None:
        with self._cond:
            calls, self._calls = self._calls, []
        for fn, future in calls:
            if not future.set_running_or_notify_cancel():
                continue
            try:
                if self._ledger is None:
                    self._ledger = self._factory()
                future.set_result(fn(self._ledger))
            except BaseException as exc:  # the caller learns of it; the thread lives on
                future.set_exception(exc)

    def _write(self, jobs: list[_Job]) -> None:
        """One ingest call for jobs of one kind (all tables or all records)."""
        starts: list[int] = []
        total = 0
        for job in jobs:
            starts.append(total)
            total += job.size
        started = time.perf_counter()
        try:
            if self._ledger is None:
                self._ledger = self._factory()
            ingestor = self._ledger.ingestor()
            if isinstance(jobs[0].records, pa.Table):
                tables = [job.records for job in jobs if isinstance(job.records, pa.Table)]
                table = pa.concat_tables(tables, promote_options="default") if len(tables) > 1 else tables[0]
                summary = ingestor.ingest_table(_without_empty_columns(table), source=self.source)
            else:
                records = [
                    record for job in jobs if not isinstance(job.records, pa.Table) for record in job.records
                ]
                if self.typed:
                    summary = ingest_typed(ingestor, records, source=self.source)
                else:
                    summary = ingestor.ingest_records(records, source=self.source)
        except Exception as exc:  # the producers learn of it; the thread lives on
            self.write_seconds += time.perf_counter() - started
            self.failures += 1
            self.last_error = exc
            for job in jobs:
                if job.future is not None:
                    job.future.set_exception(exc)  # a waiting producer (a server) answers "retry later"
            self._retry_later([job for job in jobs if job.future is None], exc)
            return
        self._attempts = 0
        self.write_seconds += time.perf_counter() - started
        self.commits += 1
        self.events_written += total
        self.events_unpriced += summary.unpriced
        results = [BatchResult(job.size) for job in jobs]
        rejected_per_job = [0] * len(jobs)
        for rejection in summary.rejections:
            index = _job_of(starts, rejection.record - 1)
            rejected_per_job[index] += 1
            results[index].rejections.append(
                Rejection(rejection.record - starts[index], rejection.field, rejection.reason)
            )
        if summary.rejections and jobs[0].future is None:
            for rejection in summary.rejections[:20]:
                log.warning("unitcost: event not recorded: %s", rejection)
        # Accepted/duplicate counts are per batch; share them out in order (exact when nothing is duplicated).
        accepted = summary.accepted
        for job, result, rejected in zip(jobs, results, rejected_per_job, strict=True):
            good = job.size - rejected
            result.accepted = min(good, accepted)
            result.duplicates = good - result.accepted
            accepted -= result.accepted
            if job.future is not None:
                job.future.set_result(result)
        if self._add_kept:
            self._add_kept_events()

    def _add_kept_events(self) -> None:
        """The ledger takes writes again: add the records kept while it did not (this run's or an
        earlier one's)."""
        assert self._unwritten is not None and self._ledger is not None
        try:
            added = self._unwritten.add_to(self._ledger, source=self.source)
        except Exception as exc:  # they stay on disk for the next write
            log.warning("unitcost: kept events not added to the ledger yet: %s", exc)
            return
        # Ours are written now (another process's files are not what our producers wait for).
        self.events_written += sum(self._kept_files.pop(path, 0) for path in added)
        self._add_kept = False

    def _retry_later(self, jobs: list[_Job], exc: Exception) -> None:
        """Fire-and-forget records (the recorder's) are not dropped on a transient failure (a busy
        ledger, a full disk): they go back to the front of the queue and are retried with a growing
        pause, up to RETRIES times, after which they are kept on disk for a later write (the
        recorder's) or lost, with an error in the log either way."""
        if not jobs:
            log.error("unitcost: could not write to the ledger: %s", exc)
            return
        count = sum(job.size for job in jobs)
        self._attempts += 1
        # Closing, with somewhere to keep them: the process is exiting, no time for more pauses.
        if self._attempts > RETRIES or (self._closing and self._unwritten is not None):
            self._attempts = 0
            self._give_up([*jobs, *self._fire_and_forget_waiting()], exc)
            return
        log.warning(
            "unitcost: could not write %d events (attempt %d, will retry): %s", count, self._attempts, exc
        )
        with self._cond:
            self._jobs[:0] = jobs
            self._cond.wait_for(lambda: self._closing, min(0.1 * 2**self._attempts, 5.0))

    def _fire_and_forget_waiting(self) -> list[_Job]:
        """Take the fire-and-forget records queued behind a batch the ledger refused through all
        its retries. They would go through the same retries one batch at a time while the app
        adds more, and the queue would grow in memory for as long as the ledger is down: they
        are given up with it (kept on disk), and the next records try the ledger afresh."""
        with self._cond:
            waiting = [
                job for job in self._jobs if job.future is None and not isinstance(job.records, pa.Table)
            ]
            if waiting:
                self._jobs = [
                    job for job in self._jobs if job.future is not None or isinstance(job.records, pa.Table)
                ]
        return waiting

    def _give_up(self, jobs: Sequence[_Job], exc: BaseException) -> None:
        """Stop retrying `jobs`: keep their records on disk for a later write, or lose them (logged)."""
        # Jobs of one kind: records (the recorder's, kept on disk) or tables (servers', never kept).
        records = [record for job in jobs if not isinstance(job.records, pa.Table) for record in job.records]
        count = sum(job.size for job in jobs)
        if self._unwritten is None or not records:
            log.error(
                "unitcost: %d events lost after %d attempts to write the ledger: %s", count, RETRIES, exc
            )
            return
        try:
            path = self._unwritten.keep(records)
        except Exception as keep_error:  # a directory that cannot be made or written, a bad config
            log.error(
                "unitcost: %d events lost: the ledger could not be written (%s), nor could they be kept "
                "on disk (%s)",
                count,
                exc,
                keep_error,
            )
            return
        self.events_kept += count
        self._kept_files[path] = count
        self._add_kept = True
        log.error(
            "unitcost: %d events could not be written to the ledger (%s); kept in %s: the next write of a "
            "recorder on this ledger adds them (or run `unitcost ingest %s`)",
            count,
            exc,
            path,
            path,
        )


RETRIES = 5


def _without_empty_columns(table: pa.Table) -> pa.Table:
    """The ingest path reads an absent field as null; checking fewer columns makes each commit cheaper."""
    return table.select(
        [name for name in table.column_names if table.column(name).null_count < table.num_rows]
    )


def _job_of(starts: list[int], index: int) -> int:
    lo, hi = 0, len(starts) - 1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if starts[mid] <= index:
            lo = mid
        else:
            hi = mid - 1
    return lo
