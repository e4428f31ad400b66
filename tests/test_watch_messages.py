"""What alerts say: a missing team or feature reads as missing, and "since" is the first
anomalous hour, the same in every update of an incident."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from unitcost.watch.detectors.base import Finding
from unitcost.watch.incidents import Incidents, Notification
from unitcost.watch.runner import Watcher
from unitcost.watch.scope import Scope
from unitcost.watch.settings import WatchSettings

START = datetime(2025, 9, 1, tzinfo=UTC)
JUMP = datetime(2025, 9, 21, 10, tzinfo=UTC)
"""Calls cost ten times as much from 10:00 to 13:00; 09:00 is an ordinary hour, a little above
its usual cost."""
END = datetime(2025, 9, 21, 16, tzinfo=UTC)


def _untagged_traffic() -> list[dict[str, Any]]:
    """Three weeks of a call every 3 minutes with no team and no feature (the tester's case),
    and a model nobody priced on the last day."""
    rng = random.Random(5)
    records: list[dict[str, Any]] = []
    for minute in range(0, int((END - START).total_seconds() // 60), 3):
        ts = START + timedelta(minutes=minute)
        tokens = int(rng.gauss(20_000, 1_500))
        if JUMP <= ts < JUMP + timedelta(hours=3):
            tokens *= 10
        elif JUMP - timedelta(hours=1) <= ts < JUMP:
            tokens = int(tokens * 1.05)
        records.append(
            {
                "event_id": f"u-{minute}",
                "ts": ts.isoformat(),
                "model": "gpt-4o",
                "input_tokens": tokens,
                "trace_id": f"t-{minute // 15}",
            }
        )
    records.append(
        {
            "event_id": "acme",
            "ts": "2025-09-21T08:20:00Z",
            "model": "acme-7b",
            "provider": "acme",
            "input_tokens": 9,
        }
    )
    return records


@pytest.fixture(params=["hourly", "catch-up"])
def hourly(ledger: Any, request: pytest.FixtureRequest) -> tuple[list[Notification], list[Finding]]:
    """Cycles an hour apart, as `unitcost watch` runs them, or one cycle judging the last day
    (`--backfill-hours`): what they notified, and every finding of each detector (an update
    within the cool-down notifies nobody)."""
    records = _untagged_traffic()
    first_judged = datetime(2025, 9, 21, 6, tzinfo=UTC)
    early = [r for r in records if datetime.fromisoformat(r["ts"]) < first_judged]
    assert ledger.ingest_records(early, source="t").accepted == len(early)
    watcher = Watcher(ledger.store, WatchSettings(), sinks=[])
    notes: list[Notification] = []
    findings: list[Finding] = []
    if request.param == "catch-up":
        ledger.ingest_records(records[len(early) :], source="t")
        report = watcher.run_once(now=END, backfill_hours=24)
        watcher.close(0)
        return report.notifications, report.findings
    watcher.run_once(now=first_judged, backfill_hours=0)
    hour = first_judged
    while hour < END:
        batch = [r for r in records if hour <= datetime.fromisoformat(r["ts"]) < hour + timedelta(hours=1)]
        ledger.ingest_records(batch, source="t")
        hour += timedelta(hours=1)
        report = watcher.run_once(now=hour)
        notes.extend(report.notifications)
        findings.extend(report.findings)
    watcher.close(0)
    return notes, findings


def test_a_missing_team_or_feature_reads_as_missing(hourly: tuple[list[Notification], list[Finding]]) -> None:
    notes = hourly[0]
    assert {n.detector for n in notes} >= {"cost_per_hour", "cost_per_request", "unpriced_model"}
    for n in notes:
        payload = orjson.dumps(n.payload()).decode()
        for text in (n.message, payload):
            assert "=nan" not in text and '"nan"' not in text, text
            assert "=," not in text and "=]" not in text, text
    hour = next(n for n in notes if n.detector == "cost_per_hour")
    assert "[feature=(none),team=(none)]" in hour.message
    assert hour.payload()["scope"] == {"feature": None, "team": None}  # null in the webhook's JSON
    per_request = next(n for n in notes if n.detector == "cost_per_request")
    assert per_request.scope == {"feature": None}
    unpriced = next(n for n in notes if n.detector == "unpriced_model")
    assert "top contributors: feature=(none) calls with no cost" in unpriced.message
    assert unpriced.details["contributors"][0]["name"] is None


def test_since_is_the_first_anomalous_hour_in_every_update(
    hourly: tuple[list[Notification], list[Finding]],
) -> None:
    notes, findings = hourly
    for detector in ("cost_per_hour", "cost_per_request"):
        found = [f for f in findings if f.detector == detector]
        assert len(found) >= 2, [f.at for f in found]  # the incident seen in several cycles
        # Not 09:00 (an ordinary hour a little above its baseline), nor the first hour of a
        # 6-hour window (05:00, then 06:00 an hour later).
        assert {f.since for f in found} == {JUMP}, [f.message() for f in found]
        said = [n for n in notes if n.detector == detector]
        assert said and all("since: 2025-09-21 10:00 UTC" in n.message for n in said)


def test_an_update_does_not_move_since_forward(tmp_path: Any) -> None:
    from unitcost.ledger.duckdb_store import DuckDBStore

    store = DuckDBStore(tmp_path / "l.duckdb")
    incidents = Incidents(store, cooldown=timedelta(0), resolve_after=timedelta(hours=3))
    scope = Scope.of(feature="answer")

    def seen(hour: int, since: int, observed: float) -> list[Notification]:
        at = JUMP + timedelta(hours=hour)
        finding = Finding(
            "cost_per_request",
            scope,
            at,
            JUMP + timedelta(hours=since),
            "Cost per request up",
            observed,
            1.0,
            "$",
        )
        return incidents.apply([finding], at)

    assert [n.kind for n in seen(1, 0, 2.0)] == ["opened"]
    # A trailing window that has moved on: the detector now sees the run from a later hour.
    (updated,) = seen(2, 1, 4.0)
    assert updated.kind == "updated"
    assert updated.details["since"] == JUMP.isoformat()
    assert "since: 2025-09-21 10:00 UTC" in updated.message
    store.close()
