"""The quick parse of JSON lines: one pass straight into typed fields, and a shape test that
says when those typed values are exactly what the checks would make of the line.

`json_transform` into typed fields is the cheapest way to type a line, but it is lenient
where the checks are strict: 12.5, 1e3, "12" and true all become integers for a token
count, a timestamp written as a number becomes NULL, an object becomes text for a name.
So each line is also matched, as text, against the shape of a plain event: a JSON object
whose keys are all allowed, each with the kind of value the checks take as is (a token
count as digits within its limits, a name as a string, an integer or a flag, strings
without escapes, a flag as true/false, a timestamp as a string...). A line of that shape
converts exactly as the checks would convert it (a key written twice is taken at its
first occurrence by both parses); any other line (an escape, an unknown key, a count
written as text, unusual but valid values) is flagged and goes to the careful parse and
the full checks, which accept it or name its problem.

Where the C extension is built, `native` does all of this, and the fast SQL after it, in one
pass; this path remains for an install without a C compiler, and as its reference in the tests.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from functools import cache

import pyarrow as pa
import pyarrow.compute as pc

from ..events import FIELDS, Field
from .normalise import IGNORED_FIELDS, SEP, _int_limits, _lit

PARSED = "PARSED "
"""Prefix of a source type: the JSON value was converted to that DuckDB type by json_transform."""

PARSED_TYPES: Mapping[str, str] = {
    "str": "VARCHAR",
    "tokens": "BIGINT",
    "count": "BIGINT",
    "int": "BIGINT",
    "float": "DOUBLE",
    "bool": "BOOLEAN",
    "ts": "TIMESTAMPTZ",
    # Amounts keep their JSON text, which the checks cast: as a VARCHAR, a number would be
    # DuckDB's spelling of a double (1e+16), not yyjson's (10000000000000000.0).
    "money": "JSON",
    "map": "MAP(VARCHAR, VARCHAR)",
}

# Pieces of the shape, in RE2 syntax. JSON whitespace only; strings without escapes or control
# characters (which JSON forbids raw), so their text is their value; numbers as JSON spells them.
_WS = r"[ \t\n\r]*"
_STRING = r'"[^"\\\x00-\x1f]*"'
_NUMBER = r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?"
_SCALAR = f"{_STRING}|{_NUMBER}|true|false"
# A text field (or a tag) may hold a number, which the checks take as its JSON text. For a
# fraction that text is yyjson's, where the conversion to VARCHAR spells the double its own
# way (1e+16 for 10000000000000000.0); for an integer of at most 18 digits both agree.
_TEXT = f"{_STRING}|-?(?:0|[1-9][0-9]{{0,17}})|true|false"


def int_shape(low: int, high: int) -> tuple[str, bool]:
    """A pattern for the integers a field takes as is, and whether it matches nothing outside [low, high].

    Digits only (no sign, no fraction, no exponent, no leading zero), at most as many as
    `high` has (one fewer when `high` is a power of ten, so that 100000000 is over the
    limit and 99999999 within it), and never more than 18, so the value fits a BIGINT.
    """
    bottom, top = int_digits(low, high)
    pattern = f"[1-9][0-9]{{{bottom - 1},{top - 1}}}"
    if low == 0:
        pattern = f"0|{pattern}"
    smallest = 0 if low == 0 else 10 ** (bottom - 1)
    return pattern, low <= smallest and 10**top - 1 <= high


def int_digits(low: int, high: int) -> tuple[int, int]:
    """The fewest and most digits of a positive integer `int_shape` takes for [low, high]."""
    top = len(str(high))
    if high == 10 ** (top - 1):
        top -= 1
    return max(len(str(low)), 1), min(top, 18)


def _value_shape(f: Field) -> str:
    if f.kind in ("tokens", "count", "int"):
        low, high, _ = _int_limits(f)
        return int_shape(low, high)[0]
    if f.kind == "float":
        # Not negative; the limit is checked on the value (a huge exponent is infinite, over it).
        return _NUMBER.removeprefix("-?")
    if f.kind == "bool":
        return "true|false"
    if f.kind == "ts":
        return _STRING
    if f.kind == "money":
        return f"{_STRING}|{_NUMBER}"
    if f.kind == "map":
        tag = f"{_STRING}{_WS}:{_WS}(?:{_TEXT})"
        return rf"\{{{_WS}(?:{tag}(?:{_WS},{_WS}{tag})*)?{_WS}\}}"
    if f.choices:
        # As the checks spell them: any other case is accepted too, but after a closer look.
        return "|".join(f'"{c}"' for c in f.choices)
    return _TEXT


def line_shape() -> str:
    """The shape of a plain event line, for regexp_full_match."""
    # Keys grouped by the shape of their value keep the matching automaton small.
    by_shape: dict[str, list[str]] = {}
    for f in FIELDS:
        by_shape.setdefault(_value_shape(f), []).append(f.name)
    # unitcost's own exports carry the computed columns, which the checks ignore.
    by_shape.setdefault(_SCALAR, []).extend(sorted(IGNORED_FIELDS))
    pairs = [f'"(?:{"|".join(names)})"{_WS}:{_WS}(?:{shape}|null)' for shape, names in by_shape.items()]
    pair = "(?:" + "|".join(pairs) + ")"
    return rf"{_WS}\{{{_WS}(?:{pair}(?:{_WS},{_WS}{pair})*)?{_WS}\}}{_WS}"


PARALLEL_LINES = 16_384
"""Lines below which matching in several threads is not worth starting them."""

PLAIN_COLUMN = "_plain"
"""The column `with_plain_flag` adds: whether the line has the plain shape."""


@cache
def _anchored_shape() -> str:
    return f"^(?:{line_shape()})$"


def with_plain_flag(table: pa.Table, column: str = "line") -> pa.Table:
    """`table` with `PLAIN_COLUMN`, the shape match of each line, for `json_quick_sql`.

    Arrow's RE2 kernel, run here on the lines already in memory, costs about half what
    DuckDB's `regexp_full_match` does for the same pattern (0.14 s against 0.26-0.31 s of
    CPU per 150k lines, `bench/ingest_shape.py`), and it releases the GIL like DuckDB.
    """
    lines = table.column(column)
    parts = min(os.cpu_count() or 1, max(len(lines) // PARALLEL_LINES, 1))
    if parts == 1:
        return table.append_column(PLAIN_COLUMN, _plain(lines))
    # The kernel runs on one core: the lines are shared out, one slice per core.
    step = -(-len(lines) // parts)
    slices = [lines.slice(start, step) for start in range(0, len(lines), step)]
    results: list[pa.ChunkedArray | BaseException | None] = [None] * len(slices)

    def match(index: int) -> None:
        try:
            results[index] = _plain(slices[index])
        except BaseException as exc:  # raised below, in the caller's thread
            results[index] = exc

    # Plain threads: `concurrent.futures` cannot be imported while the interpreter exits, when
    # the recorder's last events are checked.
    workers = [threading.Thread(target=match, args=(i,)) for i in range(1, len(slices))]
    for worker in workers:
        worker.start()
    match(0)
    for worker in workers:
        worker.join()
    chunks: list[pa.Array] = []
    for part in results:
        if isinstance(part, BaseException):
            raise part
        assert part is not None
        chunks.extend(part.chunks)
    return table.append_column(PLAIN_COLUMN, pa.chunked_array(chunks, pa.bool_()))


def _plain(lines: pa.ChunkedArray) -> pa.ChunkedArray:
    # `$` is the end of the text in RE2 (not before a last newline), so this is a full match.
    return pc.match_substring_regex(lines, _anchored_shape())


def field_within_limits(f: Field) -> bool:
    """True when a value of the line shape cannot break the field's range rule."""
    if f.kind in ("tokens", "count", "int"):
        low, high, _ = _int_limits(f)
        return int_shape(low, high)[1]
    return False


