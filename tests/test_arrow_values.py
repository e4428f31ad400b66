"""`arrow_values` builds what `pa.array` and `pa.scalar` would, and the ingest path keeps to it."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

from unitcost import arrow_values
from unitcost.api import Ledger
from unitcost.ledger.schema import INGEST_RUN_SCHEMA


@given(st.lists(st.none() | st.text(), max_size=30))
def test_strings_are_the_array_pyarrow_makes(values: list[str | None]) -> None:
    built = arrow_values.strings(values)
    built.validate(full=True)
    assert built.equals(pa.array(values, type=pa.string()))


@given(st.lists(st.tuples(st.integers(-(2**63), 2**63 - 1), st.booleans()), max_size=30))
def test_numbers_keep_values_and_nulls(pairs: list[tuple[int, bool]]) -> None:
    values = np.asarray([v for v, _ in pairs], dtype=np.int64)
    valid = np.asarray([ok for _, ok in pairs], dtype=bool)
    built = arrow_values.numbers(values, pa.int64(), valid)
    built.validate(full=True)
    assert built.to_pylist() == [v if ok else None for v, ok in pairs]


def test_numbers_refuse_values_of_another_width() -> None:
    with pytest.raises(ValueError, match="int32"):
        arrow_values.numbers(np.arange(3, dtype=np.int32), pa.int64())


@given(st.lists(st.booleans(), max_size=40), st.integers(0, 12), st.integers(0, 40))
def test_to_numpy_reads_sliced_and_chunked_columns(flags: list[bool], start: int, length: int) -> None:
    """Slices start inside a byte of a boolean bitmap and inside an integer buffer."""
    ints = pa.array(range(len(flags)), type=pa.int64()).slice(start, length)
    bools = pa.array(flags, type=pa.bool_()).slice(start, length)
    expected_ints, expected_bools = (
        list(range(len(flags)))[start : start + length],
        flags[start : start + length],
    )
    assert arrow_values.to_numpy(ints).tolist() == expected_ints
    assert arrow_values.to_numpy(bools).tolist() == expected_bools
    chunked = pa.chunked_array([ints, ints, pa.array([], type=pa.int64())], type=pa.int64())
    assert arrow_values.to_numpy(chunked).tolist() == expected_ints * 2
    assert arrow_values.to_numpy(pa.chunked_array([], type=pa.bool_())).tolist() == []


def test_to_numpy_refuses_nulls_it_would_have_to_invent() -> None:
    with pytest.raises(ValueError, match="nulls"):
        arrow_values.to_numpy(pa.array([1, None], type=pa.int64()))


@pytest.mark.parametrize(
    "moment",
    [
        datetime(2025, 9, 1, 12, 30, 15, 123456, tzinfo=UTC),
        datetime(2025, 3, 30, 2, 30, tzinfo=timezone(timedelta(hours=5, minutes=30))),
        # A zone that changed its offset since 1970: the epoch must be taken in UTC.
        datetime(2025, 7, 1, 9, 0, 0, 1, tzinfo=ZoneInfo("Europe/Paris")),
        datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
    ],
)
@pytest.mark.parametrize("unit", ["s", "ms", "us"])
def test_timestamp_scalars_are_the_instant_given(moment: datetime, unit: str) -> None:
    kind = pa.timestamp(unit, tz="UTC")
    assert arrow_values.timestamp_scalar(moment, kind).equals(pa.scalar(moment, type=kind))


def test_zero_fills_the_nulls_of_its_type() -> None:
    for kind in (pa.int64(), pa.int32(), pa.float64(), pa.bool_()):
        zero = arrow_values.zero(kind)
        assert zero.type == kind and zero.as_py() == 0


def test_one_row_is_the_table_from_pylist_makes() -> None:
    row = {
        "run_id": "r1",
        "at": datetime(2025, 9, 1, 12, tzinfo=UTC),
        "source": None,
        "accepted": 3,
        "duplicates": 0,
        "rejected": 2**40,
        "unpriced": 1,
    }
    assert arrow_values.one_row(row, INGEST_RUN_SCHEMA).equals(
        pa.Table.from_pylist([row], schema=INGEST_RUN_SCHEMA)
    )
    with pytest.raises(TypeError, match="accepted"):
        arrow_values.one_row({**row, "accepted": "3"}, INGEST_RUN_SCHEMA)


def test_ingesting_json_lines_never_imports_pandas(tmp_path: Path) -> None:
    """pyarrow imports pandas (a sixth of the command's start-up) on its first conversion of a
    Python or NumPy value: the ingest of a file, priced or not, cached, tiered, with usage the
    provider did not report, and again with every record a duplicate, must make none."""
    base = {
        "ts": "2025-09-01T10:00:00Z",
        "provider": "openai",
        "model": "gpt-4o",
        "input_tokens": 1200,
        "cache_read_tokens": 800,
        "output_tokens": 90,
        "tags": {"region": "eu"},
    }
    records = [
        {**base, "event_id": "plain"},
        {**base, "event_id": "batch", "service_tier": "batch"},
        {**base, "event_id": "cached", "cache_hit": True},
        {**base, "event_id": "unknown", "model": "no-such-model-anywhere"},
        {**base, "event_id": "unreported", "tags": {"usage_unknown": "stream cut"}},
        {**base, "event_id": "reasoning", "model": "o3-mini", "reasoning_tokens": 40},
    ]
    path = tmp_path / "events.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    ledger = tmp_path / "ledger.duckdb"
    script = (
        "import sys\n"
        "from unitcost.cli import main\n"
        f"sys.argv = ['unitcost', 'ingest', '--ledger', {str(ledger)!r}, {str(path)!r}]\n"
        "try:\n"
        "    main()\n"
        "except SystemExit as exc:\n"
        "    assert not exc.code, exc.code\n"
        "print('pandas' in sys.modules)\n"
    )
    for _ in range(2):  # a fresh ledger, then every record a duplicate
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
        assert done.stdout.strip().splitlines()[-1] == "False", done.stdout
    with Ledger(ledger, read_only=True) as stored:
        rows = stored.sql("SELECT event_id, cost IS NULL AS unpriced FROM events ORDER BY event_id")
    assert dict(zip(rows["event_id"], rows["unpriced"], strict=True)) == {
        "batch": False,
        "cached": False,
        "plain": False,
        "reasoning": False,
        "unknown": True,
        "unreported": True,
    }
