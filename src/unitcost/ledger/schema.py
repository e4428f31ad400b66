"""Ledger tables, described once and rendered for each engine, with versioned migrations.

A migration is a list of statements per engine. Each ledger records the version it is at
in its `meta` table, and opening a ledger applies what is missing, in order, inside one
transaction. Migrations are only ever appended: a released one is never edited.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pyarrow as pa

from ..events import LEDGER_FIELDS, Field
from ..money import MONEY_ARROW_TYPE, TOTAL_ARROW_TYPE
from ..watch.tables import WATCH_TABLES
from .report_rollups import ddl as report_rollups_ddl
from .version import SCHEMA_VERSION

DUCKDB_TYPES: Mapping[str, str] = {
    "str": "VARCHAR",
    "int": "BIGINT",
    "tokens": "BIGINT",
    "count": "BIGINT",
    "float": "DOUBLE",
    "bool": "BOOLEAN",
    "ts": "TIMESTAMPTZ",
    "map": "MAP(VARCHAR, VARCHAR)",
    "money": "DECIMAL(18, 12)",
}

CLICKHOUSE_TYPES: Mapping[str, str] = {
    "str": "Nullable(String)",
    "int": "Nullable(Int64)",
    "tokens": "Int64",
    "count": "Int64",
    "float": "Nullable(Float64)",
    "bool": "Bool",
    "ts": "DateTime64(6, 'UTC')",
    "map": "Map(String, String)",
    "money": "Nullable(Decimal64(12))",
}


def duckdb_column(f: Field) -> str:
    null = " NOT NULL" if f.required else ""
    return f'"{f.name}" {DUCKDB_TYPES[f.kind]}{null}'


def events_ddl_duckdb(fields: Sequence[Field] = LEDGER_FIELDS) -> str:
    columns = ",\n    ".join(duckdb_column(f) for f in fields)
    return f"CREATE TABLE IF NOT EXISTS events (\n    {columns}\n)"


OUTCOME_SCHEMA = pa.schema(
    [
        pa.field("key_kind", pa.string(), nullable=False),  # event | trace | unit
        pa.field("unit", pa.string(), nullable=False),  # unit kind when key_kind = unit, else ""
        pa.field("key", pa.string(), nullable=False),
        pa.field("success", pa.bool_()),
        pa.field("score", pa.float64()),
        pa.field("feedback", pa.string()),
        pa.field("ts", pa.timestamp("us", tz="UTC")),
        pa.field("source", pa.string()),
        pa.field("recorded_at", pa.timestamp("us", tz="UTC")),
    ]
)

REPRICE_RUN_SCHEMA = pa.schema(
    [
        pa.field("run_id", pa.string()),
        pa.field("at", pa.timestamp("us", tz="UTC")),
        pa.field("since", pa.timestamp("us", tz="UTC")),
        pa.field("until", pa.timestamp("us", tz="UTC")),
        pa.field("price_layers", pa.string()),
        pa.field("events_seen", pa.int64()),
        pa.field("events_changed", pa.int64()),
        pa.field("old_total", TOTAL_ARROW_TYPE),
        pa.field("new_total", TOTAL_ARROW_TYPE),
        pa.field("old_unpriced", pa.int64()),
        pa.field("new_unpriced", pa.int64()),
        pa.field("reason", pa.string()),  # why, as the person who ran it said (--reason)
        pa.field("actor", pa.string()),  # who ran it (--by, else the system user)
        # Each price file used, as `layer=path sha256:hex` (hash of the bytes read), joined by "; ":
        # which version of the negotiated-discount file produced the new totals.
        pa.field("price_files", pa.string()),
        pa.field("newly_priced", pa.int64()),  # events with no price before and one after
        pa.field("newly_unpriced", pa.int64()),  # and the reverse (the net hides them)
    ]
)

REPRICE_EVENT_SCHEMA = pa.schema(
    [
        pa.field("run_id", pa.string()),
        pa.field("event_id", pa.string()),
        pa.field("ts", pa.timestamp("us", tz="UTC")),
        pa.field("provider", pa.string()),
        pa.field("model", pa.string()),
        pa.field("old_cost", MONEY_ARROW_TYPE),
        pa.field("new_cost", MONEY_ARROW_TYPE),
        pa.field("old_price_ref", pa.string()),
        pa.field("new_price_ref", pa.string()),
        pa.field("old_unpriced_reason", pa.string()),
        pa.field("new_unpriced_reason", pa.string()),
    ]
)
"""One row per event a reprice changed: its cost and price before and after, so any event's
cost can be traced through every correction."""

REPRICE_CHANGE_SCHEMA = pa.schema(
    [
        pa.field("run_id", pa.string()),
        pa.field("provider", pa.string()),
        pa.field("model", pa.string()),
        pa.field("events", pa.int64()),
        pa.field("old_total", TOTAL_ARROW_TYPE),
        pa.field("new_total", TOTAL_ARROW_TYPE),
        pa.field("old_unpriced", pa.int64()),
        pa.field("new_unpriced", pa.int64()),
    ]
)

INGEST_RUN_SCHEMA = pa.schema(
    [
        pa.field("run_id", pa.string()),
        pa.field("at", pa.timestamp("us", tz="UTC")),
        pa.field("source", pa.string()),
        pa.field("accepted", pa.int64()),
        pa.field("duplicates", pa.int64()),
        pa.field("rejected", pa.int64()),
        pa.field("unpriced", pa.int64()),
    ]
)

AUX_TABLES: Mapping[str, pa.Schema] = {
    "outcomes": OUTCOME_SCHEMA,
    "reprice_runs": REPRICE_RUN_SCHEMA,
    "reprice_changes": REPRICE_CHANGE_SCHEMA,
    "reprice_events": REPRICE_EVENT_SCHEMA,
    "ingest_runs": INGEST_RUN_SCHEMA,
    **WATCH_TABLES,
}


def arrow_to_duckdb_type(t: pa.DataType) -> str:
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "VARCHAR"
    if pa.types.is_int64(t):
        return "BIGINT"
    if pa.types.is_float64(t):
        return "DOUBLE"
    if pa.types.is_boolean(t):
        return "BOOLEAN"
    if pa.types.is_timestamp(t):
        return "TIMESTAMPTZ"
    if pa.types.is_decimal(t):
        return f"DECIMAL({t.precision}, {t.scale})"
    raise TypeError(f"no DuckDB type for {t}")


def table_ddl_duckdb(name: str, schema: pa.Schema, primary_key: Sequence[str] = ()) -> str:
    cols = [f'"{f.name}" {arrow_to_duckdb_type(f.type)}{"" if f.nullable else " NOT NULL"}' for f in schema]
    if primary_key:
        cols.append(f"PRIMARY KEY ({', '.join(primary_key)})")
    return f"CREATE TABLE IF NOT EXISTS {name} (\n    " + ",\n    ".join(cols) + "\n)"


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    duckdb: tuple[str, ...]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "events, outcomes, reprice audit, ingest log",
        (
            events_ddl_duckdb(),
            table_ddl_duckdb("outcomes", OUTCOME_SCHEMA, primary_key=("key_kind", "unit", "key")),
            table_ddl_duckdb("reprice_runs", REPRICE_RUN_SCHEMA),
            table_ddl_duckdb("reprice_changes", REPRICE_CHANGE_SCHEMA),
            table_ddl_duckdb("ingest_runs", INGEST_RUN_SCHEMA),
        ),
    ),
    Migration(
        4,
        "watch: hourly rollups, detector watermarks, alert history",
        (
            table_ddl_duckdb("watch_hourly", WATCH_TABLES["watch_hourly"]),
            table_ddl_duckdb("watch_traces", WATCH_TABLES["watch_traces"]),
            table_ddl_duckdb("watch_state", WATCH_TABLES["watch_state"], primary_key=("name",)),
            table_ddl_duckdb("alerts", WATCH_TABLES["alerts"], primary_key=("alert_id",)),
            table_ddl_duckdb("alert_log", WATCH_TABLES["alert_log"]),
        ),
    ),
    Migration(
        5,
        "report rollups: sums, latency histograms and business units per hour (built on first open)",
        report_rollups_ddl(),
    ),
    Migration(
        6,
        "reprice audit: who ran it and why, and each event's cost before and after",
        (
            # IF NOT EXISTS: a new ledger already has them from migration 1, which renders the
            # current schema of the table.
            'ALTER TABLE reprice_runs ADD COLUMN IF NOT EXISTS "reason" VARCHAR',
            'ALTER TABLE reprice_runs ADD COLUMN IF NOT EXISTS "actor" VARCHAR',
            table_ddl_duckdb("reprice_events", REPRICE_EVENT_SCHEMA),
        ),
    ),
    Migration(
        7,
        "reprice audit: the SHA-256 of each price file used, and the events priced or unpriced anew",
        (
            # IF NOT EXISTS: a new ledger already has them from migration 1 (see migration 6).
            'ALTER TABLE reprice_runs ADD COLUMN IF NOT EXISTS "price_files" VARCHAR',
            'ALTER TABLE reprice_runs ADD COLUMN IF NOT EXISTS "newly_priced" BIGINT',
            'ALTER TABLE reprice_runs ADD COLUMN IF NOT EXISTS "newly_unpriced" BIGINT',
        ),
    ),
    Migration(
        8,
        "reprice audit: totals as DECIMAL(38, 12), one call's DECIMAL(18, 12) stopping below $1M",
        tuple(
            f'ALTER TABLE {table} ALTER COLUMN "{column}" SET DATA TYPE DECIMAL(38, 12)'
            for table in ("reprice_runs", "reprice_changes")
            for column in ("old_total", "new_total")
        ),
    ),
)

if MIGRATIONS[-1].version != SCHEMA_VERSION:
    raise RuntimeError(
        f"the last migration is {MIGRATIONS[-1].version}; ledger/version.py says {SCHEMA_VERSION}"
    )
