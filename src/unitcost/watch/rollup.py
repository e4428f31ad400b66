"""Incremental hourly rollups: only events ingested since the last cycle are aggregated.

The watermark is `ingested_at`, not `ts`: an event that arrives late for an old hour is
still rolled up (into its own hour), and nothing already rolled up is read again. Rollup
rows are partial sums; readers group by hour and dimensions, so a late batch simply adds
a row. The events read are found through DuckDB's min/max zone maps on `ingested_at`,
which grows with every batch, so a cycle costs what the new events cost.

A reprice changes the costs of events already rolled up: the store rebuilds the rows of the
hours it changed from their events (`rebuild_hours`), in the reprice's own transaction, and
says which hours in `watch_state` (`REBUILT_STATE`), so that what a detector computed from the
old rows and keeps (the runaway norms) is computed again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pyarrow as pa

from ..analytics.dialect import Dialect
from ..ledger.base import Store
from ..utc import as_utc
from .state import WatchState
from .tables import HOURLY_SCHEMA, ROLLUP_DIMS, TRACE_SCHEMA

ROLLUP_STATE = "rollup"

WASTE = "(status <> 'ok' OR coalesce(attempt, 1) > 1 OR retry_of IS NOT NULL)"
"""A failed attempt, or a retry: spend that a first-time success would not have needed."""

_DIMS = ", ".join(f'"{d}"' for d in ROLLUP_DIMS)


def hourly_sql(where: str) -> str:
    """The hourly rollup rows of the events matching `where`."""
    return f"""
SELECT date_trunc('hour', ts) AS hour, {_DIMS},
    count(*) AS calls,
    count(cost) AS priced_calls,
    count(*) - count(cost) AS unpriced_calls,
    sum(input_tokens + output_tokens) AS tokens,
    sum(input_tokens) AS input_tokens,
    sum(output_tokens) AS output_tokens,
    CAST(sum(cost) AS DECIMAL(38, 12)) AS cost,
    sum(CAST(cost AS DOUBLE) * CAST(cost AS DOUBLE)) AS cost_sq,
    count(*) FILTER (WHERE {WASTE}) AS waste_calls,
    CAST(coalesce(sum(cost) FILTER (WHERE {WASTE}), 0) AS DECIMAL(38, 12)) AS waste_cost,
    count(billed_cost) AS billed_calls,
    CAST(sum(billed_cost) AS DECIMAL(38, 12)) AS billed_cost,
    CAST(sum(cost) FILTER (WHERE billed_cost IS NOT NULL) AS DECIMAL(38, 12)) AS billed_computed_cost
FROM events
WHERE {where}
GROUP BY ALL
"""


def _trace_part(kind: str, column: str, where: str) -> str:
    return f"""
SELECT date_trunc('hour', ts) AS hour, '{kind}' AS key_kind, {column} AS key,
    any_value(feature) AS feature, any_value(team) AS team,
    count(*) AS calls, CAST(coalesce(sum(cost), 0) AS DECIMAL(38, 12)) AS cost,
    min(ts) AS first_ts, max(ts) AS last_ts
