"""Hourly report rollups of the DuckDB ledger, so a report reads thousands of rows, not millions.

Four tables, each holding partial aggregates that merge exactly (see `analytics.measures`):

- `report_hourly`: per hour and combination of `ROLLUP_DIMS`, every measure of the report
  (exact counts, decimal sums, first and last call);
- `report_combos`: each combination of `ROLLUP_DIMS` seen, under a 64-bit hash of it (`h`);
- `report_latency`: per hour, combination and latency bucket (`analytics.latency`), the calls;
- `report_units`: per hour, combination and `unit_id`, the cost of the unit's calls there,
  so distinct units stay exact counts.

The latency and unit tables are keyed by the hash rather than the fifteen strings because
grouping millions of events by one integer is what keeps rolling up cheap at ingest; that no
two combinations share a hash is checked on every refresh (should it ever happen, the
rollups are switched off and reports read the events).

What the rollups hold is the events whose `rowid` is below a watermark kept in `meta`. The
events table is append-only (unitcost never deletes an event, and DuckDB updates a row in
place), so a new event always lands at or above the watermark, whoever wrote it. A report
merges the rollups of the whole hours of its window with the events of those hours past the
watermark and the events of the partial hours at its edges: a ledger read read-only, or one
written behind unitcost's back, is always reported right, just slower.

The store keeps them current: `refresh` rolls up the events past the watermark — once per
ingested file (`DuckDBStore.bulk`), after an append once `REFRESH_ROWS` events are waiting,
and when a writer opens or closes the ledger — and the hours a reprice changes are rebuilt
from their events in the reprice's own transaction. A refresh that lands in hours which
already have rows adds partial rows; they are merged (`compact_hours`) when the writer closes
the ledger or finishes a file, and a whole table is merged once it has doubled since it last
was, so reading costs what the distinct groups cost. A ledger whose rollups were built by
another version of this module (`ROLLUP_VERSION` in `meta`) gets them rebuilt by its next
writer and is read from the events until then.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import Any

from ..analytics.dialect import DUCKDB
from ..analytics.latency import bucket_sql
from ..analytics.measures import FLAGS, PARTIALS, ROLLUP_DIMS

ROLLUP_VERSION = "3"
"""2: an event with `retry_of` is a retry whatever its `attempt` (rollups of 1 are rebuilt).
3: the input and output tokens the costs per 1k tokens divide by (`rated_*_tokens`)."""
REFRESH_ROWS = 100_000
"""Events waiting past the watermark before an append rolls them up; until then reports read them."""
COMPACT_FLOOR = 10_000

HOURLY, COMBOS, LATENCY, UNITS = "report_hourly", "report_combos", "report_latency", "report_units"
TABLES = (HOURLY, COMBOS, LATENCY, UNITS)

_VERSION_KEY = "report_rollup_version"
_ROWS_KEY = "report_rollup_rows"
_DISABLED_KEY = "report_rollup_disabled"

HOUR = DUCKDB.trunc("hour", "ts")
DIMS = ", ".join(f'"{d}"' for d in ROLLUP_DIMS)
DIM_HASH = f"hash({DIMS})"
FLAG_NAMES = ", ".join(name for name, _ in FLAGS)

Execute = Callable[[str], Any]
Fetch = Callable[[str], list[dict[str, Any]]]
"""Runs a query and returns its rows as dicts."""


def _number(fetch: Fetch, sql: str) -> int:
    return int(fetch(sql)[0]["n"])


def ddl() -> tuple[str, ...]:
    dims = ", ".join(f'"{d}" VARCHAR' for d in ROLLUP_DIMS)
    flags = ", ".join(f"{name} BOOLEAN" for name, _ in FLAGS)
    partials = ", ".join(f"{p.name} {p.type}" for p in PARTIALS)
    return (
        f"CREATE TABLE IF NOT EXISTS {HOURLY} (hour TIMESTAMPTZ NOT NULL, {dims}, {flags}, {partials})",
        f"CREATE TABLE IF NOT EXISTS {COMBOS} (h UBIGINT NOT NULL, {dims})",
        f"CREATE TABLE IF NOT EXISTS {LATENCY} "
        "(hour TIMESTAMPTZ NOT NULL, h UBIGINT NOT NULL, b INTEGER NOT NULL, n BIGINT NOT NULL)",
        f"CREATE TABLE IF NOT EXISTS {UNITS} "
        "(hour TIMESTAMPTZ NOT NULL, h UBIGINT NOT NULL, unit_id VARCHAR NOT NULL, cost DECIMAL(38, 12))",
    )


# ----------------------------------------------------------------------------- partials of events


def hourly_partials(where: str) -> str:
    """Every partial per hour, combination and flags, over the events matching `where`."""
    flags = ", ".join(f"{sql} AS {name}" for name, sql in FLAGS)
    partials = ", ".join(f"{p.sql} AS {p.name}" for p in PARTIALS)
    return f"SELECT {HOUR} AS hour, {DIMS}, {flags}, {partials} FROM events WHERE {where} GROUP BY ALL"


def latency_partials(where: str, key: str = DIMS) -> str:
    """Calls per hour, `key` (the combination, or its hash) and latency bucket."""
    return (
        f"SELECT {HOUR} AS hour, {key}, {bucket_sql('latency_ms')} AS b, CAST(count(*) AS BIGINT) AS n "
        f"FROM events WHERE ({where}) AND latency_ms IS NOT NULL GROUP BY ALL"
    )


def unit_partials(where: str, key: str = DIMS) -> str:
    """The cost per hour, `key` and business unit."""
    return (
        f"SELECT {HOUR} AS hour, {key}, unit_id, sum(cost) AS cost "
        f"FROM events WHERE ({where}) AND unit_id IS NOT NULL GROUP BY ALL"
    )


def with_dims(table: str) -> str:
    """A latency or unit rollup table with the combination spelled out instead of its hash."""
    dims = ", ".join(f'c."{d}"' for d in ROLLUP_DIMS)
    return f"(SELECT t.* EXCLUDE (h), {dims} FROM {table} t JOIN {COMBOS} c ON t.h = c.h)"


# ----------------------------------------------------------------------------- state


def watermark(fetch: Fetch) -> int | None:
    """How many events (by rowid) the rollups hold, or None when they cannot be used."""
    state = _meta(fetch)
    if state.get(_VERSION_KEY) != ROLLUP_VERSION or state.get(_DISABLED_KEY):
        return None
    rows = int(state.get(_ROWS_KEY) or 0)
    # Fewer events below the watermark than it claims: some were deleted by hand. The rollups
    # still count them, so they are not used until a writer rebuilds them.
    below = _number(fetch, f"SELECT count(*) AS n FROM events WHERE rowid < {rows}")
    return rows if below == rows else None


def _meta(fetch: Fetch) -> dict[str, str]:
    keys = ", ".join(f"'{k}'" for k in (_VERSION_KEY, _ROWS_KEY, _DISABLED_KEY))
    rows = fetch(f"SELECT key, value FROM meta WHERE key IN ({keys})")
    return {row["key"]: row["value"] for row in rows}


def _set(execute: Execute, key: str, value: str) -> None:
    escaped = value.replace("'", "''")
    execute(f"INSERT OR REPLACE INTO meta VALUES ('{key}', '{escaped}')")


# ----------------------------------------------------------------------------- maintenance


def refresh(execute: Execute, fetch: Fetch) -> tuple[int, list[datetime]]:
    """Roll up the events past the watermark (all of them when the rollups must be rebuilt)
    and advance it. Run inside one transaction. Returns how many events were rolled up, and
    the hours that already had rows: they now hold partial rows that `compact_hours` merges."""
    state = _meta(fetch)
    if state.get(_DISABLED_KEY):
        return 0, []
    rows = int(state.get(_ROWS_KEY) or 0)
    if state.get(_VERSION_KEY) != ROLLUP_VERSION:
        _reset(execute, drop=True)
        rows = 0
    elif _number(fetch, f"SELECT count(*) AS n FROM events WHERE rowid < {rows}") != rows:
        _reset(execute, drop=False)
        rows = 0
    span = fetch("SELECT count(*) AS n, coalesce(max(rowid) + 1, 0) AS high FROM events")[0]
    high = int(span["n"])
    if high != span["high"]:
        # Events were deleted by hand and their rowids are not renumbered yet (DuckDB does it
        # at a checkpoint): the watermark cannot be trusted, reports read the events meanwhile.
        if rows:
            _reset(execute, drop=False)
        return 0, []
    if high <= rows:
        return 0, []
    shared = _roll(execute, fetch, f"rowid >= {rows} AND rowid < {high}")
    _set(execute, _ROWS_KEY, str(high))
    _compact(execute, fetch, built=rows == 0)
    return high - rows, shared


def rebuild(execute: Execute, fetch: Fetch) -> int:
    """Build the rollups again from every event (after events were deleted by hand)."""
    _reset(execute, drop=True)
    return refresh(execute, fetch)[0]


def rebuild_hours(execute: Execute, fetch: Fetch, hours: Iterable[datetime]) -> None:
    """Recompute the rollups of these hours from their events (after their costs changed)."""
    hours = sorted(set(hours))
    state = _meta(fetch)
    if not hours or state.get(_VERSION_KEY) != ROLLUP_VERSION or state.get(_DISABLED_KEY):
        return  # nothing rolled up to correct: the next refresh rebuilds everything anyway
    rows = int(state.get(_ROWS_KEY) or 0)
    listed = ", ".join(_ts(h) for h in hours)
    for table in (HOURLY, LATENCY, UNITS):
        execute(f"DELETE FROM {table} WHERE hour IN ({listed})")
    execute("CREATE OR REPLACE TEMP TABLE _report_hours AS SELECT unnest([" + listed + "]) AS hour")
    try:
        _roll(
            execute,
            fetch,
            f"rowid < {rows} AND ts >= {_ts(hours[0])} AND ts < {_ts(hours[-1] + timedelta(hours=1))} "
            f"AND {HOUR} IN (SELECT hour FROM _report_hours)",
        )
    finally:
        execute("DROP TABLE IF EXISTS _report_hours")


def dirty_hours_sql(updates: str) -> str:
    """The hours of rolled-up events whose event_id is in the table `updates`."""
    return (
        f"SELECT DISTINCT {HOUR} AS hour FROM events WHERE event_id IN (SELECT event_id FROM {updates}) "
        f"AND rowid < coalesce((SELECT CAST(value AS BIGINT) FROM meta WHERE key = '{_ROWS_KEY}'), 0)"
    )


def _roll(execute: Execute, fetch: Fetch, where: str) -> list[datetime]:
    """Add the partials of the events matching `where`; returns the hours that had rows."""
    execute(f"CREATE OR REPLACE TEMP TABLE _report_new AS {hourly_partials(where)}")
    try:
        shared = fetch(f"SELECT DISTINCT hour FROM {HOURLY} WHERE hour IN (SELECT hour FROM _report_new)")
        execute(
            f"INSERT INTO {COMBOS} BY NAME SELECT DISTINCT {DIM_HASH} AS h, {DIMS} FROM _report_new "
            f"EXCEPT SELECT h, {DIMS} FROM {COMBOS}"
        )
        execute(f"INSERT INTO {HOURLY} BY NAME SELECT * FROM _report_new")
    finally:
        execute("DROP TABLE IF EXISTS _report_new")
    execute(f"INSERT INTO {LATENCY} BY NAME {latency_partials(where, f'{DIM_HASH} AS h')}")
    execute(f"INSERT INTO {UNITS} BY NAME {unit_partials(where, f'{DIM_HASH} AS h')}")
    clash = _number(fetch, f"SELECT count(*) - count(DISTINCT h) AS n FROM {COMBOS}")
    if clash:
        # Two combinations under one hash: latency and units could not tell them apart.
        _set(execute, _DISABLED_KEY, "two combinations of dimensions share a hash")
    return [row["hour"] for row in shared]


MERGE: dict[str, tuple[str, str]] = {
    HOURLY: (f"hour, {DIMS}, {FLAG_NAMES}", ", ".join(f"{p.merged()} AS {p.name}" for p in PARTIALS)),
    LATENCY: ("hour, h, b", "CAST(sum(n) AS BIGINT) AS n"),
    UNITS: ("hour, h, unit_id", "sum(cost) AS cost"),
}


def compact_hours(execute: Execute, fetch: Fetch, hours: Iterable[datetime]) -> None:
    """Merge the partial rows that several refreshes left in these hours into one per group."""
    hours = sorted(set(hours))
    if not hours:
        return
    listed = ", ".join(_ts(h) for h in hours)
    for table, (keys, merged) in MERGE.items():
        _merge_rows(execute, table, keys, merged, f"hour IN ({listed})")


def _merge_rows(execute: Execute, table: str, keys: str, merged: str, where: str) -> None:
    execute(
        f"CREATE OR REPLACE TEMP TABLE _report_merged AS "
        f"SELECT {keys}, {merged} FROM {table} WHERE {where} GROUP BY {keys}"
    )
    try:
        execute(f"DELETE FROM {table} WHERE {where}")
        execute(f"INSERT INTO {table} BY NAME SELECT * FROM _report_merged")
    finally:
        execute("DROP TABLE IF EXISTS _report_merged")


def _compact(execute: Execute, fetch: Fetch, *, built: bool) -> None:
    """Merge the partial rows of a table once it has doubled since it was last compacted.
    Tables just `built` in one pass from nothing have one row per group already."""
    for table, (keys, merged) in MERGE.items():
        key = f"report_rollup_compacted_{table}"
        rows = _number(fetch, f"SELECT count(*) AS n FROM {table}")
        before = fetch(f"SELECT value FROM meta WHERE key = '{key}'")
        compacted = int(before[0]["value"]) if before else 0
        if built or rows <= 2 * compacted + COMPACT_FLOOR:
            if built:
                _set(execute, key, str(rows))
            continue
        _merge_rows(execute, table, keys, merged, "TRUE")
        after = _number(fetch, f"SELECT count(*) AS n FROM {table}")
        _set(execute, key, str(after))


def _reset(execute: Execute, *, drop: bool) -> None:
    for table in TABLES:
        execute(f"DROP TABLE IF EXISTS {table}" if drop else f"DELETE FROM {table}")
    execute(f"DELETE FROM meta WHERE key = '{_DISABLED_KEY}'")
    if drop:
        for statement in ddl():
            execute(statement)
    for table in (HOURLY, LATENCY, UNITS):
        _set(execute, f"report_rollup_compacted_{table}", "0")
    _set(execute, _VERSION_KEY, ROLLUP_VERSION)
    _set(execute, _ROWS_KEY, "0")


def _ts(value: datetime) -> str:
    return DUCKDB.ts_literal(value.isoformat())
