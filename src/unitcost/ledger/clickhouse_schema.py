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
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

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


# ---------------------------------------------------------------------- result types
#
# A query's result should not depend on the engine under the ledger (`Ledger.sql`, and every
# query of unitcost's own). ClickHouse answers some standard SQL in other types than DuckDB:
# a comparison, `IS NULL`, `IN` or `LIKE` is UInt8 (0/1) rather than a boolean, `count()` is
# UInt64, `extract(hour ...)` UInt8, `date_trunc` a DateTime to the second, and its UTC is
# named `UTC` where DuckDB's session zone is `Etc/UTC`. The values are the same; the types are
# brought to DuckDB's. Whether a UInt8 column is a truth value or a number is not in the result:
# the analyser's query tree (`EXPLAIN QUERY TREE`) tells which function computed each column.

DUCKDB_UTC = "Etc/UTC"
"""How the DuckDB ledger names its session time zone, UTC (ICU's canonical name)."""

PREDICATES = frozenset(
    {
        "equals", "notEquals", "less", "greater", "lessOrEquals", "greaterOrEquals",
        "isNotDistinctFrom", "isDistinctFrom", "and", "or", "not", "xor", "isNull", "isNotNull",
        "isZeroOrNull", "in", "notIn", "globalIn", "globalNotIn", "nullIn", "notNullIn",
        "globalNullIn", "globalNotNullIn", "like", "notLike", "ilike", "notILike", "match",
        "startsWith", "endsWith", "startsWithUTF8", "endsWithUTF8", "has", "hasAll", "hasAny",
        "mapContains", "mapContainsKey", "empty", "notEmpty", "isNaN", "isFinite", "isInfinite",
        "exists",
    }
)  # fmt: skip
"""Functions whose UInt8 result is a truth value (DuckDB answers a BOOLEAN)."""

SAME_AS_FIRST_ARGUMENT = frozenset(
    {"min", "max", "any", "anyLast", "argMin", "argMax", "first_value", "last_value",
     "assumeNotNull", "toNullable", "identity"}
)  # fmt: skip
"""Functions whose result is (one of) the values of their first argument."""

COUNTS = frozenset(
    {
        "count", "countIf", "countDistinct", "uniq", "uniqExact", "uniqCombined",
        "uniqCombined64", "uniqHLL12", "uniqTheta", "length", "lengthUTF8", "row_number",
        "rank", "dense_rank", "ntile",
    }
)  # fmt: skip
"""Functions whose UInt64 result DuckDB answers as a BIGINT (counts, lengths, ranks)."""


@dataclass
class _TreeNode:
    """One line of `EXPLAIN QUERY TREE` output and the lines indented under it."""

    text: str
    children: list[_TreeNode] = field(default_factory=list)

    @property
    def kind(self) -> str:
        return self.text.split(" ", 1)[0]

    def attribute(self, name: str) -> str | None:
        found = re.search(rf"\b{name}: ([^,]*)", self.text)
        return found.group(1) if found else None

    def section(self, name: str) -> list[_TreeNode]:
        """The nodes of a section (`PROJECTION`, `ARGUMENTS`, `EXPRESSION`), without its LIST."""
        for child in self.children:
            if child.text == name:
                items = child.children
                if len(items) == 1 and items[0].kind == "LIST":
                    return items[0].children
                return items
        return []


def parse_query_tree(text: str) -> _TreeNode:
    """The indented `EXPLAIN QUERY TREE` text as nodes (two spaces per level)."""
    root = _TreeNode("")
    stack: list[tuple[int, _TreeNode]] = [(-1, root)]
    for line in text.splitlines():
        if not line.strip():
            continue
        depth = len(line) - len(line.lstrip(" "))
        node = _TreeNode(line.strip())
        while stack[-1][0] >= depth:
            stack.pop()
        stack[-1][1].children.append(node)
        stack.append((depth, node))
    return root


