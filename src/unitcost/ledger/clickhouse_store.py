"""The scale-out ledger: ClickHouse, on a server or in-process (chDB), same queries as DuckDB.

Both targets go through `clickhouse-connect`: `clickhouse://` / `clickhouses://` reach a
server over HTTP(S), `chdb://PATH` (or `chdb://` in memory) runs the ClickHouse engine
inside this process through clickhouse-connect's chDB backend. One client API, one code path.

Idempotency on `event_id` (see docs/scale-out.md):
- `append` first drops duplicates inside the batch (first occurrence wins, as in DuckDB),
  then asks ClickHouse which of the batch's ids are already stored (ids are staged in a
  Memory table and looked up through the `events` primary key) and inserts only new rows.
  So `AppendResult.duplicates` is exact and report queries need neither FINAL nor argMax.
- Within one process appends are serialised. Should two writers race on the same new id
  (both found it new), each looks its ids up again after its insert and the copy committed
  first is kept, the other deleted at once (`_settle_races`): reports never wait for a merge
  to count an event once. A copy left by a writer stopped half-way is settled the same way by
  `deduplicate()`: `events` is a ReplacingMergeTree ordered by `event_id`, but a merge only
  collapses the copies dated in one month, and keeps the last.

Writes that must replace rows (outcome upserts, reprices) delete or mutate synchronously
rather than append a newer version, for the same reason: plain `sum()` stays right.
"""

from __future__ import annotations

import os
import re
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, TypeVar
from urllib.parse import parse_qsl, unquote, urlsplit

import pyarrow as pa
import pyarrow.compute as pc

from .._version import __version__
from ..utc import as_utc
from .base import AppendResult, LedgerUnreachableError, newer_schema_error
from .clickhouse_schema import (
    META_DDL,
    all_tables,
    aux_keys,
    duckdb_result_schema,
    event_columns,
    quote,
    table_ddl,
)
from .duckdb_store import first_occurrences
from .version import SCHEMA_VERSION

# Sessions settings that make ClickHouse answer the report's standard SQL as DuckDB does:
# NULL (not a default value) for unmatched LEFT JOIN columns and for the keys a grouping
# set leaves out; a column name wins over an alias of the same name (`sum(requests) AS
# requests` must not be read inside another aggregate); ALTER UPDATE/DELETE return only
# once applied.
SESSION_SETTINGS: dict[str, Any] = {
    "prefer_column_name_to_alias": 1,
    "cast_keep_nullable": 1,
    "join_use_nulls": 1,
    "group_by_use_nulls": 1,
    "mutations_sync": 2,
    "allow_nondeterministic_mutations": 1,
}


