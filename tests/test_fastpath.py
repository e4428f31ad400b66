"""The two tiers of the checks agree: what the fast path accepts, the full checks accept too,
with the same values. Random records, valid and not, in every source shape."""

from __future__ import annotations

import contextlib
import json
import math
from datetime import UTC, datetime

import duckdb
import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from unitcost.events import EVENT_SCHEMA, FIELDS
from unitcost.ingest.fastpath import SUSPECT_COLUMN, build_fast_sql
from unitcost.ingest.normalise import build_sql, split_result
from unitcost.ingest.readers import json_source_sql

NOW = datetime(2026, 11, 23, 12, tzinfo=UTC)

scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-10, 10**13),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(
        [
            "12",
            "1e3",
            "12.0",
            "0x10",
            "1_000",
            " 7 ",
            "",
            "ok",
            "BATCH",
            "2025-09-10T10:00:00Z",
            "2025-09-10 10:00:00+02",
            "2040-01-01",
            'with "quotes" and \\ slash',
            "USD",
            "usd",
        ]
    ),
)
values_for = {
    "tokens": st.one_of(st.integers(0, 50_000), scalar),
    "count": st.one_of(st.integers(0, 5), scalar),
    "int": st.one_of(st.sampled_from([200, 429, 1, 2]), scalar),
    "float": st.one_of(st.floats(0, 10_000), scalar),
    "bool": st.one_of(st.booleans(), scalar),
    "ts": st.one_of(
        st.sampled_from(["2025-09-10T10:00:00Z", "2025-09-10T10:00:00.5+02:00", 1757498400]), scalar
    ),
    "money": st.one_of(st.sampled_from(["0.0123", 0.5, 3]), scalar),
    "map": st.one_of(
        st.dictionaries(st.text(max_size=4), st.one_of(st.text(max_size=4), st.integers())), scalar
    ),
    "str": st.one_of(st.text(max_size=8), scalar),
}


@st.composite
def records(draw: st.DrawFn) -> dict:
    record: dict = {
        "event_id": draw(st.text(min_size=1, max_size=6)),
        "ts": "2025-09-10T10:00:00Z",
        "model": "gpt-4o",
    }
    for f in draw(st.lists(st.sampled_from(FIELDS), max_size=8, unique_by=lambda f: f.name)):
        record[f.name] = draw(values_for[f.kind])
    if draw(st.integers(0, 5)) == 0:
        # A typo'd or foreign key, possibly beside look-alike text or with a null value (which
        # json_transform reports like an absent key): the quick parse must flag it.
        record[draw(st.sampled_from(["input_token", "x", "tags2"]))] = draw(
            st.sampled_from([1, '":', {"a": 1}, None])
        )
    if draw(st.integers(0, 5)) == 0:
        # A null inside the tags beside the null-valued keys the quick parse counts by name.
        record["tags"] = {draw(st.sampled_from(["model", "k"])): None}
    if draw(st.integers(0, 5)) == 0:
        record["feature"] = draw(st.sampled_from(['a":b', 'say "hi":', "é"]))
    if draw(st.booleans()):
        record["input_tokens"] = draw(st.integers(0, 40_000))
        record["cache_read_tokens"] = draw(st.integers(0, 50_000))
    return record


def _json(record: dict) -> str:
    # Exporters write both `"k": v` and the compact `"k":v`.
    separators = (",", ":") if len(record) % 2 else (", ", ": ")
    return json.dumps(record, allow_nan=True, separators=separators)


