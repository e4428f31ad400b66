"""`unitcost report` numbers, computed by hand from gpt-4o's published price on 2025-09-10:
$2.50 per million input tokens, $1.25 cached, $10.00 output (reasoning at the output price)."""

from __future__ import annotations

import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from unitcost.analytics.latency import RELATIVE_ERROR
from unitcost.analytics.window import Window
from unitcost.api import Ledger
from unitcost.config import Config
from unitcost.pricing.book import PriceBook

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
    assert [p["spend"] for p in report.periods if p["calls"]] == [D("4.50")]


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


# ------------------------------------------------------------------ judgements without units

GPT4O_1K_INPUT = D("0.0025")  # 1,000 input tokens of gpt-4o


def _per(thousands: int, successes: int) -> Decimal:
    """The cost of `thousands` × 1,000 gpt-4o input tokens over `successes`, as reported."""
    return (thousands * GPT4O_1K_INPUT / successes).quantize(D("1e-12"))


def _plain_call(event_id: str, minute: int, thousands: int, **kw: object) -> dict[str, object]:
    return _event(event_id, minute, input_tokens=thousands * 1_000, output_tokens=0, **kw)


def test_judgements_per_trace_count_when_the_events_have_no_unit(ledger: Ledger) -> None:
    ledger.ingest_records(
        [
            _plain_call("t1", 0, 1, trace_id="TR1"),
            _plain_call("t2", 1, 2, trace_id="TR1"),
            _plain_call("t3", 2, 4, trace_id="TR2"),
            _plain_call("t4", 3, 8, trace_id="TR3"),  # never judged: not in cost per success
        ]
    )
    ledger.record_outcome(trace_id="TR1", success=True)
    ledger.record_outcome(trace_id="TR2", success=False)
    h = ledger.report_sections(*WINDOW).headline
    assert (h["units"], h["judged"], h["successes"]) == (0, 2, 1)
    # every event of both judged traces, over the one success
    assert h["cost_per_success"] == 7 * GPT4O_1K_INPUT
    assert h["success_rate"] == 0.5


def test_a_judgement_per_event_covers_that_event(ledger: Ledger) -> None:
    ledger.ingest_records(
        [
            _plain_call("a1", 0, 1, status="error"),
            _plain_call("a2", 1, 2, attempt=2, retry_of="a1"),
            _plain_call("a3", 2, 4),
        ]
    )
    ledger.record_outcome(event_id="a2", success=True)
    h = ledger.report_sections(*WINDOW).headline
    assert (h["judged"], h["successes"]) == (1, 1)
    assert h["cost_per_success"] == 2 * GPT4O_1K_INPUT


def _mixed(ledger: Ledger) -> Ledger:
    """Judgements of every kind, a trace spanning a unit and unit-less events of two teams."""
    ledger.ingest_records(
        [
            _plain_call("m1", 0, 1, trace_id="TR1", team="a"),
            _plain_call("m2", 1, 2, trace_id="TR2", team="b"),
            _plain_call("m3", 2, 4, trace_id="TR1", team="b", unit="ticket", unit_id="K1"),
            _plain_call("m4", 3, 8, trace_id="TR1", team="b", unit="ticket", unit_id="K2"),
            _plain_call("m5", 4, 16, team="a"),
            _plain_call("m6", 5, 32, team="a", unit="ticket", unit_id="K3"),
        ]
    )
    ledger.record_outcome(trace_id="TR1", success=True)
    ledger.record_outcome(trace_id="TR2", success=False)
    ledger.record_outcome(event_id="m5", success=True)
    # K2's own judgement wins over its trace's: m4 counts toward K2 alone.
    ledger.record_outcome(unit="ticket", unit_id="K2", success=True)
    return ledger


def test_each_event_counts_toward_one_judgement_and_a_judgement_once(ledger: Ledger) -> None:
    report = _mixed(ledger).report_sections(*WINDOW, by="team")
    h = report.headline
    # TR1 (m1, m3) and K2 (m4) and m5 succeeded, TR2 (m2) failed; K3 is not judged. TR1 spans
    # two teams and two unit kinds (none and ticket), yet is one judgement in the headline.
    assert (h["units"], h["judged"], h["successes"]) == (3, 4, 3)
    assert h["cost_per_success"] == _per(1 + 4 + 8 + 16 + 2, 3)
    rows = {r["team"]: r for r in report.rows}
    assert (rows["a"]["judged"], rows["a"]["successes"]) == (2, 2)  # TR1 (m1), m5
    assert rows["a"]["cost_per_success"] == _per(1 + 16, 2)
    assert (rows["b"]["judged"], rows["b"]["successes"]) == (3, 2)  # TR2, TR1 (m3), K2
    assert rows["b"]["cost_per_success"] == _per(2 + 4 + 8, 2)
    [ticket] = report.units
    assert (ticket["units"], ticket["judged"], ticket["successes"]) == (3, 2, 2)  # TR1 (m3), K2
    assert ticket["cost_per_success"] == _per(4 + 8, 2)


def test_judgements_per_trace_give_the_same_numbers_on_clickhouse(tmp_path: Path, book: PriceBook) -> None:
    pytest.importorskip("chdb", reason="the chdb package runs ClickHouse in-process")
    args: dict[str, Any] = {"since": WINDOW[0], "until": WINDOW[1], "by": "team", "period": "hour"}
    with (
        Ledger(tmp_path / "l.duckdb", book=book, config=Config()) as duck,
        Ledger(f"chdb://?database=t_{uuid.uuid4().hex}", book=book, config=Config()) as house,
    ):
        a, b = _mixed(duck).report_sections(**args), _mixed(house).report_sections(**args)
    assert (a.headline, a.rows, a.units) == (b.headline, b.rows, b.units)
    assert a.headline["judged"] == 4


