"""A finance team's audit of `unitcost report`: every figure of a small hand-written month,
computed by hand, and the report recomputed with plain SQL over the `events` table.

Prices (an overrides file, so every cost is a round number): `acme/audit-1` costs $1 per
million input tokens, $0.10 cached, $1.25 for 5-minute and $2 for 1-hour cache writes, $4
output (reasoning at the output price), $10 audio input; batch is half. From 2025-03-20 every
rate doubles (a reprice in the middle of the month). `acme/nobody` has no price.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from unitcost.analytics.report import ReportQuery, run_report
from unitcost.analytics.window import Window
from unitcost.api import Ledger
from unitcost.cli import app
from unitcost.config import Config
from unitcost.pricing.book import PriceBook

D = Decimal

PRICES = """
[[price]]
provider = "acme"
model = "audit-1"
from = 2025-01-01
source = "audit sheet"
input_mtok = "1"
cache_read_mtok = "0.1"
cache_write_mtok = "1.25"
cache_write_1h_mtok = "2"
output_mtok = "4"
input_audio_mtok = "10"
cache_audio_read_mtok = "1"
batch = { factor = "0.5" }

[[price]]
provider = "acme"
model = "audit-1"
from = 2025-03-20
source = "audit sheet v2"
input_mtok = "2"
cache_read_mtok = "0.2"
cache_write_mtok = "2.5"
cache_write_1h_mtok = "4"
output_mtok = "8"
input_audio_mtok = "20"
cache_audio_read_mtok = "2"
batch = { factor = "0.5" }
"""


def _call(n: int, ts: str, **kw: Any) -> dict[str, Any]:
    return {"event_id": f"a{n}", "ts": ts, "provider": "acme", "model": "audit-1", "team": "t1",
            "latency_ms": 100.0, **kw}  # fmt: skip


MARCH = [
    # $1.00 input + $0.40 output
    _call(1, "2025-03-03T00:00:00Z", input_tokens=1_000_000, output_tokens=100_000, unit="ticket",
          unit_id="T1", tags={"region": "eu"}),
    # 600k uncached $0.60 + 400k cached $0.04; caching saved 400k × $0.90/M = $0.36 (03:00 UTC)
    _call(2, "2025-03-03T05:00:00+02:00", input_tokens=1_000_000, cache_read_tokens=400_000, team="t2",
          unit="ticket", unit_id="T1", tags={"region": "us"}),
    # 700k uncached $0.70 + 200k 5m writes $0.25 + 100k 1h writes $0.20; saved -$0.15 (06:30 UTC, US DST day)
    _call(3, "2025-03-09T01:30:00-05:00", input_tokens=1_000_000, cache_write_5m_tokens=200_000,
          cache_write_1h_tokens=100_000, latency_ms=1000.0),
    # 40k output $0.16 + 60k reasoning $0.24 (07:30 UTC, after the change to EDT)
    _call(4, "2025-03-09T03:30:00-04:00", output_tokens=100_000, reasoning_tokens=60_000, latency_ms=2000.0,
          unit="ticket", unit_id="T2"),
    # on the week's first instant: 50k text $0.05 + 50k audio $0.50
    _call(5, "2025-03-10T00:00:00Z", input_tokens=100_000, input_audio_tokens=50_000, latency_ms=50.0),
    # batch, half price: $0.50 + $0.20; no latency
    _call(6, "2025-03-10T00:00:00.000001Z", input_tokens=1_000_000, output_tokens=100_000,
          service_tier="batch", latency_ms=None),
    # no price: unknown, never $0
    _call(7, "2025-03-15T12:00:00Z", model="nobody", input_tokens=5_000, output_tokens=500, team="t2",
          unit="ticket", unit_id="T2"),
    # a timeout the provider billed ($0.20), and its retry ($0.20 + $0.20)
    _call(8, "2025-03-16T10:00:00Z", input_tokens=200_000, status="timeout", latency_ms=30_000.0,
          unit="ticket", unit_id="T3", trace_id="tr1"),
    _call(9, "2025-03-16T10:00:31Z", input_tokens=200_000, output_tokens=50_000, attempt=2, retry_of="a8",
          unit="ticket", unit_id="T3", trace_id="tr1"),
    # an error with no tokens: $0
    _call(10, "2025-03-16T10:05:00Z", status="error", http_status=500, latency_ms=10.0),
    # served from the gateway's cache: $0, avoided $1.00
    _call(11, "2025-03-17T00:00:00Z", input_tokens=1_000_000, cache_hit=True, latency_ms=1.0),
    # after the price doubled: $2.00 + $0.80
    _call(12, "2025-03-20T00:00:00Z", input_tokens=1_000_000, output_tokens=100_000, team="t2",
          unit="document", unit_id="D1", tags={"region": "eu"}),
    # a failed retry nobody priced
    _call(16, "2025-03-21T00:00:00Z", model="nobody", input_tokens=1_000, status="error", attempt=2,
          team="t2"),
    # 01:30 UTC, the night Europe moved to summer time: 10k at $2/M = $0.02
    _call(13, "2025-03-30T03:30:00+02:00", input_tokens=10_000, latency_ms=500.0),
    # the month's last microsecond: 10k output $0.08
    _call(14, "2025-03-31T23:59:59.999999Z", output_tokens=10_000, latency_ms=700.0),
    # April's first instant: not March
    _call(15, "2025-04-01T00:00:00Z", input_tokens=1_000, latency_ms=800.0),
]  # fmt: skip

OUTCOMES = "unit,unit_id,success\nticket,T1,true\nticket,T2,false\nticket,T3,true\ndocument,D1,true\n"
SPEND = {"t1": D("4.90"), "t2": D("3.44")}  # a1 a3 a4 a5 a6 a8 a9 a10 a11 a13 a14 | a2 a12


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "prices.toml").write_text(PRICES)
    (tmp_path / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in MARCH))
    (tmp_path / "outcomes.csv").write_text(OUTCOMES)
    return tmp_path


@pytest.fixture
def march(folder: Path) -> Iterator[Ledger]:
    book = PriceBook.load(folder / "prices.toml")
    with Ledger(folder / "ledger.duckdb", book=book, config=Config()) as ledger:
        summary = ledger.ingest(folder / "events.jsonl")
        assert (summary.accepted, summary.unpriced) == (16, 2)
        assert ledger.import_outcomes(folder / "outcomes.csv").recorded == 4
        yield ledger


def cli(folder: Path, *args: str) -> str:
    """`unitcost report` on the ledger, which the test must have closed first."""
    done = CliRunner().invoke(
        app, ["report", "-l", str(folder / "ledger.duckdb"), *args], env={"COLUMNS": "250"}
    )
    assert done.exit_code == 0, done.output
    return done.output


def both_roads(ledger: Ledger, since: str, until: str, **kw: Any) -> list[Any]:
    """The report from the rollups and from the events: they must be the same."""
    query = ReportQuery(Window.parse(since, until), **kw)
    fast, slow = run_report(ledger.store, query), run_report(ledger.store, query, use_rollups=False)
    assert (fast.headline, fast.rows, fast.periods) == (slow.headline, slow.rows, slow.periods)
    return [fast, slow]


def test_the_month_end_close_adds_up_to_the_cent_by_hand(march: Ledger) -> None:
    """Spend, cache, reasoning, waste and latency of March, each computed by hand above."""
    report = both_roads(march, "2025-03", "2025-04", by=["team"])[0]
    h = report.headline
    assert (h["calls"], h["spend"], h["unpriced_calls"], h["unpriced_tokens"]) == (15, D("8.34"), 2, 6_500)
    assert h["cost_per_request"] == D("0.641538461538")  # 8.34 / 13 priced calls
    assert h["cache_savings"] == D("0.21") and h["avoided_cost"] == D("1.00")
    # reasoning once: $0.24 of $2.08 output cost (output excludes reasoning, so no double count)
    assert h["reasoning_share"] == pytest.approx(0.24 / 2.08)
    # a11, served from the gateway's response cache, is not the provider's prompt cache: its
    # 1M input tokens are left out
    assert h["cache_hit_ratio"] == pytest.approx(400_000 / 5_516_000)
    assert (h["failed_cost"], h["retry_cost"]) == (D("0.20"), D("0.40"))
    assert {r["team"]: r["spend"] for r in report.rows} == SPEND
    assert sum(r["share"] for r in report.rows) == pytest.approx(1.0)
    units = {u["unit"]: u for u in report.units}
    # tickets T1 ($2.04), T2 ($0.40 + an unpriced call), T3 ($0.60); T2 failed
    assert (units["ticket"]["units"], units["ticket"]["spend"], units["ticket"]["unpriced_calls"]) == (
        3, D("3.04"), 1,
    )  # fmt: skip
    assert units["ticket"]["cost_per_success"] == D("1.52")
    # 14 latencies; exact P95 is 2000 + 0.35 × 28000 = 11800, within the documented 0.99 %
    assert h["latency_p95_ms"] == pytest.approx(11_800, rel=0.0099)


def test_failed_and_retry_costs_say_when_some_of_those_calls_have_no_price(
    march: Ledger, folder: Path
) -> None:
    """`failed attempts $0.20` alone reads as the whole cost of failures, while a failed retry
    of March has no price: the headline must say it leaves that call out."""
    head = both_roads(march, "2025-03", "2025-04")[0].headline
    assert (head["failed_unpriced_calls"], head["retry_unpriced_calls"]) == (1, 1)
    frame = march.report("2025-03", "2025-04", by="team")
    t2 = frame[frame["team"] == "t2"].iloc[0]
    assert (t2["failed_unpriced_calls"], t2["retry_unpriced_calls"]) == (1, 1)
    march.close()
    text = cli(folder, "--since", "2025-03", "--until", "2025-04")
    assert "failed attempts $0.20 + 1 unpriced · retries $0.40 + 1 unpriced" in text
    csv_header = cli(folder, "--since", "2025-03", "--until", "2025-04", "-f", "csv").splitlines()[0]
    assert "failed_unpriced_calls" in csv_header.split(",")


def test_a_period_trend_compares_with_the_period_just_before_not_the_last_busy_one(march: Ledger) -> None:
    """t1 spent $1.40 on March 3 and nothing until $1.55 on March 9: the 9th is not +10.7 %
    "vs the previous day"; the day before it had $0, so there is no percentage."""
    for report in both_roads(march, "2025-03", "2025-04", by=["team"], period="day", where=["team=t1"]):
        rows = {r["period"].day: r for r in report.rows}
        assert rows[3]["previous_spend"] == D(0)  # March 2: no call
        assert rows[9]["previous_spend"] == D(0) and rows[9]["trend_pct"] is None
        assert rows[10]["previous_spend"] == D("1.55") and rows[10]["trend_pct"] == pytest.approx(
            (1.25 - 1.55) / 1.55 * 100
        )
        assert rows[30]["previous_spend"] == D(0)  # not the $0.00 of the 17th
    first = both_roads(march, "2025-03-03", "2025-03-05", by=["team"], period="day")[0].rows[0]
    assert first["previous_spend"] is None  # the day before the window was not read


def test_the_spend_per_period_lists_quiet_days_as_zero(march: Ledger, folder: Path) -> None:
    """Charting March's daily spend from JSON must show 31 days, the quiet ones at $0, not 13
    days whose gaps close up."""
    for report in both_roads(march, "2025-03", "2025-04"):
        assert len(report.periods) == 31
        quiet = report.periods[1]  # March 2
        assert (quiet["calls"], quiet["spend"], quiet["unpriced_calls"]) == (0, D(0), 0)
        assert sum(p["spend"] or 0 for p in report.periods) == D("8.34")
    march.close()
    weeks = json.loads(
        cli(folder, "--since", "2025-03", "--until", "2025-04", "--period", "week", "-f", "json")
    )
    # the buckets overlapping March, the partial ones at its edges included: Feb 24 … Mar 31
    assert [p["period"][:10] for p in weeks["periods"]] == [
        "2025-02-24", "2025-03-03", "2025-03-10", "2025-03-17", "2025-03-24", "2025-03-31",
    ]  # fmt: skip
    assert [p["calls"] for p in weeks["periods"]] == [0, 4, 6, 3, 1, 1]


def test_windows_in_any_time_zone_cut_at_the_same_instant(march: Ledger) -> None:
    """--since/--until with an offset are instants: 01:30 EST on the day of the DST change is
    06:30 UTC; the event exactly at --since is in, the one exactly at --until is out."""
    report = both_roads(march, "2025-03-09T01:30:00-05:00", "2025-03-10T00:00:00+00:00")[0]
    assert (report.headline["calls"], report.headline["spend"]) == (2, D("1.55"))  # a3 and a4
    report = both_roads(march, "2025-03-30T03:30:00+02:00", "2025-04-01T00:00:00Z")[0]
    assert (report.headline["calls"], report.headline["spend"]) == (2, D("0.10"))  # a13 and a14


def test_every_measure_equals_plain_sql_over_the_events(march: Ledger) -> None:
    """The report's sums, group by group, are those a finance analyst gets with SQL."""
    sql = (
        "SELECT team, count(*) AS calls, sum(cost) AS spend, sum(cost_reasoning) AS reasoning, "
        "count(*) FILTER (WHERE cost IS NULL) AS unpriced, sum(cache_savings) AS saved, "
        "sum(cost) FILTER (WHERE status <> 'ok') AS failed FROM events "
        "WHERE ts >= '2025-03-01' AND ts < '2025-04-01' GROUP BY team ORDER BY team"
    )
    expected = march.store.fetch(sql).to_pylist()
    for report in both_roads(march, "2025-03", "2025-04", by=["team"]):
        rows = {r["team"]: r for r in report.rows}
        for e in expected:
            row = rows[e["team"]]
            assert (row["calls"], row["spend"], row["cost_reasoning"], row["unpriced_calls"]) == (
                e["calls"], e["spend"], e["reasoning"], e["unpriced"],
            )  # fmt: skip
            assert row["cache_savings"] == e["saved"]
            assert row["failed_cost"] == e["failed"]  # t2: its one failed call is unpriced, unknown
