"""Evaluate the watch detectors on seeded, labelled synthetic workloads.

Each seed generates four weeks of traffic with weekly seasonality and noise, and injects
one incident of each kind (cost spike, prompt-change token leak, price rise, retry storm,
runaway agent, new unpriced model, billed-cost drift) at random weekday hours in the last
four days. Three weeks of history are written at once; then the last days are replayed
hour by hour exactly as `unitcost watch` sees them: one hour of new events, one cycle.

Scoring, per detector:
- recall: share of the injected incidents of its kind that it reported on a compatible
  scope between the incident's start and 24 h after its end (a new alert, or an update of
  an incident already open on that scope);
- precision: share of its alerts that match any injected incident (compatible scope, same
  time window) - an alert on a real change of another kind (a retry storm raising cost per
  hour) is not a false positive; an alert with no incident behind it is;
- time to detect: alert time (end of the hour it was seen in) minus incident start.

    .venv/bin/python bench/watch_eval.py --seeds 8
    .venv/bin/python bench/watch_eval.py --seeds 6 --first-seed 7    # other seeds
    .venv/bin/python bench/watch_eval.py --seeds 6 --no-incidents     # false alerts alone
    .venv/bin/python bench/watch_eval.py --seeds 6 --set cost_per_hour.sigmas=3.5

With --no-incidents nothing is injected: the same replay then counts false alerts on every
scope and hour, where with incidents the scopes and hours near an incident are excused.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from unitcost.ledger.duckdb_store import DuckDBStore
from unitcost.watch.detectors import all_detectors
from unitcost.watch.runner import Watcher
from unitcost.watch.scope import ScopedValue
from unitcost.watch.settings import WatchSettings
from unitcost.watch.synthetic import DETECTOR_FOR, Incident, Workload, default_incidents

START = datetime(2025, 3, 3, tzinfo=UTC)  # a Monday
DAYS = 28
EVAL_HOURS = 96
GRACE = timedelta(hours=24)


def compatible(scope: dict[str, Any], incident: Incident) -> bool:
    f = incident.feature
    allowed = {
        "team": {f.team},
        "app": {f.team},
        "feature": {f.feature},
        "provider": {f.provider, "selfhosted"},
        "model": {f.model, "selfhosted-llm"},
    }
    return all(value in allowed.get(key, {value}) for key, value in scope.items())


def matches(alert: dict[str, Any], incident: Incident) -> bool:
    """Seen after the incident began (at least its first hour judged), on a compatible scope."""
    at = alert["at"]
    return incident.start < at <= incident.end + GRACE and compatible(alert["scope"], incident)


def run_seed(
    seed: int, workdir: Path, inject: bool = True, settings: WatchSettings | None = None
) -> tuple[list[Incident], list[dict[str, Any]], list[dict[str, Any]], list[float]]:
    eval_start = START + timedelta(days=DAYS) - timedelta(hours=EVAL_HOURS)
    workload = Workload(START, DAYS, seed)
    if inject:
        workload.incidents = default_incidents(np.random.default_rng(seed), eval_start, EVAL_HOURS - 26)
    store = DuckDBStore(workdir / f"eval-{seed}.duckdb")
    store.append(workload.events(START, eval_start, ingested_at=eval_start))
    watcher = Watcher(store, settings or WatchSettings(), sinks=[])
    watcher.run_once(now=eval_start, backfill_hours=0)
    alerts: list[dict[str, Any]] = []
    findings: list[dict[str, Any]] = []
    cycle_seconds: list[float] = []
    hour = eval_start
    while hour < START + timedelta(days=DAYS):
        store.append(workload.events(hour, hour + timedelta(hours=1)))
        report = watcher.run_once(now=hour + timedelta(hours=1, minutes=1))
        cycle_seconds.append(report.seconds)
        for f in report.findings:
            findings.append({"detector": f.detector, "scope": f.scope.as_dict(), "at": f.at, "seed": seed})
        for n in report.notifications:
            if n.kind == "opened":
                alerts.append(
                    {
                        "detector": n.detector,
                        "scope": n.details.get("scope", {}),
                        "at": datetime.fromisoformat(n.details["at"]),
                        "since": n.details["since"],
                        "title": n.title,
                        "seed": seed,
                    }
                )
        hour += timedelta(hours=1)
    watcher.close(0)
    store.close()
    return workload.incidents, alerts, findings, cycle_seconds


def tuned(assignments: list[str]) -> WatchSettings:
    """Default settings with some detectors' parameters replaced (values read as JSON)."""
    settings = WatchSettings()
    for assignment in assignments:
        name, _, raw = assignment.partition("=")
        detector_name, _, key = name.partition(".")
        detector = next(d for d in settings.detectors if d.name == detector_name)
        current = settings.for_detector(detector)
        settings.tuning[detector_name] = ScopedValue({**current.default, key: json.loads(raw)})
    return settings


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--first-seed", type=int, default=1)
    parser.add_argument(
        "--no-incidents",
        action="store_true",
        help="inject nothing: every alert is a false positive, on every scope and hour",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="DETECTOR.KEY=VALUE",
        help="another sensitivity than the default, e.g. cost_per_hour.sigmas=3.5 (repeatable)",
    )
    args = parser.parse_args()
    settings = tuned(args.set)
    started = time.perf_counter()
    incidents: list[Incident] = []
    alerts: list[dict[str, Any]] = []
    findings: list[dict[str, Any]] = []
    cycles: list[float] = []
    with tempfile.TemporaryDirectory(prefix="unitcost-watch-eval-") as tmp:
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            seed_incidents, seed_alerts, seed_findings, seed_cycles = run_seed(
                seed, Path(tmp), inject=not args.no_incidents, settings=settings
            )
            findings.extend(seed_findings)
            for a in seed_alerts:
                a["incidents"] = [i for i in seed_incidents if matches(a, i)]
            incidents.extend((seed, i) for i in seed_incidents)  # type: ignore[misc]
            alerts.extend(seed_alerts)
            cycles.extend(seed_cycles)
            print(f"seed {seed}: {len(seed_incidents)} incidents, {len(seed_alerts)} alerts", flush=True)
    rows = []
    false_positives = []
    for detector in [d.name for d in all_detectors()]:
        own = [(s, i) for s, i in incidents if i.detector == detector]  # type: ignore[misc]
        mine = [a for a in alerts if a["detector"] == detector]
        seen = [f for f in findings if f["detector"] == detector]
        ttd = []
        found = 0
        for seed, incident in own:
            # Detected = the detector reported it, as a new alert or as an update of an incident
            # already open on that scope (a spike right after a runaway on the same team).
            hits = [f for f in seen if f["seed"] == seed and matches(f, incident)]
            if hits:
                found += 1
                ttd.append((min(a["at"] for a in hits) - incident.start).total_seconds() / 3600)
        good = [a for a in mine if a["incidents"]]
        false_positives.extend(a for a in mine if not a["incidents"])
        rows.append(
            {
                "detector": detector,
                "incidents": len(own),
                "detected": found,
                "recall": found / len(own) if own else float("nan"),
                "alerts": len(mine),
                "false_pos": len(mine) - len(good),
                "precision": len(good) / len(mine) if mine else float("nan"),
                "median_ttd_h": statistics.median(ttd) if ttd else float("nan"),
            }
        )
    print()
    print(
        "| detector | injected | detected | recall | alerts | false positives | precision | median TTD (h) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['detector']} | {r['incidents']} | {r['detected']} | {r['recall']:.2f} | {r['alerts']} | "
            f"{r['false_pos']} | {r['precision']:.2f} | {r['median_ttd_h']:.1f} |"
        )
    print()
    print("False positives:")
    for a in false_positives:
        print(f"- seed {a['seed']} {a['detector']} {a['scope']} at {a['at']:%Y-%m-%d %H:%M}: {a['title']}")
    by_kind: dict[str, int] = defaultdict(int)
    for _, i in incidents:  # type: ignore[misc]
        by_kind[i.kind] += 1
    print()
    print(f"Injected: {dict(by_kind)}; mapping {DETECTOR_FOR}")
    print(
        f"Watch cycle (one new hour): median {statistics.median(cycles) * 1000:.0f} ms, "
        f"max {max(cycles) * 1000:.0f} ms over {len(cycles)} cycles; total {time.perf_counter() - started:.0f} s"
    )


if __name__ == "__main__":
    main()