class ClickHouseStore:
    """A `Store` on ClickHouse. Build it with `from_url`, or pass a clickhouse-connect client."""

    dialect = "clickhouse"

    def __init__(self, client: Any, *, target: str = "clickhouse", read_only: bool = False) -> None:
        self.client = client
        self.target = target
        self._write = threading.RLock()
        self._depth = 0  # nesting of transaction()
        self._watch_hours: set[datetime] = set()  # watch-rolled-up hours whose costs it changed
        self.database: str = str(self._scalar("SELECT currentDatabase()"))
        if read_only and "events" not in self._tables():
            raise no_ledger_in(target, f"the database {self.database!r} holds no unitcost ledger")
        # A read opens an older ledger too: it is brought up to date first, as a DuckDB file is.
        self.migrate()

    @classmethod
    def from_url(cls, url: str, *, read_only: bool = False) -> ClickHouseStore:
        """`clickhouse[s]://user:pass@host:port/db?setting=value`, `chdb://PATH` or `chdb://` (memory).

        The password may instead come from $UNITCOST_CLICKHOUSE_PASSWORD so it never sits in a
        config file. Query parameters are passed on as ClickHouse settings, except `database`
        for chdb (`chdb://PATH?database=NAME`), which picks the database as the URL path does
        for a server. In-memory chdb ledgers open at the same time share one engine: give
        each its own database to keep them apart.

        `read_only` (the read commands): a database or chDB path that does not exist is "no
        ledger", as a missing DuckDB file is, rather than a new empty ledger whose report says
        nothing was spent. Whatever goes wrong while opening (the server down, the password
        refused, a mistyped setting, a port that is not a number) is one line naming the
        ledger, never a traceback or the password."""
        from clickhouse_connect.driver.exceptions import ClickHouseError

        target = redact(url)
        try:
            client, database = _connect(url, read_only)
        except (ClickHouseError, ValueError) as exc:
            raise LedgerUnreachableError(f"cannot open the ClickHouse ledger {target}: {_why(exc)}") from None
        try:
            if database:
                # Create it only when missing: a user allowed to write tables may not create databases.
                if not client.command(
                    f"SELECT count() FROM system.databases WHERE name = {bind('?', [database])}"
                ):
                    if read_only:
                        raise no_ledger_in(target, f"the database {database!r} does not exist")
                    client.command(f"CREATE DATABASE IF NOT EXISTS {quote(database)}")
                client.database = database
            return cls(client, target=target, read_only=read_only)
        except ClickHouseError as exc:
            client.close()
            raise LedgerUnreachableError(f"cannot open the ClickHouse ledger {target}: {_why(exc)}") from None
        except BaseException:
            client.close()
            raise

    # ------------------------------------------------------------------ schema

    def migrate(self) -> int:
        """Bring the tables to this unitcost's schema and record the version in `meta`.

        ClickHouse's schema is converged rather than replayed: every table is created from
        FIELDS / AUX_TABLES if missing and every missing column is added, which is what each
        DuckDB migration does for its own engine."""
        with self._write:
            present = self._tables()
            # An up-to-date ledger is opened without a single write: a reader's ClickHouse account
            # may be read-only (`readonly=2`), and even `CREATE TABLE IF NOT EXISTS` is a write.
            if present.get("meta") == {"key", "value", "at"} and self.schema_version() == SCHEMA_VERSION:
                return SCHEMA_VERSION
            self._refuse_foreign_tables(present)
            self.client.command(META_DDL)
            current = self.schema_version()
            if current > SCHEMA_VERSION:
                raise newer_schema_error(self.target, current, SCHEMA_VERSION)
            if current == SCHEMA_VERSION:
                return current
            for name, columns in all_tables().items():
                self.client.command(table_ddl(name))
                existing = self._column_types(name)
                for column, kind in columns.items():
                    if column not in existing:
                        self.client.command(
                            f"ALTER TABLE {quote(name)} ADD COLUMN IF NOT EXISTS {quote(column)} {kind}"
                        )
                    elif existing[column] != kind and "Decimal(" in existing[column] and "Decimal(" in kind:
                        # A sum widened (DECIMAL(18, 12) to (38, 12), migration 8): exact, every value fits.
                        self.client.command(f"ALTER TABLE {quote(name)} MODIFY COLUMN {quote(column)} {kind}")
            if current == 0:
                self._set_meta("created_at", datetime.now(UTC).isoformat())
            self._set_meta("migrated_by", f"unitcost {__version__}")
            self._set_meta("schema_version", str(SCHEMA_VERSION))
            return SCHEMA_VERSION

    def schema_version(self) -> int:
        value = self.meta("schema_version")
        return int(value) if value else 0

    def meta(self, key: str) -> str | None:
        rows = self._untyped(
            "SELECT argMax(value, at) AS value, count() AS n FROM meta WHERE key = ?", [key]
        ).to_pylist()
        return rows[0]["value"] if rows and rows[0]["n"] else None

    def _tables(self) -> dict[str, set[str]]:
        """The tables of this store's database, with their columns."""
        rows = self.fetch(
            "SELECT table, groupArray(name) AS columns FROM system.columns WHERE database = ? GROUP BY table",
            [self.database],
        ).to_pylist()
        return {str(r["table"]): {str(c) for c in r["columns"]} for r in rows}

    def _refuse_foreign_tables(self, present: dict[str, set[str]]) -> None:
        """Stop before touching a table of the same name that another tool owns.

        A shared server's database may already hold an `events` (or `meta`, `alerts`, ...)
        table of another product. `CREATE TABLE IF NOT EXISTS` would keep it and the
        migration would then add unitcost's columns to it: their data altered, and reports
        read from rows that are not LLM calls. A table is unitcost's when every column it has
        is one unitcost defines (a half-finished earlier migration leaves fewer, never others).
        Once `meta` is there the database is a unitcost ledger, and columns its owners added
        since (a materialised column for their dashboards) are theirs to keep."""
        expected = {"meta": {"key", "value", "at"}, **{n: set(c) for n, c in all_tables().items()}}
        if "meta" in present and present["meta"] <= expected["meta"]:
            return
        for name, columns in expected.items():
            foreign = sorted(present.get(name, set()) - columns)
            if foreign:
                raise NotALedgerError(
                    f"{self.target}: the table {name!r} of database {self.database!r} is not a "
                    f"unitcost table (it has the columns {', '.join(foreign[:5])}"
                    f"{', ...' if len(foreign) > 5 else ''}); unitcost changes nothing in it: "
                    "give the ledger a database of its own (the URL's path, or ?database= for chDB)"
                )

    def _columns(self, table: str) -> list[str]:
        return list(self._column_types(table))

    def _column_types(self, table: str) -> dict[str, str]:
        rows = self.fetch(
            "SELECT name, type FROM system.columns WHERE database = ? AND table = ? ORDER BY position",
            [self.database, table],
        )
        return {str(row["name"]): str(row["type"]) for row in rows.to_pylist()}

    def _set_meta(self, key: str, value: str) -> None:
        row = pa.table(
            {
                "key": pa.array([key]),
                "value": pa.array([value]),
                "at": pa.array([datetime.now(UTC)], type=pa.timestamp("us", tz="UTC")),
            }
        )
        self.client.insert_arrow("meta", row)

    def insert_meta(self, key: str, value: str) -> None:
        with self._write:
            self._set_meta(key, value)

    # ------------------------------------------------------------------ writes

    def append(self, table: pa.Table, *, all_cores: bool = False) -> AppendResult:
        """Insert events whose event_id is new; return how many went in and how many were already there.

        `all_cores` changes nothing here: the server schedules its own inserts."""
        n = table.num_rows
        if n == 0:
            return AppendResult(0, 0)
        batch = first_occurrences(table)
        in_batch_duplicates = n - batch.num_rows
        with self._write:
            with self._staged("events", ["event_id"], batch.select(["event_id"])) as stage:
                existing = self.fetch(
                    f"SELECT event_id FROM events WHERE event_id IN (SELECT event_id FROM {stage})"
                ).column("event_id")
            if len(existing):
                batch = batch.filter(pc.invert(pc.is_in(batch.column("event_id"), value_set=existing)))
            inserted = 0
            if batch.num_rows:
                self.client.insert_arrow("events", batch)
                inserted = batch.num_rows - self._settle_races(batch)
        return AppendResult(inserted, n - inserted, in_batch_duplicates)

    def _settle_races(self, inserted: pa.Table) -> int:
        """Keep one copy of each event another writer stored at the same time as this one; return
        how many of `inserted` were such events that the other writer stored first.

        Two writers (processes, replicas, the same file ingested twice at once) may both find an
        id new and both insert it. Reports sum plain rows, so the second copy must go now, not at
        the ReplacingMergeTree's next merge, whenever that comes. The copy kept is the one in the
        part with the lowest block number: ClickHouse numbers blocks as it commits them, so that
        is the copy that was visible first, and every writer settling the race picks the same one.
        Which copy is this writer's is told by its `ingested_at` and `source`."""
        identity = [c for c in ("event_id", "ingested_at", "source") if c in inserted.column_names]
        with self._staged("events", identity, inserted.select(identity)) as stage:
            raced, lost = self._race_counts(stage, identity)
            if raced:
                self.client.command(
                    f"DELETE FROM events WHERE (event_id, _part) IN ({_later_copies(f'SELECT event_id FROM {stage}')})"
                )
                raced, lost = self._race_counts(stage, identity)
        return lost

    def _race_counts(self, stage: str, identity: Sequence[str]) -> tuple[int, int]:
        """Events of `stage` stored more than once, and those none of whose copies is this writer's."""
        mine = ", ".join(f"coalesce({quote(c)}, '')" if c == "source" else quote(c) for c in identity)
        row = self._untyped(
            "SELECT countIf(copies > 1) AS raced, countIf(mine = 0) AS lost FROM ("
            f"SELECT event_id, count() AS copies, countIf(({mine}) IN (SELECT {mine} FROM {stage})) AS mine "
            f"FROM events WHERE event_id IN (SELECT event_id FROM {stage}) GROUP BY event_id)"
        ).to_pylist()[0]
        return int(row["raced"]), int(row["lost"])

    def insert(self, table_name: str, table: pa.Table) -> None:
        if table.num_rows == 0:
            return
        with self._write:
            self.client.insert_arrow(table_name, table)

    def upsert(self, table_name: str, table: pa.Table) -> None:
        """Replace rows with the same key (the table's DuckDB primary key), then insert.

        Delete-then-insert, not a newer version beside the old: a reader may briefly miss the
        row, but never sees it twice (report joins on outcomes would double-count)."""
        key = list(aux_keys().get(table_name, ()))
        if table.num_rows == 0:
            return
        with self._write:
            if key:
                columns = ", ".join(quote(k) for k in key)
                with self._staged(table_name, key, table.select(key)) as stage:
                    self.client.command(
                        f"DELETE FROM {quote(table_name)} WHERE ({columns}) IN (SELECT {columns} FROM {stage})"
                    )
            self.client.insert_arrow(table_name, table)

    def update_costs(self, table: pa.Table) -> int:
        """Overwrite the priced columns of the events in `table` (event_id + priced columns).

        The new values go into a Join-engine table and one synchronous ALTER TABLE UPDATE
        reads them with joinGet: the ClickHouse way to update many rows with different values.
        The watch rollups of the hours these events are in are rebuilt when the outermost
        `transaction` ends (at once outside one)."""
        if table.num_rows == 0:
            return 0
        from ..analytics.dialect import CLICKHOUSE
        from ..watch.rollup import dirty_hours_sql

        table = first_occurrences(table)
        types = event_columns()
        columns = [c for c in table.column_names if c != "event_id"]
        name = f"_unitcost_update_{uuid.uuid4().hex}"
        body = ", ".join(f"{quote(c)} {types[c]}" for c in ["event_id", *columns])
        with self.transaction():
            self.client.command(
                f"CREATE TABLE {quote(name)} ({body}) ENGINE = Join(ANY, LEFT, event_id) "
                "SETTINGS join_use_nulls = 1"
            )
            try:
                self.client.insert_arrow(name, table)
                changed = self._scalar(
                    f"SELECT count() FROM events WHERE event_id IN (SELECT event_id FROM {quote(name)})"
                )
                if changed:
                    hours = self._untyped(dirty_hours_sql(quote(name), CLICKHOUSE)).column("hour")
                    self._watch_hours.update(as_utc(hour) for hour in hours.to_pylist())
                    qualified = self.database + "." + name
                    assignments = ", ".join(
                        f"{quote(c)} = joinGet('{qualified}', '{c}', event_id)" for c in columns
                    )
                    self.client.command(
                        f"ALTER TABLE events UPDATE {assignments} "
                        f"WHERE event_id IN (SELECT event_id FROM {quote(name)})"
                    )
            finally:
                self.client.command(f"DROP TABLE IF EXISTS {quote(name)}")
        return int(changed)

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Best effort: ClickHouse has no multi-statement transactions.

        The block's writes are serialised with every other write of this store and each
        statement is atomic on its own (an INSERT block, a synchronous mutation), but an
        exception in the block does not undo the statements already run. unitcost's own
        uses are safe to repeat: a reprice interrupted half-way converges when run again. Its
        audit never claims more than was done: each batch's events go to `reprice_events`
        before they are updated, and the run's row (`reprice_runs`) only once all are, so an
        interrupted run shows as event rows whose run_id has no run row.

        The watch rollups of the hours whose event costs the block changed are rebuilt from the
        events as it ends, also when it fails: the updates already run stay."""
        with self._write:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
                if not self._depth and self._watch_hours:
                    from ..analytics.dialect import CLICKHOUSE
                    from ..watch.rollup import rebuild_hours

                    hours, self._watch_hours = self._watch_hours, set()
                    listed = pa.table({"hour": pa.array(sorted(hours), pa.timestamp("us", tz="UTC"))})
                    with self._staged("watch_hourly", ["hour"], listed) as stage:
                        rebuild_hours(
                            self.client.command, lambda sql: self._untyped(sql).to_pylist(), stage, CLICKHOUSE
                        )

    def deduplicate(self) -> None:
        """Leave one copy of every row that racing writers stored twice under one key (costly).

        An event keeps its copy committed first, as a settled race (`_settle_races`) and DuckDB
        do, whatever month each copy is dated in: a merge would collapse only the copies of one
        monthly partition, and keep the last. A keyed table is merged (`OPTIMIZE ... FINAL`: the
        row written last wins, as `upsert` has it). Tables without a key are left alone: two equal
        rows there are two facts (two watch cycles rolling up the same call in one hour), which
        `DEDUPLICATE` would make one."""
        with self._write:
            if self.client.command(f"SELECT count() FROM ({_STORED_TWICE})"):
                self.client.command(
                    f"DELETE FROM events WHERE (event_id, _part) IN ({_later_copies(_STORED_TWICE)})"
                )
            keyed = aux_keys()
            for name in all_tables():
                if name in keyed:
                    self.client.command(f"OPTIMIZE TABLE {quote(name)} FINAL")

    @contextmanager
    def _staged(self, like: str, columns: Sequence[str], rows: pa.Table) -> Iterator[str]:
        """A temporary Memory table holding `rows` (columns typed as in table `like`)."""
        name = quote(f"_unitcost_stage_{uuid.uuid4().hex}")
        select = ", ".join(quote(c) for c in columns)
        self.client.command(
            f"CREATE TABLE {name} ENGINE = Memory AS SELECT {select} FROM {quote(like)} LIMIT 0"
        )
        try:
            self.client.insert_arrow(name.strip("`"), rows)
            yield name
        finally:
            self.client.command(f"DROP TABLE IF EXISTS {name}")

    # ------------------------------------------------------------------ reads

    def fetch(self, sql: str, params: Sequence[Any] | None = None) -> pa.Table:
        """The query's result, in the types the DuckDB ledger gives it (`duckdb_result_schema`)."""
        query = bind(sql, params)
        result: pa.Table = self.client.query_arrow(query)
        return _retyped(result, duckdb_result_schema(result.schema, lambda: self._query_tree(query)))

    def _untyped(self, sql: str, params: Sequence[Any] | None = None) -> pa.Table:
        """A result as ClickHouse types it, for unitcost's own bookkeeping queries: they read
        plain values, and retyping a count would cost them a round trip (`EXPLAIN`)."""
        result: pa.Table = self.client.query_arrow(bind(sql, params))
        return result

    def _query_tree(self, query: str) -> str | None:
        """The analyser's `EXPLAIN QUERY TREE` of a query; None for a statement it cannot explain."""
        from clickhouse_connect.driver.exceptions import ClickHouseError

        try:
            lines = self.client.query_arrow(f"EXPLAIN QUERY TREE passes = 1 {query}").column(0).to_pylist()
        except ClickHouseError:
            return None
        return "\n".join(str(line) for line in lines)

    def refresh_rollups(self) -> int:
        """ClickHouse keeps no report rollups: it scans the events fast enough at scale."""
        return 0

    @contextmanager
    def bulk(self) -> Iterator[None]:
        """Nothing to defer: no report rollups here."""
        yield

    @contextmanager
    def snapshot(self) -> Iterator[Callable[[str], list[dict[str, Any]]]]:
        """Reads for one report. ClickHouse has no read transactions; each query sees the parts
        committed when it starts (no rollups move rows around here, so the queries agree)."""
        yield lambda sql: self.fetch(sql).to_pylist()

    def scan(
        self, sql: str, params: Sequence[Any] | None = None, batch_size: int = 200_000
    ) -> Iterator[pa.RecordBatch]:
        query = bind(sql, params)
        schema: pa.Schema | None = None
        with self.client.query_arrow_stream(query) as stream:
            pending: list[pa.RecordBatch] = []
            rows = 0
            for received in stream:
                if schema is None:
                    schema = duckdb_result_schema(received.schema, lambda: self._query_tree(query))
                batch = _retyped(received, schema)
                pending.append(batch)
                rows += batch.num_rows
                if rows >= batch_size:
                    yield from pa.Table.from_batches(pending).combine_chunks().to_batches(batch_size)
                    pending, rows = [], 0
            if pending:
                yield from pa.Table.from_batches(pending).combine_chunks().to_batches(batch_size)

    def _scalar(self, sql: str) -> Any:
        return self.client.command(sql)

    def yield_to_waiters(self) -> bool:
        """A ClickHouse server takes any number of writers and readers: nobody waits for this one."""
        return False

    def close(self) -> None:
        with self._write:
            self.client.close()


