"""The two tiers of the checks agree: what the fast path accepts, the full checks accept too,
with the same values. Random records, valid and not, in every source shape."""

from __future__ import annotations

import contextlib
import json
import math
import re
from datetime import UTC, datetime

import duckdb
import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from unitcost.events import EVENT_SCHEMA, FIELDS
from unitcost.ingest import native
from unitcost.ingest.fastpath import SUSPECT_COLUMN, build_fast_sql
from unitcost.ingest.normalise import _int_limits, build_sql, split_result
from unitcost.ingest.quickjson import PARALLEL_LINES, PLAIN_COLUMN, int_shape, line_shape, with_plain_flag
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
            "x" * 1030,
            "é" * 600,
        ]
    ),
    # Around the limits the line shape encodes in digits, and numbers JSON spells oddly.
    st.sampled_from([0, 99, 100, 599, 600, 999, 1000, 99_999_999, 100_000_000, 999_999, 1_000_000]),
    st.sampled_from([10**17, 10**18 - 1, 10**18, 2**63, 1e3, 12.0, -0.0, 1e-7, 1e16, 1e300, 86_400_001.0]),
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
        st.dictionaries(
            st.text(max_size=4),
            st.one_of(
                st.text(max_size=4), st.integers(), st.floats(), st.booleans(), st.none(), st.just({"a": 1})
            ),
        ),
        scalar,
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
    if draw(st.integers(0, 5)) == 0:
        # unitcost's own export columns, and absent fields written as null: both plain.
        record[draw(st.sampled_from(["cost", "priced_model", "session_id", "http_status"]))] = draw(
            st.sampled_from([None, 0.5, "x"])
        )
    return record


def _json(record: dict) -> str:
    # Exporters write both `"k": v` and the compact `"k":v`, and some escape all non-ASCII text.
    separators = (",", ":") if len(record) % 2 else (", ", ": ")
    return json.dumps(record, allow_nan=True, separators=separators, ensure_ascii=len(record) % 3 == 0)


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
    con.register("_raw", with_plain_flag(table))
    quick_sql, quick_types, _ = json_source_sql("_raw", careful=False)
    # The quick parse gives up on a malformed line; the pipeline then takes the careful one.
    with contextlib.suppress(duckdb.InvalidInputException):
        variants.append(
            con.sql(
                build_fast_sql(f"({quick_sql})", quick_types, now=NOW, pre_error=True, unknown_column=unknown)
            ).to_arrow_table()
        )
    # The same fast tier in C: last, so that variants[1] stays the SQL quick parse.
    variants.append(native.checked_lines(table, now=NOW))
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


def _quick_flags(lines: list[str]) -> list[bool]:
    """Whether the quick parse sends each line to the careful one."""
    con = duckdb.connect()
    table = pa.table(
        {
            "_row": pa.array(range(1, len(lines) + 1), type=pa.int64()),
            "line": pa.array(lines, type=pa.large_string()),
        }
    )
    con.register("_raw", with_plain_flag(table))
    quick_sql, _, unknown = json_source_sql("_raw", careful=False)
    rows = con.sql(f"SELECT _pre_error, {unknown} FROM ({quick_sql}) ORDER BY _row").fetchall()
    return [pre_error is not None or unknown_key is not None for pre_error, unknown_key in rows]


BASE = '"event_id": "e1", "ts": "2025-09-10T10:00:00Z", "model": "gpt-4o"'


def test_quick_parse_passes_known_fields_written_as_null_and_flags_unknown_ones() -> None:
    flags = _quick_flags(
        [
            "{" + BASE + ', "session_id": null, "retry_of":null, "input_tokens": 12}',  # exporter style
            "{" + BASE + ', "sesion_id": null}',  # a typo, null-valued: still an unknown key
            "{" + BASE + ', "session_id": null, "x": 1}',  # a null beside an unknown key
            "{" + BASE + ', "tags": {"model": null}, "x": 1}',  # a null in the tags cannot hide "x"
        ]
    )
    assert flags == [False, True, True, True]


