"""Files in: JSONL, CSV and Parquet, streamed, checked record by record, idempotent."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from unitcost.ingest.readers import IngestFileError

GOOD = {
    "event_id": "e1",
    "ts": "2025-09-10T10:00:00Z",
    "provider": "openai",
    "model": "gpt-4o",
    "input_tokens": 12000,
    "cache_read_tokens": 8000,
    "output_tokens": 900,
    "team": "search",
    "tags": {"region": "eu", "tier": "gold"},
}


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def event(**changes: object) -> str:
    record = {**GOOD, **changes}
    return json.dumps({k: v for k, v in record.items() if v is not ...})


def raw_event(**changes: object) -> str:
    """As `event`, with text other than ASCII written as itself, not as \\u escapes."""
    return json.dumps({**GOOD, **changes}, ensure_ascii=False)


BAD_RECORDS = [
    (event(event_id="n1", input_tokens=-5), "input_tokens", "must be a non-negative integer, got -5"),
    (event(event_id="n2", input_tokens=12.5), "input_tokens", "not an integer: 12.5"),
    (
        '{"event_id": "n3", "ts": "2025-09-10T10:00:00Z", "model": "gpt-4o", "input_tokens": NaN}',
        "input_tokens",
        "NaN is not a number",
    ),
    (event(event_id="n4", input_tokens="10"), "input_tokens", 'expected a number, got a string "10"'),
    (event(event_id="n5", input_tokens=10**12), "input_tokens", "absurd token count"),
    (
        event(event_id="n6", cache_read_tokens=20000),
        "cache_read_tokens",
        "cache_read_tokens (20000) exceeds input_tokens (12000)",
    ),
    (
        event(event_id="n7", reasoning_tokens=1000),
        "reasoning_tokens",
        "reasoning_tokens (1000) exceeds output_tokens",
    ),
    (event(event_id="n8", ts="2035-01-01T00:00:00Z"), "ts", "in the future: 2035-01-01T00:00:00Z"),
    (event(event_id="n9", ts="yesterday"), "ts", 'not a timestamp: "yesterday"'),
    (event(event_id="n10", ts="1970-01-02T00:00:00Z"), "ts", "before 2020-01-01"),
    (event(event_id="n11", status="weird"), "status", "must be one of ok, error, timeout, cancelled"),
    (
        event(event_id="n12", service_tier="cheap"),
        "service_tier",
        "must be one of standard, batch, flex, priority",
    ),
    (event(event_id="n13", tags=["eu"]), "tags", "expected an object of string tags"),
    (
        event(event_id="n14", input_token=10),
        "input_token",
        'unknown field (not in the event schema) (did you mean "input_tokens"?)',
    ),
    (event(event_id="n15", latency_ms=-3), "latency_ms", "must not be negative"),
    (event(event_id="n16", billed_cost="abc"), "billed_cost", 'not an amount in USD: "abc"'),
    (event(event_id="n17", cache_hit="maybe"), "cache_hit", "expected true or false"),
    (event(event_id="n18", model=...), "model", "missing (required)"),
    (event(event_id=...), "event_id", "missing (required)"),
    (event(event_id="n20", team={"a": 1}), "team", "expected a string, got an object"),
    ('{"event_id": "n21", "ts": "2025-09-10T10:00:00Z", "model": "gpt-4o",', "record", "malformed JSON"),
    ("[1, 2, 3]", "record", "expected a JSON object"),
    ("not json at all", "record", "malformed JSON"),
]


def test_each_bad_record_is_named_and_the_good_ones_are_kept(ledger, tmp_path: Path) -> None:
    lines = [event(event_id="good-1")]
    for line, _, _ in BAD_RECORDS:
        lines.append(line)
    lines.append(event(event_id="good-2"))
    summary = ledger.ingest(write_lines(tmp_path / "mixed.jsonl", lines))
    assert (summary.accepted, summary.rejected, summary.duplicates) == (2, len(BAD_RECORDS), 0)
    by_line = {r.record: r for r in summary.rejections}
    for offset, (_, field, reason) in enumerate(BAD_RECORDS):
        rejection = by_line[offset + 2]  # line 1 is good-1
        assert rejection.field == field, rejection
        assert reason in rejection.reason, rejection
    stored = ledger.sql("SELECT event_id FROM events ORDER BY event_id")["event_id"].tolist()
    assert stored == ["good-1", "good-2"]


def test_reingesting_changes_nothing(ledger, tmp_path: Path) -> None:
    path = write_lines(tmp_path / "events.jsonl", [event(event_id=f"e{i}") for i in range(50)])
    first = ledger.ingest(path)
    again = ledger.ingest(path)
    assert (first.accepted, first.duplicates) == (50, 0)
    assert (again.accepted, again.duplicates) == (0, 50)
    assert ledger.count() == 50


def test_duplicates_inside_one_file_keep_the_first(ledger, tmp_path: Path) -> None:
    path = write_lines(
        tmp_path / "dups.jsonl", [event(event_id="same", team="first"), event(event_id="same", team="second")]
    )
    summary = ledger.ingest(path)
    assert (summary.accepted, summary.duplicates) == (1, 1)
    assert ledger.sql("SELECT team FROM events")["team"].tolist() == ["first"]


@pytest.mark.parametrize("all_cores", [False, True])
def test_an_append_inserts_only_new_ids_and_counts_the_rest(ledger, all_cores: bool) -> None:
    """The store's own answer for one batch mixing ids already stored, an id repeated inside the
    batch, and new ids: only the first occurrence of each new id goes in, in batch order (in any
    order when the insert may use every core, the end of a file)."""
    ledger.ingest_records([{**json.loads(event(event_id=f"old{i}")), "team": "stored"} for i in range(3)])
    table = ledger.store.fetch("SELECT * FROM events ORDER BY event_id")
    rows = table.to_pylist()

    def row(event_id: str, team: str) -> dict[str, object]:
        return {**rows[0], "event_id": event_id, "team": team}

    batch = pa.Table.from_pylist(
        [
            row("new-b", "first"),
            row("old1", "again"),
            row("new-a", "first"),
            row("new-b", "second"),
            row("old0", "x"),
        ],
        schema=table.schema,
    )
    result = ledger.store.append(batch, all_cores=all_cores)
    assert (result.inserted, result.duplicates, result.in_batch_duplicates) == (2, 3, 1)
    got = ledger.sql("SELECT event_id, team FROM events ORDER BY rowid").to_dict("records")
    stored = [(r["event_id"], r["team"]) for r in got]
    expected = [
        ("old0", "stored"),
        ("old1", "stored"),
        ("old2", "stored"),
        ("new-b", "first"),
        ("new-a", "first"),
    ]
    assert (sorted(stored) if all_cores else stored) == (sorted(expected) if all_cores else expected)
    assert ledger.store.append(batch, all_cores=all_cores).inserted == 0
    assert ledger.sql("SELECT current_setting('preserve_insertion_order') AS p")["p"].tolist() == [True]


def test_a_checkpoint_leaves_the_row_groups_of_parallel_appends_as_written(ledger_path: Path) -> None:
    """A parallel append leaves each thread's last row group part full. DuckDB's checkpoint
    would rewrite such groups into full ones, on one thread (1M ingested events: 1.4 to 2 s
    added to the append after them, or to the close); the ledger is append-only, so it must
    leave them as written, and every event stays readable."""
    from unitcost.api import Ledger
    from unitcost.ledger.duckdb_store import DuckDBStore

    with Ledger(ledger_path) as seeded:
        seeded.ingest_records([json.loads(event(event_id="seed"))])
        one = seeded.store.fetch("SELECT * FROM events")

    def batch(prefix: str, n: int) -> pa.Table:
        rows = one.take([0] * n)
        ids = pa.array([f"{prefix}{i}" for i in range(n)], pa.string())
        return rows.set_column(rows.schema.get_field_index("event_id"), "event_id", ids)

    def row_groups(store: DuckDBStore) -> list[int]:
        groups = store.fetch(
            "SELECT row_group_id, max(count) AS n FROM pragma_storage_info('events') "
            "WHERE column_id = 0 GROUP BY 1 ORDER BY 1"
        )
        return [int(n) for n in groups.column("n").to_pylist()]

    store = DuckDBStore(ledger_path, threads=2)
    for prefix in ("a", "b"):
        store.append(batch(prefix, 300_000), all_cores=True)
    written = row_groups(store)
    full = 122_880
    assert any(n < full for n in written[:-1]), f"no part-full row group to keep: {written}"
    store.append(batch("c", 1_000))  # a small append goes through the WAL and its checkpoint
    store.checkpoint()
    store.close()

    reopened = DuckDBStore(ledger_path, read_only=True)
    try:
        assert row_groups(reopened)[: len(written)] == written
        counted = reopened.fetch("SELECT count(*) AS n, count(DISTINCT event_id) AS d FROM events")
        assert counted.to_pylist() == [{"n": 601_001, "d": 601_001}]
    finally:
        reopened.close()


def test_blank_lines_and_crlf_are_fine_and_line_numbers_stay_true(ledger, tmp_path: Path) -> None:
    path = tmp_path / "crlf.jsonl"
    path.write_bytes(
        (event(event_id="a") + "\r\n\r\n\n" + event(event_id="b", input_tokens=-1) + "\r\n").encode()
    )
    summary = ledger.ingest(path)
    assert summary.accepted == 1
    assert [(r.record, r.field) for r in summary.rejections] == [(4, "input_tokens")]


def test_values_are_typed_exactly(ledger, tmp_path: Path) -> None:
    path = write_lines(
        tmp_path / "typed.jsonl",
        [
            event(
                event_id="t1",
                ts="2025-09-10T12:00:00+02:00",
                billed_cost="0.012345678901",
                latency_ms=812.5,
                cache_hit=False,
                http_status=200,
                tags={"region": "eu", "n": 3},
                unit="ticket",
                unit_id=1234,
                input_tokens=12000.0,
            ),
            event(event_id="t2", ts=1757505600, service_tier="BATCH"),
        ],
    )
    summary = ledger.ingest(path)
    assert summary.rejected == 0, summary.rejections
    rows = ledger.sql("SELECT * FROM events ORDER BY event_id").to_dict("records")
    first, second = rows
    assert first["ts"].isoformat() == "2025-09-10T10:00:00+00:00"
    assert first["billed_cost"] == Decimal("0.012345678901")
    assert first["latency_ms"] == 812.5
    assert dict(first["tags"]) == {"region": "eu", "n": "3"}
    assert first["unit_id"] == "1234" and first["input_tokens"] == 12000
    assert first["cost"] == Decimal("0.029")
    assert second["ts"].isoformat() == "2025-09-10T12:00:00+00:00"
    assert second["service_tier"] == "batch"


def test_csv_with_tag_columns(ledger, tmp_path: Path) -> None:
    path = tmp_path / "events.csv"
    path.write_text(
        "event_id,ts,provider,model,input_tokens,output_tokens,team,tag.region,tag.env\n"
        "c1,2025-09-10T10:00:00Z,openai,gpt-4o,1000,100,search,eu,prod\n"
        "c2,2025-09-10T10:00:00Z,openai,gpt-4o,-1,100,search,eu,\n"
        "c3,2025-09-10T10:00:00Z,openai,gpt-4o,1000,oops,search,,\n"
        "c4,2025-09-10T10:00:00Z,openai,gpt-4o,1000\n"
        "c5,2025-09-10T10:00:00Z,anthropic,claude-sonnet-4-5,2000,10,ads,us,\n"
    )
    summary = ledger.ingest(path)
    assert summary.accepted == 2
    reasons = {(r.record, r.field) for r in summary.rejections}
    assert reasons == {(3, "input_tokens"), (4, "output_tokens"), (5, "record")}
    tags = ledger.sql("SELECT event_id, tags FROM events ORDER BY event_id").to_dict("records")
    assert dict(tags[0]["tags"]) == {"region": "eu", "env": "prod"}
    assert dict(tags[1]["tags"]) == {"region": "us"}


def test_csv_with_an_unknown_column_is_refused_whole(ledger, tmp_path: Path) -> None:
    path = tmp_path / "typo.csv"
    path.write_text("event_id,ts,model,input_token\nx,2025-09-10T10:00:00Z,gpt-4o,10\n")
    with pytest.raises(
        IngestFileError, match=r'unknown column.*"input_token" \(did you mean "input_tokens"\?\)'
    ):
        ledger.ingest(path)
    assert ledger.ingest(path, allow_unknown_fields=True).accepted == 1


def test_parquet_typed_columns(ledger, tmp_path: Path) -> None:
    table = pa.table(
        {
            "event_id": ["p1", "p2", "p3"],
            "ts": pa.array([1757498400_000_000] * 3, type=pa.timestamp("us", tz="UTC")),
            "model": ["gpt-4o", "gpt-4o", "gpt-4o"],
            "input_tokens": pa.array([1000, -4, 10], type=pa.int32()),
            "output_tokens": pa.array([10.0, 5.0, 2.5], type=pa.float64()),
            "tags": pa.array([[("k", "v")], [], []], type=pa.map_(pa.string(), pa.string())),
        }
    )
    path = tmp_path / "events.parquet"
    pq.write_table(table, path)
    summary = ledger.ingest(path)
    assert summary.accepted == 1
    assert {(r.record, r.field) for r in summary.rejections} == {(2, "input_tokens"), (3, "output_tokens")}
    assert ledger.sql("SELECT tags FROM events")["tags"].tolist()[0] == [("k", "v")]


def test_bytes_that_are_not_utf8_reject_their_record_and_keep_the_rest(ledger, tmp_path: Path) -> None:
    """A Latin-1 "café" in one line stopped DuckDB for good (the ingest died, nothing after it went in)."""
    path = tmp_path / "mixed-encoding.jsonl"
    path.write_bytes(
        b"\n".join(
            [
                raw_event(event_id="u1", team="équipe ☃").encode(),
                raw_event(event_id="u2", team="café").encode(),
                raw_event(event_id="u3", team="café").encode("latin-1"),
                raw_event(event_id="u4").encode(),
            ]
        )
        + b"\n"
    )
    summary = ledger.ingest(path)
    assert (summary.accepted, summary.rejected) == (3, 1)
    (rejection,) = summary.rejections
    column = path.read_bytes().split(b"\n")[2].index(b"\xe9") + 1
    assert (rejection.record, rejection.field) == (3, "record")
    assert f"is not UTF-8 text: byte 0xE9 at column {column}" in rejection.reason
    stored = ledger.sql("SELECT event_id, team FROM events ORDER BY event_id").to_dict("records")
    assert [(r["event_id"], r["team"]) for r in stored] == [
        ("u1", "équipe ☃"),
        ("u2", "café"),
        ("u4", "search"),
    ]


def test_a_latin1_file_is_rejected_line_by_line(ledger, tmp_path: Path) -> None:
    path = tmp_path / "latin1.jsonl"
    lines = [raw_event(event_id=f"l{i}", team="équipe") for i in range(50)]
    path.write_bytes("\n".join(lines).encode("latin-1"))
    summary = ledger.ingest(path)
    assert (summary.accepted, summary.rejected) == (0, 50)
    assert [r.record for r in summary.rejections] == list(range(1, 51))
    assert {r.field for r in summary.rejections} == {"record"}


def test_csv_and_parquet_cells_that_are_not_utf8_reject_their_row(ledger, tmp_path: Path) -> None:
    csv_path = tmp_path / "events.csv"
    csv_path.write_bytes(
        b"event_id,ts,model,feature\n"
        b"c1,2025-09-10T10:00:00Z,gpt-4o,ok\n"
        b"c2,2025-09-10T10:00:00Z,gpt-4o,caf\xe9\n"
        b"c3,2025-09-10T10:00:00Z,gpt-4o,caf\xc3\xa9\n"
    )
    summary = ledger.ingest(csv_path)
    assert (summary.accepted, [(r.record, r.field) for r in summary.rejections]) == (2, [(3, "feature")])
    assert "is not UTF-8 text" in summary.rejections[0].reason

    # Arrow only checks text when told to: a writer can put any bytes in a string column.
    feature = pa.array([b"ok", b"caf\xe9", b"ok"], pa.binary()).view(pa.string())
    tags = pa.array([[("k", b"v")], [], [("k", b"\xff")]], type=pa.map_(pa.string(), pa.binary()))
    bad_tag = pa.MapArray.from_arrays(tags.offsets, tags.keys, tags.items.view(pa.string()))
    table = pa.table(
        {
            "event_id": ["p1", "p2", "p3"],
            "ts": ["2025-09-10T10:00:00Z"] * 3,
            "model": ["gpt-4o"] * 3,
            "feature": feature,
            "tags": bad_tag,
        }
    )
    parquet_path = tmp_path / "events.parquet"
    pq.write_table(table, parquet_path)
    summary = ledger.ingest(parquet_path)
    assert summary.accepted == 1
    assert [(r.record, r.field) for r in summary.rejections] == [(2, "feature"), (3, "tags")]
    assert ledger.sql("SELECT count(*) AS n FROM events")["n"].tolist() == [3]


def test_a_csv_header_that_is_not_utf8_is_refused_whole(ledger, tmp_path: Path) -> None:
    path = tmp_path / "header.csv"
    path.write_bytes(b"event_id,ts,model,f\xe9ature\nx,2025-09-10T10:00:00Z,gpt-4o,ok\n")
    with pytest.raises(IngestFileError, match=r"header line is not UTF-8 text \(byte 0xE9 at column 20\)"):
        ledger.ingest(path)


def test_gzipped_files_are_read_as_they_stream(ledger, tmp_path: Path) -> None:
    """`.jsonl.gz` and `.csv.gz` were taken for their format and then read as raw bytes."""
    import gzip

    from unitcost.ingest.readers import read_jsonl

    lines = [event(event_id=f"g{i}") for i in range(2000)]
    lines[1500] = event(event_id="g1500", input_tokens=-1)
    jsonl = tmp_path / "events.jsonl.gz"
    jsonl.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    summary = ledger.ingest(jsonl)
    assert (summary.accepted, [(r.record, r.field) for r in summary.rejections]) == (
        1999,
        [(1501, "input_tokens")],
    )
    # Progress counts the bytes of the file as stored, so that the bar ends at 100 %.
    chunks = list(read_jsonl(jsonl, chunk_bytes=4096))
    assert len(chunks) > 10
    assert sum(chunk.progress for chunk in chunks) == jsonl.stat().st_size

    csv_path = tmp_path / "events.csv.gz"
    csv_path.write_bytes(
        gzip.compress(
            b"event_id,ts,model,input_tokens\n"
            b"z1,2025-09-10T10:00:00Z,gpt-4o,10\n"
            b"z2,2025-09-10T10:00:00Z,gpt-4o,oops\n"
            b"z3,2025-09-10T10:00:00Z,gpt-4o,30\n"
        )
    )
    summary = ledger.ingest(csv_path)
    assert (summary.accepted, [(r.record, r.field) for r in summary.rejections]) == (2, [(3, "input_tokens")])
    assert ledger.count() == 2001


def test_a_broken_gzip_file_is_named(ledger, tmp_path: Path) -> None:
    import gzip

    whole = gzip.compress(("\n".join(event(event_id=f"t{i}") for i in range(3000)) + "\n").encode())
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(IngestFileError, match=r"cut\.jsonl\.gz: cannot be decompressed"):
        ledger.ingest(path)
    rows = "".join(f"k{i},2025-09-10T10:00:00Z,gpt-4o,{i}\n" for i in range(20000))
    whole = gzip.compress(("event_id,ts,model,input_tokens\n" + rows).encode())
    csv_path = tmp_path / "cut.csv.gz"
    csv_path.write_bytes(whole[: len(whole) // 2])
    # (Click reads a bare EOFError as the user's Ctrl-D: the CLI said only "Aborted.")
    with pytest.raises(IngestFileError, match=r"cut\.csv\.gz: cannot be decompressed"):
        ledger.ingest(csv_path)
    parquet = tmp_path / "events.parquet.gz"
    parquet.write_bytes(gzip.compress(b"PAR1"))
    with pytest.raises(IngestFileError, match="gunzip it first"):
        ledger.ingest(parquet)


def test_a_call_whose_usage_the_provider_did_not_report_is_unpriced_not_free(ledger, tmp_path: Path) -> None:
    """The gateway records a reply without usage (or a stream cut before it) with no token
    counts and the tag usage_unknown: priced as zero tokens, it was stored at $0."""
    import pandas as pd

    unknown = {"usage_unknown": "the provider reported no usage"}
    lines = [event(event_id="k1", input_tokens=..., cache_read_tokens=..., output_tokens=..., tags=unknown)]
    lines.append(event(event_id="k2"))
    summary = ledger.ingest(write_lines(tmp_path / "gw.jsonl", lines))
    assert (summary.accepted, summary.unpriced) == (2, 1)
    rows = ledger.sql("SELECT event_id, cost, unpriced_reason FROM events ORDER BY event_id").to_dict(
        "records"
    )
    assert pd.isna(rows[0]["cost"])
    assert rows[0]["unpriced_reason"] == "usage unknown: the provider reported no usage"
    assert rows[1]["cost"] == Decimal("0.029") and rows[1]["unpriced_reason"] is None
    # Repricing keeps it unpriced: the tag is read again, not the zero token counts.
    ledger.reprice("2025-09-01", "2025-10-01")
    again = ledger.sql("SELECT cost, unpriced_reason FROM events WHERE event_id = 'k1'").to_dict("records")[0]
    assert again["unpriced_reason"] == "usage unknown: the provider reported no usage"


def test_exports_can_be_ingested_again(ledger, tmp_path: Path) -> None:
    """A ledger export has cost columns; they are recomputed, not rejected."""
    record = json.loads(event(event_id="x1"))
    record.update({"cost": "0.5", "price_ref": "whatever", "cost_input": "0.1"})
    summary = ledger.ingest(write_lines(tmp_path / "export.jsonl", [json.dumps(record)]))
    assert summary.accepted == 1
    assert ledger.sql("SELECT cost FROM events")["cost"].tolist() == [Decimal("0.029")]


def test_streaming_reads_in_chunks(ledger, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from unitcost.ingest import readers

    monkeypatch.setattr(readers, "CHUNK_BYTES", 2048)  # force many chunks, lines cut at chunk edges
    lines = [event(event_id=f"s{i}", input_tokens=10_000 + i) for i in range(300)]
    lines[150] = event(event_id="s150", input_tokens=-1)
    summary = ledger.ingest(write_lines(tmp_path / "many.jsonl", lines))
    assert (summary.accepted, summary.rejected) == (299, 1)
    assert summary.rejections[0].record == 151
    total = ledger.sql("SELECT sum(input_tokens) AS n FROM events")["n"].iloc[0]
    assert total == sum(10_000 + i for i in range(300)) - 10_150


def test_chunks_checked_ahead_of_the_append_keep_file_order(
    ledger, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file's chunks are checked in a thread while earlier ones are appended: rejections,
    duplicates (across chunks and appends) and progress still come in file order."""
    from unitcost.ingest import readers

    monkeypatch.setattr(readers, "CHUNK_BYTES", 2048)
    ledger.ingestor().append_rows = 40  # many appends, each racing the checks of later chunks
    lines = [event(event_id=f"o{i}", input_tokens=10_000 + i) for i in range(400)]
    bad = {37: -1, 180: 12.5, 399: "7"}
    for i, value in bad.items():
        lines[i] = event(event_id=f"o{i}", input_tokens=value)
    lines[250] = event(event_id="o3", input_tokens=10_003)  # a duplicate of line 4, chunks apart
    steps: list[int] = []
    path = write_lines(tmp_path / "ordered.jsonl", lines)
    summary = ledger.ingest(path, progress=steps.append)
    assert [r.record for r in summary.rejections] == [38, 181, 400]
    assert [r.field for r in summary.rejections] == ["input_tokens"] * 3
    assert (summary.accepted, summary.duplicates, summary.rejected) == (396, 1, 3)
    assert len(steps) > 10 and sum(steps) == path.stat().st_size
    again = ledger.ingest(path)
    assert (again.accepted, again.duplicates, again.rejected) == (0, 397, 3)


