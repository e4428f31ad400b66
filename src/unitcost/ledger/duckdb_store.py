"""The embedded ledger: one DuckDB file.

Idempotency is a join on `event_id` rather than a primary-key index: DuckDB's ART
index slows down sharply as random keys (UUIDs) accumulate and costs more memory than
the data (measured: 10M UUID keys took 85 s to insert with the index, 6 s with the
anti-join; with DuckDB 2.0, 1M events into an empty ledger with a unique index on
event_id took 15.8 s of CPU against 3.2 s without). Duplicates inside one batch are
dropped first, keeping the first occurrence; then the ids of the batch already stored are
looked up (a scan of the event_id column: 0.4 s of CPU per 500k-event batch against 10M
events) and the rest inserted. One writer per ledger (DuckDB's file lock, `_write` within
the process) is what keeps that lookup and the insert from racing.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb

from .._version import __version__
from . import report_rollups
from .base import AppendResult, LedgerBusyError, LedgerVersionError, newer_schema_error
from .version import SCHEMA_VERSION

if TYPE_CHECKING:
    # Arrow comes with the first write or Arrow read: opening a ledger to report needs none.
    import pyarrow as pa

DEFAULT_MEMORY = "1GB"
# While a file streams in, the buffer pool fills with blocks already written (10M events: the
# whole 1 GB, for 2.2 GiB of peak RSS); appends gain nothing from keeping them cached.
BULK_MEMORY_BYTES = 512 << 20
_LOCK_WAIT_S = float(os.environ.get("UNITCOST_LOCK_WAIT", "10"))

log = logging.getLogger("unitcost.ledger")

_OPEN_READERS: weakref.WeakSet[DuckDBStore] = weakref.WeakSet()
"""Read-only stores not closed yet (a notebook's or a script's `Ledger(..., read_only=True)`)."""


@atexit.register
def _close_readers_at_exit() -> None:
    """A read-only store left open keeps its connection alive through interpreter shutdown (its
    `_courtesy` thread holds it), and DuckDB's bindings then print a screen of "leaked instance"
    lines. Closing it here costs nothing: it holds no write. Writers are left to their owners,
    whose own exit hooks may still need them (the recorder's last write)."""
    for store in list(_OPEN_READERS):
        with suppress(Exception):  # at exit, a store that cannot close has nothing left to lose
            store.close()


YIELD_POLL_S = 0.25
HANDOVER_S = 1.0
"""After giving the ledger up, how long the next use waits for the asking process to take it
(it retries every half second at most) before opening it again regardless."""
"""How often a process holding the ledger while idle looks for another that asked for it (a
`stat` of one file; see `DuckDBStore.yield_to_waiters`)."""


def wanted_path(path: Path) -> Path:
    """The file a process touches while it waits for a ledger another process holds (see
    `DuckDBStore.yield_to_waiters`)."""
    return path.with_name(path.name + ".wanted")


def no_ledger(path: str | Path) -> FileNotFoundError:
    """The error of a command that reads a ledger file that is not there."""
    return FileNotFoundError(
        f"no ledger at {path}: ingest events (unitcost ingest) or run "
        "`unitcost demo` first, or point --ledger / $UNITCOST_LEDGER at one"
    )


class DuckDBStore:
    dialect = "duckdb"

    def __init__(
        self,
        path: str | Path,
        *,
        read_only: bool = False,
        memory_limit: str | None = None,
        threads: int | None = None,
    ) -> None:
        self.path = Path(path)
        self.read_only = read_only
        if read_only and not self.path.exists():
            raise no_ledger(self.path)
        if not read_only:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        config: dict[str, Any] = {}
        # DuckDB would take 80 % of the machine; a ledger process shares it with its host,
        # and bigger-than-memory joins and aggregates spill to disk instead.
        config["memory_limit"] = memory_limit or os.environ.get("UNITCOST_DUCKDB_MEMORY") or DEFAULT_MEMORY
        # Only the default is lowered during bulk appends: a limit the user chose is kept.
        self._bulk_memory = config["memory_limit"] == DEFAULT_MEMORY
        if threads:
            config["threads"] = threads
        # A parallel append (`all_cores`) leaves each thread's last row group part full. DuckDB's
        # checkpoint "vacuums" such row groups into full ones by rewriting them, one thread, and
        # a checkpoint after a small append (the end of a file, a server's next write) did that
        # for every part-full group since the last one: 1M ingested events, 1.4 to 2 s. The
        # ledger is append-only (an event is never deleted), so there is nothing else to vacuum;
        # part-full row groups read as fast.
        config["max_vacuum_tasks"] = 0
        self._config = config
        self._live: duckdb.DuckDBPyConnection | None = _connect(self.path, read_only, config)
        self._write = threading.RLock()
        self._readers = 0  # cursors open for reads (fetch, snapshot, scan): the connection must stay
        # Guards `_readers` and the closing in `yield_to_waiters`, and not `_write`: reads go on
        # beside a write in another thread, as DuckDB allows.
        self._gate = threading.Lock()
        self._seen_wanted = _wanted_since(self.path)  # requests made before this store opened are not ours
        self._depth = 0  # nesting of transaction()
        self._dirty_hours: set[datetime] = set()  # rolled-up hours whose costs this transaction changed
        self._watch_hours: set[datetime] = set()  # the same, for the watch's rollups
        self._waiting = 0  # events appended since the report rollups were last refreshed
        self._partial_hours: set[datetime] = set()  # hours holding partial rows of several refreshes
        self._bulk = 0  # nesting of bulk()
        self._handover_until = 0.0  # monotonic time until which a process we gave way to may take it
        self._closed = False
        if not read_only:
            self.migrate()
            # Events written by an older unitcost, or behind this one's back, get rolled up now.
            self.refresh_rollups()
        elif self.schema_version() < SCHEMA_VERSION:
            # A ledger written by an older unitcost: bring it up to date once, then read it.
            self._con.close()
            DuckDBStore(self.path, memory_limit=config["memory_limit"]).close()
            self._live = _connect(self.path, True, config)
            self._check_version()
        else:
            self._check_version()
        self._stop_courtesy = threading.Event()
        if read_only:
            _OPEN_READERS.add(self)
            threading.Thread(target=self._courtesy, name="unitcost-ledger-courtesy", daemon=True).start()

    def _courtesy(self) -> None:
        """A read-only store gives the ledger up between its reads when a writer asks for it."""
        while not self._stop_courtesy.wait(YIELD_POLL_S):
            try:
                self.yield_to_waiters()
            except Exception:  # closing a connection should not fail; a read reopens it anyway
                log.exception("could not give the ledger %s up to a waiting writer", self.path)

    # ------------------------------------------------------------------ the connection

    @property
    def _con(self) -> duckdb.DuckDBPyConnection:
        """The connection, opened again if this store gave the ledger up to another process."""
        live = self._live
        if live is not None:
            return live
        with self._write:
            if self._live is None:
                if self._closed:
                    raise RuntimeError(f"the ledger {self.path} is closed")
                # The process we gave way to has not taken the ledger yet (it polls): opening it
                # again at once, as an ingest's next append would, would leave it waiting still.
                while time.monotonic() < self._handover_until and wanted_path(self.path).exists():
                    time.sleep(0.01)
                self._handover_until = 0.0
                # Asking whoever holds it meanwhile to give it back: a reader of the ledger that
                # stays open (a notebook's read-only Ledger) would otherwise stop the server's
                # writes for as long as it lives.
                self._live = _connect(self.path, self.read_only, self._config)
                self._check_version()
                if self._bulk and self._bulk_memory:
                    self._live.execute(f"SET memory_limit = '{BULK_MEMORY_BYTES}B'")
            return self._live

    def yield_to_waiters(self) -> bool:
        """Close the connection if another process has asked for the ledger since the last time
        this store gave it up; the next use opens it again (waiting for that process, up to
        `UNITCOST_LOCK_WAIT`). True when it was given up.

        A DuckDB file has one writer process, and readers cannot open it while it is open for
        writing. A server that writes the ledger for as long as it runs (`unitcost serve`, the
        gateway's ledger writer, an app's recorder) would otherwise keep every `unitcost
        report` and `unitcost alerts ack` out until it stops. Instead, a command that finds the
        ledger held touches `<ledger>.wanted` while it waits, and the server calls this between
        two writes (at least every fraction of a second when idle): the command gets in within
        one write. The server's writes wait meanwhile, which its producers already allow for (a
        spool, a retry, a 503 that OTLP exporters retry).

        Not inside a transaction or while a read is under way, but between two appends of an
        ingested file (`bulk`): a cron `unitcost ingest` of millions of events would otherwise
        keep reports out for a minute. Once per request, so that a request left behind by a
        command that has gone does not make the server give the ledger up again and again. A
        read-only store does this by itself, from a thread of its own (`_courtesy`): between
        its reads it holds nothing a server needs to keep, and a writer may not close the
        connection from another thread that way, since its writes use the connection outside
        the reads' bookkeeping. The next use of the connection gives the asking process up to
        `HANDOVER_S` to take the ledger before opening it again.
        """
        if self._live is None:
            return False
        wanted = _wanted_since(self.path)
        if wanted <= self._seen_wanted:
            return False
        with self._write:
            if self._closed or self._live is None or self._depth:
                return False
            with self._gate:
                if self._readers:
                    return False
                self._seen_wanted = wanted
                self._live.close()
                self._live = None
                self._handover_until = time.monotonic() + HANDOVER_S
        log.info("gave the ledger %s up to a process that asked for it; writes resume after it", self.path)
        return True

    # ------------------------------------------------------------------ schema

    def migrate(self) -> int:
        from .schema import MIGRATIONS

        with self._write:
            self._con.execute("CREATE TABLE IF NOT EXISTS meta (key VARCHAR PRIMARY KEY, value VARCHAR)")
            current = self.schema_version()
            if current > SCHEMA_VERSION:
                raise newer_schema_error(str(self.path), current, SCHEMA_VERSION)
            for migration in MIGRATIONS:
                if migration.version <= current:
                    continue
                self._con.execute("BEGIN TRANSACTION")
                try:
                    for statement in migration.duckdb:
                        self._con.execute(statement)
                    self._set_meta("schema_version", str(migration.version))
                    self._set_meta("migrated_by", f"unitcost {__version__}")
                    if current == 0:
                        self._set_meta("created_at", datetime.now(UTC).isoformat())
                    self._con.execute("COMMIT")
                except Exception:
                    self._con.execute("ROLLBACK")
                    raise
                current = migration.version
            return current

    def schema_version(self) -> int:
        try:
            row = _one(self._con.execute("SELECT value FROM meta WHERE key = 'schema_version'"))
        except duckdb.CatalogException:
            return 0
        return int(row[0]) if row else 0

    def _check_version(self) -> None:
        version = self.schema_version()
        if version > SCHEMA_VERSION:
            raise newer_schema_error(str(self.path), version, SCHEMA_VERSION)
        if version != SCHEMA_VERSION:
            raise LedgerVersionError(
                f"{self.path} is at schema version {version}; open it once read-write "
                f"(any command that writes, e.g. `unitcost ingest`) to migrate it to {SCHEMA_VERSION}"
            )

    def _set_meta(self, key: str, value: str) -> None:
        self._con.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", [key, value])

    def insert_meta(self, key: str, value: str) -> None:
        with self._write:
            self._set_meta(key, value)

    # ------------------------------------------------------------------ writes

    def append(self, table: pa.Table, *, all_cores: bool = False) -> AppendResult:
        """Insert events whose event_id is new; return how many went in and how many were already there.

        With `all_cores`, the insert may keep rows in any order, which lets DuckDB compress row
        groups on every thread of the connection instead of one (1M events: 4.0 s -> 1.7 s of
        wall, and 3.1 s of CPU instead of 4.0). Each row group still holds a contiguous run of
        the batch, and no query depends on physical order. The batch should come in Arrow
        batches of 40k rows or more: from batches of 4k, DuckDB leaves a second's work per
        million rows to the next checkpoint. Files take it for every append since their checks
        moved to C (`ingest/native.py`); while the checks were SQL, it cost 15 % more CPU,
        the two fighting for the cores."""
        import pyarrow.compute as pc

        n = table.num_rows
        if n == 0:
            return AppendResult(0, 0)
        with self._write:
            con = self._con
            # The ids already in the ledger first, then a plain insert of the rest: joining the
            # whole batch against the events would hold every column of it in the join's hash
            # table and insert from there, one thread, out of order; this holds the ids alone.
            # Whether an id repeats within the batch is asked of DuckDB too: its distinct count
            # runs on every core, Arrow's on one, three times slower (500k ids: 17 ms, 50 ms).
            con.register("_unitcost_ids", table.select(["event_id"]))
            try:
                distinct = _one(con.execute("SELECT count(DISTINCT event_id) FROM _unitcost_ids"))
                present = con.sql(
                    "SELECT b.event_id FROM _unitcost_ids b SEMI JOIN events e ON e.event_id = b.event_id"
                ).to_arrow_table()
            finally:
                con.unregister("_unitcost_ids")
            batch = table if distinct and distinct[0] == n else first_occurrences(table, repeats=True)
            in_batch_duplicates = n - batch.num_rows
            if present.num_rows:
                batch = batch.filter(
                    pc.invert(pc.is_in(batch.column("event_id"), value_set=present.column(0)))
                )
            inserted = 0
            if batch.num_rows:
                con.register("_unitcost_batch", batch)
                if all_cores:
                    con.execute("SET preserve_insertion_order = false")
                try:
                    row = _one(con.execute("INSERT INTO events BY NAME SELECT * FROM _unitcost_batch"))
                finally:
                    if all_cores:
                        con.execute("RESET preserve_insertion_order")
                    con.unregister("_unitcost_batch")
                inserted = int(row[0]) if row else 0
        self._waiting += inserted
        if self._waiting >= report_rollups.REFRESH_ROWS and not self._bulk:
            self._refresh()
        return AppendResult(inserted, n - inserted, in_batch_duplicates)

    def insert(self, table_name: str, table: pa.Table) -> None:
        # Read through a relation, not `register`: a view dropped inside a transaction keeps its
        # Arrow table alive until the commit, so a reprice writing its audit batch by batch in
        # one transaction would hold every batch in memory again.
        with self._write:
            self._con.from_arrow(table).query(
                "_unitcost_rows", f"INSERT INTO {table_name} BY NAME SELECT * FROM _unitcost_rows"
            )

    def upsert(self, table_name: str, table: pa.Table) -> None:
        with self._write:
            self._con.register("_unitcost_rows", table)
            try:
                self._con.execute(f"INSERT OR REPLACE INTO {table_name} BY NAME SELECT * FROM _unitcost_rows")
            finally:
                self._con.unregister("_unitcost_rows")

    def update_costs(self, table: pa.Table) -> int:
        """Overwrite the priced columns of the events in `table` (event_id + priced columns).

        The report rollups and the watch rollups of the hours these events are in are rebuilt
        in the same transaction."""
        if table.num_rows == 0:
            return 0
        from ..analytics.dialect import DUCKDB
        from ..watch import rollup as watch_rollup

        columns = [c for c in table.column_names if c != "event_id"]
        assignments = ", ".join(f'"{c}" = u."{c}"' for c in columns)
        with self.transaction():
            # A relation, not `register`, for the reason `insert` gives: a reprice updates batch
            # after batch in one transaction.
            updates = self._con.from_arrow(table)
            hours = _rows(
                updates.query("_unitcost_updates", report_rollups.dirty_hours_sql("_unitcost_updates"))
            )
            watch_hours = _rows(
                updates.query("_unitcost_updates", watch_rollup.dirty_hours_sql("_unitcost_updates", DUCKDB))
            )
            row = _rows(
                updates.query(
                    "_unitcost_updates",
                    f"UPDATE events SET {assignments} FROM _unitcost_updates u WHERE events.event_id = u.event_id",
                )
            )
            self._dirty_hours.update(hour for (hour,) in hours)
            self._watch_hours.update(hour for (hour,) in watch_hours)
        return int(row[0][0]) if row else 0

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One transaction; a transaction opened inside another is part of it."""
        with self._write:
            if self._depth:
                self._depth += 1
                try:
                    yield
                finally:
                    self._depth -= 1
                return
            self._con.execute("BEGIN TRANSACTION")
            self._depth = 1
            try:
                yield
                if self._dirty_hours:
                    report_rollups.rebuild_hours(self._run, self._read, self._dirty_hours)
                if self._watch_hours:
                    from ..analytics.dialect import DUCKDB
                    from ..watch import rollup as watch_rollup

                    listed = ", ".join(DUCKDB.ts_literal(h.isoformat()) for h in sorted(self._watch_hours))
                    self._run(
                        f"CREATE OR REPLACE TEMP TABLE _watch_hours AS SELECT unnest([{listed}]) AS hour"
                    )
                    # Dropped by the rollback if this fails: a DROP then would fail too, hiding why.
                    watch_rollup.rebuild_hours(self._run, self._read, "_watch_hours", DUCKDB)
                    self._run("DROP TABLE _watch_hours")
            except BaseException:
                self._con.execute("ROLLBACK")
                raise
            finally:
                self._depth = 0
                self._dirty_hours.clear()
                self._watch_hours.clear()
            self._con.execute("COMMIT")

    # ------------------------------------------------------------------ report rollups

    @contextmanager
    def bulk(self) -> Iterator[None]:
        """Appends inside are rolled up once, when the block ends: one pass over all of them,
        which leaves no partial rows to merge (an ingested file). A block that fails leaves its
        events to the next refresh; reports read them meanwhile."""
        with self._write:
            self._bulk += 1
            if self._bulk == 1 and self._bulk_memory:
                self._con.execute(f"SET memory_limit = '{BULK_MEMORY_BYTES}B'")
        try:
            yield
        finally:
            with self._write:
                self._bulk -= 1
                if not self._bulk and self._bulk_memory:
                    self._con.execute(f"SET memory_limit = '{DEFAULT_MEMORY}'")
        if not self._bulk:
            self.refresh_rollups()

    def refresh_rollups(self) -> int:
        """Roll up, for reports, the events appended since the last refresh (see `report_rollups`),
        and merge the partial rows the refreshes since the last call left in the same hours: the
        end of a batch of work (an ingested file, closing the ledger). Returns how many events
        were rolled up; nothing happens inside a transaction (the next append or close does it)."""
        rolled = self._refresh()
        with self._write:
            if self._partial_hours and not self._depth and not self.read_only:
                with self.transaction():
                    report_rollups.compact_hours(self._run, self._read, self._partial_hours)
                self._partial_hours.clear()
        return rolled

    def _refresh(self) -> int:
        """Roll up the events waiting (what an append does once enough are)."""
        if self.read_only:
            return 0
        with self._write:
            if self._depth:
                return 0
            with self.transaction():
                rolled, shared = report_rollups.refresh(self._run, self._read)
            self._waiting = 0
            self._partial_hours.update(shared)
            return rolled

    def rebuild_rollups(self) -> int:
        """Build the report rollups again from every event: after events were deleted by hand
        (unitcost never deletes one). Returns how many events were rolled up."""
        with self._write, self.transaction():
            rolled = report_rollups.rebuild(self._run, self._read)
            self._waiting = 0
            self._partial_hours.clear()
            return rolled

    def _run(self, sql: str) -> None:
        """A statement inside the writer's current transaction."""
        self._con.execute(sql).fetchall()

    def _read(self, sql: str) -> list[dict[str, Any]]:
        return _dicts(self._con, sql)

    # ------------------------------------------------------------------ reads

    def fetch(self, sql: str, params: Sequence[Any] | None = None) -> pa.Table:
        with self._reading() as cursor:
            return cursor.sql(sql, params=list(params) if params else None).to_arrow_table()

    @contextmanager
    def snapshot(self) -> Iterator[Callable[[str], list[dict[str, Any]]]]:
        """Reads that all see the ledger as it was at the first of them (one read transaction),
        so a report's queries agree with each other while a writer appends or rolls up. Rows
        come straight from DuckDB as dicts, not through Arrow: pyarrow imports pandas to turn
        values into Python objects, a second or so that a report does not need."""
        with self._reading() as cursor:
            cursor.execute("BEGIN TRANSACTION")
            yield lambda sql: _dicts(cursor, sql)

    def scan(
        self, sql: str, params: Sequence[Any] | None = None, batch_size: int = 200_000
    ) -> Iterator[pa.RecordBatch]:
        with self._reading() as cursor:
            reader = cursor.sql(sql, params=list(params) if params else None).to_arrow_reader(batch_size)
            yield from reader

    @contextmanager
    def _reading(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A cursor of its own for a read; the connection is not given up while one is open."""
        with self._gate:
            # `_con` opens the connection again (under `_write`, waiting for the process that
            # holds the ledger) only if it was given up, which happens under `_gate` too.
            cursor = self._con.cursor()
            self._readers += 1
        try:
            yield cursor
        finally:
            cursor.close()
            with self._gate:
                self._readers -= 1

    def checkpoint(self) -> None:
        with self._write:
            self._con.execute("CHECKPOINT")

    def close(self) -> None:
        """Roll up what is waiting, then close; closing again does nothing. A store that gave the
        ledger up (`yield_to_waiters`) does not open it again for that: the next writer to open
        the ledger rolls those events up, and reports read them meanwhile."""
        self._stop_courtesy.set()
        with self._write:
            if self._closed:
                return
            try:
                if self._live is not None:
                    self.refresh_rollups()
            finally:
                self._closed = True
                if self._live is not None:
                    self._live.close()
                    self._live = None


def _dicts(con: duckdb.DuckDBPyConnection, sql: str) -> list[dict[str, Any]]:
    con.execute(sql)
    names = [column[0] for column in con.description or ()]
    return [dict(zip(names, row, strict=True)) for row in con.fetchall()]


def _rows(result: duckdb.DuckDBPyRelation | None) -> list[Any]:
    """Every row of a statement run through a relation (None: it returned nothing)."""
    return result.fetchall() if result is not None else []


def _one(result: duckdb.DuckDBPyConnection) -> tuple[Any, ...] | None:
    """The first row, reading the result to its end: DuckDB refuses other work on a
    connection while a result is only partly fetched."""
    rows = result.fetchall()
    return rows[0] if rows else None


def _wanted_since(path: Path) -> int:
    """When a process last asked for the ledger (ns since the epoch); 0 if none has."""
    try:
        return wanted_path(path).stat().st_mtime_ns
    except OSError:
        return 0


def _ask_for(path: Path) -> bool:
    """Tell the process holding the ledger that this one waits for it; False where the file
    cannot be written (a read-only directory: this process then waits as it would anyway)."""
    try:
        wanted_path(path).touch()
    except OSError:
        return False
    return True


def _connect(path: Path, read_only: bool, config: dict[str, Any]) -> duckdb.DuckDBPyConnection:
    deadline = time.monotonic() + _LOCK_WAIT_S
    delay = 0.05
    asked = False
    while True:
        try:
            con = duckdb.connect(str(path), read_only=read_only, config=config)
            if asked:
                # Answered: a request left standing would make the holder give the ledger up again.
                wanted_path(path).unlink(missing_ok=True)
            # Day and month boundaries are UTC whatever the machine's zone (set after connecting:
            # the time-zone extension is loaded on first use, not at configuration time).
            con.execute("SET TimeZone = 'UTC'")
            return con
        except duckdb.IOException as exc:
            if "lock" not in str(exc).lower():
                raise
            # Again at each attempt: a holder gives way once per request (a newer file time).
            asked = _ask_for(path) or asked
            if time.monotonic() >= deadline:
                if asked:
                    wanted_path(path).unlink(missing_ok=True)
                raise LedgerBusyError(
                    f"the ledger {path} is open for writing by another process ({exc}). A DuckDB "
                    "ledger has one writer at a time; `unitcost serve`, the gateway's ledger "
                    "writer, an app's recorder and an ingest give it up between two writes when "
                    "another command asks, and a reader between two reads, but a watch cycle or a "
                    "reprice keeps it until it is done, and so does a process of an older unitcost: wait "
                    "for it or stop it, or use a ClickHouse ledger for several writers "
                    "(docs/scale-out.md)."
                ) from exc
            time.sleep(delay)
            delay = min(delay * 2, 0.5)


def first_occurrences(table: pa.Table, *, repeats: bool | None = None) -> pa.Table:
    """The first row of each event_id, in table order. `repeats`: whether some id is known to
    repeat (None: Arrow counts the distinct ids to know)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if repeats is None:
        repeats = pc.count_distinct(table.column("event_id")).as_py() != table.num_rows
    if not repeats:
        return table
    indexed = table.append_column("_row", pa.array(range(table.num_rows), type=pa.int64()))
    first = indexed.group_by("event_id", use_threads=False).aggregate([("_row", "min")])
    keep = pc.sort_indices(first.column("_row_min"))
    rows = pc.take(first.column("_row_min"), keep)
    return table.take(rows)