def test_quick_parse_passes_plain_lines() -> None:
    """Plain events, as exporters write them, take the quick path (else it is quick for nothing)."""
    plain = [
        "{" + BASE + ', "input_tokens": 617, "output_tokens": 48, "http_status": 200, "latency_ms": 286.0}',
        '{"event_id":"e2","ts":"2025-09-10T10:00:00.5+02:00","model":"m","tags":{"region":"eu","n":3}}\n',
        "{" + BASE + ', "service_tier": "batch", "status": "error", "cache_hit": true, "cost": 0.5}\r\n',
        "{" + BASE + ', "attempt": 2, "requests": 1, "web_searches": 0, "billed_cost": "0.0123", "unit": 7}',
        "\t{ " + BASE + ' ,\t"feature" :  "é ☃", "tags": {} }  ',
    ]
    assert _quick_flags(plain) == [False] * len(plain)


# Lines whose every value json_transform converts differently from the checks, or that the
# line shape cannot vouch for. Each must be flagged, or converted exactly as the checks do.
TRICKY = [
    '"input_tokens": "12"',
    '"input_tokens": 12.5',
    '"input_tokens": 12.0',
    '"input_tokens": 1e3',
    '"input_tokens": true',
    '"input_tokens": -0',
    '"input_tokens": -3',
    '"input_tokens": 100000000',
    '"input_tokens": 99999999',
    '"input_tokens": 99999999999999999999',
    '"input_tokens": NaN',
    '"input_tokens": {"a": 1}',
    '"input_tokens": [1]',
    '"http_status": 99',
    '"http_status": 600',
    '"http_status": 200.0',
    '"attempt": 0',
    '"attempt": 999',
    '"attempt": 1000',
    '"attempt": 1001',
    '"latency_ms": "12"',
    '"latency_ms": true',
    '"latency_ms": -1.5',
    '"latency_ms": 1e999',
    '"latency_ms": Infinity',
    '"latency_ms": nan',
    '"latency_ms": 86400001',
    '"latency_ms": 1.5e3',
    '"cache_hit": 1',
    '"cache_hit": "true"',
    '"cache_hit": nan',
    '"ts": 1757498400',
    '"ts": " 2025-09-10T10:00:00Z "',
    '"ts": "2025-09-10"',
    '"ts": "1757498400"',
    '"ts": {"a": 1}',
    '"feature": {"a": 1}',
    '"feature": [1, 2]',
    '"feature": 1e3',
    '"feature": 1e16',
    '"feature": 1.5e-7',
    '"feature": 0.1',
    '"feature": -0',
    '"feature": 99999999999999999999',
    '"feature": false',
    '"feature": ""',
    '"feature": "a\\"b"',
    '"feature": "\\u00e9"',
    '"feature": "' + "x" * 1025 + '"',
    '"feature": "' + "é" * 1000 + '"',
    '"service_tier": "BATCH"',
    '"service_tier": "gold"',
    '"service_tier": ""',
    '"currency": "usd"',
    '"currency": "EUR"',
    '"status": 1',
    '"billed_cost": "0.0123"',
    '"billed_cost": -1',
    '"billed_cost": 1e-20',
    '"billed_cost": 1e16',
    '"billed_cost": 0.00001',
    '"billed_cost": 0.1234567890125',
    '"billed_cost": true',
    '"billed_cost": "abc"',
    '"tags": {"a": null}',
    '"tags": {"a": 1.50, "b": true}',
    '"tags": {"a": 15, "b": true}',
    '"tags": {"a": 1e16}',
    '"tags": {"a": "1", "a": "2"}',
    '"tags": {"a": {"b": 1}}',
    '"tags": "region=eu"',
    '"tags": []',
    '"model": "m2"',
    '"model": null',
    '"event_id": ""',
    '"input_tokens": 5, "input_tokens": "x"',
    '"input_tokens": 5, "input_tokens": 7',
    '"feature": "a", "feature": "b"',
    '"tags": {"a": "1"}, "tags": {"b": "2"}',
    '"feature": "a", "feature": {"b": 1}',
    '"cost": {"a": 1}',
    '"cost": 0.5, "x": null',
    '"in\\u0070ut_tokens": "12"',
    '"input_tokens" : 5',
    '"input_tokens":\t5',
]