_BLOCK = "toUInt64(splitByChar('_', substring(_part, length(_partition_id) + 2))[1])"
"""The first block number of a row's part (part names are `{partition}_{min}_{max}_{level}...`)."""


_STORED_TWICE = "SELECT event_id FROM events GROUP BY event_id HAVING count() > 1"


def _later_copies(ids: str) -> str:
    """(event_id, part) of every copy but the first committed of each event of `ids` (a query
    of event ids) stored twice."""
    return (
        f"SELECT event_id, tupleElement(arrayJoin(arrayPopFront(arraySort(groupArray(({_BLOCK}, _part))))), 2) "
        f"FROM events WHERE event_id IN ({ids}) GROUP BY event_id HAVING count() > 1"
    )


_Result = TypeVar("_Result", pa.Table, pa.RecordBatch)


def _retyped(result: _Result, schema: pa.Schema) -> _Result:
    """The result cast to `schema`: lossless, or left as it is (a count past 2^63)."""
    if result.schema.equals(schema):
        return result
    try:
        return result.cast(schema)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return result


class NotALedgerError(ValueError):
    """The database holds tables of the same names as unitcost's that another tool owns."""


def no_ledger_in(target: str, why: str) -> FileNotFoundError:
    """The error of a read command whose ClickHouse ledger is not there (DuckDB says the same)."""
    return FileNotFoundError(
        f"no ledger at {target}: {why}; ingest events into it first (unitcost ingest), or "
        "point --ledger / $UNITCOST_LEDGER at an existing one"
    )


