"""The watch part of `unitcost demo`: replay the demo month through the detectors."""

from __future__ import annotations

from datetime import UTC, datetime

from rich.console import Console

from ..ledger.base import Store
from .runner import Watcher
from .settings import WatchSettings

HIGHLIGHT = ("runaway_trace", "tokens_per_request", "unpriced_model")


def print_demo_alerts(store: Store, out: Console, until: datetime, days: int) -> None:
    """Judge every hour of the demo month as the watch loop would have, hour after hour."""
    watcher = Watcher(store, WatchSettings(), sinks=[])
    try:
        report = watcher.run_once(now=until.astimezone(UTC), backfill_hours=24 * days)
    finally:
        watcher.close(flush_timeout=0)
    opened = [n for n in report.notifications if n.kind == "opened"]
    counts: dict[str, int] = {}
    for n in opened:
        counts[n.detector] = counts.get(n.detector, 0) + 1
    out.print(
        f"Watch: replayed {report.hours_judged} hours through the detectors in {report.seconds:.1f} s: "
        f"{len(opened)} incidents ("
        + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
        + "). The planted ones:",
        markup=False,
    )
    for n in opened:
        if n.detector in HIGHLIGHT:
            out.print(f"\n[{n.detector}] alert {n.alert_id}\n{n.message}", markup=False)
    out.print("\nAll of them: unitcost alerts -l <ledger>; details: unitcost alerts show <id>.", markup=False)
