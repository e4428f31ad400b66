"""The one ingest path: raw chunks -> checked events -> priced events -> ledger.

Files, Python records, the gateway and the OTLP receiver all end here, so every event in
the ledger passed the same checks and was priced by the same engine.
"""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, TextIO

import duckdb
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from .. import arrow_values
from ..events import EVENT_SCHEMA, LEDGER_SCHEMA
from ..ledger.base import AppendResult, Store
from ..pricing.batch import price_table
from ..pricing.book import PriceBook
from . import native
from .fastpath import SUSPECT_COLUMN, build_fast_sql
from .normalise import ROW_COLUMN, Rejection, build_sql, split_result
from .quickjson import with_plain_flag
from .readers import (
    IngestFileError,
    RawChunk,
    detect_format,
    explain_bad_json,
    json_source_sql,
    read_csv,
    read_jsonl,
    read_parquet,
    records_to_lines,
)

KEPT_REJECTIONS = 1000
APPEND_ROWS = 500_000
CHECK_WORKERS = 2
"""Threads checking a file's chunks while the batch before them is appended."""


@dataclass
class IngestSummary:
    accepted: int = 0
    """New events written to the ledger."""
    duplicates: int = 0
    """Events whose event_id was already in the ledger (or earlier in the same input): nothing changed."""
    rejected: int = 0
    unpriced: int = 0
    """Accepted events with no price (cost NULL, reason kept): they are in every report's unpriced count."""
    rejections: list[Rejection] = field(default_factory=list)
    """The first KEPT_REJECTIONS rejections; all of them go to the rejects file when one is given."""
    rejected_by_field: Counter[str] = field(default_factory=Counter)
    sources: list[str] = field(default_factory=list)
    files: dict[str, IngestSummary] = field(default_factory=dict)
    """With several files (`Ledger.ingest`): each file's own summary, which says whose the rejections are."""
    unreadable: list[tuple[str, str]] = field(default_factory=list)
    """(file, why) for each file that could not be read, whole or in part."""

    @property
    def seen(self) -> int:
        return self.accepted + self.duplicates + self.rejected

    def add_rejections(self, source: str, rejections: Iterable[Rejection], sink: TextIO | None) -> None:
        for rejection in rejections:
            self.rejected += 1
            self.rejected_by_field[rejection.field] += 1
            if len(self.rejections) < KEPT_REJECTIONS:
                self.rejections.append(rejection)
            if sink is not None:
                sink.write(
                    orjson.dumps(
                        {
                            "source": source,
                            "record": rejection.record,
                            "field": rejection.field,
                            "reason": rejection.reason,
                        }
                    ).decode()
                    + "\n"
                )

    def merge(self, other: IngestSummary) -> None:
        self.accepted += other.accepted
        self.duplicates += other.duplicates
        self.rejected += other.rejected
        self.unpriced += other.unpriced
        room = KEPT_REJECTIONS - len(self.rejections)
        self.rejections.extend(other.rejections[: max(room, 0)])
        self.rejected_by_field.update(other.rejected_by_field)
        self.sources.extend(other.sources)
        self.files.update(other.files)
        self.unreadable.extend(other.unreadable)


class PartlyIngestedError(IngestFileError):
    """A file that stopped being readable part way (a truncated gzip, say): the records read
    before the break are in the ledger, and `summary` counts them."""

    def __init__(self, message: str, summary: IngestSummary) -> None:
        super().__init__(message)
        self.summary = summary


class UnreadableFilesError(PartlyIngestedError):
    """Files that could not be read, whole or in part, by one `Ledger.ingest` call: every other file
    was ingested. `summary` counts all that went in; its `unreadable` names each file and why."""

    def __init__(self, summary: IngestSummary) -> None:
        reasons = [reason for _, reason in summary.unreadable]
        message = (
            reasons[0]
            if len(summary.files) <= 1
            else f"{len(reasons)} of {len(summary.files)} files could not be read (whole or in part; "
            "the others were ingested): " + "; ".join(reasons)
        )
        super().__init__(message, summary)


