"""The fast tier of the checks for JSON lines, in C: parse, type and check plain events in one pass.

`_quickparse.c` does for a JSON line what the shape match (`quickjson`), `json_transform` and
the fast SQL (`fastpath`) do together, in about a quarter of their CPU: it says yes only to a line
it is sure of (a plain event: known keys written once, plain values, within every limit and
rule the fast tier checks) and gives its typed, defaulted values; every other line is
flagged `_suspect` and goes to the careful checks, exactly as a suspect line does on the SQL
path. It may flag more than the SQL path does (a repeated key, an unusual timestamp spelling,
a number a double cannot hold exactly): that costs speed, never correctness. A property test
holds it equal to the SQL path on every line it passes.

Without a C compiler at install time the module is not built, and the SQL path runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from functools import cache
from typing import TYPE_CHECKING

import pyarrow as pa

from ..events import EVENT_SCHEMA, FIELDS, TOKEN_FIELDS
from .fastpath import SUSPECT_COLUMN
from .normalise import (
    EARLIEST,
    FUTURE_SKEW,
    IGNORED_FIELDS,
    MAX_LATENCY_MS,
    MAX_TEXT,
    ROW_COLUMN,
    _int_limits,
)
from .quickjson import int_digits

if TYPE_CHECKING:
    from types import ModuleType

_quickparse: ModuleType | None
try:
    from . import _quickparse
except ImportError:  # built without a C compiler: the SQL path does the same, slower
    _quickparse = None

AVAILABLE = _quickparse is not None
"""Whether the C parse was built."""

# Kinds of value, as `_quickparse.c` numbers them.
_IGNORED, _TEXT, _CHOICE, _INT, _FLOAT, _BOOL, _TS, _MONEY, _MAP = range(9)
_KINDS: Mapping[str, int] = {
    "tokens": _INT,
    "count": _INT,
    "int": _INT,
    "float": _FLOAT,
    "bool": _BOOL,
    "ts": _TS,
    "money": _MONEY,
    "map": _MAP,
}

FieldSpec = tuple[bytes, int, int, int, int, tuple[bytes, ...], int, int, int | bytes | None, bool]


@cache
def spec() -> tuple[FieldSpec, ...]:
    """The event fields, then the ignored ones, as the C parse takes them: name, kind, the digits
    an integer may have (as the shape match allows), choices, limits, default and whether required."""
    fields: list[FieldSpec] = []
    for f in FIELDS:
        min_digits = max_digits = zero_ok = low = high = 0
        choices: tuple[bytes, ...] = ()
        default: int | bytes | None = None
        if f.kind == "str":
            kind = _CHOICE if f.choices else _TEXT
            choices = tuple(c.encode() for c in f.choices or ())
            if f.default is not None:
                default = str(f.default).encode()
        else:
            kind = _KINDS[f.kind]
            if kind == _INT:
                low, high, _ = _int_limits(f)
                min_digits, max_digits = int_digits(low, high)
                zero_ok = int(low == 0)
            if f.default is not None:
                default = int(f.default)
        fields.append(
            (f.name.encode(), kind, min_digits, max_digits, zero_ok, choices, low, high, default, f.required)
        )
    fields.extend(
        (name.encode(), _IGNORED, 0, 0, 0, (), 0, 0, None, False) for name in sorted(IGNORED_FIELDS)
    )
    return tuple(fields)


@cache
def _token_indices() -> tuple[int, ...]:
    names = [f.name for f in FIELDS]
    return tuple(names.index(name) for name in TOKEN_FIELDS)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _micros(at: datetime) -> int:
    delta = at - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


@cache
def checked_schema() -> pa.Schema:
    return pa.schema([(ROW_COLUMN, pa.int64()), *EVENT_SCHEMA, (SUSPECT_COLUMN, pa.bool_())])


def checked_lines(table: pa.Table, *, now: datetime | None = None, column: str = "line") -> pa.Table:
    """`_row`, the event columns and `_suspect` for the JSON lines of `table`, as the fast SQL gives them.

    A suspect line has every event column NULL: it goes to the careful checks, which read it again.
    Raises ValueError for a chunk of more than 2 GiB of text (its offsets are 32-bit).
    """
    assert _quickparse is not None
    now = now or datetime.now(UTC)
    lines = table.column(column)
    if lines.type != pa.large_string():
        lines = lines.cast(pa.large_string())
    earliest, latest = _micros(EARLIEST), _micros(now + FUTURE_SKEW)
    fields, tokens = spec(), _token_indices()
    rows = table.column(ROW_COLUMN)
    batches = []
    start = 0
    for chunk in _runs(lines):
        n = len(chunk)
        _, offsets, data = chunk.buffers()
        suspect, buffers = _quickparse.parse(
            offsets, data, chunk.offset, n, fields, earliest, latest, float(MAX_LATENCY_MS), MAX_TEXT, tokens
        )
        columns = [rows.slice(start, n).combine_chunks()]
        columns.extend(_column(f.type, n, parts) for f, parts in zip(EVENT_SCHEMA, buffers, strict=False))
        columns.append(pa.Array.from_buffers(pa.bool_(), n, [None, pa.py_buffer(suspect)]))
        batches.append(pa.RecordBatch.from_arrays(columns, schema=checked_schema()))
        start += n
    return pa.Table.from_batches(batches, schema=checked_schema())


def _runs(lines: pa.ChunkedArray) -> list[pa.Array]:
    """The chunks of `lines`, those that are consecutive slices of one array joined back into one.

    The reader cuts a file's chunk into small batches (for DuckDB's threads on the SQL path), all
    pointing into one buffer. Parsed as one, they give batches of a whole chunk's events, and
    DuckDB inserts those straight into full row groups: from batches of a few thousand rows, a
    parallel insert leaves a second's work per million rows for the next checkpoint.
    """
    runs: list[pa.Array] = []
    for chunk in lines.chunks:
        if not len(chunk):
            continue
        if runs:
            last = runs[-1]
            _, last_offsets, last_data = last.buffers()
            _, offsets, data = chunk.buffers()
            if (
                not chunk.null_count
                and not last.null_count
                and offsets.address == last_offsets.address
                and data.address == last_data.address
                and chunk.offset == last.offset + len(last)
            ):
                runs[-1] = pa.LargeStringArray.from_buffers(
                    len(last) + len(chunk), offsets, data, offset=last.offset
                )
                continue
        runs.append(chunk)
    return runs


def _column(arrow_type: pa.DataType, n: int, parts: tuple[bytes, ...] | None) -> pa.Array:
    if parts is None:  # no line of the chunk has a value for it
        return pa.nulls(n, arrow_type)
    valid = pa.py_buffer(parts[0])
    if pa.types.is_map(arrow_type):
        offsets, key_offsets, key_data, item_offsets, item_data = (pa.py_buffer(p) for p in parts[1:])
        entries = len(key_offsets) // 4 - 1
        keys = pa.Array.from_buffers(pa.string(), entries, [None, key_offsets, key_data])
        items = pa.Array.from_buffers(pa.string(), entries, [None, item_offsets, item_data])
        struct = pa.StructArray.from_arrays(
            [keys, items], fields=[arrow_type.key_field, arrow_type.item_field]
        )
        return pa.Array.from_buffers(arrow_type, n, [valid, offsets], children=[struct])
    return pa.Array.from_buffers(arrow_type, n, [valid, *(pa.py_buffer(p) for p in parts[1:])])