def json_quick_sql(relation: str) -> tuple[str, dict[str, str], str]:
    """JSON lines parsed straight into typed fields, each line flagged unless it has the plain shape.

    `relation` holds `_row`, `line` and the shape flag `with_plain_flag` adds. The columns
    are those of `readers.json_source_sql` (`_row`, `_line`, `_pre_error`, `_unknown`, one
    per field), but each field holds its typed value, and `_pre_error` only says the line
    needs the careful parse; `_unknown` is always NULL, since a line with an unknown key
    does not have the plain shape.
    """
    struct = "{" + ", ".join(f'"{f.name}": "{PARSED_TYPES[f.kind]}"' for f in FIELDS) + "}"
    extract = ", ".join(f'_j."{f.name}" AS "{f.name}"' for f in FIELDS)
    flag = _lit("record" + SEP + "a value to check")
    sql = (
        f"SELECT _row, line AS _line, "
        f"CASE WHEN NOT {PLAIN_COLUMN} THEN {flag} END AS _pre_error, "
        f"CAST(NULL AS VARCHAR) AS _unknown, {extract} "
        f"FROM (SELECT _row, line, {PLAIN_COLUMN}, json_transform(line, {_lit(struct)}) AS _j FROM {relation})"
    )
    return sql, {f.name: PARSED + PARSED_TYPES[f.kind] for f in FIELDS}, "_unknown"