def _connect(url: str, read_only: bool) -> tuple[Any, str | None]:
    """A clickhouse-connect client for the URL, and the database the URL names (None: default)."""
    import clickhouse_connect

    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    # Credentials in the query (`?user=x&password=y`, as ClickHouse's HTTP interface takes them)
    # are credentials, not session settings: sent as settings they would be refused, and would
    # travel in the URL of every request (and of the transport's retry warnings).
    user, password = query.pop("user", None), query.pop("password", None)
    timeouts: dict[str, Any] = {
        name: _seconds(name, query.pop(name)) for name in CLIENT_TIMEOUTS if name in query
    }
    settings: dict[str, Any] = {**SESSION_SETTINGS, **query}
    if parts.scheme == "chdb":
        location = url[len("chdb://") :].split("?", 1)[0]
        path = None if location in ("", "memory", ":memory:") else location
        if read_only and path is not None and not os.path.exists(path):
            # chDB would create the misspelt directory and report nothing from it.
            raise no_ledger_in(redact(url), f"the directory {path} does not exist")
        database = str(settings.pop("database", "")) or None
        return clickhouse_connect.get_client(interface="chdb", path=path, settings=settings), database
    secure = parts.scheme == "clickhouses"
    try:
        port = parts.port or (8443 if secure else 8123)
    except ValueError as exc:  # "Port out of range 0-65535", "Port could not be cast ..."
        raise ValueError(f"its port is not valid ({str(exc)[:1].lower()}{str(exc)[1:]})") from None
    if parts.password:
        password = unquote(parts.password)
    elif password is None:
        password = os.environ.get("UNITCOST_CLICKHOUSE_PASSWORD", "")
    if parts.username:
        user = unquote(parts.username)
    with _quiet_transport_warnings():
        client = clickhouse_connect.get_client(
            host=parts.hostname or "localhost",
            port=port,
            username=user or "default",
            password=password,
            secure=secure,
            settings=settings,
            # No server session: queries from several threads would lock it, and unitcost keeps
            # no session state (settings travel with every query, staging tables are real tables).
            autogenerate_session_id=False,
            **timeouts,
        )
    return client, parts.path.strip("/") or None


