"""One incident is one alert with updates: dedupe, cool-down, resolution, acknowledgement."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from unitcost.config import Config, ConfigError
from unitcost.ledger.duckdb_store import DuckDBStore
from unitcost.watch.detectors.base import Finding
from unitcost.watch.incidents import Incidents, acknowledge, alert_history, list_alerts
from unitcost.watch.scope import Scope
from unitcost.watch.settings import load_watch_settings

T0 = datetime(2025, 9, 17, 9, tzinfo=UTC)


def finding(hour: int, observed: float = 15.0, scope: Scope | None = None) -> Finding:
    at = T0 + timedelta(hours=hour)
    return Finding(
        "cost_per_hour", scope or Scope.of(team="eng"), at, T0, "Cost per hour up", observed, 10.0, "$/hour"
    )


@pytest.fixture
def store(tmp_path: Path):  # type: ignore[no-untyped-def]
    s = DuckDBStore(tmp_path / "l.duckdb")
    yield s
    s.close()


def incidents(store: DuckDBStore) -> Incidents:
    return Incidents(store, cooldown=timedelta(hours=2), resolve_after=timedelta(hours=3))


def test_repeated_findings_are_one_alert_with_updates(store: DuckDBStore) -> None:
    inc = incidents(store)
    sent = [n.kind for h in range(1, 5) for n in inc.apply([finding(h)], T0 + timedelta(hours=h))]
    assert sent == ["opened"]  # same size, inside the cool-down: history only
    (row,) = list_alerts(store)
    assert row["updates"] == 3 and row["status"] == "open"
    kinds = [r["kind"] for r in alert_history(store, row["alert_id"])]
    assert kinds == ["opened", "updated", "updated", "updated"]


def test_worse_after_cool_down_notifies_an_update(store: DuckDBStore) -> None:
    inc = incidents(store)
    inc.apply([finding(1, 15.0)], T0 + timedelta(hours=1))
    assert inc.apply([finding(2, 30.0)], T0 + timedelta(hours=2)) == []  # worse, but within 2 h
    (update,) = inc.apply([finding(3, 30.0)], T0 + timedelta(hours=3))
    assert update.kind == "updated" and "+200%" in update.message


def test_quiet_incident_resolves_and_a_new_one_opens(store: DuckDBStore) -> None:
    inc = incidents(store)
    inc.apply([finding(1)], T0 + timedelta(hours=1))
    (resolved,) = inc.apply([], T0 + timedelta(hours=5))
    assert resolved.kind == "resolved"
    (opened,) = inc.apply([finding(9)], T0 + timedelta(hours=9))
    assert opened.kind == "opened" and opened.alert_id != resolved.alert_id
    assert [r["status"] for r in list_alerts(store)] == ["open", "resolved"]


def test_other_scopes_are_other_incidents(store: DuckDBStore) -> None:
    inc = incidents(store)
    sent = inc.apply([finding(1), finding(1, scope=Scope.of(team="legal")), finding(1, scope=Scope())], T0)
    assert sorted(n.key for n in sent) == [
        "cost_per_hour:org",
        "cost_per_hour:team=eng",
        "cost_per_hour:team=legal",
    ]


def test_acknowledged_incident_stays_quiet(store: DuckDBStore) -> None:
    inc = incidents(store)
    (opened,) = inc.apply([finding(1)], T0 + timedelta(hours=1))
    row = acknowledge(store, opened.alert_id[:6], "oncall@example.org")
    assert row["status"] == "acknowledged"
    assert inc.apply([finding(3, 60.0)], T0 + timedelta(hours=3)) == []
    (row,) = list_alerts(store)
    assert row["acked_by"] == "oncall@example.org" and row["updates"] == 1
    with pytest.raises(ValueError, match="no alert"):
        acknowledge(store, "zzz", "me")


def test_thresholds_are_configurable_per_scope() -> None:
    config = Config(
        raw={
            "watch": {
                "cost_per_hour": {"threshold": 0.4},
                "override": [{"scope": {"team": "search"}, "cost_per_hour": {"threshold": 1.0, "sigmas": 6}}],
                "sink": [{"type": "log"}],
            }
        }
    )
    settings = load_watch_settings(config)
    tuning = settings.tuning["cost_per_hour"]
    assert tuning.for_scope(Scope.of(team="search"))["threshold"] == 1.0
    assert tuning.for_scope(Scope.of(team="search"))["sigmas"] == 6
    assert tuning.for_scope(Scope.of(team="eng"))["threshold"] == 0.4
    assert tuning.for_scope(Scope())["sigmas"] == 4.0  # the default
    with pytest.raises(ConfigError, match="unknown"):
        load_watch_settings(Config(raw={"watch": {"detectors": ["cost_per_hour", "astrology"]}}))
    with pytest.raises(ConfigError, match="type must be"):
        load_watch_settings(Config(raw={"watch": {"sink": [{"type": "pager"}]}}))


@pytest.mark.parametrize(
    ("watch", "message"),
    [
        # A misspelt setting is named, not ignored in favour of the default.
        (
            {"cost_per_hour": {"sigma": 3}},
            r"\[watch.cost_per_hour\]: unknown setting\(s\) sigma; known: .*sigmas",
        ),
        ({"intervall_seconds": 30}, r"\[watch\]: unknown setting\(s\) intervall_seconds"),
        (
            {"override": [{"scope": {"team": "a"}, "cost_per_hours": {"threshold": 1}}]},
            r"#1: unknown setting\(s\) cost_per_hours",
        ),
        (
            {"override": [{"scope": {"team": "a"}, "runaway_trace": {"factr": 9}}]},
            r"#1 runaway_trace: unknown setting\(s\) factr",
        ),
        # A value of the wrong kind is named before a detector runs on it.
        ({"cost_per_hour": {"threshold": "30%"}}, r"threshold: expected a non-negative number, got '30%'"),
        ({"cost_per_hour": {"sigmas": True}}, r"sigmas: expected a non-negative number, got True"),
        ({"cost_per_hour": {"windows": 3}}, r"windows: expected a list of positive numbers, got 3"),
        ({"interval_seconds": "1m"}, r"\[watch\] interval_seconds: expected a non-negative number, got '1m'"),
        # TOML has inf and nan: a loop would crash on the first, spin on the second.
        ({"interval_seconds": float("inf")}, r"interval_seconds: expected a non-negative number, got inf"),
        ({"backfill_hours": float("nan")}, r"backfill_hours: expected a non-negative number, got nan"),
    ],
)
def test_watch_settings_that_would_be_ignored_or_crash_are_named(watch: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_watch_settings(Config(raw={"watch": watch}))


def test_a_standing_budget_alert_keeps_one_update_an_hour_not_one_a_cycle(store) -> None:  # type: ignore[no-untyped-def]
    """Budgets are judged every cycle (every minute by default, inside `unitcost serve` too): a
    budget past 85 % for a whole afternoon must not write an alert-log row per cycle."""
    incidents = Incidents(store, cooldown=timedelta(hours=1), resolve_after=timedelta(hours=3))
    start = datetime(2025, 9, 17, 10, 0, tzinfo=UTC)

    def over(at: datetime, level: float) -> Finding:
        return Finding(
            "budget", Scope.of(team="eng"), at, start, f"Budget eng at {level:.0%}", 900.0, 1000.0, "$",
            level=level,
        )  # fmt: skip

    for minute in range(0, 150):  # 10:00 to 12:29, one cycle a minute
        at = start + timedelta(minutes=minute)
        level = 1.0 if minute >= 100 else 0.85  # 100 % crossed at 11:40
        incidents.apply([over(at, level)], at, current={"budget"})
    (row,) = list_alerts(store)
    kinds = [
        (r["kind"], r["at"].astimezone(UTC).strftime("%H:%M")) for r in alert_history(store, row["alert_id"])
    ]
    assert kinds == [
        ("opened", "10:00"),
        ("updated", "11:00"),  # a new clock hour
        ("updated", "11:40"),  # the 100 % threshold crossed: notified
        ("updated", "12:00"),
    ]
    assert row["updates"] == 3
