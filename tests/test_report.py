"""`unitcost report` numbers, computed by hand from gpt-4o's published price on 2025-09-10:
$2.50 per million input tokens, $1.25 cached, $10.00 output (reasoning at the output price)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from unitcost.analytics.latency import RELATIVE_ERROR
from unitcost.api import Ledger

D = Decimal


def _event(event_id: str, minute: int, **kw: object) -> dict[str, object]:
    base: dict[str, object] = {
        "event_id": event_id,
        "ts": f"2025-09-10T10:{minute:02d}:00Z",
        "provider": "openai",
        "model": "gpt-4o",
        "environment": "prod",
    }
    return {**base, **kw}


EVENTS = [
    # $1.50 uncached + $0.50 cached + $1.00 output = $3.00; caching saved 400k × $1.25/M = $0.50
    _event(
        "e1", 0, team="a", feature="f1", input_tokens=1_000_000, cache_read_tokens=400_000,
        output_tokens=100_000, latency_ms=100, unit="ticket", unit_id="T1", tags={"region": "eu"},
    ),
    # a timeout the provider still billed: 200k input = $0.50
    _event(
        "e2", 1, team="a", feature="f1", input_tokens=200_000, output_tokens=0, status="timeout",
        latency_ms=30_000, unit="ticket", unit_id="T2", tags={"region": "us"},
    ),
    # its retry: $0.50 + 50k output $0.50 = $1.00
    _event(
        "e3", 2, team="a", feature="f1", input_tokens=200_000, output_tokens=50_000, attempt=2,
        retry_of="e2", latency_ms=200, unit="ticket", unit_id="T2", tags={"region": "us"},
    ),
    # a self-hosted model nobody priced: cost unknown, never $0
    _event(
        "e4", 3, team="b", feature="f2", provider="self-hosted", model="acme-x", input_tokens=1_000,
        output_tokens=10, latency_ms=50, unit="document", unit_id="D1",
    ),
    # $0.25 input + $0.10 output + $0.10 reasoning = $0.45
    _event(
        "e5", 4, team="b", feature="f2", input_tokens=100_000, output_tokens=20_000,
        reasoning_tokens=10_000, latency_ms=400, unit="document", unit_id="D1",
    ),
]  # fmt: skip

WINDOW = ("2025-09-10", "2025-09-11")


@pytest.fixture
def filled(ledger: Ledger) -> Ledger:
    summary = ledger.ingest_records(EVENTS, source="test")
    assert (summary.accepted, summary.unpriced) == (5, 1)
    ledger.record_outcome(unit="ticket", unit_id="T1", success=True)
    ledger.record_outcome(unit="ticket", unit_id="T2", success=True)
    ledger.record_outcome(unit="document", unit_id="D1", success=False)
    return ledger


def test_headline_kpis(filled: Ledger) -> None:
    h = filled.report_sections(*WINDOW).headline
    assert h["calls"] == 5
    assert h["spend"] == D("4.95")
    assert h["cost_per_request"] == D("1.2375")  # over the 4 priced calls
    assert h["cost_per_1k_input"] == D(
        "0.002166666667"
    )  # 3.25 / 1500: input-side cost over 1.5M priced input tokens
    assert h["cost_per_1k_output"] == D("0.01")  # $1.70 over 170k output tokens
    assert h["cache_hit_ratio"] == pytest.approx(400_000 / 1_501_000)
    assert h["cache_savings"] == D("0.50")
    assert h["reasoning_share"] == pytest.approx(0.10 / 1.70)
    assert h["failed_cost"] == D("0.50")
    assert h["retry_cost"] == D("1.00")
    assert h["timeout_rate"] == pytest.approx(0.2)
    assert h["error_rate"] == 0
    # Percentiles come from log-bucket histograms: within RELATIVE_ERROR (< 1 %) of the exact ones.
    assert h["latency_p50_ms"] == pytest.approx(200, rel=RELATIVE_ERROR)
    assert h["latency_p95_ms"] == pytest.approx(400 + 0.8 * (30_000 - 400), rel=RELATIVE_ERROR)
    assert (h["unpriced_calls"], h["unpriced_tokens"]) == (1, 1_010)


def test_cost_per_business_unit_and_per_success(filled: Ledger) -> None:
    units = {u["unit"]: u for u in filled.report_sections(*WINDOW).units}
    ticket, document = units["ticket"], units["document"]
    assert (ticket["units"], ticket["spend"]) == (2, D("4.50"))
    assert ticket["cost_per_unit"] == D("2.25")
    # every attempt of a unit counts, the billed timeout included: ($3.00 + $1.50) / 2 successes
    assert ticket["cost_per_success"] == D("2.25")
    assert document["successes"] == 0
    assert document["cost_per_success"] is None  # no success: no cost per success, not $0
    assert filled.report_sections(*WINDOW).headline["cost_per_success"] == D("2.475")


def test_grouping_by_team_and_by_tag(filled: Ledger) -> None:
    by_team = {r["team"]: r for r in filled.report_sections(*WINDOW, by="team").rows}
    assert by_team["a"]["spend"] == D("4.50")
    assert by_team["a"]["share"] == pytest.approx(4.5 / 4.95)
    assert by_team["b"]["spend"] == D("0.45")
    assert by_team["b"]["unpriced_calls"] == 1
    by_region = {r["tag:region"]: r["spend"] for r in filled.report_sections(*WINDOW, by="tag:region").rows}
    assert by_region == {"eu": D("3.00"), "us": D("1.50"), None: D("0.45")}


def test_filter_and_period(filled: Ledger) -> None:
    report = filled.report_sections(*WINDOW, by="feature", period="hour", where=["team=a"])
    assert [(r["feature"], r["spend"]) for r in report.rows] == [("f1", D("4.50"))]
    assert [p["spend"] for p in report.periods] == [D("4.50")]


def test_unpriced_section_names_the_model_and_why(filled: Ledger) -> None:
    [row] = filled.report_sections(*WINDOW).unpriced
    assert (row["provider"], row["model"], row["calls"], row["tokens"]) == ("self-hosted", "acme-x", 1, 1_010)
    assert "acme-x" in row["reason"]


def test_trend_against_the_previous_window(filled: Ledger) -> None:
    filled.ingest_records(
        [_event("old", 0, input_tokens=400_000, output_tokens=0) | {"ts": "2025-09-09T10:00:00Z"}]
    )
    h = filled.report_sections(*WINDOW).headline
    assert h["previous_spend"] == D("1.00")
    assert h["trend_pct"] == pytest.approx(395.0)


def test_the_python_api_returns_an_arrow_backed_frame(filled: Ledger) -> None:
    frame = filled.report(*WINDOW, by="team")
    assert list(frame["team"]) == ["a", "b"]
    assert str(frame["spend"].dtype).startswith("decimal128")
    assert frame["spend"].sum() == D("4.95")


def test_a_window_without_calls_gives_a_frame_with_every_column(filled: Ledger) -> None:
    # A script summing spend over a quiet window must get zero rows, not a frame without columns.
    busy = filled.report(*WINDOW, by="team,model")
    quiet = filled.report("2024-01-01", "2024-01-02", by="team,model")
    assert len(quiet) == 0
    assert list(quiet.columns) == list(busy.columns)
    assert {"team", "model", "spend", "calls", "trend_pct"} <= set(quiet.columns)
    assert str(quiet["spend"].dtype).startswith("decimal128")
    assert quiet["spend"].sum() == 0
    # Without a breakdown, the one headline row of a quiet window has every column too.
    headline = filled.report("2024-01-01", "2024-01-02")
    assert list(headline.columns) == list(filled.report(*WINDOW).columns)
    assert headline["calls"].tolist() == [0]
    assert headline["spend"].isna().tolist() == [True]


def test_a_judgement_kept_per_trace_applies_to_the_unit_of_its_events(filled: Ledger) -> None:
    filled.ingest_records(
        [_event("e6", 5, input_tokens=100_000, output_tokens=0, unit="ticket", unit_id="T3", trace_id="tr-9")]
    )
    filled.record_outcome(trace_id="tr-9", success=True)
    ticket = {u["unit"]: u for u in filled.report_sections(*WINDOW).units}["ticket"]
    assert (ticket["units"], ticket["successes"], ticket["judged"]) == (3, 3, 3)
    assert ticket["cost_per_success"] == D("1.583333333333")  # ($4.50 + $0.25) / 3