Progress = Callable[[int], None]


class Ingestor:
    """Checks, prices and appends. One per ledger writer; not thread-safe (use one per thread)."""

    def __init__(
        self,
        store: Store,
        book: PriceBook,
        *,
        allow_unknown_fields: bool = False,
        rejects: TextIO | None = None,
        append_rows: int = APPEND_ROWS,
        threads: int | None = None,
    ) -> None:
        self.store = store
        self.book = book
        self.allow_unknown_fields = allow_unknown_fields
        self.rejects = rejects
        self.append_rows = append_rows
        # The checks work on one chunk at a time: a small, fixed memory budget is plenty.
        config: dict[str, Any] = {"memory_limit": "512MB"}
        if threads:
            config["threads"] = threads
        self._root = duckdb.connect(config=config)
        self._local = threading.local()
        self._cursors: list[duckdb.DuckDBPyConnection] = []

    @property
    def _con(self) -> duckdb.DuckDBPyConnection:
        """This thread's connection to the checks' engine: one runs a query at a time, and a
        file's chunks are checked in several threads."""
        con: duckdb.DuckDBPyConnection | None = getattr(self._local, "con", None)
        if con is None:
            con = self._root.cursor()
            con.execute("SET TimeZone = 'UTC'")
            self._local.con = con
            self._cursors.append(con)
        return con

    def _release_connection(self) -> None:
        """Close this thread's connection: a checking thread's, as it ends (an ingestor that
        lives long, a server's, would otherwise keep two per file it ingested)."""
        con: duckdb.DuckDBPyConnection | None = getattr(self._local, "con", None)
        if con is not None:
            self._local.con = None
            self._cursors.remove(con)
            con.close()

    def close(self) -> None:
        for con in self._cursors:
            con.close()
        self._root.close()

    # ------------------------------------------------------------------ entry points

    def ingest_path(
        self,
        path: str | Path,
        *,
        fmt: str | None = None,
        progress: Progress | None = None,
        source: str | None = None,
    ) -> IngestSummary:
        """Ingest one file. A file that cannot be read at all, or stops being readable part way
        (a truncated gzip), raises `IngestFileError`; when part of it was read, the records read
        before are in the ledger and the error's `summary` counts them."""
        path = Path(path)
        fmt = fmt or detect_format(path)
        chunks: Iterator[RawChunk]
        if fmt == "jsonl":
            chunks = read_jsonl(path)
        elif fmt == "csv":
            chunks = read_csv(path, allow_unknown=self.allow_unknown_fields)
        elif fmt == "parquet":
            chunks = read_parquet(path, allow_unknown=self.allow_unknown_fields)
        else:
            raise ValueError(f"unknown format {fmt!r}; expected jsonl, csv or parquet")
        return self._ingest_chunks(chunks, source or f"file:{path.name}", progress)

    def ingest_stream(
        self,
        stream: BinaryIO,
        *,
        fmt: str | None = None,
        progress: Progress | None = None,
        source: str = "stdin",
    ) -> IngestSummary:
        """Ingest JSON lines (the default) or CSV from a binary stream such as standard input,
        gzip-compressed or not, as it arrives. Parquet is read from its end: it needs a file."""
        fmt = fmt or "jsonl"
        chunks: Iterator[RawChunk]
        if fmt == "jsonl":
            chunks = read_jsonl(stream)
        elif fmt == "csv":
            chunks = read_csv(stream, allow_unknown=self.allow_unknown_fields)
        elif fmt == "parquet":
            raise IngestFileError(
                f"{source}: Parquet cannot be read from a stream (its index is at the end); "
                "write it to a file first"
            )
        else:
            raise ValueError(f"unknown format {fmt!r}; expected jsonl or csv")
        return self._ingest_chunks(chunks, source, progress)

    def _ingest_chunks(
        self, chunks: Iterator[RawChunk], label: str, progress: Progress | None
    ) -> IngestSummary:
        # A file is read, checked and priced one chunk ahead of the ledger append: two
        # different DuckDB connections, each releasing the GIL, keep both cores busy.
        try:
            summary = self._process(chunks, label, progress, overlap=True)
        except PartlyIngestedError as exc:
            self._log_run(label, exc.summary)
            raise
        self._log_run(label, summary)
        return summary

    def ingest_records(
        self,
        records: Iterable[Mapping[str, Any]],
        *,
        source: str = "python",
        first: int = 1,
        progress: Progress | None = None,
    ) -> IngestSummary:
        """Python dicts with event fields; errors name the record's position (from `first`)."""
        return self._process(records_to_lines(records, first=first), source, progress)

    def ingest_table(self, table: pa.Table, *, source: str) -> IngestSummary:
        """Already-typed columns named like event fields (any subset), one event per row; errors name
        the row (from 1). The same checks as files, without a text round trip (used by servers)."""
        rows = pa.array(range(1, table.num_rows + 1), type=pa.int64())
        chunk = RawChunk(table.append_column(ROW_COLUMN, rows), "table", progress=table.num_rows)
        return self._process(iter([chunk]), source, None)

    def ingest_lines(self, lines: Iterable[str], *, source: str) -> IngestSummary:
        """JSON text, one event per item; errors name the item's position (from 1)."""
        items = list(lines)
        table = pa.table(
            {
                "_row": pa.array(range(1, len(items) + 1), type=pa.int64()),
                "line": pa.array(items, type=pa.large_string()),
            }
        )
        return self._process(iter([RawChunk(table, "json", progress=len(items))]), source, None)

    # ------------------------------------------------------------------ the path

    def _process(
        self,
        chunks: Iterable[RawChunk],
        source: str,
        progress: Progress | None,
        *,
        overlap: bool = False,
    ) -> IngestSummary:
        summary = IngestSummary(sources=[source])
        pending: list[pa.Table] = []
        ingested_at = datetime.now(UTC)

        def check(chunk: RawChunk) -> _Checked:
            return self._checked(chunk, source, ingested_at)

        # Overlapped, two threads check chunks side by side (the C parse and Arrow release the
        # GIL): until the first batch is appended, the checks are all there is to do.
        results = (
            _ahead(iter(chunks), check, workers=CHECK_WORKERS, on_exit=self._release_connection)
            if overlap
            else (check(chunk) for chunk in chunks)
        )
        # Overlapped, a batch is appended in a thread of its own while the next one is checked.
        appender = _Appender(self.store, summary) if overlap else None
        unreadable: IngestFileError | None = None
        try:
            try:
                self._consume(results, source, summary, pending, progress, appender)
            except IngestFileError as exc:
                # The file broke part way: what was read before it is kept, and counted.
                unreadable = exc
            # The checks are done: the last append has both cores to itself.
            self._flush(pending, summary, appender, all_cores=True)
            if appender is not None:
                appender.wait()
        finally:
            # A failed append stops the checks running ahead now, not when the traceback goes.
            results.close()
            if appender is not None:
                appender.close()
        if summary.duplicates and summary.unpriced:
            summary.unpriced = self._unpriced_stored(ingested_at)
        if unreadable is not None:
            raise PartlyIngestedError(str(unreadable), summary) from None
        return summary

    def _unpriced_stored(self, ingested_at: datetime) -> int:
        """The events with no price this run stored. The checks count the unpriced records they
        pass, duplicates among them: a file ingested twice would say its second time that it
        stored calls with no price, when it stored nothing. Asked only when there were
        duplicates: otherwise every record passed was stored."""
        from ..analytics.dialect import dialect_for

        at = dialect_for(self.store.dialect).ts_literal(ingested_at.isoformat())
        table = self.store.fetch(
            f"SELECT count(*) AS n FROM events WHERE ingested_at = {at} AND cost IS NULL"
        )
        return int(table.column(0)[0].as_py() or 0)

    def _consume(
        self,
        results: Iterator[_Checked],
        source: str,
        summary: IngestSummary,
        pending: list[pa.Table],
        progress: Progress | None,
        appender: _Appender | None,
    ) -> None:
        """Counts the rejections of each checked chunk and appends its events a batch at a time,
        leaving in `pending` the events not appended yet."""
        pending_rows = 0
        for result in results:
            # In file order: the reader's rejections (a CSV row with too many cells) among the checks'.
            rejections = sorted([*result.reader_rejections, *result.rejections], key=lambda r: r.record)
            summary.add_rejections(source, rejections, self.rejects)
            if result.priced is not None:
                summary.unpriced += result.unpriced
                pending.append(result.priced)
                pending_rows += result.priced.num_rows
            if pending_rows >= self.append_rows:
                self._flush(pending, summary, appender, all_cores=appender is not None)
                pending.clear()
                pending_rows = 0
            elif appender is not None:
                appender.raise_failure()  # a failed append stops the checks now, not at the next one
            if progress is not None:
                progress(result.progress)

    def _checked(self, chunk: RawChunk, source: str, ingested_at: datetime) -> _Checked:
        """One chunk checked and priced: everything but the append, so it can run ahead of it."""
        good, rejections = self.check(chunk)
        priced, n_unpriced = self.price(good, source, ingested_at) if good.num_rows else (None, 0)
        return _Checked(chunk.rejections, rejections, priced, n_unpriced, chunk.progress)

    def check(self, chunk: RawChunk) -> tuple[pa.Table, list[Rejection]]:
        """Type and check one chunk: the valid events (in input order) and one rejection per invalid record.

        Well-formed records take the fast path (for JSON lines, the C parse of `native`; else
        `fastpath`'s SQL); the others (few) the authoritative checks, which name the problem or
        accept them.
        """
        con = self._con
        in_c = None
        if chunk.kind == "json" and native.AVAILABLE:
            with contextlib.suppress(ValueError):  # more than 2 GiB of text in one chunk: the SQL path
                in_c = native.checked_lines(chunk.table)
        if in_c is None:
            con.register("_raw", with_plain_flag(chunk.table) if chunk.kind == "json" else chunk.table)
        try:
            fast = in_c if in_c is not None else self._fast(chunk)
            if fast is None:
                # The cheap typing failed as a whole (a value it cannot convert, say a UINT64
                # over the BIGINT range): every record gets the authoritative checks instead.
                suspects = chunk.table
                good = pa.table({ROW_COLUMN: pa.array([], pa.int64()), **_empty_events()})
            else:
                suspect = fast.column(SUSPECT_COLUMN)
                n_suspect = pc.sum(pc.cast(suspect, pa.int64())).as_py() or 0
                if not n_suspect:
                    # Filtering by an all-true mask would copy every column for nothing.
                    return fast.select(EVENT_SCHEMA.names).cast(EVENT_SCHEMA), []
                good = fast.filter(pc.invert(suspect)).select([ROW_COLUMN, *EVENT_SCHEMA.names])
                rows = fast.filter(suspect).column(ROW_COLUMN)
                suspects = chunk.table.filter(pc.is_in(chunk.table.column(ROW_COLUMN), rows))
            con.register("_suspects", suspects)
            try:
                relation, types, options = self._relation(chunk, "_suspects")
                detailed = con.sql(
                    build_sql(
                        relation, types, **options, raw_column="_line" if chunk.kind == "json" else None
                    )
                ).to_arrow_table()
            finally:
                con.unregister("_suspects")
        finally:
            if in_c is None:
                con.unregister("_raw")
        rescued, rejections = split_result(detailed, explain_bad_json)
        if rescued.num_rows:
            good = pa.concat_tables(
                [good, rescued.select([ROW_COLUMN, *EVENT_SCHEMA.names]).cast(good.schema)]
            )
            good = good.take(pc.sort_indices(good.column(ROW_COLUMN)))
        return good.select(EVENT_SCHEMA.names).cast(EVENT_SCHEMA), rejections

    def _fast(self, chunk: RawChunk) -> pa.Table | None:
        """The fast path's typing of the chunk registered as `_raw`, or None when it fails as a whole."""
        try:
            relation, types, options = self._relation(chunk, careful=False)
            return self._con.sql(build_fast_sql(relation, types, **options)).to_arrow_table()
        except duckdb.Error:
            if chunk.kind != "json":
                return None
        # A line that is not a JSON object stops the quick parse; the careful one isolates it.
        try:
            relation, types, options = self._relation(chunk)
            return self._con.sql(build_fast_sql(relation, types, **options)).to_arrow_table()
        except duckdb.Error:
            return None

    def _relation(
        self, chunk: RawChunk, table: str = "_raw", *, careful: bool = True
    ) -> tuple[str, dict[str, str], dict[str, Any]]:
        if chunk.kind == "json":
            sql, types, unknown = json_source_sql(table, careful=careful)
            return (
                f"({sql})",
                types,
                {"pre_error": True, "unknown_column": None if self.allow_unknown_fields else unknown},
            )
        rel = self._con.sql(f"SELECT * FROM {table}")
        types = {
            name: str(t)
            for name, t in zip(rel.columns, rel.types, strict=True)
            if name != ROW_COLUMN and not name.startswith("tag.")
        }
        return table, types, {"tag_columns": chunk.tag_columns}

    def price(self, events: pa.Table, source: str, ingested_at: datetime) -> tuple[pa.Table, int]:
        priced = price_table(self.book, events)
        n = events.num_rows
        columns = dict(zip(events.column_names, events.columns, strict=True))
        columns.update(priced.columns)
        # A provider left out by the source is the one the price book found for the model.
        columns["provider"] = pc.coalesce(columns["provider"], priced.columns["priced_provider"])
        columns["source"] = pa.repeat(arrow_values.string_scalar(source), n)
        at_type = LEDGER_SCHEMA.field("ingested_at").type
        columns["ingested_at"] = pa.repeat(arrow_values.timestamp_scalar(ingested_at, at_type), n)
        table = pa.table([columns[f.name] for f in LEDGER_SCHEMA], schema=LEDGER_SCHEMA)
        return table, priced.unpriced

    def _flush(
        self,
        pending: list[pa.Table],
        summary: IngestSummary,
        appender: _Appender | None = None,
        *,
        all_cores: bool = False,
    ) -> None:
        if not pending:
            return
        table = pa.concat_tables(pending) if len(pending) > 1 else pending[0]
        if appender is not None:
            appender.submit(table, all_cores=all_cores)
            return
        result = self.store.append(table)
        summary.accepted += result.inserted
        summary.duplicates += result.duplicates

    def _log_run(self, source: str, summary: IngestSummary) -> None:
        from ..ledger.schema import INGEST_RUN_SCHEMA

        row = {
            "run_id": uuid.uuid4().hex,
            "at": datetime.now(UTC),
            "source": source,
            "accepted": summary.accepted,
            "duplicates": summary.duplicates,
            "rejected": summary.rejected,
            "unpriced": summary.unpriced,
        }
        self.store.insert("ingest_runs", arrow_values.one_row(row, INGEST_RUN_SCHEMA))


