"""`unitcost ingest` on the files a data engineer really has: spreadsheets' CSV, gzip on a pipe,
Parquet from other engines, a bad file among good ones."""

from __future__ import annotations

import gzip
import io
import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from unitcost.cli import app
from unitcost.ingest.readers import IngestFileError, read_csv

TS = "2025-09-10T10:00:00Z"


def event(event_id: str, **changes: object) -> dict[str, object]:
    return {
        "event_id": event_id,
        "ts": TS,
        "provider": "openai",
        "model": "gpt-4o",
        "input_tokens": 100,
        **changes,
    }


def jsonl(*events: dict[str, object]) -> str:
    return "".join(json.dumps(e) + "\n" for e in events)


def stored(ledger, column: str = "input_tokens") -> dict[str, object]:
    rows = ledger.store.fetch(f"SELECT event_id, {column} FROM events ORDER BY event_id").to_pylist()
    return {row["event_id"]: row[column] for row in rows}


# --------------------------------------------------------------------------- CSV lines

SPREADSHEET_CSV = (
    "\ufeffevent_id,ts,model,input_tokens,feature,tag.region\r\n"  # 1
    f'c1,{TS},gpt-4o,100,"reply, draft",eu\r\n'  # 2
    f'c2,{TS},gpt-4o,100,"two\r\nlines",us\r\n'  # 3-4
    "\r\n"  # 5
    f"c3,{TS},gpt-4o,-5,x,eu\r\n"  # 6
    "c4,too,few\r\n"  # 7
    ",,,,,\r\n"  # 8: a spreadsheet's empty row
    f"c5,{TS},gpt-4o,7,x,eu"  # 9, no newline at the end
)


def test_csv_rejections_name_the_line_the_record_is_on(ledger, tmp_path: Path) -> None:
    """Blank lines and newlines inside quoted values used to shift every line number after them:
    c3 was reported on line 4, not 6, and the row of commas was rejected as a record."""
    path = tmp_path / "export.csv"
    path.write_text(SPREADSHEET_CSV, encoding="utf-8", newline="")
    summary = ledger.ingest(path)
    assert [(r.record, r.field) for r in summary.rejections] == [(6, "input_tokens"), (7, "record")]
    assert "-5" in summary.rejections[0].reason
    assert (summary.accepted, summary.duplicates, summary.rejected) == (3, 0, 2)
    assert stored(ledger, "feature") == {"c1": "reply, draft", "c2": "two\r\nlines", "c5": "x"}


@pytest.mark.parametrize("block_bytes", [80, 96, 128, 200])
def test_csv_line_numbers_do_not_depend_on_where_blocks_end(tmp_path: Path, block_bytes: int) -> None:
    """A quoted newline on a block boundary used to fail the whole file ("CSV parser got out of
    sync"), and the line numbers changed with the block size."""
    path = tmp_path / "export.csv"
    path.write_text(SPREADSHEET_CSV, encoding="utf-8", newline="")
    rows: list[tuple[int, str]] = []
    rejected: list[int] = []
    for chunk in read_csv(path, block_bytes=block_bytes):
        rows += zip(
            chunk.table.column("_row").to_pylist(), chunk.table.column("event_id").to_pylist(), strict=True
        )
        rejected += [r.record for r in chunk.rejections]
    assert rows == [(2, "c1"), (3, "c2"), (6, "c3"), (9, "c5")]
    assert rejected == [7]


# --------------------------------------------------------------------------- Parquet types


def test_a_uint64_token_count_over_the_bigint_range_is_rejected_not_fatal(ledger, tmp_path: Path) -> None:
    """ClickHouse exports UInt64 columns; an underflowed subtraction there is 2**64 - 1. That one
    value used to fail the whole file with a DuckDB conversion traceback."""
    path = tmp_path / "clickhouse.parquet"
    table = pa.table(
        {
            "event_id": ["u1", "u2", "u3"],
            "ts": pa.array([TS] * 3),
            "model": ["gpt-4o"] * 3,
            "input_tokens": pa.array([100, 2**64 - 1, 300], pa.uint64()),
            "output_tokens": pa.array([1, 2, 3], pa.uint32()),
        }
    )
    pq.write_table(table, path)
    summary = ledger.ingest(path)
    assert (summary.accepted, summary.rejected) == (2, 1)
    rejection = summary.rejections[0]
    assert (rejection.record, rejection.field) == (2, "input_tokens")
    assert "absurd token count" in rejection.reason and "18446744073709551615" in rejection.reason
    assert stored(ledger) == {"u1": 100, "u3": 300}


def test_an_epoch_in_milliseconds_is_named_as_such(ledger, tmp_path: Path) -> None:
    path = tmp_path / "ms.jsonl"
    path.write_text(jsonl(event("m1", ts=1757498400000), event("m2", ts=1757498400)))
    summary = ledger.ingest(path)
    assert summary.accepted == 1
    assert (
        summary.rejections[0].reason
        == "not a Unix time in seconds: 1757498400000 (milliseconds? divide by 1,000)"
    )


# --------------------------------------------------------------------------- the command


