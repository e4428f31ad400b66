"""Budgets: calendar periods in their time zone, exact spend, burn rate, forecast, run-out day."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest

from unitcost.watch.budgets import Budget, budget_findings, budget_status, parse_budgets
from unitcost.watch.scope import Scope


def _call(day: int, team: str = "search", hour: int = 12, **extra: Any) -> dict[str, Any]:
    return {
        "event_id": f"b-{team}-{day}-{hour}-{len(extra)}",
        "ts": f"2025-09-{day:02d}T{hour:02d}:00:00Z",
        "model": "gpt-4o-mini",
        "provider": "openai",
        "input_tokens": 100_000,
        "output_tokens": 10_000,
        "team": team,
        **extra,
    }


@pytest.fixture
def ledger(ledger):  # type: ignore[no-untyped-def]
    records = [_call(d) for d in range(1, 11)] + [_call(d, team="legal") for d in range(1, 11)]
    summary = ledger.ingest_records(records, source="test")
    assert summary.accepted == 20
    return ledger


def _daily_cost(ledger: Any) -> Decimal:
    return Decimal(ledger.store.fetch("SELECT max(cost) AS c FROM events").to_pylist()[0]["c"])


def test_spend_forecast_and_run_out_of_a_steady_month(ledger: Any) -> None:
    c = _daily_cost(ledger)
    budget = Budget("search", Scope.of(team="search"), amount=c * 15, period="month")
    status = budget_status(ledger.store, budget, datetime(2025, 9, 11, tzinfo=UTC))
    assert status.spent == c * 10  # exact Decimal sum of the scope only
    assert status.burn_rate == c
    assert status.forecast == pytest.approx(c * 30)  # 20 more days at the same pace
    assert status.forecast_low == status.forecast_high == status.forecast  # no day-to-day spread
    assert status.runs_out == date(2025, 9, 16)
    assert status.daily_change == 0.0 and not status.variation_alarm


def test_daily_variation_above_three_percent_is_flagged(ledger: Any) -> None:
    assert ledger.ingest_records([_call(10, hour=15)], source="test").accepted == 1
    budget = Budget("search", Scope.of(team="search"), amount=Decimal(1000))
    status = budget_status(ledger.store, budget, datetime(2025, 9, 11, tzinfo=UTC))
    assert status.daily_change == pytest.approx(1.0)  # 10 Sept spent twice what 3 Sept did
    assert status.variation_alarm


def test_thresholds_and_forecast_raise_findings(ledger: Any) -> None:
    c = _daily_cost(ledger)
    budget = Budget("org", Scope(), amount=c * 24, period="month")  # 20c spent: 83 %
    findings = budget_findings(budget_status(ledger.store, budget, datetime(2025, 9, 11, tzinfo=UTC)))
    subjects = sorted(f.subject for f in findings)
    assert subjects == ["org:2025-09-01:50", "org:2025-09-01:forecast"]
    assert "runs out: 2025-09-13" in "\n".join(findings[0].notes)


def test_periods_follow_the_calendar_of_their_time_zone() -> None:
    now = datetime(2025, 9, 15, 2, tzinfo=UTC)  # still 14 Sept (Sunday) in New York
    month = Budget("m", Scope(), Decimal(1), "month", "America/New_York")
    assert month.bounds(now) == (datetime(2025, 9, 1, 4, tzinfo=UTC), datetime(2025, 10, 1, 4, tzinfo=UTC))
    week = Budget("w", Scope(), Decimal(1), "week", "America/New_York")
    assert week.bounds(now)[0] == datetime(2025, 9, 8, 4, tzinfo=UTC)  # the Monday before
    day = Budget("d", Scope(), Decimal(1), "day", "Europe/Paris")
    assert day.bounds(now) == (datetime(2025, 9, 14, 22, tzinfo=UTC), datetime(2025, 9, 15, 22, tzinfo=UTC))


def test_budget_config_is_validated() -> None:
    (b,) = parse_budgets(
        [
            {
                "name": "x",
                "amount": 500,
                "period": "week",
                "timezone": "Europe/Paris",
                "scope": {"team": "search", "tags": {"env": "prod"}},
            }
        ]
    )
    assert b.thresholds == (50.0, 85.0, 100.0)
    assert b.scope.label == "team=search,tags.env=prod"
    for bad, message in (
        ({"name": "x"}, "amount is required"),
        ({"amount": 1, "period": "fortnight"}, "period"),
        ({"amount": 1, "timezone": "Mars/Olympus"}, "time zone"),
        ({"amount": 1, "scope": {"planet": "mars"}}, "unknown scope key"),
        ({"amount": "ten"}, r"amount: expected a number, got 'ten'"),
        ({"amount": 1, "thresholds": [50, "lots"]}, r"thresholds: expected a number, got 'lots'"),
        ({"amount": 1, "variation_pct": "three"}, r"variation_pct: expected a number"),
    ):
        with pytest.raises(ValueError, match=message):
            parse_budgets([bad])
