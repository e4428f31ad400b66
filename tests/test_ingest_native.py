"""The fast tier of the checks in C (`ingest/native.py`, `_quickparse.c`).

It must give what the SQL fast tier and the careful checks give, on every line it passes, and
pass the lines real files are made of (else it is fast for nothing). `test_fastpath.py` runs it
beside the SQL tiers on random and tricky lines; here are the whole pipeline both ways, and the
parts a C parser gets wrong: numbers, timestamps, tags, chunk edges, limits.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from unitcost.events import EVENT_SCHEMA
from unitcost.ingest import native
from unitcost.ingest.fastpath import SUSPECT_COLUMN
from unitcost.ingest.normalise import FUTURE_SKEW, _usage_checks

NOW = datetime(2026, 11, 23, 12, tzinfo=UTC)
BASE = {"event_id": "e1", "ts": "2025-09-10T10:00:00Z", "model": "gpt-4o"}


def _table(lines: list[str]) -> pa.Table:
    return pa.table(
        {
            "_row": pa.array(range(1, len(lines) + 1), type=pa.int64()),
            "line": pa.array(lines, type=pa.large_string()),
        }
    )


def _checked(lines: list[str], now: datetime = NOW) -> list[dict | None]:
    """Each line's event as the C tier gives it, or None where it leaves the line to the careful checks."""
    table = native.checked_lines(_table(lines), now=now)
    return [None if row[SUSPECT_COLUMN] else row for row in table.to_pylist()]


def _line(**fields: object) -> str:
    return json.dumps({**BASE, **fields}, ensure_ascii=False)


def test_the_c_parse_is_built() -> None:
    # setup.py builds it with the package; without it ingest is right but about a third slower.
    assert native.AVAILABLE, (
        "unitcost.ingest._quickparse is missing: reinstall with a C compiler (pip install -e .)"
    )


def test_the_rules_across_token_counts_are_the_ones_the_c_parse_encodes() -> None:
    # _quickparse.c's finish_line writes these out by hand: a new rule must be added there too.
    assert [condition for _, condition, _ in _usage_checks()] == [
        "cache_audio_read_tokens > cache_read_tokens",
        "cache_audio_read_tokens > input_audio_tokens",
        "cache_image_read_tokens > input_image_tokens",
        "cache_audio_read_tokens + cache_image_read_tokens > cache_read_tokens",
        "cache_read_tokens > input_tokens",
        "cache_read_tokens + cache_write_5m_tokens + cache_write_1h_tokens + input_audio_tokens "
        "- cache_audio_read_tokens + input_image_tokens - cache_image_read_tokens > input_tokens",
        "reasoning_tokens > output_tokens",
        "reasoning_tokens + output_audio_tokens + output_image_tokens > output_tokens",
    ]


def test_each_rule_across_token_counts_flags_a_line() -> None:
    breaking = [
        {"cache_read_tokens": 5, "cache_audio_read_tokens": 6, "input_audio_tokens": 9, "input_tokens": 20},
        {"cache_read_tokens": 9, "cache_audio_read_tokens": 6, "input_audio_tokens": 5, "input_tokens": 20},
        {"cache_read_tokens": 9, "cache_image_read_tokens": 6, "input_image_tokens": 5, "input_tokens": 20},
        {
            "cache_read_tokens": 9,
            "cache_audio_read_tokens": 5,
            "input_audio_tokens": 5,
            "cache_image_read_tokens": 5,
            "input_image_tokens": 5,
            "input_tokens": 20,
        },
        {"cache_read_tokens": 21, "input_tokens": 20},
        {"cache_read_tokens": 10, "cache_write_5m_tokens": 6, "cache_write_1h_tokens": 5, "input_tokens": 20},
        {"reasoning_tokens": 11, "output_tokens": 10},
        {"reasoning_tokens": 5, "output_audio_tokens": 3, "output_image_tokens": 3, "output_tokens": 10},
    ]
    within = [
        {"cache_read_tokens": 10, "cache_write_5m_tokens": 5, "cache_write_1h_tokens": 5, "input_tokens": 20},
        {"reasoning_tokens": 5, "output_audio_tokens": 3, "output_image_tokens": 2, "output_tokens": 10},
    ]
    results = _checked([_line(**fields) for fields in breaking + within])
    assert results[: len(breaking)] == [None] * len(breaking)
    assert all(row is not None for row in results[len(breaking) :])