def test_tricky_values_are_flagged_or_converted_as_the_checks_do() -> None:
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    lines = ["{" + BASE + ", " + pair + "}" for pair in TRICKY]
    variants, good, rejections = _run(con, lines)
    assert good.num_rows + len(rejections) == len(lines)
    assert len(variants) == 3, "the quick parse copes with valid JSON"
    good_by_row = {row["_row"]: row for row in good.to_pylist()}
    passed: list[set[str]] = []
    for quick in variants[1:]:  # the quick parse in SQL, and in C
        for row in quick.filter(pa.compute.invert(quick.column(SUSPECT_COLUMN))).to_pylist():
            expected = good_by_row.get(row["_row"])
            assert expected is not None, TRICKY[row["_row"] - 1]
            for name in EVENT_SCHEMA.names:
                assert _same(row[name], expected[name]), (
                    TRICKY[row["_row"] - 1],
                    name,
                    row[name],
                    expected[name],
                )
        passed.append(
            {
                TRICKY[row - 1]
                for row in quick.filter(pa.compute.invert(quick.column(SUSPECT_COLUMN)))["_row"].to_pylist()
            }
        )
    # A few each vouches for, which the test above would not notice were they flagged.
    assert {
        '"input_tokens": 99999999',
        '"attempt": 999',
        '"feature": -0',
        '"tags": {"a": 15, "b": true}',
    } <= passed[0]
    assert {
        '"input_tokens": 99999999',
        '"attempt": 999',
        '"feature": false',
        '"feature": ""',
        '"latency_ms": 1.5e3',
        '"billed_cost": 0.00001',
        '"tags": {"a": 15, "b": true}',
        '"input_tokens" : 5',
    } <= passed[1]


def test_the_shape_flag_is_a_full_match_of_each_line_however_the_lines_are_shared_out() -> None:
    """Arrow's RE2 kernel, run on slices in threads, flags exactly the lines DuckDB's
    regexp_full_match of the same shape flags, each in its own place."""
    samples = ["{" + BASE + ", " + pair + "}" for pair in TRICKY]
    samples += [
        "{" + BASE + "}",
        "{" + BASE + "}\n",
        "{" + BASE + "}\r\n",
        "{" + BASE + "}\nx",
        "x{" + BASE + "}",
    ]
    # More lines than one thread takes, in several Arrow chunks, so that every slice edge falls
    # somewhere inside a chunk.
    lines = [samples[(i * 7) % len(samples)] for i in range(3 * PARALLEL_LINES + 11)]
    column = pa.chunked_array(
        [pa.array(lines[i : i + 5000], type=pa.large_string()) for i in range(0, len(lines), 5000)]
    )
    table = pa.table({"_row": pa.array(range(len(lines)), type=pa.int64()), "line": column})
    flagged = with_plain_flag(table).column(PLAIN_COLUMN).to_pylist()
    con = duckdb.connect()
    con.register("_lines", table)
    expected = [
        ok
        for (ok,) in con.execute(
            "SELECT regexp_full_match(line, ?) FROM _lines ORDER BY _row", [line_shape()]
        ).fetchall()
    ]
    assert flagged == expected
    assert 0 < sum(flagged) < len(flagged)
    assert not any(plain for line, plain in zip(lines, flagged, strict=True) if line.endswith("x"))


def test_int_shape_keeps_to_the_limits_it_claims() -> None:
    """Where the line shape says a field's digits are always within its limits, they are."""
    for f in FIELDS:
        if f.kind not in ("tokens", "count", "int"):
            continue
        low, high, _ = _int_limits(f)
        pattern, exact = int_shape(low, high)
        probes = {
            0,
            1,
            9,
            10,
            99,
            100,
            101,
            599,
            600,
            999,
            1000,
            1001,
            low - 1,
            low,
            low + 1,
            high - 1,
            high,
            high + 1,
        }
        probes |= {10**k + d for k in range(1, 20) for d in (-1, 0, 1)}
        for n in sorted(p for p in probes if p >= 0):
            if re.fullmatch(pattern, str(n)):
                assert n < 2**63
                if exact:
                    assert low <= n <= high, (f.name, n)
            elif low <= n <= high and n < 10 ** (len(str(high)) - 1):
                raise AssertionError(f"{f.name}: {n} is a plain value the shape refuses")
