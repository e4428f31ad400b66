"""Event rows -> one Arrow table of typed columns, the form the ingest path takes from servers.

A request's spans become rows (tuples in `COLUMNS` order); transposing them with one
`zip(*rows)` and converting each column once is far cheaper than a dict per event. The
column types are fixed, so the tables of concurrent requests concatenate into one commit.
The ingest path still checks every value.
"""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa

from ..events import FIELDS, arrow_type
from .rows import COLUMNS, Row

_KINDS = {f.name: f.kind for f in FIELDS}
_TAGS = arrow_type("map")
# A billed amount travels as decimal text: the ingest checks type it, and name it if it does not fit.
SCHEMA = pa.schema(
    [
        pa.field(name, pa.string() if name == "billed_cost" else arrow_type(_KINDS[name]))
        for name in COLUMNS
        if name != "span_id"  # it becomes a tag
    ]
)
_TYPES = [None if name == "span_id" else SCHEMA.field(name).type for name in COLUMNS]
CONVERSION_ERRORS = (pa.ArrowException, TypeError, ValueError, OverflowError)


def rows_table(rows: Sequence[Row]) -> pa.Table:
    """The rows as columns; raises one of CONVERSION_ERRORS when a value cannot be stored."""
    columns = dict(zip(COLUMNS, zip(*rows, strict=True) if rows else ((),) * len(COLUMNS), strict=True))
    arrays = {
        name: pa.array(column, type=type_)
        for (name, column), type_ in zip(columns.items(), _TYPES, strict=True)
        if type_ is not None and name != "tags"
    }
    arrays["tags"] = _tags(columns["span_id"], columns["tags"])
    return pa.Table.from_arrays([arrays[name] for name in SCHEMA.names], schema=SCHEMA)


def _tags(span_ids: Sequence[str], tags: Sequence[list[tuple[str, str]] | None]) -> pa.Array:
    """The tags column: most spans' only tag is their id, which needs no per-row list."""
    if tags.count(None) == len(tags) and "" not in span_ids:
        n = len(span_ids)
        return pa.MapArray.from_arrays(
            pa.array(range(n + 1), type=pa.int32()),
            pa.repeat(pa.scalar("span_id"), n),
            pa.array(span_ids, type=pa.string()),
            type=_TAGS,
        )
    pairs = [
        given if given is not None else ([("span_id", span_id)] if span_id else [])
        for span_id, given in zip(span_ids, tags, strict=True)
    ]
    return pa.array(pairs, type=_TAGS)


def storable_table(rows: Sequence[Row]) -> tuple[pa.Table, list[tuple[int, str]]]:
    """The table of the rows that can be stored, and (index, reason) for each that cannot.

    The values come from the mapping with the right types, so the slow search for a bad row
    runs only if a value the checks upstream let through (a string Arrow cannot encode) is met.
    """
    try:
        return rows_table(rows), []
    except CONVERSION_ERRORS:
        pass
    kept: list[Row] = []
    bad: list[tuple[int, str]] = []
    for index, row in enumerate(rows):
        try:
            rows_table([row])
        except CONVERSION_ERRORS as exc:
            bad.append((index, f"a value cannot be stored ({exc})"))
        else:
            kept.append(row)
    return rows_table(kept), bad
