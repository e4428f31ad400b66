"""Event records whose values are already typed -> an Arrow table for the ingest checks.

Servers (the OTLP receiver) produce records with Python values of the right types; turning
them into typed columns directly skips the JSON round trip that arbitrary Python records
need, and the ingest path still checks every value. Anything that does not convert (a value
of the wrong type) sends the batch down the general path, which names the bad record.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from ..events import FIELDS, arrow_type

if TYPE_CHECKING:
    from ..ingest.pipeline import Ingestor, IngestSummary

_FIELDS = [(f.name, f.kind, arrow_type(f.kind)) for f in FIELDS]


def typed_table(records: Sequence[Mapping[str, Any]]) -> pa.Table:
    """Columns for the fields any record has; raises pa.ArrowException on a value of the wrong type."""
    present: set[str] = set()
    for record in records:
        present.update(record)
    arrays: dict[str, pa.Array] = {}
    for name, kind, type_ in _FIELDS:
        if name not in present:
            continue
        if kind == "map":
            values: list[Any] = [list(r[name].items()) if r.get(name) else None for r in records]
        else:
            values = [r.get(name) for r in records]
        arrays[name] = pa.array(values, type=type_)
    return pa.table(arrays)


def ingest_typed(ingestor: Ingestor, records: Sequence[Mapping[str, Any]], *, source: str) -> IngestSummary:
    try:
        table = typed_table(records)
    except (pa.ArrowException, TypeError, ValueError, OverflowError):
        return ingestor.ingest_records(records, source=source)
    return ingestor.ingest_table(table, source=source)