def _empty_events() -> dict[str, pa.Array]:
    return {f.name: pa.array([], f.type) for f in EVENT_SCHEMA}


@dataclass
class _Checked:
    reader_rejections: list[Rejection]
    rejections: list[Rejection]
    priced: pa.Table | None
    unpriced: int
    progress: int


_DONE = object()


def _ahead(
    items: Iterator[Any],
    work: Callable[[Any], _Checked],
    *,
    workers: int = 1,
    depth: int = 1,
    on_exit: Callable[[], None] | None = None,
) -> Generator[_Checked, None, None]:
    """`work(item)` for each of `items`, computed in `workers` threads up to `depth` results ahead
    of the consumer (and one in each worker), yielded in order. Each thread calls `on_exit` as it
    ends.

    The items are taken one at a time, in order (a file is read front to back). An exception
    raised taking an item or working on it is raised here, at the point of the stream where it
    happened; a consumer that stops early (an append failed) stops the threads at their next item.
    """
    state = threading.Condition()
    done: dict[int, Any] = {}
    taken = consumed = 0
    end: int | None = None  # the index past the last item, once the items ran out (or broke)
    stop = False

    def run() -> None:
        try:
            work_through()
        finally:
            if on_exit is not None:
                on_exit()

    def work_through() -> None:
        nonlocal taken, end
        while True:
            with state:
                while not stop and end is None and taken >= consumed + depth + workers:
                    state.wait()
                if stop or end is not None:
                    return
                index = taken
                try:
                    item = next(items)
                except StopIteration:
                    end = index
                    state.notify_all()
                    return
                except BaseException as exc:  # handed to the consumer, which raises it
                    done[index], end = _Failed(exc), index + 1
                    state.notify_all()
                    return
                taken += 1
            try:
                result: Any = work(item)
            except BaseException as exc:
                result = _Failed(exc)
            del item
            with state:
                done[index] = result
                state.notify_all()

    threads = [
        threading.Thread(target=run, name=f"unitcost-ingest-check-{i}", daemon=True) for i in range(workers)
    ]
    for thread in threads:
        thread.start()
    try:
        while True:
            with state:
                while consumed not in done and (end is None or consumed < end):
                    state.wait()
                if consumed not in done:
                    return
                result = done.pop(consumed)
                consumed += 1
                state.notify_all()
            if isinstance(result, _Failed):
                raise result.error
            yield result
    finally:
        with state:
            stop = True
            state.notify_all()
        for thread in threads:
            thread.join()