CLIENT_TIMEOUTS = ("connect_timeout", "send_receive_timeout")
"""Query parameters of a server URL that are the client's timeouts (seconds), not settings:
clickhouse-connect waits 300 s for an answer by default, which a server that accepted the
connection and hangs would make a `unitcost report` wait."""


def _seconds(name: str, value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise ValueError(f"{name} must be a number of seconds above 0, not {value!r}")
    return seconds


@contextmanager
def _quiet_transport_warnings() -> Iterator[None]:
    """clickhouse-connect logs "Unexpected Http Driver Exception" before it raises the error
    that `from_url` turns into its one line: while opening, that warning says nothing more."""
    import logging

    def drop(record: logging.LogRecord) -> bool:
        return record.getMessage() != "Unexpected Http Driver Exception"

    transport = logging.getLogger("clickhouse_connect.driver._backend.http_sync")
    transport.addFilter(drop)
    try:
        yield
    finally:
        transport.removeFilter(drop)


def _why(exc: BaseException) -> str:
    """Why a ClickHouse ledger could not be opened, in one line a user can act on."""
    cause: BaseException | None = exc
    while cause is not None:
        # The socket's own words: refused, unknown host, timed out, a certificate not trusted.
        said = _socket_error(cause)
        if said:
            host = re.search(r"host='([^']*)', port=(\d+)", str(exc))
            where = f" {host.group(1)}:{host.group(2)}" if host else ""
            return f"cannot reach the server{where} ({said})"
        cause = cause.__cause__ or cause.__context__
    text = str(exc).strip()
    # A server's answer comes wrapped: "Received ClickHouse exception, code: 516, server
    # response: Code: 516. DB::Exception: ... (version 25.x) (for url http://...)".
    text = text.split("server response: ", 1)[-1]
    text = re.sub(r"\s*\((?:for url|version) [^)]*\)", "", text)
    return text.splitlines()[0] if text else type(exc).__name__


def _socket_error(exc: BaseException) -> str | None:
    if not isinstance(exc, OSError) or isinstance(exc, FileNotFoundError):
        return None
    return exc.strerror or ("timed out" if isinstance(exc, TimeoutError) else None)


_PLACEHOLDER = re.compile(r"'(?:[^'\\]|\\.|'')*'|\?")


def bind(sql: str, params: Sequence[Any] | None) -> str:
    """Replace DuckDB-style `?` placeholders (outside string literals) with ClickHouse literals."""
    if not params:
        return sql
    from clickhouse_connect.driver.binding import format_query_value

    values = iter(params)

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) != "?":
            return match.group(0)
        try:
            value = next(values)
        except StopIteration:
            raise ValueError(f"more ? placeholders than parameters in {sql!r}") from None
        if isinstance(value, datetime):
            # clickhouse-connect renders a datetime to the second: a bound such as
            # `ingested_at <= max(ingested_at)` would then miss the rows of its last second.
            # Keep the microseconds; naive datetimes are UTC, as DuckDB reads them here.
            utc = value.astimezone(UTC) if value.tzinfo else value
            return f"toDateTime64('{utc:%Y-%m-%d %H:%M:%S.%f}', 6, 'UTC')"
        if isinstance(value, Decimal) and value.is_finite():
            return _decimal_literal(value)
        return str(format_query_value(value))

    bound = _PLACEHOLDER.sub(substitute, sql)
    if next(values, None) is not None:
        raise ValueError(f"more parameters than ? placeholders in {sql!r}")
    return bound


def _decimal_literal(value: Decimal) -> str:
    """An exact decimal of the value's scale, as DuckDB binds it.

    clickhouse-connect writes a Decimal as a bare number (`1E-12`), which ClickHouse reads as a
    Float64: `cost * ?` or `sum(cost) > ?` would leave exact money for a float. 38 digits (76 when
    the value has more), not the value's own: ClickHouse keeps the widest precision of a product's
    factors and its scale is theirs added, which `cost * 0.000000000001` would not fit in 13."""
    text = format(value, "f")
    scale = len(text.partition(".")[2])
    precision = 38 if sum(c.isdigit() for c in text) <= 38 else 76
    return f"CAST('{text}' AS Decimal({precision}, {scale}))"


def redact(url: str) -> str:
    """The URL as messages and logs show it: its user kept, its password masked (`***`), whether
    it sits in `user:pass@` or in the query (`?password=`, or any parameter naming a credential)."""
    from ..redact import redact_url

    return redact_url(url, mask="***", keep_user=True)
