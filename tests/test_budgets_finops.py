"""Budgets as a FinOps team reads them: forecasts on a young ledger, exact JSON, unpriced calls
said, config mistakes named."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from unitcost.cli import app
from unitcost.config import Config, ConfigError
from unitcost.watch.budgets import Budget, budget_findings, budget_status, parse_budgets
from unitcost.watch.scope import Scope
from unitcost.watch.settings import load_watch_settings

HOURLY = Decimal("0.021")
"""What one call below costs: 100k input tokens and 10k output tokens of gpt-4o-mini."""


def _hourly(first: datetime, last: datetime, **extra: Any) -> list[dict[str, Any]]:
    """One call at the start of every UTC hour from `first` up to `last`."""
    records = []
    hour = first
    while hour < last:
        records.append(
            {
                "event_id": f"h-{hour:%m%d%H}-{len(extra)}",
                "ts": hour.isoformat(),
                "model": "gpt-4o-mini",
                "provider": "openai",
                "input_tokens": 100_000,
                "output_tokens": 10_000,
                "team": "search",
                **extra,
            }
        )
        hour += timedelta(hours=1)
    return records


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.fixture
def young(ledger: Any) -> Any:
    """A ledger begun at 00:00 UTC on 1 September: steady traffic, nothing recorded before."""
    records = _hourly(_at("2025-09-01T00:00"), _at("2025-09-04T00:00"))
    assert ledger.ingest_records(records, source="t").accepted == len(records)
    return ledger


def test_days_before_the_ledger_began_are_not_quiet_days(young: Any) -> None:
    """On its second morning, the last 7 days held 6 "days of $0" that were only the ledger not
    existing yet: the month was forecast at a seventh of its pace ($117 for a $454 month), with
    a 90 % interval that excluded the truth."""
    budget = Budget("org", Scope(), Decimal(1000), "month")
    now = _at("2025-09-02T06:00")
    status = budget_status(young.store, budget, now)
    day = HOURLY * 24
    assert status.spent == HOURLY * 30
    remaining = Decimal((status.end - now).total_seconds()) / 86400
    assert status.forecast == pytest.approx(status.spent + day * remaining)  # 1 Sept's pace
    # One day says nothing about the day-to-day spread: no interval rather than a false one.
    assert status.forecast_low is None and status.forecast_high is None
    assert status.forecast_basis == "mean of the period's 1 complete day; no interval before 2 days of data"


def test_no_complete_day_of_data_is_no_forecast_not_the_spend_so_far(young: Any) -> None:
    """18 hours into the ledger, "forecast $0.38 (90 %: $0.38 – $0.38)" said the month would
    spend nothing more, with certainty."""
    budget = Budget("org", Scope(), Decimal("0.30"), "month")
    status = budget_status(young.store, budget, _at("2025-09-01T18:00"))
    assert status.spent == HOURLY * 18 and status.over_budget
    assert status.forecast is None and status.forecast_low is None and status.forecast_high is None
    assert status.runs_out == date(2025, 9, 1)  # the day it did run out is known
    assert status.forecast_basis == "no complete day of data yet"
    (threshold,) = budget_findings(status)  # the 100 % alert, and no forecast alert from nothing
    assert "100 % threshold crossed" in threshold.title
    assert "burn rate $0.50/day; no forecast (no complete day of data yet)" in threshold.notes


def test_a_first_day_the_ledger_saw_only_part_of_is_no_sample(young: Any) -> None:
    """1 September in Auckland began at 12:00 UTC on 31 August: the ledger holds its second
    half only. Averaged with the whole 2 September, it made the pace a quarter too low."""
    budget = Budget("nz", Scope(), Decimal(1000), "month", "Pacific/Auckland")
    now = _at("2025-09-03T06:00")  # 18:00 on 3 September in Auckland
    status = budget_status(young.store, budget, now)
    remaining = Decimal((status.end - now).total_seconds()) / 86400
    assert status.forecast == pytest.approx(status.spent + HOURLY * 24 * remaining)
    assert status.forecast_basis.startswith("mean of the period's 1 complete day")


def test_the_interval_holds_the_forecast_and_never_dips_below_the_spend(ledger: Any) -> None:
    """A jumpy week whose spend has more decimals than the forecast kept: the low end was the
    spend rounded to 6 places in floats, a hair below the exact spend already made."""
    records = []
    for day in range(1, 10):
        for n in range(1 if day % 2 else 9):  # 1 call on odd days, 9 on even days
            records.append(
                {
                    "event_id": f"j-{day}-{n}",
                    "ts": f"2025-09-{day:02d}T10:{n:02d}:00Z",
                    "model": "gpt-4o-mini",
                    "provider": "openai",
                    "input_tokens": 123_457,
                    "output_tokens": 1,
                    "team": "search",
                }
            )
    assert ledger.ingest_records(records, source="t").accepted == len(records)
    budget = Budget("jumpy", Scope.of(team="search"), Decimal(1000), "week")
    status = budget_status(ledger.store, budget, _at("2025-09-10T00:00"))  # Wednesday
    assert status.spent == Decimal("0.01851915") * 10  # Monday's 9 calls and Tuesday's 1
    low, high, forecast = status.forecast_low, status.forecast_high, status.forecast
    assert low is not None and high is not None and forecast is not None
    assert status.spent <= low <= forecast <= high
    assert low == status.spent  # the spread is wider than the days left can spend


def test_json_carries_exact_amounts_and_machine_readable_fields(
    young: Any, ledger_path: Path, tmp_path: Path
) -> None:
    young.close()
    config = tmp_path / "unitcost.toml"
    config.write_text(
        '[[budget]]\nname = "month"\namount = 1000\ntimezone = "America/New_York"\n'
        '[[budget]]\nname = "tight"\namount = 0.5\nperiod = "day"\n'
    )
    result = CliRunner().invoke(
        app,
        [
            "budgets",
            "-l",
            str(ledger_path),
            "--config",
            str(config),
            "--now",
            "2025-09-03T12:30:00Z",
            "-f",
            "json",
        ],
    )
    assert result.exit_code == 0, result.output
    rows = {r["budget"]: r for r in json.loads(result.output)}
    month, tight = rows["month"], rows["tight"]
    # Every digit of the ledger's sum, not cents: 57 calls at $0.021 since midnight in New York.
    assert Decimal(month["spent"]) == Decimal("1.197") and Decimal(tight["spent"]) == Decimal("0.273")
    assert month["period_start"] == "2025-09-01T04:00:00+00:00"
    assert month["period_end"] == "2025-10-01T04:00:00+00:00"
    assert month["timezone"] == "America/New_York"
    # The interval as two numbers, not the text "a – b"; no run-out day is null, not prose.
    assert Decimal(month["forecast_low"]) <= Decimal(month["forecast"]) <= Decimal(month["forecast_high"])
    assert month["runs_out"] is None and month["threshold_crossed"] is None
    assert month["forecast_basis"] == "mean of the period's 2 complete days"
    assert tight["runs_out"] == "2025-09-03" and tight["threshold_crossed"] == "50"
    assert month["variation_over_limit"] is False


def test_a_budget_of_unpriced_calls_is_not_ok_at_zero_dollars(
    ledger: Any, ledger_path: Path, tmp_path: Path
) -> None:
    """Every call of the self-hosted model has no price: "$0.00 spent, ok" read as money not spent."""
    priced = _hourly(_at("2025-09-01T00:00"), _at("2025-09-03T00:00"))
    unpriced = _hourly(_at("2025-09-01T00:00"), _at("2025-09-03T00:00"), model="acme-x", provider="acme")
    assert ledger.ingest_records(priced + unpriced, source="t").accepted == 96
    ledger.close()
    config = tmp_path / "unitcost.toml"
    config.write_text(
        '[[budget]]\nname = "acme"\nscope = { provider = "acme" }\namount = 10\n'
        '[[budget]]\nname = "org"\namount = 100\n'
    )
    args = ["budgets", "-l", str(ledger_path), "--config", str(config), "--now", "2025-09-03T00:00:00Z"]
    rows = {r["budget"]: r for r in json.loads(CliRunner().invoke(app, [*args, "-f", "json"]).output)}
    assert rows["acme"]["status"] == "no priced calls" and rows["acme"]["unpriced_calls"] == 48
    assert rows["org"]["status"] == "ok"  # $1.01 of priced spend is known; the rest is said below
    assert rows["org"]["note"] == (
        "budget org: 48 calls in scope this month have no price and are not in spent, burn rate "
        "or forecast (lower bounds); `unitcost report` lists them"
    )
    table = CliRunner().invoke(app, [*args, "-f", "markdown"]).output
    assert "Note: budget acme: 48 calls in scope this month have no price" in table


@pytest.mark.parametrize(
    ("budgets", "message"),
    [
        # A monthly and a weekly "support" shared one alert, each cycle overwriting the other.
        (
            [{"name": "support", "amount": 10}, {"name": "support", "amount": 3, "period": "week"}],
            r"\[\[budget\]\] #2: name: 'support' is already the name of \[\[budget\]\] #1",
        ),
        # An unnamed first budget is "budget-1".
        ([{"amount": 10}, {"name": "budget-1", "amount": 3}], r"#2: name: 'budget-1' is already"),
        # Read as the team named "['search', 'support']": $0 spent, forever.
        (
            [{"name": "s", "amount": 10, "scope": {"team": ["search", "support"]}}],
            r"#1 \(s\): scope\.team: expected one value, got \['search', 'support'\]; "
            r"a budget covers one value per dimension",
        ),
        (
            [{"name": "s", "amount": 10, "scope": {"tags": {"region": ["eu"]}}}],
            r"#1 \(s\): scope\.tags\.region: expected one value",
        ),
        ([{"name": "s", "amount": 10, "scope": {"team": ""}}], r"scope\.team: expected a non-empty string"),
        ([{"name": "s", "amount": 10, "scope": {"team": True}}], r"scope\.team: expected a non-empty string"),
        # `org = true` beside a team was dropped without a word: was the org meant, or the team?
        (
            [{"name": "s", "amount": 10, "scope": {"org": True, "team": "search"}}],
            r"#1 \(s\): scope\.org: write org = true alone",
        ),
    ],
)
def test_budget_config_mistakes_are_named(budgets: list[dict[str, Any]], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as raised:
        load_watch_settings(Config(path=Path("u.toml"), raw={"budget": budgets}))
    assert str(raised.value).startswith("u.toml: [[budget]] #")


def test_numeric_ids_and_the_org_are_valid_scopes() -> None:
    customer, org = parse_budgets(
        [
            {"name": "c", "amount": 1, "scope": {"customer": 1042}},
            {"name": "o", "amount": 1, "scope": {"org": True}},
        ]
    )
    assert customer.scope == Scope.of(customer="1042") and org.scope.is_org


def test_a_bad_now_is_named(tmp_path: Path) -> None:
    config = tmp_path / "unitcost.toml"
    config.write_text('[[budget]]\nname = "o"\namount = 1\n')
    result = CliRunner().invoke(app, ["budgets", "--config", str(config), "--now", "yesterday"])
    assert result.exit_code == 2 and result.output.startswith("error: --now: not a date")
