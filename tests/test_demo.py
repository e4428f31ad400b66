"""The demo month: seeded, realistic in shape, and ingested exactly like a user's file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import duckdb
import pyarrow.compute as pc
import pytest
from typer.testing import CliRunner

from unitcost.api import Ledger
from unitcost.cli import app
from unitcost.demo.generator import generate


@pytest.fixture(scope="module")
def month():  # type: ignore[no-untyped-def]
    return generate(seed=7, scale=0.05)


def test_same_seed_same_month(month) -> None:  # type: ignore[no-untyped-def]
    again = generate(seed=7, scale=0.05)
    assert again.events.equals(month.events)
    assert not generate(seed=8, scale=0.05).events.equals(month.events)


def test_the_month_has_what_the_report_must_show(month) -> None:  # type: ignore[no-untyped-def]
    events = month.events
    teams = set(events.column("team").to_pylist())
    providers = set(events.column("provider").to_pylist())
    assert len(teams) >= 3 and len(providers) >= 3
    assert pc.sum(events.column("cache_read_tokens")).as_py() > 0
    assert pc.sum(events.column("cache_write_1h_tokens")).as_py() > 0
    assert pc.sum(events.column("reasoning_tokens")).as_py() > 0
    assert "batch" in set(events.column("service_tier").to_pylist())
    assert pc.max(events.column("attempt")).as_py() == 2  # retries
    assert "tr-runaway-0917" in set(events.column("trace_id").to_pylist())
    statuses = set(events.column("status").to_pylist())
    assert {"ok", "error", "timeout"} <= statuses
    timeouts = events.filter(pc.equal(events.column("status"), "timeout"))
    assert timeouts.column("http_status").null_count == timeouts.num_rows  # no HTTP answer, not 0


def test_demo_ledger_and_report(tmp_path: Path) -> None:
    target = tmp_path / "demo.duckdb"
    result = CliRunner().invoke(
        app, ["demo", "--ledger", str(target), "--scale", "0.02"], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    out = result.output
    assert "4 rejected" in out  # the planted broken records, each named
    assert "line" in out and "must be a non-negative integer" in out
    assert "0 accepted" in out and "duplicates (idempotent" in out
    assert "unpriced:" in out and "acme-classifier-v2" in out
    with Ledger(target, read_only=True) as ledger:
        report = ledger.report_sections("2025-09-01", "2025-10-01", by="model")
        assert report.headline["unpriced_calls"] > 0
        deepseek = ledger.sql(
            "SELECT DISTINCT price_ref FROM events WHERE model = 'deepseek-chat' ORDER BY 1"
        )["price_ref"].tolist()
        # the mid-month price change: both DeepSeek periods of September are in the ledger
        assert len(deepseek) >= 2
    # running it again replaces its own ledger, never another file
    again = CliRunner().invoke(app, ["demo", "--ledger", str(target), "--scale", "0.02"])
    assert again.exit_code == 0, again.output
    other = tmp_path / "mine.duckdb"
    with Ledger(other):
        pass
    refused = CliRunner().invoke(app, ["demo", "--ledger", str(other), "--scale", "0.02"])
    assert refused.exit_code != 0
    assert "not a demo ledger" in refused.output


def test_a_demo_ledger_open_elsewhere_is_not_called_foreign(tmp_path: Path) -> None:
    target = tmp_path / "demo.duckdb"
    _marked_demo_ledger(target)
    hold = f"import duckdb, sys; c = duckdb.connect({str(target)!r}); print('open', flush=True); sys.stdin.read()"
    holder = subprocess.Popen(  # another process keeps it open, as `unitcost serve` would
        [sys.executable, "-c", hold], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "open"
        result = CliRunner().invoke(app, ["demo", "--ledger", str(target), "--scale", "0.01"])
    finally:
        holder.communicate("")
    out = " ".join(result.output.split())
    assert result.exit_code == 2, out
    assert "open in another process" in out and "not a demo ledger" not in out
    assert target.exists()


def _marked_demo_ledger(target: Path) -> None:
    con = duckdb.connect(str(target))
    con.execute("CREATE TABLE meta (key VARCHAR PRIMARY KEY, value VARCHAR)")
    con.execute("INSERT INTO meta VALUES ('demo', 'true')")  # as `unitcost demo` marks its ledger
    con.close()


@pytest.mark.parametrize(
    ("args", "expected"),
    [(["--seed", "-1"], "--seed"), (["--scale", "0"], "--scale"), (["--scale", "-2"], "--scale")],
)
def test_bad_options_are_refused_before_the_previous_demo_ledger_is_touched(
    tmp_path: Path, args: list[str], expected: str
) -> None:
    target = tmp_path / "demo.duckdb"
    _marked_demo_ledger(target)
    result = CliRunner().invoke(app, ["demo", "--ledger", str(target), *args])
    assert result.exit_code == 2, result.output
    assert expected in result.output
    assert target.exists()


def test_a_clickhouse_address_is_refused_by_name_and_leaves_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--ledger chdb://demo.chdb` was read as a DuckDB file `chdb:/demo.chdb`: a traceback, and
    an empty `chdb:` directory left behind."""
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["demo", "--ledger", "chdb://demo.chdb"])
    assert result.exit_code == 2, result.output
    assert "--ledger chdb://demo.chdb: the demo writes a DuckDB file" in " ".join(result.output.split())
    assert list(tmp_path.iterdir()) == []


def test_a_failed_generation_leaves_the_previous_demo_ledger(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from unitcost.demo import generator

    def broken(**_: object) -> None:
        raise MemoryError("no room for the month")

    monkeypatch.setattr(generator, "generate", broken)
    target = tmp_path / "demo.duckdb"
    _marked_demo_ledger(target)
    result = CliRunner().invoke(app, ["demo", "--ledger", str(target)])
    assert isinstance(result.exception, MemoryError)
    assert target.exists()
