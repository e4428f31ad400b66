"""Incremental hourly rollups: only events ingested since the last cycle are aggregated.

The watermark is `ingested_at`, not `ts`: an event that arrives late for an old hour is
still rolled up (into its own hour), and nothing already rolled up is read again. Rollup
rows are partial sums; readers group by hour and dimensions, so a late batch simply adds
a row. The events read are found through DuckDB's min/max zone maps on `ingested_at`,
which grows with every batch, so a cycle costs what the new events cost.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import pyarrow as pa

from ..ledger.base import Store
from .state import WatchState
from .tables import HOURLY_SCHEMA, ROLLUP_DIMS, TRACE_SCHEMA

ROLLUP_STATE = "rollup"

WASTE = "(status <> 'ok' OR coalesce(attempt, 1) > 1 OR retry_of IS NOT NULL)"
"""A failed attempt, or a retry: spend that a first-time success would not have needed."""

_DIMS = ", ".join(f'"{d}"' for d in ROLLUP_DIMS)

HOURLY_SQL = f"""
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
WHERE ingested_at > ? AND ingested_at <= ?
GROUP BY ALL
"""

_TRACE_PART = """
SELECT date_trunc('hour', ts) AS hour, '{kind}' AS key_kind, {column} AS key,
    any_value(feature) AS feature, any_value(team) AS team,
    count(*) AS calls, CAST(coalesce(sum(cost), 0) AS DECIMAL(38, 12)) AS cost,
    min(ts) AS first_ts, max(ts) AS last_ts
FROM events
WHERE ingested_at > ? AND ingested_at <= ? AND {column} IS NOT NULL
GROUP BY 1, 3
"""
TRACES_SQL = (
    _TRACE_PART.format(kind="trace", column="trace_id")
    + " UNION ALL "
    + _TRACE_PART.format(kind="session", column="session_id")
)

_EPOCH = datetime.fromisoformat("1970-01-01T00:00:00+00:00")


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
    hourly = store.fetch(HOURLY_SQL, [low, high]).cast(HOURLY_SCHEMA)
    traces = store.fetch(TRACES_SQL, [low, high, low, high]).cast(TRACE_SCHEMA)
    with store.transaction():
        if hourly.num_rows:
            store.insert("watch_hourly", hourly)
        if traces.num_rows:
            store.insert("watch_traces", traces)
        state.put(ROLLUP_STATE, high)
    first_ts = row["first_ts"]
    first_hour = first_ts.replace(minute=0, second=0, microsecond=0) if first_ts else None
    return RollupResult(n, hourly.num_rows, traces.num_rows, high, first_hour)


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