def test_a_plain_line_gets_its_values_and_the_defaults() -> None:
    [row] = _checked(
        [
            '{"event_id":"e1","ts":"2025-09-10T10:00:00.5+02:00","model":"m","provider":"","feature":7,'
            '"tags":{"region":"eu","n":3,"on":true},"latency_ms":286.25,"billed_cost":0.0123,"cost":1.5}\r\n'
        ]
    )
    assert row is not None
    assert row["ts"] == datetime(2025, 9, 10, 8, 0, 0, 500000, tzinfo=UTC)
    assert row["provider"] is None  # empty text is no text
    assert row["feature"] == "7"
    assert row["tags"] == [("region", "eu"), ("n", "3"), ("on", "true")]
    assert row["latency_ms"] == 286.25
    assert row["billed_cost"] == Decimal("0.012300000000")
    assert (row["operation"], row["service_tier"], row["status"], row["currency"]) == (
        "chat",
        "standard",
        "ok",
        "USD",
    )
    assert (row["input_tokens"], row["requests"], row["attempt"], row["cache_hit"]) == (0, 1, 1, False)
    assert row["http_status"] is None and row["ttft_ms"] is None


TIMESTAMPS = [
    "2025-09-10T10:00:00Z",
    "2025-09-10T10:00:00",
    "2025-09-10 10:00:00",
    "2025-09-10T10:00:00.1Z",
    "2025-09-10T10:00:00.123456Z",
    "2025-09-10T10:00:00.123456-05:30",
    "2025-09-10T23:59:59+14:00",
    "2024-02-29T00:00:00Z",
    "2021-01-01T00:00:00-00:00",
    "2025-09-10 10:00:00.194444+00",  # as DuckDB's COPY ... (FORMAT JSON) writes it
    "2025-09-10T10:00:00+0200",
    "2025-09-10T10:00:00-0530",
    "2025-09-10T10:00:00.5-03",
]
ODD_TIMESTAMPS = [
    "2025-09-10T10:00:00.1234567Z",  # more digits than DuckDB keeps
    "2025-02-29T00:00:00Z",
    "2025-09-10T24:00:00Z",
    "2025-09-10T10:00:60Z",
    "2025-09-10T10:00:00+2",
    "2025-09-10T10:00:00+020",
    "2025-09-10T10:00:00+02:0",
    "2025-09-10T10:00:00+02:",
    "2025-09-10T10:00:00z",
    "2025-09-10T10:00Z",
    "2025-09-10",
    "2025-13-01T00:00:00Z",
    " 2025-09-10T10:00:00Z",
    "2025-09-10T10:00:00Z ",
    "2025-09-10T10:00:00.Z",
    "2025-09-10T10:00:00+15:00",
]


def test_timestamps_are_read_as_duckdb_reads_them_or_left_to_it() -> None:
    results = _checked([_line(ts=ts) for ts in TIMESTAMPS + ODD_TIMESTAMPS])
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    for ts, row in zip(TIMESTAMPS, results, strict=False):
        assert row is not None, ts
        expected = con.execute("SELECT CAST(? AS TIMESTAMPTZ)", [ts]).fetchone()
        assert expected is not None and row["ts"] == expected[0], ts
    assert results[len(TIMESTAMPS) :] == [None] * len(ODD_TIMESTAMPS)


def test_timestamps_at_the_limits() -> None:
    latest = NOW + FUTURE_SKEW
    spell = "%Y-%m-%dT%H:%M:%S.%fZ"
    lines = [
        _line(ts=latest.strftime(spell)),
        _line(ts=(latest + timedelta(microseconds=1)).strftime(spell)),
        _line(ts="2020-01-01T00:00:00Z"),
        _line(ts="2019-12-31T23:59:59.999999Z"),
    ]
    assert [row is not None for row in _checked(lines)] == [True, False, True, False]


@settings(max_examples=200, deadline=None)
@given(
    st.floats(min_value=0, max_value=86_400_000, allow_nan=False),
    st.sampled_from(["repr", "%.17g", "%.3f", "%e"]),
)
def test_a_duration_it_passes_is_the_double_its_text_spells(value: float, spelling: str) -> None:
    text = repr(value) if spelling == "repr" else spelling % value
    line = '{"event_id":"e","ts":"2025-09-10T10:00:00Z","model":"m","latency_ms":' + text + "}"
    [row] = _checked([line])
    if row is not None:
        assert row["latency_ms"] == float(text), text  # Python's float() is correctly rounded