@dataclass
class _Failed:
    error: BaseException


class _Appender:
    """Appends batches to the ledger one at a time, in a thread, adding their counts to `summary`.

    The ledger's engine releases the GIL while it appends, so the checks of the next batch
    (another engine, in the `_ahead` thread) run on the other core meanwhile. Appends stay
    sequential and in file order: a batch's duplicates are found against every batch before it.
    At most one batch is being appended while the next one is gathered, which bounds memory.
    (A plain thread per batch, not an executor: `concurrent.futures` cannot be imported while
    the interpreter exits, when the recorder's last events are written.)
    """

    def __init__(self, store: Store, summary: IngestSummary) -> None:
        self._store = store
        self._summary = summary
        self._thread: threading.Thread | None = None
        self._outcome: list[AppendResult | BaseException] = []

    def submit(self, table: pa.Table, *, all_cores: bool = False) -> None:
        """Append `table` once the previous append is done (raising its error, if it failed)."""
        self.wait()
        outcome = self._outcome

        def append() -> None:
            try:
                # Between two appends, a command waiting for a DuckDB ledger (`unitcost report`)
                # gets it; the append opens it again once that command is done.
                self._store.yield_to_waiters()
                outcome.append(self._store.append(table, all_cores=all_cores))
            except BaseException as exc:  # raised by the consumer, in its own thread
                outcome.append(exc)

        self._thread = threading.Thread(target=append, name="unitcost-ingest-append", daemon=True)
        self._thread.start()

    def wait(self) -> None:
        thread, self._thread = self._thread, None
        if thread is None:
            return
        thread.join()
        result = self._outcome.pop()
        if isinstance(result, BaseException):
            raise result
        self._summary.accepted += result.inserted
        self._summary.duplicates += result.duplicates

    def raise_failure(self) -> None:
        if self._thread is not None and not self._thread.is_alive():
            self.wait()

    def close(self) -> None:
        """Wait for the append under way, if any: it finishes (or fails) before the ledger is used again."""
        if self._thread is not None:
            self._thread.join()
