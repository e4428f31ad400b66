"""ClickHouse tables, generated from the same descriptions as the DuckDB ones.

The events table comes from `events.LEDGER_FIELDS` through `schema.CLICKHOUSE_TYPES`; every
auxiliary table comes from its Arrow schema in `schema.AUX_TABLES`, so a table another part
of unitcost registers there gets its ClickHouse DDL without anyone writing it by hand.

Which columns form an auxiliary table's key (what `upsert` replaces on) is read from the
DuckDB migrations themselves: they are replayed once into an in-memory DuckDB and its
catalog tells the primary key of each table. One definition, two engines.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence

import duckdb
import pyarrow as pa

from ..events import LEDGER_FIELDS, Field
from .schema import AUX_TABLES, CLICKHOUSE_TYPES, MIGRATIONS

EVENTS_KEY = ("event_id",)


def clickhouse_type(f: Field) -> str:
    """The column type of an event field; required fields are never Nullable (they may be keys)."""
    kind = CLICKHOUSE_TYPES[f.kind]
    if f.required and kind.startswith("Nullable(") and kind.endswith(")"):
        return kind[len("Nullable(") : -1]
    return kind


def event_columns(fields: Sequence[Field] = LEDGER_FIELDS) -> dict[str, str]:
    return {f.name: clickhouse_type(f) for f in fields}


def arrow_to_clickhouse_type(t: pa.DataType, nullable: bool = True) -> str:
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        base = "String"
    elif pa.types.is_int64(t):
        base = "Int64"
    elif pa.types.is_int32(t):
        base = "Int32"
    elif pa.types.is_float64(t):
        base = "Float64"
    elif pa.types.is_boolean(t):
        base = "Bool"
    elif pa.types.is_timestamp(t):
        base = "DateTime64(6, 'UTC')"
    elif pa.types.is_date32(t):
        base = "Date32"
    elif pa.types.is_decimal(t):
        base = f"Decimal({t.precision}, {t.scale})"
    elif pa.types.is_map(t):
        key = arrow_to_clickhouse_type(t.key_type, nullable=False)
        value = arrow_to_clickhouse_type(t.item_type, nullable=False)
        return f"Map({key}, {value})"  # ClickHouse maps cannot be Nullable
    elif pa.types.is_list(t):
        return f"Array({arrow_to_clickhouse_type(t.value_type)})"
    else:
        raise TypeError(f"no ClickHouse type for Arrow type {t}")
    return f"Nullable({base})" if nullable else base


def aux_columns(schema: pa.Schema) -> dict[str, str]:
    return {f.name: arrow_to_clickhouse_type(f.type, f.nullable) for f in schema}


@functools.cache
def aux_keys() -> Mapping[str, tuple[str, ...]]:
    """Primary key of every table the DuckDB migrations create (replayed in memory)."""
    con = duckdb.connect(":memory:")
    try:
        for migration in MIGRATIONS:
            for statement in migration.duckdb:
                con.execute(statement)
        rows = con.execute(
            "SELECT table_name, constraint_column_names FROM duckdb_constraints() "
            "WHERE constraint_type = 'PRIMARY KEY'"
        ).fetchall()
    finally:
        con.close()
    return {name: tuple(columns) for name, columns in rows}


def quote(name: str) -> str:
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


def create_table_ddl(name: str, columns: Mapping[str, str], key: Sequence[str], partition: str = "") -> str:
    """A MergeTree table; a ReplacingMergeTree ordered by the key when there is one, so a row
    written twice under the same key (a race between two writers) collapses at the next merge."""
    body = ",\n    ".join(f"{quote(c)} {t}" for c, t in columns.items())
    if key:
        engine = f"ReplacingMergeTree ORDER BY ({', '.join(quote(k) for k in key)})"
    else:
        engine = "MergeTree ORDER BY tuple()"
    if partition:
        engine += f" PARTITION BY {partition}"
    return f"CREATE TABLE IF NOT EXISTS {quote(name)} (\n    {body}\n) ENGINE = {engine}"


def events_ddl() -> str:
    # Monthly partitions: reports and reprices read a time window, and old months can be
    # dropped or moved to cold storage as a whole.
    return create_table_ddl("events", event_columns(), EVENTS_KEY, partition="toYYYYMM(ts)")


def aux_ddl(name: str, schema: pa.Schema) -> str:
    return create_table_ddl(name, aux_columns(schema), aux_keys().get(name, ()))


def all_tables() -> dict[str, dict[str, str]]:
    """Every ledger table with its columns, in creation order (events first)."""
    tables = {"events": event_columns()}
    for name, schema in AUX_TABLES.items():
        tables[name] = aux_columns(schema)
    return tables


def table_ddl(name: str) -> str:
    if name == "events":
        return events_ddl()
    return aux_ddl(name, AUX_TABLES[name])


META_DDL = (
    "CREATE TABLE IF NOT EXISTS meta (`key` String, `value` String, `at` DateTime64(6, 'UTC')) "
    "ENGINE = ReplacingMergeTree(`at`) ORDER BY `key`"
)
