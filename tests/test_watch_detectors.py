"""The detectors find each injected incident, on the right scope, with an explanation, and
hour-by-hour cycles find the same incidents as one catch-up cycle (detection is incremental)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from unitcost.ledger.duckdb_store import DuckDBStore
from unitcost.watch.runner import Watcher
from unitcost.watch.settings import WatchSettings
from unitcost.watch.synthetic import FEATURES, Incident, Workload

START = datetime(2025, 3, 3, tzinfo=UTC)  # a Monday
DAYS = 10
EVAL = START + timedelta(days=8)  # Tuesday 11 March: a week of history before it
SMALL = tuple(replace(f, peak_calls=f.peak_calls / 3) for f in FEATURES)
BY_NAME = {f.feature: f for f in SMALL}


def incidents() -> list[Incident]:
    at = EVAL + timedelta(hours=9)
    return [
        Incident("cost_spike", BY_NAME["review"], at, 3, 2.5),
        Incident("token_leak", BY_NAME["triage"], at + timedelta(hours=1), 40, 1.4),
        Incident("price_rise", BY_NAME["answer"], at, 40, 1.35),
        Incident("retry_storm", BY_NAME["reply"], at, 12, 0.25),
        Incident("runaway", BY_NAME["agent"], at + timedelta(hours=2), 4, 150),
        Incident("unpriced_model", BY_NAME["rewrite"], at + timedelta(hours=3), 40, 1.0),
        Incident("billed_drift", BY_NAME["reply"], at, 40, 1.08),
    ]


def _ledger(path: Path, workload: Workload) -> DuckDBStore:
    store = DuckDBStore(path)
    store.append(workload.events(START, EVAL, ingested_at=EVAL))
    return store


@pytest.fixture(scope="module")
def workload() -> Workload:
    return Workload(START, DAYS, seed=11, features=SMALL, incidents=incidents())


@pytest.fixture(scope="module")
def caught_up(workload: Workload, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """One catch-up cycle over the two evaluation days."""
    store = _ledger(tmp_path_factory.mktemp("watch") / "l.duckdb", workload)
    end = START + timedelta(days=DAYS)
    store.append(workload.events(EVAL, end, ingested_at=end))
    watcher = Watcher(store, WatchSettings(), sinks=[])
    report = watcher.run_once(now=end, backfill_hours=48)
    watcher.close(0)
    yield {"report": report, "store": store}
    store.close()


def _opened(report: Any, detector: str) -> list[Any]:
    return [n for n in report.notifications if n.detector == detector and n.kind in ("opened", "resolved")]


def test_each_injected_incident_is_found_on_its_scope(caught_up: dict[str, Any]) -> None:
    report = caught_up["report"]
    by_detector = {n.detector for n in report.notifications}
    for incident in incidents():
        assert incident.detector in by_detector, f"{incident.kind} was not detected"
    leak = _opened(report, "tokens_per_request")
    # The runaway agent's growing context also lifts its feature's tokens per request: a true finding.
    assert {n.details["scope"]["feature"] for n in leak} <= {"triage", "agent"}
    triage = next(n for n in leak if n.details["scope"]["feature"] == "triage")
    assert triage.details["since"].startswith("2025-03-11T10:00")  # the change point, not a later crossing
    assert triage.details["change"] >= 0.25
    runaway = _opened(report, "runaway_trace")
    assert runaway and all(n.details["scope"] == {"feature": "agent"} for n in runaway)
    assert "runaway" in runaway[0].details["subject"]
    unpriced = _opened(report, "unpriced_model")
    assert next(n.details["scope"] for n in unpriced) == {"model": "selfhosted-llm", "provider": "selfhosted"}
    drift = _opened(report, "billed_drift")
    assert drift and drift[0].details["scope"] == {"provider": "anthropic"}
    assert drift[0].details["observed"] > drift[0].details["expected"] * 1.02


def test_cost_spike_is_explained_with_contributors(caught_up: dict[str, Any]) -> None:
    spikes = [
        n for n in caught_up["report"].notifications if n.detector == "cost_per_hour" and n.kind == "opened"
    ]
    # The finest scope that explains it: legal's only feature, not the team as well (one alert).
    legal = [n for n in spikes if n.details["scope"].get("team") == "legal"]
    assert [n.details["scope"] for n in legal] == [{"team": "legal", "feature": "review"}]
    assert legal, [n.details["scope"] for n in spikes]
    alert = legal[0]
    assert alert.details["since"].startswith("2025-03-11T09:00")
    top = alert.details["contributors"][0]
    assert (top["dimension"], top["name"]) in {("feature", "review"), ("model", "gpt-4.1")}
    assert (
        "what changed" in alert.message and "since" in alert.message and "top contributors" in alert.message
    )


def test_quiet_features_raise_nothing(caught_up: dict[str, Any]) -> None:
    # Only the injected features (and the runaway's own feature) raise tokens or waste alerts.
    notes = caught_up["report"].notifications
    assert not [
        n
        for n in notes
        if n.detector == "tokens_per_request" and n.details["scope"]["feature"] not in ("triage", "agent")
    ]
    assert not [
        n
        for n in notes
        if n.detector == "retry_waste" and n.details["scope"].get("team", "support") != "support"
    ]


def test_alert_history_is_in_the_ledger(caught_up: dict[str, Any]) -> None:
    store = caught_up["store"]
    kinds = {r["kind"] for r in store.fetch("SELECT DISTINCT kind FROM alert_log").to_pylist()}
    assert {"opened", "updated"} <= kinds
    one_per_incident = store.fetch(
        "SELECT count(*) AS n FROM alerts WHERE detector = 'tokens_per_request' AND scope LIKE 'feature=triage%'"
    ).to_pylist()[0]["n"]
    assert one_per_incident == 1  # one incident, many hourly findings: one alert with updates


def test_hourly_cycles_find_what_one_catch_up_finds(workload: Workload, tmp_path: Path) -> None:
    """Incremental: each cycle rolls up only the new hour, yet the incidents are the same."""
    end = EVAL + timedelta(hours=13)

    def keys(hourly: bool, path: Path) -> set[str]:
        store = _ledger(path, workload)
        watcher = Watcher(store, WatchSettings(), sinks=[])
        watcher.run_once(now=EVAL, backfill_hours=0)
        found: set[str] = set()
        if hourly:
            hour = EVAL
            while hour < end:
                store.append(workload.events(hour, hour + timedelta(hours=1)))
                report = watcher.run_once(now=hour + timedelta(hours=1))
                assert report.rollup.events == workload.events(hour, hour + timedelta(hours=1)).num_rows
                found |= {n.key for n in report.notifications if n.kind == "opened"}
                hour += timedelta(hours=1)
        else:
            store.append(workload.events(EVAL, end, ingested_at=end))
            report = watcher.run_once(now=end)
            found = {n.key for n in report.notifications if n.kind == "opened"}
        watcher.close(0)
        store.close()
        return found

    hourly = keys(True, tmp_path / "hourly.duckdb")
    batch = keys(False, tmp_path / "batch.duckdb")
    assert hourly == batch
    assert any(k.startswith("tokens_per_request:") for k in hourly)


def test_rollup_counts_late_events_once(workload: Workload, tmp_path: Path) -> None:
    from unitcost.watch.rollup import roll_up

    store = DuckDBStore(tmp_path / "late.duckdb")
    first = workload.events(EVAL, EVAL + timedelta(hours=2), ingested_at=EVAL + timedelta(hours=2))
    store.append(first)
    assert roll_up(store).events == first.num_rows
    assert roll_up(store).events == 0  # nothing new: nothing read again
    late = workload.events(EVAL - timedelta(hours=1), EVAL, ingested_at=EVAL + timedelta(hours=3))
    store.append(late)
    result = roll_up(store)
    assert result.events == late.num_rows
    assert result.first_hour == EVAL - timedelta(hours=1)
    totals = store.fetch(
        "SELECT CAST(sum(calls) AS BIGINT) AS n, sum(cost) AS c FROM watch_hourly"
    ).to_pylist()[0]
    events = store.fetch("SELECT count(*) AS n, sum(cost) AS c FROM events").to_pylist()[0]
    assert totals["n"] == events["n"]
    assert totals["c"] == events["c"]  # exact: Decimal sums, not floats
    store.close()