FROM events
WHERE {where} AND {column} IS NOT NULL
GROUP BY 1, 3
"""


def traces_sql(where: str) -> str:
    """The trace and session rollup rows of the events matching `where`."""
    return (
        _trace_part("trace", "trace_id", where) + " UNION ALL " + _trace_part("session", "session_id", where)
    )


_NEW = "ingested_at > ? AND ingested_at <= ?"
HOURLY_SQL = hourly_sql(_NEW)
TRACES_SQL = traces_sql(_NEW)

ROLLED_UP = f"ingested_at <= (SELECT max(watermark) FROM watch_state WHERE name = '{ROLLUP_STATE}')"
"""The events the watch rollups hold: those ingested up to the rollup's watermark (none
before the first watch cycle)."""

REBUILT_STATE = "rollup_rebuilt"
"""The `watch_state` row in which `rebuild_hours` records the hours it rewrote: its state is
`{"seq": n, "spans": [[seq, lo, hi], ...]}`, one numbered span [lo, hi) per rebuild (the last
`REBUILT_SPANS` of them), so a reader that remembers the last `seq` it saw can tell whether the
rows it used have changed since (see `rebuilt_since`)."""
REBUILT_SPANS = 64

_EPOCH = datetime.fromisoformat("1970-01-01T00:00:00+00:00")
_HOUR = timedelta(hours=1)


@dataclass(frozen=True)
class RollupResult:
    events: int
    hourly_rows: int
    trace_rows: int
    watermark: datetime | None
    first_hour: datetime | None = None
    """The earliest hour touched by the new events (late events can touch old hours)."""


def roll_up(store: Store) -> RollupResult:
    """Aggregate the events ingested since the last call into the hourly rollup tables."""
    state = WatchState(store)
    watermark, _ = state.get(ROLLUP_STATE)
    low = watermark or _EPOCH
    row = store.fetch(
        "SELECT max(ingested_at) AS high, count(*) AS n, min(ts) AS first_ts FROM events WHERE ingested_at > ?",
        [low],
    ).to_pylist()[0]
    high, n = row["high"], int(row["n"])
    if high is None or n == 0:
        return RollupResult(0, 0, 0, watermark)
    # The events are read inside the transaction that writes their rows: a reprice (which
    # rebuilds only the hours of events already rolled up) cannot run between the two, and
    # leave these rows at the costs it replaced.
    with store.transaction():
        hourly = store.fetch(HOURLY_SQL, [low, high]).cast(HOURLY_SCHEMA)
        traces = store.fetch(TRACES_SQL, [low, high, low, high]).cast(TRACE_SCHEMA)
        if hourly.num_rows:
            store.insert("watch_hourly", hourly)
        if traces.num_rows:
            store.insert("watch_traces", traces)
        state.put(ROLLUP_STATE, high)
    first_ts = row["first_ts"]
    first_hour = first_ts.replace(minute=0, second=0, microsecond=0) if first_ts else None
    return RollupResult(n, hourly.num_rows, traces.num_rows, high, first_hour)


def dirty_hours_sql(updates: str, dialect: Dialect) -> str:
    """The hours of the events rolled up for the watch whose event_id is in the table `updates`
    (a reprice's batch): the hours whose rollup rows its new costs make stale."""
    return (
        f"SELECT DISTINCT {dialect.trunc('hour', 'ts')} AS hour FROM events "
        f"WHERE event_id IN (SELECT event_id FROM {updates}) AND {ROLLED_UP}"
    )


def rebuild_hours(
    execute: Callable[[str], Any],
    fetch: Callable[[str], list[dict[str, Any]]],
    hours: str,
    dialect: Dialect,
) -> None:
    """Recompute the watch rollup rows (hourly and traces) of the hours listed in the table
    `hours` (column `hour`) from their events, after a reprice changed their costs: the
    partial rows of every cycle that rolled an hour up become one row per group, holding the
    events ingested up to the watermark, as the cycles counted them but at today's costs.
    Only these hours are read. Run in the reprice's transaction where the engine has one
    (statements on its connection: `execute` and `fetch`). A ledger the watch never rolled up
    has nothing to correct.

    The hours are a table rather than literals: a reprice of a year of scattered hours would
    not fit ClickHouse's query size (256 KiB by default), and one statement per table costs
    the same for one hour or thousands (a ClickHouse DELETE is a fraction of a second)."""
    if not fetch(f"SELECT name FROM watch_state WHERE name = '{ROLLUP_STATE}' AND watermark IS NOT NULL"):
        return
    span = fetch(f"SELECT min(hour) AS lo, max(hour) AS hi FROM {hours}")[0]
    if span["lo"] is None:
        return
    # The bounds let both engines skip the rest of the table at once.
    lo, hi = _ts(span["lo"], dialect), _ts(span["hi"] + _HOUR, dialect)
    listed = f"IN (SELECT hour FROM {hours})"
    for table in ("watch_hourly", "watch_traces"):
        execute(f"DELETE FROM {table} WHERE hour >= {lo} AND hour < {hi} AND hour {listed}")
    events = f"ts >= {lo} AND ts < {hi} AND {dialect.trunc('hour', 'ts')} {listed} AND {ROLLED_UP}"
    hourly_columns = ", ".join(f'"{c}"' for c in HOURLY_SCHEMA.names)
    trace_columns = ", ".join(f'"{c}"' for c in TRACE_SCHEMA.names)
    execute(f"INSERT INTO watch_hourly ({hourly_columns}) {hourly_sql(events)}")
    execute(f"INSERT INTO watch_traces ({trace_columns}) {traces_sql(events)}")
    _record_rebuild(execute, fetch, span["lo"], span["hi"] + _HOUR, dialect)


def _record_rebuild(
    execute: Callable[[str], Any],
    fetch: Callable[[str], list[dict[str, Any]]],
    lo: datetime,
    hi: datetime,
    dialect: Dialect,
) -> None:
    """Add the span [lo, hi) to the `REBUILT_STATE` row, with the next sequence number. Written
    as `WatchState.put` writes (delete, then insert: ClickHouse has no upsert), with the
    statements of the rebuild, in its transaction where the engine has one."""
    rows = fetch(f"SELECT state FROM watch_state WHERE name = '{REBUILT_STATE}'")
    old = orjson.loads(rows[0]["state"]) if rows and rows[0]["state"] else {}
    seq = int(old.get("seq", 0)) + 1
    spans = [*old.get("spans", []), [seq, as_utc(lo).isoformat(), as_utc(hi).isoformat()]][-REBUILT_SPANS:]
    state = dialect.literal(orjson.dumps({"seq": seq, "spans": spans}).decode())
    now = _ts(datetime.now(UTC), dialect)
    execute(f"DELETE FROM watch_state WHERE name = '{REBUILT_STATE}'")
    execute(
        "INSERT INTO watch_state (name, watermark, state, updated_at) "
        f"SELECT '{REBUILT_STATE}', {now}, {state}, {now}"
    )


def rebuilt_since(store: Store, seen: int | None) -> tuple[int, list[tuple[datetime, datetime]] | None]:
    """The rebuilds recorded after sequence number `seen`: the last sequence number, and the
    spans [lo, hi) they rewrote; None for the spans when some of them are no longer kept (or
    `seen` is None, nothing being known of when the reader last looked, or ahead of the record),
    i.e. anything may have changed. One read of one `watch_state` row."""
    _, state = WatchState(store).get(REBUILT_STATE)
    last = int(state.get("seq", 0))
    if last == (seen or 0):
        return last, []  # nothing rebuilt since (or ever)
    spans = [
        (int(n), as_utc(datetime.fromisoformat(lo)), as_utc(datetime.fromisoformat(hi)))
        for n, lo, hi in state.get("spans", [])
    ]
    # A reader ahead of the record (the row was lost, and counts again from 1) knows nothing either.
    if seen is None or last < seen or not spans or spans[0][0] > seen + 1:
        return last, None
    return last, [(lo, hi) for n, lo, hi in spans if n > seen]


def _ts(value: datetime, dialect: Dialect) -> str:
    return dialect.ts_literal(as_utc(value).isoformat())


def hourly_frame(store: Store, since: datetime, until: datetime) -> pa.Table:
    """Hourly rollups in [since, until), partial rows merged; money as DOUBLE, for statistics only."""
    return store.fetch(
        f"""
        SELECT hour, {_DIMS},
            CAST(sum(calls) AS BIGINT) AS calls, CAST(sum(priced_calls) AS BIGINT) AS priced_calls,
            CAST(sum(unpriced_calls) AS BIGINT) AS unpriced_calls, CAST(sum(tokens) AS BIGINT) AS tokens,
            CAST(sum(input_tokens) AS BIGINT) AS input_tokens, CAST(sum(output_tokens) AS BIGINT) AS output_tokens,
            CAST(coalesce(sum(cost), 0) AS DOUBLE) AS cost, sum(cost_sq) AS cost_sq,
            CAST(sum(waste_calls) AS BIGINT) AS waste_calls,
            CAST(coalesce(sum(waste_cost), 0) AS DOUBLE) AS waste_cost,
            CAST(sum(billed_calls) AS BIGINT) AS billed_calls,
            CAST(coalesce(sum(billed_cost), 0) AS DOUBLE) AS billed_cost,
            CAST(coalesce(sum(billed_computed_cost), 0) AS DOUBLE) AS billed_computed_cost
        FROM watch_hourly WHERE hour >= ? AND hour < ?
        GROUP BY ALL ORDER BY hour
        """,
        [since, until],
    )


def rollup_span(store: Store) -> tuple[datetime | None, datetime | None]:
    row = store.fetch("SELECT min(hour) AS lo, max(hour) AS hi FROM watch_hourly").to_pylist()[0]
    lo, hi = row["lo"], row["hi"]
    return (lo.astimezone(UTC) if lo else None), (hi.astimezone(UTC) if hi else None)
