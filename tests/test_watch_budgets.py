"""Budgets: calendar periods in their time zone, exact spend, burn rate, forecast, run-out day."""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from unitcost.config import Config, ConfigError
from unitcost.watch.budgets import (
    Budget,
    BudgetStatus,
    budget_findings,
    budget_status,
    parse_budgets,
    unmatched_scope_note,
)
from unitcost.watch.incidents import acknowledge, list_alerts
from unitcost.watch.runner import Watcher
from unitcost.watch.scope import Scope
from unitcost.watch.settings import WatchSettings, load_watch_settings


def _call(day: int, team: str = "search", hour: int = 12, n: int = 0, **extra: Any) -> dict[str, Any]:
    return {
        "event_id": f"b-{team}-{day}-{hour}-{len(extra)}-{n}",
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
    assert subjects == ["org:2025-09-01:forecast", "org:2025-09-01:thresholds"]
    notes = "\n".join(findings[0].notes)
    # The pace the run-out day comes from is named: the forecast's, not the burn rate's.
    assert f"runs out: 2025-09-13 at the forecast's ${2 * c:,.2f}/day" in notes, notes  # two teams' c a day


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


@pytest.mark.parametrize(
    ("budget", "message"),
    [
        # Misspelt keys are named, not ignored in favour of a UTC month at 50/85/100 %.
        ({"timzone": "Asia/Kolkata"}, r"#1 \(s\): unknown setting 'timzone' \(did you mean \"timezone\"\?\)"),
        ({"threshold": [10]}, r"#1 \(s\): unknown setting 'threshold' \(did you mean \"thresholds\"\?\)"),
        (
            {"periode": "day"},
            r"#1 \(s\): unknown setting 'periode' \(did you mean \"period\"\?\); known: name, scope",
        ),
        # Values of the wrong kind are named with the budget, the key and the value.
        ({"thresholds": 80}, r"#1 \(s\): thresholds: expected a list of percentages.*got 80$"),
        ({"thresholds": [50, -5]}, r"#1 \(s\): thresholds: expected positive percentages, got \[50, -5\]"),
        ({"period": 7}, r"#1 \(s\): period: expected one of day, week, month, got 7"),
        ({"variation_pct": -1}, r"#1 \(s\): variation_pct: expected a non-negative number, got -1"),
        ({"name": ["s"]}, r"#1: name: expected a non-empty string, got \['s'\]"),
    ],
)
def test_budget_settings_that_would_be_ignored_or_crash_are_named(
    budget: dict[str, Any], message: str
) -> None:
    raw = {"budget": [{"name": "s", "amount": 10, **budget}]}
    with pytest.raises(ConfigError, match=r"^u\.toml: \[\[budget\]\] " + message):
        load_watch_settings(Config(path=Path("u.toml"), raw=raw))


def test_a_single_bracket_budget_table_is_named() -> None:
    with pytest.raises(ConfigError, match=r"\[budget\] is a single table: write \[\[budget\]\]"):
        load_watch_settings(Config(raw={"budget": {"name": "s", "amount": 10}}))


def _status(budget: Budget, spent: str) -> BudgetStatus:
    now = datetime(2025, 9, 10, 15, tzinfo=UTC)
    start, end = budget.bounds(now)
    money = Decimal(spent)
    return BudgetStatus(budget, start, end, now, money, 0, money, money, money, money, None, None)


def test_thresholds_are_compared_exactly() -> None:
    (budget,) = parse_budgets([{"name": "t", "amount": 10, "thresholds": [29, 57]}])
    (finding,) = budget_findings(_status(budget, "5.70"))  # 5.70 * 100 / 10 is 56.99999999999999 in floats
    assert finding.title == "Budget t: 57% used (57 % threshold crossed)"
    (finding,) = budget_findings(_status(budget, "5.69"))
    assert "(29 % threshold crossed)" in finding.title


def _watch(ledger: Any, amount: Decimal) -> Watcher:
    budget = Budget("support", Scope.of(team="search"), amount=amount, period="month")
    return Watcher(ledger.store, WatchSettings(detectors=[], budgets=[budget]), sinks=[])


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def test_budget_alerts_stay_one_incident_however_far_apart_the_cycles(ledger: Any) -> None:
    """A daily cron (`watch --once`) must not resolve and reopen an unchanged budget alert."""
    watcher = _watch(ledger, _daily_cost(ledger) * 15)  # 10 days spent: 67 %, forecast 200 %
    opened = watcher.run_once(_at("2025-09-10T15:00")).notifications
    assert sorted(n.title.split(": ")[1][:9] for n in opened) == ["67% used ", "forecast "]
    acknowledge(ledger.store, opened[0].alert_id, "finops")
    for later in ("2025-09-10T19:00", "2025-09-11T19:00", "2025-09-20T07:00"):
        assert watcher.run_once(_at(later)).notifications == []
    rows = {r["alert_id"]: r for r in list_alerts(ledger.store)}
    assert set(rows) == {n.alert_id for n in opened}  # the same two incidents, updated
    assert rows[opened[0].alert_id]["status"] == "acknowledged"  # the ack is kept
    assert rows[opened[1].alert_id]["updates"] == 3
    # A new month: the condition no longer holds, and that is said once for each.
    resolved = watcher.run_once(_at("2025-10-01T01:00")).notifications
    assert sorted((n.kind, n.alert_id) for n in resolved) == sorted(("resolved", n.alert_id) for n in opened)
    assert watcher.run_once(_at("2025-10-02T01:00")).notifications == []
    watcher.close(0)


def test_a_higher_threshold_updates_the_budget_alert_without_resolving_the_lower(ledger: Any) -> None:
    watcher = _watch(ledger, _daily_cost(ledger) * 15)  # thresholds 50, 85 and 100 %

    def spend(n: int, at: str) -> list[tuple[str, str, str]]:
        now = _at(f"2025-09-10T{at}")
        calls = [_call(10, hour=now.hour, n=i) for i in range(n)]
        assert ledger.ingest_records(calls, source="t").accepted == n
        notes = watcher.run_once(now).notifications
        # Nothing is resolved while spend only grows, the forecast alert past 100 % included.
        assert [n.title for n in notes if n.kind == "resolved"] == []
        return [(n.kind, n.alert_id, n.title) for n in notes if "threshold" in n.title]

    ((kind, alert_id, title),) = spend(0, "14:30")
    assert (kind, title) == ("opened", "Budget support: 67% used (50 % threshold crossed)")
    assert spend(3, "15:30") == [("updated", alert_id, "Budget support: 87% used (85 % threshold crossed)")]
    assert spend(0, "15:45") == []  # no new threshold: history only
    # Passing 100 % is said at once: through the cool-down (an hour, and 15:30 was notified)
    # and through the acknowledgement, which covered 85 %.
    acknowledge(ledger.store, alert_id, "finops")
    assert spend(3, "16:10") == [("updated", alert_id, "Budget support: 107% used (100 % threshold crossed)")]
    (row,) = [r for r in list_alerts(ledger.store) if r["alert_id"] == alert_id]
    assert row["status"] == "open" and row["severity"] == "critical"
    watcher.close(0)


def test_a_day_with_no_spend_is_a_stop_not_nothing_to_compare(ledger: Any) -> None:
    """search spends every day from 1 to 10 Sept, and nothing after."""
    search = Budget("search", Scope.of(team="search"), amount=Decimal(1000))
    stopped = budget_status(ledger.store, search, datetime(2025, 9, 12, tzinfo=UTC))  # 11th vs 4th
    assert stopped.daily_change == -1.0 and stopped.variation_alarm
    # A day of unpriced calls only is the same $0, and reads the same.
    assert ledger.ingest_records(
        [_call(11, team="ops", model="acme-x", provider="acme")], source="t"
    ).accepted
    ops = [_call(4, team="ops")]
    assert ledger.ingest_records(ops, source="t").accepted == 1
    ops_budget = Budget("ops", Scope.of(team="ops"), amount=Decimal(1000))
    unpriced = budget_status(ledger.store, ops_budget, datetime(2025, 9, 12, tzinfo=UTC))
    assert unpriced.daily_change == -1.0 and unpriced.variation_alarm and unpriced.unpriced_calls == 1
    # Neither day spent anything: nothing to compare.
    quiet = budget_status(ledger.store, search, datetime(2025, 9, 20, tzinfo=UTC))  # 19th vs 12th
    assert quiet.daily_change is None and not quiet.variation_alarm and not quiet.spend_started


def test_spend_starting_from_nothing_is_a_change_unless_the_ledger_is_younger(ledger: Any) -> None:
    assert ledger.ingest_records([_call(10, team="new")], source="t").accepted == 1
    new = Budget("new", Scope.of(team="new"), amount=Decimal(1000))
    started = budget_status(ledger.store, new, datetime(2025, 9, 11, tzinfo=UTC))  # 10th vs 3rd
    assert started.spend_started and started.variation_alarm and started.daily_change is None
    # 4 Sept against 28 Aug: the ledger begins on 1 Sept, so that day is unknown, not $0.
    search = Budget("search", Scope.of(team="search"), amount=Decimal(1000))
    young = budget_status(ledger.store, search, datetime(2025, 9, 5, tzinfo=UTC))
    assert young.daily_change is None and not young.spend_started and not young.variation_alarm


def _dollar_hours(first: datetime, last: datetime, local_hours: range | None = None) -> list[dict[str, Any]]:
    """$1 calls (400k input tokens of gpt-4o), one each UTC hour, or only at these Paris clock hours."""
    paris = ZoneInfo("Europe/Paris")
    records = []
    hour = first
    while hour < last:
        if local_hours is None or hour.astimezone(paris).hour in local_hours:
            records.append(
                {
                    "event_id": f"dst-{hour:%m%d%H}",
                    "ts": hour.isoformat(),
                    "model": "gpt-4o",
                    "input_tokens": 400_000,
                    "team": "x",
                }
            )
        hour += timedelta(hours=1)
    return records


@pytest.mark.parametrize(
    ("traffic", "now"),
    [
        # Yesterday and the day a week before are both 24 hours of $1: the history once started
        # at now - 9 days, which cut the earlier day's first hour after the clocks changed.
        (None, "2025-10-26T21:30"),
        (None, "2025-10-26T22:30"),
        # Yesterday is the 25-hour 26 October, or the 23-hour 30 March, of the same hourly traffic.
        (None, "2025-10-27T10:00"),
        (None, "2025-03-31T10:00"),
        # Office hours only, and a job once a day: the extra (or missing) hour is a quiet one.
        (range(8, 19), "2025-10-27T10:00"),
        (range(10, 11), "2025-10-27T10:00"),
        (range(10, 11), "2025-03-31T10:00"),
    ],
)
def test_the_same_traffic_across_a_clock_change_is_no_variation(
    ledger: Any, traffic: range | None, now: str
) -> None:
    at = _at(now)
    records = _dollar_hours((at - timedelta(days=12)).replace(minute=0), at, traffic)
    assert ledger.ingest_records(records, source="t").accepted == len(records)
    budget = Budget("paris", Scope.of(team="x"), Decimal(1000), period="day", timezone="Europe/Paris")
    status = budget_status(ledger.store, budget, at)
    assert status.daily_change == 0.0 and not status.variation_alarm


def test_a_real_change_on_a_clock_change_day_is_still_seen(ledger: Any) -> None:
    at = _at("2025-10-27T10:00")
    records = _dollar_hours(at - timedelta(days=12), at)
    for r in records:  # Sunday 26 October (25 hours, Paris) costs twice as much per hour
        if r["ts"] >= "2025-10-25T22" and r["ts"] < "2025-10-26T23":
            r["input_tokens"] *= 2
    assert ledger.ingest_records(records, source="t").accepted == len(records)
    budget = Budget("paris", Scope.of(team="x"), Decimal(1000), period="day", timezone="Europe/Paris")
    status = budget_status(ledger.store, budget, at)
    assert status.daily_change == pytest.approx(1.0) and status.variation_alarm
    assert dict(status.daily_days)[date(2025, 10, 26)] == 50  # the whole day is still its 25 hours


def test_a_scope_that_matches_no_event_is_named(ledger: Any, caplog: pytest.LogCaptureFixture) -> None:
    ghost = Budget("ghost", Scope.of(team="ghost"), Decimal(10))
    assert unmatched_scope_note(ledger.store, ghost) == (
        "budget ghost: no event in the ledger matches team=ghost; it reads $0 until one does"
    )
    cased = Budget("Search", Scope.of(team="Search"), Decimal(10))
    assert 'team=Search (did you mean team = "search"?)' in (unmatched_scope_note(ledger.store, cased) or "")
    assert unmatched_scope_note(ledger.store, Budget("s", Scope.of(team="search"), Decimal(10))) is None
    assert unmatched_scope_note(ledger.store, Budget("org", Scope(), Decimal(10))) is None
    # watch says it once, not every cycle.
    watcher = Watcher(ledger.store, WatchSettings(detectors=[], budgets=[ghost, cased]), sinks=[])
    with caplog.at_level(logging.WARNING, logger="unitcost.watch"):
        for later in ("2025-09-10T15:00", "2025-09-10T16:00", "2025-09-11T16:00"):
            watcher.run_once(_at(later))
    watcher.close(0)
    said = [r.getMessage() for r in caplog.records if "no event in the ledger matches" in r.getMessage()]
    assert len(said) == 2 and "budget ghost" in said[0] and "budget Search" in said[1]