def test_common_durations_pass() -> None:
    texts = ["286.0", "0", "0.5", "1234.567", "3522.3", "1e3", "86400000", "0.001"]
    lines = ['{"event_id":"e","ts":"2025-09-10T10:00:00Z","model":"m","latency_ms":' + t + "}" for t in texts]
    rows = _checked(lines)
    assert [row["latency_ms"] if row else None for row in rows] == [float(t) for t in texts]


@settings(max_examples=200, deadline=None)
@given(st.decimals(min_value=0, max_value=Decimal("999999.999999999999"), places=12, allow_nan=False))
def test_an_amount_it_passes_is_exact(amount: Decimal) -> None:
    text = format(amount.normalize(), "f")
    line = '{"event_id":"e","ts":"2025-09-10T10:00:00Z","model":"m","billed_cost":' + text + "}"
    [row] = _checked([line])
    if len(re.sub(r"^0\.0*|\.", "", text).lstrip("0")) <= 15:
        assert row is not None, text
    if row is not None:
        assert row["billed_cost"] == Decimal(text), text


def test_tags_pass_as_the_checks_read_them_or_are_left_to_them() -> None:
    lines = [
        _line(tags={}),
        _line(tags={"région": "é☃", "k": -12, "n": 0, "t": False}),
        _line(tags=None),
        '{"event_id":"e","ts":"2025-09-10T10:00:00Z","model":"m","tags":{ "a" : "1" ,"b":"2" }}',
        '{"event_id":"e","ts":"2025-09-10T10:00:00Z","model":"m","tags":{"a":"1","a":"2"}}',
        '{"event_id":"e","ts":"2025-09-10T10:00:00Z","model":"m","tags":{"a":"\\n"}}',
        '{"event_id":"e","ts":"2025-09-10T10:00:00Z","model":"m","tags":{"a":1.5}}',
        '{"event_id":"e","ts":"2025-09-10T10:00:00Z","model":"m","tags":{"a":null}}',
        '{"event_id":"e","ts":"2025-09-10T10:00:00Z","model":"m","tags":{"a":"1",}}',
    ]
    rows = _checked(lines)
    assert [row["tags"] if row else None for row in rows[:4]] == [
        [],
        [("région", "é☃"), ("k", "-12"), ("n", "0"), ("t", "false")],
        [],
        [("a", "1"), ("b", "2")],
    ]
    assert rows[4:] == [None] * 5


def test_malformed_lines_are_left_to_the_careful_checks() -> None:
    lines = [
        "",
        "{",
        "[1, 2]",
        '{"event_id":"e","ts":"2025-09-10T10:00:00Z","model":"m"',
        '{"event_id":"e","ts":"2025-09-10T10:00:00Z","model":"m"}}',
        '{"event_id":"e","ts":"2025-09-10T10:00:00Z","model":"m",}',
        '{"event_id":"e" "ts":"2025-09-10T10:00:00Z","model":"m"}',
        '{"event_id":"e","ts":"2025-09-10T10:00:00Z","model":"m","input_tokens":01}',
        '{"event_id":"e","ts":"2025-09-10T10:00:00Z","model":"m","input_tokens":1.}',
        '{"event_id":"e","ts":"2025-09-10T10:00:00Z","model":"m","cost":-}',
        '{"event_id":"e","ts":"2025-09-10T10:00:00Z","model":"m","cache_hit":tru}',
        '{"event_id":"e","ts":"2025-09-10T10:00:00Z","model":"m","feature":"a\tb"}',
        '{"event_id":"e","ts":"2025-09-10T10:00:00Z","model":"m"} x',
        '{"event_id":"e","ts":"2025-09-10T10:00:00Z"}',
        '{"event_id":"","ts":"2025-09-10T10:00:00Z","model":"m"}',
        '{"event_id":"e","ts":null,"model":"m"}',
    ]
    assert _checked(lines) == [None] * len(lines)