def _run(con: duckdb.DuckDBPyConnection, lines: list[str]) -> tuple[list[pa.Table], pa.Table, list]:
    """The fast path's answers (careful parse, and quick parse when it copes) and the checks' answer."""
    table = pa.table(
        {
            "_row": pa.array(range(1, len(lines) + 1), type=pa.int64()),
            "line": pa.array(lines, type=pa.large_string()),
        }
    )
    con.register("_raw", table)
    sql, types, unknown = json_source_sql("_raw")
    fast = con.sql(
        build_fast_sql(f"({sql})", types, now=NOW, pre_error=True, unknown_column=unknown)
    ).to_arrow_table()
    variants = [fast]
    quick_sql, _, _ = json_source_sql("_raw", careful=False)
    # The quick parse gives up on a malformed line; the pipeline then takes the careful one.
    with contextlib.suppress(duckdb.Error):
        variants.append(
            con.sql(
                build_fast_sql(f"({quick_sql})", types, now=NOW, pre_error=True, unknown_column=unknown)
            ).to_arrow_table()
        )
    detailed = con.sql(
        build_sql(f"({sql})", types, now=NOW, pre_error=True, unknown_column=unknown, raw_column="_line")
    ).to_arrow_table()
    good, rejections = split_result(detailed)
    return variants, good, rejections


def _same(a: object, b: object) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or a == b
    return a == b


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(records(), min_size=1, max_size=60))
def test_fast_path_never_accepts_what_the_checks_reject(batch: list[dict]) -> None:
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    variants, good, rejections = _run(con, [_json(r) for r in batch])
    assert good.num_rows + len(rejections) == len(batch)
    good_by_row = {row["_row"]: row for row in good.to_pylist()}
    for fast in variants:
        accepted_fast = fast.filter(pa.compute.invert(fast.column(SUSPECT_COLUMN)))
        for row in accepted_fast.to_pylist():
            assert row["_row"] in good_by_row, (row, batch[row["_row"] - 1])
            expected = good_by_row[row["_row"]]
            for name in EVENT_SCHEMA.names:
                assert _same(row[name], expected[name]), (
                    name,
                    row[name],
                    expected[name],
                    batch[row["_row"] - 1],
                )


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(st.text(max_size=40), records().map(_json)), min_size=1, max_size=40))
def test_any_line_gets_an_answer(lines: list[str]) -> None:
    """Arbitrary text never crashes the checks: every line is either an event or a named rejection."""
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    lines = [line.replace("\n", " ").replace("\r", " ") or "{}" for line in lines]
    table = pa.table(
        {
            "_row": pa.array(range(1, len(lines) + 1), type=pa.int64()),
            "line": pa.array(lines, type=pa.large_string()),
        }
    )
    con.register("_raw", table)
    sql, types, unknown = json_source_sql("_raw")
    detailed = con.sql(
        build_sql(f"({sql})", types, now=NOW, pre_error=True, unknown_column=unknown, raw_column="_line")
    ).to_arrow_table()
    good, rejections = split_result(detailed)
    # Blank means JSON whitespace only (RFC 8259: space, tab, LF, CR); a line of U+00A0 is malformed JSON.
    non_blank = [line for line in lines if line.strip(" \t\n\r")]
    assert good.num_rows + len(rejections) == len(non_blank)
    assert all(r.field and r.reason for r in rejections)


def _quick_flags(lines: list[str]) -> list[str | None]:
    con = duckdb.connect()
    table = pa.table(
        {
            "_row": pa.array(range(1, len(lines) + 1), type=pa.int64()),
            "line": pa.array(lines, type=pa.large_string()),
        }
    )
    con.register("_raw", table)
    quick_sql, _, unknown = json_source_sql("_raw", careful=False)
    return [row[0] for row in con.sql(f"SELECT {unknown} FROM ({quick_sql}) ORDER BY _row").fetchall()]


def test_quick_parse_passes_known_fields_written_as_null_and_flags_unknown_ones() -> None:
    base = '"event_id": "e1", "ts": "2025-09-10T10:00:00Z", "model": "gpt-4o"'
    flags = _quick_flags(
        [
            "{" + base + ', "session_id": null, "retry_of":null, "input_tokens": 12}',  # exporter style
            "{" + base + ', "sesion_id": null}',  # a typo, null-valued: still an unknown key
            "{" + base + ', "session_id": null, "x": 1}',  # a null beside an unknown key
            "{" + base + ', "tags": {"model": null}, "x": 1}',  # a null in the tags cannot hide "x"
        ]
    )
    assert flags[0] is None
    assert flags[1:] == ["a field to check"] * 3