# ------------------------------------------------------------------ waste


def test_a_failed_retry_is_wasted_once(ledger: Ledger) -> None:
    ledger.ingest_records([_plain_call("w1", 0, 1, status="timeout", attempt=2), _plain_call("w2", 1, 3)])
    h = ledger.report_sections(*WINDOW).headline
    assert (h["failed_cost"], h["retry_cost"]) == (GPT4O_1K_INPUT, GPT4O_1K_INPUT)
    assert h["wasted_share"] == pytest.approx(0.25)
    assert ledger.report(*WINDOW)["wasted_share"].tolist() == [pytest.approx(0.25)]


def test_the_headline_waste_of_the_fixture(filled: Ledger) -> None:
    # e2 failed ($0.50) and e3 retried it ($1.00): two different calls, both wasted
    assert filled.report_sections(*WINDOW).headline["wasted_share"] == pytest.approx(1.5 / 4.95)


# ------------------------------------------------------------------ filters


def test_a_filter_splits_at_the_first_operator(ledger: Ledger) -> None:
    ledger.ingest_records(
        [
            _plain_call("f1", 0, 1, team="ops", tags={"note": "x!=y"}),
            _plain_call("f2", 1, 2, team="a,b", tags={"note=x": "z"}),
            _plain_call("f3", 2, 4, team="a"),
        ]
    )

    def spend(*where: str) -> Decimal:
        return ledger.report_sections(*WINDOW, where=list(where)).headline["spend"]  # type: ignore[no-any-return]

    assert spend("tag:note=x!=y") == 1 * GPT4O_1K_INPUT
    assert spend("tag:note!=x!=y") == 6 * GPT4O_1K_INPUT
    # a comma separates values (any of them); an escaped one is part of the value
    assert spend("team=a,b") == 4 * GPT4O_1K_INPUT
    assert spend(r"team=a\,b") == 2 * GPT4O_1K_INPUT
    assert spend(r"team=a\,b,ops") == 3 * GPT4O_1K_INPUT
    assert spend(r"team!=a\,b") == 5 * GPT4O_1K_INPUT


def test_a_filter_given_as_one_string_is_one_filter(ledger: Ledger) -> None:
    ledger.ingest_records([_plain_call("f1", 0, 1, team="ops"), _plain_call("f2", 1, 2, team="a")])
    frame = ledger.report(*WINDOW, by="team", where="team=ops")
    assert list(frame["team"]) == ["ops"]
    assert list(ledger.report(*WINDOW, where="team=ops,a")["calls"]) == [2]


# ------------------------------------------------------------------ top


def _teams_over_days(ledger: Ledger) -> Ledger:
    day = "2025-09-{:02d}T10:00:00Z"
    ledger.ingest_records(
        [
            # big: $0.01 a day on three days; small: $0.0125 on one day only, the biggest day
            *(_plain_call(f"b{d}", 0, 4, team="big") | {"ts": day.format(d)} for d in (10, 11, 12)),
            _plain_call("s1", 0, 5, team="small") | {"ts": day.format(11)},
        ]
    )
    return ledger


def test_top_with_a_period_keeps_the_biggest_groups_over_the_window(ledger: Ledger) -> None:
    rows = (
        _teams_over_days(ledger)
        .report_sections("2025-09-10", "2025-09-13", by="team", period="day", top=1)
        .rows
    )
    assert [(r["team"], r["period"].day) for r in rows] == [("big", 10), ("big", 11), ("big", 12)]
    assert rows[1]["previous_spend"] == 4 * GPT4O_1K_INPUT


@pytest.mark.parametrize("top", [0, -1])
def test_top_below_one_is_refused(ledger: Ledger, top: int) -> None:
    _teams_over_days(ledger)
    with pytest.raises(ValueError, match="at least 1"):
        ledger.report_sections("2025-09-10", "2025-09-13", by="team", top=top)


# ------------------------------------------------------------------ spend per bucket


@pytest.mark.parametrize(
    ("period", "bucket", "bars"),
    [
        ("day", "day", 5),
        ("hour", "hour", 5 * 24),
        (None, "day", 5),
        ("week", "week", 1),
        ("month", "month", 1),
    ],
)
def test_every_bucket_of_the_window_has_a_spend(
    ledger: Ledger, period: str | None, bucket: str, bars: int
) -> None:
    _teams_over_days(ledger)
    report = ledger.report_sections("2025-09-09", "2025-09-14", period=period)
    assert report.bucket == bucket
    spend = report.spend_per_bucket()
    assert len(spend) == bars
    assert sum(s or 0 for s in spend) == report.headline["spend"]
    if period == "day":
        assert spend == [0, 4 * GPT4O_1K_INPUT, 9 * GPT4O_1K_INPUT, 4 * GPT4O_1K_INPUT, 0]  # quiet days: $0


def test_buckets_of_a_month_cross_the_year() -> None:
    from unitcost.analytics.report import bucket_starts

    window = Window.parse("2025-11-15", "2026-02-01")
    assert [s.month for s in bucket_starts(window, "month")] == [11, 12, 1]
    weeks = bucket_starts(Window.parse("2025-09-10T12:00Z", "2025-09-16"), "week")
    assert [s.isoformat() for s in weeks] == ["2025-09-08T00:00:00+00:00", "2025-09-15T00:00:00+00:00"]