def test_lines_in_several_chunks_and_slices_give_the_same_answer() -> None:
    lines = [_line(event_id=f"e{i}", input_tokens=i, feature=f"f{i % 7}") for i in range(300)]
    lines[77] = "not json"
    whole = native.checked_lines(_table(lines), now=NOW)
    table = _table(lines)
    # The reader hands over chunks whose lines share one buffer, each array starting part way in.
    pieces = pa.Table.from_batches(table.slice(5).to_batches(max_chunksize=64))
    pieces = pa.concat_tables([table.slice(0, 5), pieces])
    assert pieces.column("line").num_chunks > 2
    assert native.checked_lines(pieces, now=NOW).equals(whole)
    assert native.checked_lines(_table([]), now=NOW).num_rows == 0


def test_the_pipeline_stores_the_same_ledger_with_the_c_parse_or_without(
    tmp_path: Path, book, monkeypatch: pytest.MonkeyPatch
) -> None:
    from unitcost.api import Ledger
    from unitcost.config import Config

    lines = []
    for i in range(400):
        fields: dict[str, object] = {
            "event_id": f"e{i}",
            "ts": f"2025-09-{1 + i % 28:02d}T{i % 24:02d}:00:00.{i:06d}Z",
            "provider": ["openai", "anthropic", "deepseek", ""][i % 4],
            "model": ["gpt-4o", "claude-sonnet-4-5", "deepseek-chat", "mystery-model"][i % 4],
            "input_tokens": 1000 + i,
            "cache_read_tokens": i,
            "output_tokens": 50 + i % 13,
            "reasoning_tokens": i % 7,
            "latency_ms": 100 + i / 8,
            "team": f"t{i % 3}",
            "tags": {"region": "eu", "n": i % 5},
        }
        if i % 9 == 0:
            fields["cache_write_1h_tokens"] = 100
        if i % 11 == 0:
            fields["service_tier"] = "batch"
        if i % 13 == 0:
            fields["billed_cost"] = 0.0125
        lines.append(json.dumps(fields))
    lines[10] = lines[10].replace('"team": "t1"', '"team": "\\u00e9quipe"')  # an escape: careful, accepted
    lines[20] = lines[20].replace('"input_tokens": 1020', '"input_tokens": -1')  # rejected
    lines[30] = lines[30].replace('"team"', '"teem"')  # rejected: unknown field
    lines[40] = lines[5]  # a duplicate
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(lines) + "\n")

    def ingest(name: str) -> tuple[list[dict], list[tuple[int, str, str]]]:
        with Ledger(tmp_path / name, book=book, config=Config()) as ledger:
            summary = ledger.ingest(path)
            rows = ledger.store.fetch(
                "SELECT * EXCLUDE (ingested_at) FROM events ORDER BY event_id"
            ).to_pylist()
        return rows, [(r.record, r.field, r.reason) for r in summary.rejections]

    with_c = ingest("c.duckdb")
    monkeypatch.setattr(native, "AVAILABLE", False)
    without_c = ingest("sql.duckdb")
    assert with_c == without_c
    rows, rejections = with_c
    assert len(rows) == 397 and [r[:2] for r in rejections] == [(21, "input_tokens"), (31, "teem")]
    assert next(row["team"] for row in rows if row["event_id"] == "e10") == "équipe"


def test_most_lines_of_a_real_file_take_the_c_path() -> None:
    lines = [
        _line(event_id=f"e{i}", input_tokens=i, output_tokens=1, team="a", tags={"k": "v"}) for i in range(50)
    ]
    table = native.checked_lines(_table(lines), now=NOW)
    assert pc.sum(table.column(SUSPECT_COLUMN).cast(pa.int64())).as_py() == 0
    assert table.schema.names[1:-1] == EVENT_SCHEMA.names


def test_an_ingestor_that_ingests_file_after_file_keeps_no_connection_per_file(tmp_path: Path, book) -> None:
    from unitcost.api import Ledger
    from unitcost.config import Config

    with Ledger(tmp_path / "l.duckdb", book=book, config=Config()) as ledger:
        for i in range(6):
            path = tmp_path / f"f{i}.jsonl"
            path.write_text(_line(event_id=f"e{i}") + "\n")
            assert ledger.ingest(path).accepted == 1
        # Each file is checked in threads of its own, each with its own engine connection:
        # closed as the thread ends, or a server ingesting all day would pile them up.
        assert len(ledger.ingestor()._cursors) == 0
