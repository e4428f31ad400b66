"""Outcome files: their encoding, byte order mark and compression."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

GOOD = {"unit": "ticket", "unit_id": "t2", "success": True}
LATIN = '{"unit": "ticket", "unit_id": "t1", "success": true, "feedback": "caf\u00e9"}\n'.encode("latin-1")


def _lines(*records: dict[str, Any]) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in records)


def test_a_line_that_is_not_utf8_is_rejected_and_the_others_kept(ledger, tmp_path: Path) -> None:
    path = tmp_path / "latin.jsonl"
    path.write_bytes(LATIN + _lines(GOOD))
    summary = ledger.import_outcomes(path)
    assert summary.recorded == 1 and summary.rejected == 1
    (rejection,) = summary.rejections
    assert rejection.record == 1 and rejection.field == "record"
    assert "is not UTF-8 text: byte 0xE9 at column" in rejection.reason


def test_a_byte_order_mark_is_skipped(ledger, tmp_path: Path) -> None:
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + _lines(GOOD, {**GOOD, "unit_id": "t3"}))
    summary = ledger.import_outcomes(path)
    assert (summary.recorded, summary.rejected) == (2, 0)


def test_gzipped_outcomes_are_read(ledger, tmp_path: Path) -> None:
    jsonl = tmp_path / "o.jsonl.gz"
    jsonl.write_bytes(gzip.compress(_lines(GOOD)))
    assert ledger.import_outcomes(jsonl).recorded == 1
    table = tmp_path / "o.csv.gz"
    table.write_bytes(gzip.compress(b"unit,unit_id,success\nticket,t9,true\n"))
    assert ledger.import_outcomes(table).recorded == 1


def test_a_csv_row_that_is_not_utf8_is_rejected_and_the_others_kept(ledger, tmp_path: Path) -> None:
    path = tmp_path / "o.csv"
    path.write_bytes(
        "\ufeffunit,unit_id,success,feedback\nticket,t1,true,caf\u00e9\n".encode("utf-8")
        + "ticket,t2,true,caf\u00e9\n".encode("latin-1")
    )
    summary = ledger.import_outcomes(path)
    assert (summary.recorded, summary.rejected) == (1, 1)
    (rejection,) = summary.rejections
    assert rejection.record == 3 and rejection.field == "feedback"
    assert "is not UTF-8 text: byte 0xE9" in rejection.reason


def test_an_outcome_is_held_to_the_rules_of_an_event(ledger, tmp_path: Path) -> None:
    """A score of 1e999 was stored as inf, a judgement dated 2035 or 1999 was kept, a bad ts had
    no field, and structured feedback was stored as Python's repr."""
    path = tmp_path / "judged.jsonl"
    path.write_bytes(
        b'{"unit": "ticket", "unit_id": "a", "score": 1e999}\n'
        + _lines(
            {**GOOD, "unit_id": "b", "ts": "2035-01-01T00:00:00Z"},
            {**GOOD, "unit_id": "c", "ts": "1999-12-31T00:00:00Z"},
            {**GOOD, "unit_id": "d", "ts": "not a date"},
            {**GOOD, "unit_id": "e", "feedback": {"a": 1}},
        )
    )
    summary = ledger.import_outcomes(path)
    assert summary.recorded == 1
    reasons = {r.record: (r.field, r.reason) for r in summary.rejections}
    assert reasons[1][0] == "score" and "finite" in reasons[1][1]
    assert reasons[2][0] == "ts" and "in the future" in reasons[2][1]
    assert reasons[3][0] == "ts" and "before 2020-01-01" in reasons[3][1]
    assert reasons[4][0] == "ts"
    feedback = ledger.sql("SELECT feedback FROM outcomes")["feedback"].tolist()
    assert feedback == ['{"a":1}']