class QueryTree:
    """What computed each column of a query's result, read from its query tree."""

    def __init__(self, text: str) -> None:
        root = parse_query_tree(text)
        self.top = root.children[0] if root.children else _TreeNode("")
        self.queries: dict[str, _TreeNode] = {}
        self._index(self.top)

    def _index(self, node: _TreeNode) -> None:
        if node.kind in ("QUERY", "UNION"):
            self.queries[node.attribute("id") or ""] = node
        for child in node.children:
            self._index(child)

    def columns(self) -> list[_TreeNode]:
        """The expressions of the result's columns, in order."""
        return self._projection(self.top)

    def _projection(self, query: _TreeNode) -> list[_TreeNode]:
        if query.kind == "UNION":
            first = query.section("QUERIES")[:1]
            return self._projection(first[0]) if first else []
        return query.section("PROJECTION")

    def _named(self, query: _TreeNode, name: str) -> _TreeNode | None:
        """The expression of a subquery's (or CTE's) column, by its name."""
        if query.kind == "UNION":
            first = query.section("QUERIES")[:1]
            return self._named(first[0], name) if first else None
        # `PROJECTION COLUMNS` lines are `name Type`, in the order of the projection; a type
        # starts with a capital (`UInt8`, `Nullable(...)`), which tells `b UInt8` from `b x UInt8`.
        lines = next((c.children for c in query.children if c.text == "PROJECTION COLUMNS"), [])
        for line, item in zip(lines, self._projection(query), strict=False):
            rest = line.text[len(name) :]
            if line.text.startswith(name + " ") and rest[1:2].isupper():
                return item
        return None

    def origin(self, node: _TreeNode, depth: int = 0) -> _TreeNode | None:
        """The function node that computed a column: through folded constants and subqueries."""
        if depth > 64:
            return None
        if node.kind == "FUNCTION":
            return node
        if node.kind == "CONSTANT":
            expression = node.section("EXPRESSION")
            return self.origin(expression[0], depth + 1) if expression else None
        if node.kind == "COLUMN":
            source = self.queries.get(node.attribute("source_id") or "")
            name = node.attribute("column_name")
            item = self._named(source, name) if source is not None and name is not None else None
            return self.origin(item, depth + 1) if item is not None else None
        return None

    def is_truth_value(self, node: _TreeNode, depth: int = 0) -> bool:
        function = self.origin(node)
        if function is None or depth > 64:
            return False
        name = function.attribute("function_name")
        arguments = function.section("ARGUMENTS")
        if name in PREDICATES:
            return True
        if name in SAME_AS_FIRST_ARGUMENT:
            values = arguments[:1]
        elif name == "if":
            values = arguments[1:]
        elif name == "multiIf":
            values = arguments[1::2] + arguments[-1:]
        elif name in ("coalesce", "ifNull"):
            values = arguments
        else:
            return False
        return bool(values) and all(self.is_truth_value(v, depth + 1) for v in values)

    def is_count(self, node: _TreeNode) -> bool:
        function = self.origin(node)
        return function is not None and function.attribute("function_name") in COUNTS


def duckdb_result_schema(schema: pa.Schema, query_tree: Callable[[], str | None]) -> pa.Schema:
    """The types the DuckDB ledger gives the columns of a result ClickHouse gave as `schema`.

    `query_tree` returns the query's `EXPLAIN QUERY TREE` (None if it cannot be had: not a
    SELECT); it is asked only when a UInt8 or UInt64 column makes it matter."""
    tree: QueryTree | None = None
    if any(pa.types.is_uint8(f.type) or pa.types.is_uint64(f.type) for f in schema):
        text = query_tree()
        tree = QueryTree(text) if text else None
    columns = tree.columns() if tree is not None else []
    if len(columns) != len(schema):
        columns, tree = [], None
    fields = []
    for i, f in enumerate(schema):
        node = columns[i] if tree is not None else None
        fields.append(f.with_type(_duckdb_type(f.type, tree, node)))
    return pa.schema(fields, metadata=schema.metadata)


def _duckdb_type(t: pa.DataType, tree: QueryTree | None, node: _TreeNode | None) -> pa.DataType:
    if pa.types.is_uint8(t) and tree is not None and node is not None and tree.is_truth_value(node):
        return pa.bool_()
    if pa.types.is_uint8(t) or pa.types.is_uint16(t) or pa.types.is_uint32(t):
        return pa.int64()  # date parts, small integers: DuckDB's BIGINT (a lossless cast)
    if pa.types.is_uint64(t) and tree is not None and node is not None and tree.is_count(node):
        return pa.int64()
    if pa.types.is_timestamp(t) and t.tz == "UTC" and t.unit in ("s", "ms", "us"):
        return pa.timestamp("us", tz=DUCKDB_UTC)
    # Nested values may be NULL in DuckDB (ClickHouse's are never), and its list items are `l`.
    if pa.types.is_map(t):
        value = pa.field("value", _duckdb_type(t.item_type, None, None), nullable=True)
        return pa.map_(t.key_field, value)
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return pa.list_(pa.field("l", _duckdb_type(t.value_type, None, None), nullable=True))
    return t