def run(args: list[str], stdin: bytes | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(app, args, input=stdin)
    return result.exit_code, result.output


def test_a_bad_file_among_good_ones_is_named_and_the_others_go_in(tmp_path: Path) -> None:
    """A missing file or a directory used to stop the command before anything was read, and an
    unreadable file (not gzip, an unknown column) stopped it there: the files after it were
    never ingested, and no summary said what had been."""
    ledger = tmp_path / "ledger.duckdb"
    first = tmp_path / "a.jsonl"
    first.write_text(jsonl(event("a1"), event("a2")))
    not_gzip = tmp_path / "b.jsonl.gz"
    not_gzip.write_text(jsonl(event("b1")))
    typo = tmp_path / "c.csv"
    typo.write_text(f"event_id,ts,model,input_tokenz\nc1,{TS},gpt-4o,3\n")
    last = tmp_path / "d.jsonl"
    last.write_text(jsonl(event("d1"), event("a1")))
    files = [str(first), str(tmp_path / "missing.jsonl"), str(tmp_path), str(not_gzip), str(typo), str(last)]
    code, out = run(["ingest", *files, "--ledger", str(ledger), "--format", "json"])
    assert code == 2, out
    data = json.loads(out)
    assert (data["accepted"], data["duplicates"], data["rejected"]) == (3, 1, 0)
    errors = {Path(item["file"]).name: item["error"] for item in data["unreadable_files"]}
    assert set(errors) == {"missing.jsonl", tmp_path.name, "b.jsonl.gz", "c.csv"}
    assert "No such file" in errors["missing.jsonl"]
    assert "is a directory" in errors[tmp_path.name]
    assert "cannot be decompressed" in errors["b.jsonl.gz"]
    assert '"input_tokenz" (did you mean "input_tokens"?)' in errors["c.csv"]


def test_a_truncated_gzip_keeps_and_counts_what_was_read_before_the_break(ledger, tmp_path: Path) -> None:
    lines = jsonl(*(event(f"t{i}", feature="x" * 200) for i in range(2000))).encode()
    packed = gzip.compress(lines)
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(packed[: len(packed) * 3 // 4])
    ingestor = ledger.ingestor()
    from unitcost.ingest import readers

    original = readers.CHUNK_BYTES
    readers.CHUNK_BYTES = 64 << 10  # several chunks before the break, as in a large file
    try:
        with pytest.raises(IngestFileError, match="cannot be decompressed") as caught:
            ingestor.ingest_path(path)
    finally:
        readers.CHUNK_BYTES = original
    kept = caught.value.summary.accepted  # type: ignore[attr-defined]
    assert kept > 0
    assert len(stored(ledger)) == kept


def test_json_lines_from_standard_input_gzipped_or_not(tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.duckdb"
    body = jsonl(event("s1"), event("s2", input_tokens=-1), event("s1")).encode()
    code, out = run(["ingest", "-", "--ledger", str(ledger), "--format", "json"], stdin=gzip.compress(body))
    data = json.loads(out)
    assert code == 1, out
    assert (data["accepted"], data["duplicates"], data["rejected"]) == (1, 1, 1)
    assert data["rejections"][0]["record"] == 2
    code, out = run(["ingest", "-", "--ledger", str(ledger), "--format", "json"], stdin=body)
    assert json.loads(out)["duplicates"] == 2


def test_csv_from_standard_input(tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.duckdb"
    code, out = run(
        ["ingest", "-", "--input-format", "csv", "--ledger", str(ledger), "--format", "json"],
        stdin=SPREADSHEET_CSV.encode(),
    )
    data = json.loads(out)
    assert code == 1, out
    assert (data["accepted"], data["rejected"]) == (3, 2)
    assert [r["record"] for r in data["rejections"]] == [6, 7]


def test_parquet_from_standard_input_is_refused_with_the_reason(tmp_path: Path) -> None:
    sink = io.BytesIO()
    pq.write_table(pa.table({"event_id": ["p1"], "ts": [TS], "model": ["gpt-4o"]}), sink)
    code, out = run(
        ["ingest", "-", "--input-format", "parquet", "--ledger", str(tmp_path / "l.duckdb")],
        stdin=sink.getvalue(),
    )
    assert code == 2
    assert "Parquet cannot be read from a stream" in out


def test_rejections_of_several_files_say_which_file(tmp_path: Path) -> None:
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text(jsonl(event("a1", input_tokens=-1)))
    b.write_text(jsonl(event("b1"), event("b2", input_tokens=12.5)))
    code, out = run(["ingest", str(a), str(b), "--ledger", str(tmp_path / "l.duckdb"), "--format", "json"])
    assert code == 1
    rejections = json.loads(out)["rejections"]
    assert [(Path(r["file"]).name, r["record"], r["field"]) for r in rejections] == [
        ("a.jsonl", 1, "input_tokens"),
        ("b.jsonl", 2, "input_tokens"),
    ]


def test_stdin_through_a_real_pipe(tmp_path: Path) -> None:
    """`zcat day.jsonl.gz | unitcost ingest -`, as a shell runs it."""
    body = gzip.compress(jsonl(*(event(f"p{i}") for i in range(50))).encode())
    result = subprocess.run(
        [
            str(Path(sys.executable).with_name("unitcost")),
            "ingest",
            "-",
            "--ledger",
            str(tmp_path / "l.duckdb"),
            "-f",
            "json",
        ],
        input=body,
        capture_output=True,
        check=False,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr.decode()
    assert json.loads(result.stdout)["accepted"] == 50
