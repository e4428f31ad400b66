"""Outcome files: late judgements (success, score, feedback) keyed by unit, trace or event.

JSONL or CSV with the columns `unit` + `unit_id`, or `trace_id`, or `event_id`, and
`success` and/or `score`, optional `feedback` and `ts`. Outcomes are few next to events,
so they are read row by row with a precise error for each bad one.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, cast

from .readers import BOM, IngestFileError, detect_format, is_gzip

OUTCOME_FIELDS = frozenset({"unit", "unit_id", "trace_id", "event_id", "success", "score", "feedback", "ts"})


def read_outcomes(path: Path) -> Iterator[tuple[int, dict[str, Any], str | None]]:
    """(line number, raw record, error or None) for each record of the file.

    The file is UTF-8 (a byte order mark at its start is skipped), gzipped or not; a line or
    row that is not UTF-8 is rejected with where it breaks, and the others are kept.
    """
    try:
        fmt = detect_format(path, option=None)
    except IngestFileError:
        fmt = ""
    if fmt == "jsonl":
        yield from _jsonl(path)
    elif fmt == "csv":
        yield from _csv(path)
    else:
        raise IngestFileError(f"{path}: outcomes are read from JSONL or CSV: name the file .jsonl or .csv")


def _open_binary(path: Path) -> IO[bytes]:
    if is_gzip(path):
        return cast(IO[bytes], gzip.open(path, "rb"))
    return open(path, "rb")


def _jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any], str | None]]:
    with _open_binary(path) as handle:
        for number, read in enumerate(handle, start=1):
            raw = read.removeprefix(BOM) if number == 1 else read
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield number, {}, f"record: {_not_utf8(raw[exc.start], f'at column {exc.start + 1}')}"
                continue
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


def _csv(path: Path) -> Iterator[tuple[int, dict[str, Any], str | None]]:
    # Bytes that are not UTF-8 are kept as surrogates, so that only the rows holding them are refused.
    with (
        _open_binary(path) as binary,
        io.TextIOWrapper(binary, encoding="utf-8-sig", errors="surrogateescape", newline="") as handle,
    ):
        reader = csv.DictReader(handle)
        fields = reader.fieldnames or ()
        if any(_bad_text(name) for name in fields):
            raise IngestFileError(
                f"{path}: the header is not UTF-8 text; re-encode the file, e.g. from Latin-1"
            )
        unknown = set(fields) - OUTCOME_FIELDS
        if unknown:
            raise IngestFileError(
                f"{path}: unknown outcome column(s) {', '.join(sorted(unknown))}; "
                f"expected some of {', '.join(sorted(OUTCOME_FIELDS))}"
            )
        ends = reader.line_num  # where the header ends
        for row in reader:
            # The line the row starts on: a quoted feedback may span several lines.
            number, ends = ends + 1, reader.line_num
            values = {k: v for k, v in row.items() if v not in (None, "")}
            bad = next((k for k, v in values.items() if isinstance(v, str) and _bad_text(v)), None)
            if bad is not None:
                byte = next(ord(c) - 0xDC00 for c in values[bad] if "\udc80" <= c <= "\udcff")
                yield number, {}, f"{bad}: {_not_utf8(byte, 'in this column')}"
                continue
            yield number, values, None


def _bad_text(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _not_utf8(byte: int, where: str) -> str:
    return (
        f"is not UTF-8 text: byte 0x{byte:02X} {where} "
        "(outcome files must be UTF-8; re-encode the file, e.g. from Latin-1)"
    )


def _unknown(record: dict[str, Any]) -> str | None:
    extra = sorted(set(record) - OUTCOME_FIELDS)
    return (
        f"{extra[0]}: unknown field (expected some of {', '.join(sorted(OUTCOME_FIELDS))})" if extra else None
    )