def _watch_checks(
    ledger, monkeypatch: pytest.MonkeyPatch, *, append_rows: int, fail_at: int | None = None
) -> list[int]:
    """Small chunks and appends; returns the rows of each chunk as the checks get it (the
    `fail_at`-th check raises instead)."""
    from unitcost.ingest import readers

    monkeypatch.setattr(readers, "CHUNK_BYTES", 2048)
    ingestor = ledger.ingestor()
    ingestor.append_rows = append_rows
    check = ingestor.check
    seen: list[int] = []

    def watched_check(chunk):  # type: ignore[no-untyped-def]
        seen.append(chunk.table.num_rows)
        if len(seen) == fail_at:
            raise RuntimeError("engine broke")
        return check(chunk)

    monkeypatch.setattr(ingestor, "check", watched_check)
    return seen


def test_a_failed_append_stops_the_checks_running_ahead(
    ledger, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    checked = _watch_checks(ledger, monkeypatch, append_rows=10)

    def failing_append(table: pa.Table, *, all_cores: bool = False) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(ledger.store, "append", failing_append)
    lines = [event(event_id=f"f{i}") for i in range(400)]
    with pytest.raises(OSError, match="disk full"):
        ledger.ingest(write_lines(tmp_path / "fails.jsonl", lines))
    stopped_at = len(checked)
    # A 2 KiB chunk holds 9 or 10 events, so an append goes every chunk or two: the failure is seen
    # at the next append at the latest, the fourth chunk; beyond those, one result may wait and each
    # of the two checking threads hold one more. Not the 40 chunks of the file.
    assert stopped_at <= 7
    monkeypatch.undo()
    assert ledger.count() == 0


def test_a_failed_check_is_raised_where_it_happened(
    ledger, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _watch_checks(ledger, monkeypatch, append_rows=1, fail_at=3)
    lines = [event(event_id=f"c{i}") for i in range(400)]
    with pytest.raises(RuntimeError, match="engine broke"):
        ledger.ingest(write_lines(tmp_path / "breaks.jsonl", lines))
    # The two chunks before the failure were appended: acknowledged work is not lost.
    monkeypatch.undo()
    assert 0 < ledger.count() < 400


def test_python_records_go_through_the_same_checks(ledger) -> None:
    from datetime import UTC, datetime

    from unitcost.events import UsageEvent

    good = UsageEvent(
        model="gpt-4o",
        provider="openai",
        ts=datetime(2025, 9, 10, tzinfo=UTC),
        input_tokens=1000,
        output_tokens=10,
        team="search",
        event_id="py-1",
    )
    ledger.record(good)
    with pytest.raises(ValueError, match="input_tokens: NaN is not a number"):
        ledger.record(
            {
                "event_id": "py-2",
                "ts": "2025-09-10T00:00:00Z",
                "model": "gpt-4o",
                "input_tokens": float("nan"),
            }
        )
    with pytest.raises(ValueError, match="reasoning_tokens"):
        ledger.record(
            UsageEvent(
                model="gpt-4o", ts=datetime(2025, 9, 10, tzinfo=UTC), output_tokens=1, reasoning_tokens=5
            )
        )
    assert ledger.count() == 1


def test_a_python_record_that_cannot_be_json_is_rejected_alone(ledger) -> None:
    """A lone surrogate (bytes decoded with surrogateescape) or a set stopped the whole batch."""
    base = {"ts": "2025-09-10T00:00:00Z", "model": "gpt-4o"}
    summary = ledger.ingest_records(
        [
            {**base, "event_id": "r1"},
            {**base, "event_id": "r2", "user": b"caf\xe9".decode("utf-8", "surrogateescape")},
            {**base, "event_id": "r3", "tags": {"k": {1, 2}}},
            {**base, "event_id": "r4"},
        ]
    )
    assert summary.accepted == 2
    assert [(r.record, r.field) for r in summary.rejections] == [(2, "user"), (3, "tags")]
    assert "lone surrogate" in summary.rejections[0].reason
    assert "set" in summary.rejections[1].reason
    assert ledger.sql("SELECT event_id FROM events ORDER BY 1")["event_id"].tolist() == ["r1", "r4"]


def test_rejects_file_gets_every_rejection(ledger, tmp_path: Path) -> None:
    path = write_lines(
        tmp_path / "bad.jsonl", [event(event_id=f"b{i}", input_tokens=-i - 1) for i in range(5)]
    )
    rejects = tmp_path / "rejects.jsonl"
    with open(rejects, "w") as sink:
        ledger.ingest(path, rejects=sink)
    rows = [json.loads(line) for line in rejects.read_text().splitlines()]
    assert [r["record"] for r in rows] == [1, 2, 3, 4, 5]
    assert all(r["field"] == "input_tokens" for r in rows)
