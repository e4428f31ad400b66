"""A retry is a retry whether the source counts attempts or only names the call it retries
(`retry_of`): its cost is retry cost and waste, from the rollups as from the events."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import duckdb
import pytest

from unitcost.analytics.report import ReportQuery, run_report
from unitcost.analytics.window import Window
from unitcost.api import Ledger
from unitcost.config import Config
from unitcost.ledger import report_rollups

EVENTS = [
    # Rate-limited, then retried by a client that says which call it retries but not the attempt.
    {"event_id": "first", "ts": "2025-09-10T10:00:00Z", "provider": "openai", "model": "gpt-4o",
     "input_tokens": 1_000_000, "output_tokens": 0, "status": "error", "http_status": 429},
    {"event_id": "again", "ts": "2025-09-10T10:00:02Z", "provider": "openai", "model": "gpt-4o",
     "input_tokens": 1_000_000, "output_tokens": 100_000, "retry_of": "first"},
    {"event_id": "other", "ts": "2025-09-10T11:00:00Z", "provider": "openai", "model": "gpt-4o",
     "input_tokens": 1_000_000, "output_tokens": 0},
]  # fmt: skip
SEPTEMBER = Window.parse("2025-09-01", "2025-10-01")


def _headline(ledger: Ledger, *, rollups: bool) -> dict[str, object]:
    report = run_report(ledger.store, ReportQuery(SEPTEMBER, []), use_rollups=rollups)
    assert report.from_rollups is rollups
    return report.headline


def test_an_event_naming_the_call_it_retries_is_a_retry(tmp_path: Path) -> None:
    path = tmp_path / "l.duckdb"
    with Ledger(path, config=Config()) as ledger:
        summary = ledger.ingest_records(EVENTS)
        assert summary.accepted == 3
        ledger.store.refresh_rollups()
        costs = {
            row["event_id"]: row["cost"]
            for row in ledger.store.fetch("SELECT event_id, cost FROM events").to_pylist()
        }
        for rollups in (True, False):
            headline = _headline(ledger, rollups=rollups)
            assert headline["retries"] == 1
            assert headline["retry_cost"] == costs["again"] == Decimal("3.5")  # $2.50 in + $1.00 out
            # The failed first attempt and its retry are what a first-time success would have saved.
            assert headline["wasted_share"] == pytest.approx(
                float((costs["first"] + costs["again"]) / headline["spend"])
            )  # a share, a float: not money


def test_rollups_built_before_are_rebuilt_with_the_retries(tmp_path: Path) -> None:
    path = tmp_path / "l.duckdb"
    with Ledger(path, config=Config()) as ledger:
        ledger.ingest_records(EVENTS)
    # As an older unitcost left them: built by another version, which did not count this retry.
    con = duckdb.connect(str(path))
    con.execute("UPDATE meta SET value = '1' WHERE key = 'report_rollup_version'")
    con.execute("UPDATE report_hourly SET retry = false")
    con.close()
    with Ledger(path, config=Config(), read_only=True) as reader:
        report = run_report(reader.store, ReportQuery(SEPTEMBER, []))
        assert not report.from_rollups and report.headline["retries"] == 1  # read around them
    with Ledger(path, config=Config()):
        pass  # the next writer rebuilds them
    with Ledger(path, config=Config(), read_only=True) as reader:
        assert reader.store.fetch(
            "SELECT value FROM meta WHERE key = 'report_rollup_version'"
        ).to_pylist() == [{"value": report_rollups.ROLLUP_VERSION}]
        assert _headline(reader, rollups=True)["retries"] == 1


def test_the_python_report_says_what_top_left_out(tmp_path: Path) -> None:
    with Ledger(tmp_path / "l.duckdb", config=Config()) as ledger:
        ledger.ingest_records(EVENTS)
        frame = ledger.report("2025-09-01", "2025-10-01", by="status", top=1)
        assert len(frame) == 1
        others = frame.attrs["others"]
        assert others["groups"] == 1 and others["calls"] == 1  # the failed call
        assert (
            Decimal(str(frame["spend"].iloc[0])) + others["spend"]
            == ledger.report("2025-09-01", "2025-10-01")["spend"].iloc[0]
        )
        assert ledger.report("2025-09-01", "2025-10-01", by="status").attrs["others"] is None
