"""Outcome files: late judgements (success, score, feedback) keyed by unit, trace or event.

JSONL or CSV with the columns `unit` + `unit_id`, or `trace_id`, or `event_id`, and
`success` and/or `score`, optional `feedback` and `ts`. Outcomes are few next to events,
so they are read row by row with a precise error for each bad one.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .readers import IngestFileError, detect_format

OUTCOME_FIELDS = frozenset({"unit", "unit_id", "trace_id", "event_id", "success", "score", "feedback", "ts"})


def read_outcomes(path: Path) -> Iterator[tuple[int, dict[str, Any], str | None]]:
    """(line number, raw record, error or None) for each record of the file."""
    fmt = detect_format(path)
    if fmt == "jsonl":
        with open(path, encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    yield number, {}, f"record: malformed JSON: {exc.msg} at column {exc.colno}"
                    continue
                if not isinstance(record, dict):
                    yield number, {}, "record: expected a JSON object"
                    continue
                yield number, record, _unknown(record)
    elif fmt == "csv":
        with open(path, encoding="utf-8-sig", newline="") as handle:
            reader = csv.DictReader(handle)
            unknown = set(reader.fieldnames or ()) - OUTCOME_FIELDS
            if unknown:
                raise IngestFileError(
                    f"{path}: unknown outcome column(s) {', '.join(sorted(unknown))}; "
                    f"expected some of {', '.join(sorted(OUTCOME_FIELDS))}"
                )
            for number, row in enumerate(reader, start=2):
                yield number, {k: v for k, v in row.items() if v not in (None, "")}, None
    else:
        raise IngestFileError(f"{path}: outcomes are read from JSONL or CSV")


def _unknown(record: dict[str, Any]) -> str | None:
    extra = sorted(set(record) - OUTCOME_FIELDS)
    return (
        f"{extra[0]}: unknown field (expected some of {', '.join(sorted(OUTCOME_FIELDS))})" if extra else None
    )
