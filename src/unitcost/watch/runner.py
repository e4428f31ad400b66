"""The watch loop: roll up new events, judge the newly complete hours, fold findings into
incidents, hand notifications to the delivery thread. One cycle is `Watcher.run_once`;
`run_forever` and the `watch_task` coroutine (for hosting inside `unitcost serve`) repeat it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
import pyarrow as pa

from ..ledger.base import LedgerBusyError, Store
from .budgets import (
    BUDGET_DETECTOR,
    Budget,
    BudgetStatus,
    budget_findings,
    budget_status,
    unmatched_scope_note,
)
from .detectors.base import HOUR, Cleared, Context, Detector, Finding, floor_hour
from .incidents import Incidents, Notification, delivery_log, open_alerts
from .rollup import RollupResult, hourly_frame, roll_up, rollup_span
from .settings import WatchSettings
from .sinks import Dispatcher, Sink, build_sinks
from .state import WatchState
from .tables import ROLLUP_DIMS

log = logging.getLogger("unitcost.watch")

StoreOpener = Callable[[], contextlib.AbstractContextManager[Store]]
"""Opens the ledger for one cycle and closes it after (see `Watcher.run_forever`)."""

LEDGER_FREE_S = 1.0
"""A loop that reopens the ledger for each cycle leaves it free at least this long between
cycles, whatever the interval: a command waiting for the ledger tries again every half second
at most, so it always gets in (with no pause, an ingest could wait its whole lock wait)."""


@dataclass
class CycleReport:
    rollup: RollupResult
    hours_judged: int = 0
    findings: list[Finding] = field(default_factory=list)
    cleared: list[Cleared] = field(default_factory=list)
    """Incidents a detector found over this cycle (a model now priced), resolved with the findings."""
    notifications: list[Notification] = field(default_factory=list)
    seconds: float = 0.0

    def by_detector(self) -> Counter[str]:
        return Counter(f.detector for f in self.findings)


def _own_quiet_spells(detectors: Iterable[Detector]) -> dict[str, timedelta]:
    """The detectors whose incidents have a quiet spell of their own (a `resolve_after` attribute)."""
    spells: dict[str, timedelta] = {}
    for detector in detectors:
        spell = getattr(detector, "resolve_after", None)
        if isinstance(spell, timedelta):
            spells[detector.name] = spell
    return spells


class Watcher:
    def __init__(
        self,
        store: Store,
        settings: WatchSettings | None = None,
        *,
        sinks: list[Sink] | None = None,
        dispatcher: Dispatcher | None = None,
    ) -> None:
        self.store = store
        self.settings = settings or WatchSettings()
        self.state = WatchState(store)
        self.incidents = Incidents(
            store,
            cooldown=timedelta(minutes=self.settings.cooldown_minutes),
            resolve_after=timedelta(hours=self.settings.resolve_after_hours),
            # A detector with a quiet spell of its own (`unpriced_model`: a day) is not held to the
            # setting, which is for conditions that come and go.
            resolve_after_by=_own_quiet_spells(self.settings.detectors),
        )
        chosen = sinks if sinks is not None else build_sinks(self.settings.sinks)
        self.dispatcher = dispatcher or Dispatcher(chosen, on_result=self._record_delivery)
        self._scopes_checked: set[Budget] = set()
        # Deliveries end on the dispatcher's thread, maybe while the ledger is closed between
        # cycles: their log rows wait here until the next cycle opens it.
        self._store_lock = threading.Lock()
        self._attached = True
        self._unrecorded: list[pa.Table] = []

    def _record_delivery(self, notification: Notification, sink: str, ok: bool, message: str) -> None:
        row = delivery_log(notification.alert_id, sink, ok, message)
        with self._store_lock:
            if self._attached:
                self.store.insert("alert_log", row)
            else:
                self._unrecorded.append(row)

    def attach(self, store: Store) -> None:
        """Work on `store` from now on (the ledger reopened for a cycle), and write to it the
        deliveries that ended while no ledger was open."""
        with self._store_lock:
            self.store = self.state.store = self.incidents.store = store
            self._attached = True
            waiting, self._unrecorded = self._unrecorded, []
        if waiting:
            store.insert("alert_log", pa.concat_tables(waiting))

    @property
    def unrecorded(self) -> int:
        """Delivery results waiting for the ledger to be opened again."""
        with self._store_lock:
            return len(self._unrecorded)

    def detach(self) -> None:
        """The ledger is about to close: keep delivery results in memory until `attach`."""
        with self._store_lock:
            self._attached = False

    def run_once(self, now: datetime | None = None, backfill_hours: float | None = None) -> CycleReport:
        """One cycle. `now` (default: the clock) decides which hours are complete."""
        started = time.perf_counter()
        now = now or datetime.now(UTC)
        report = CycleReport(roll_up(self.store))
        eval_end = floor_hour(now)
        data_start, _ = rollup_span(self.store)
        backfill = timedelta(
            hours=backfill_hours if backfill_hours is not None else self.settings.backfill_hours
        )
        if data_start is not None:
            report.findings.extend(self._detect(eval_end, data_start, backfill, report))
        # A forecast alert already open is kept while the forecast stays inside its margin.
        open_keys = {row["key"] for row in open_alerts(self.store)} if self.settings.budgets else set()
        for budget in self.settings.budgets:
            status = budget_status(self.store, budget, now)
            self._check_scope(status)
            report.findings.extend(budget_findings(status, open_keys))
        # Every budget is judged every cycle, so one that is not found no longer holds.
        report.notifications = self.incidents.apply(
            report.findings, eval_end, current={BUDGET_DETECTOR}, judged_at=now, cleared=report.cleared
        )
        if report.notifications:
            self.dispatcher.submit(report.notifications)
        report.seconds = time.perf_counter() - started
        return report

    def _check_scope(self, status: BudgetStatus) -> None:
        """Say once per watcher that a budget's scope matches no event (a misspelt or wrongly cased
        name reads $0 forever). Only asked when the budget's recent days are empty, and once: the
        question reads the whole events table."""
        budget = status.budget
        if status.daily_days or budget in self._scopes_checked:
            return
        self._scopes_checked.add(budget)
        note = unmatched_scope_note(self.store, budget)
        if note:
            log.warning(note)

    def _detect(
        self, eval_end: datetime, data_start: datetime, backfill: timedelta, report: CycleReport
    ) -> list[Finding]:
        plans = []
        progress: list[tuple[str, datetime | None, dict[str, Any] | None]] = []
        for detector in self.settings.detectors:
            watermark, state = self.state.get(detector.name)
            first = watermark or max(floor_hour(data_start), eval_end - backfill)
            hours = list(pd.date_range(first, eval_end - HOUR, freq="h", tz="UTC").to_pydatetime())
            if hours:
                plans.append((detector, hours, state))
            elif watermark is None:
                progress.append((detector.name, eval_end, state))  # no backfill asked: start from now on
        if not plans:
            self.state.put_many(progress)
            return []
        report.hours_judged = max(len(h) for _, h, _ in plans)
        earliest = min(h[0] - d.lookback for d, h, _ in plans)
        frame = hourly_frame(self.store, earliest, eval_end).to_pandas()
        if not frame.empty:
            frame["hour"] = frame["hour"].astype("datetime64[ns, UTC]")
            for dim in ROLLUP_DIMS:  # plain objects: grouping Arrow-backed strings is slower here
                frame[dim] = frame[dim].astype(object)
        findings: list[Finding] = []
        for detector, hours, state in plans:
            start = hours[0] - detector.lookback
            ctx = Context(
                store=self.store,
                frame=frame[frame["hour"] >= pd.Timestamp(start)] if not frame.empty else frame,
                start=start,
                end=eval_end,
                eval_hours=hours,
                data_start=floor_hour(data_start),
                settings=self.settings.for_detector(detector),
                state=state,
            )
            try:
                findings.extend(detector.detect(ctx))
            except Exception:  # one broken detector must not silence the others
                log.exception("detector %s failed; its watermark is not advanced", detector.name)
                continue
            report.cleared.extend(ctx.cleared)
            progress.append((detector.name, eval_end, ctx.state))
        self.state.put_many(progress)
        return findings

    def run_forever(self, stop: threading.Event | None = None, *, reopen: StoreOpener | None = None) -> None:
        """Cycle until `stop` is set. With `reopen`, the ledger is opened for each cycle and closed
        after it: a DuckDB file has one writer process, and a loop that held it between cycles
        would lock out `unitcost ingest` and `unitcost alerts ack` for as long as it runs."""
        stop = stop or threading.Event()
        pause = self.settings.interval_s
        if reopen is not None:
            self.detach()
            pause = max(pause, LEDGER_FREE_S)
        while not stop.is_set():
            try:
                if reopen is None:
                    self._cycle()
                else:
                    with reopen() as store:
                        self.attach(store)
                        try:
                            self._cycle()
                        finally:
                            self.detach()
            except LedgerBusyError as exc:  # an ingest holds the ledger: its events are judged next time
                log.warning(
                    "watch cycle skipped: %s; next try in %g s (a server that owns the ledger can "
                    "watch it itself: `unitcost serve` does, the gateway with [gateway] watch = true)",
                    exc,
                    pause,
                )
            except Exception:  # keep watching: the next cycle starts from the same watermarks
                log.exception("watch cycle failed")
            stop.wait(pause)

    def _cycle(self) -> None:
        report = self.run_once()
        if report.notifications:
            log.info("watch cycle: %d notifications", len(report.notifications))

    def close(self, flush_timeout: float = 10.0) -> bool:
        """Wait up to `flush_timeout` seconds for deliveries, then stop; True if none is left."""
        return self.dispatcher.close(flush_timeout)


async def watch_task(watcher: Watcher, stop: asyncio.Event | None = None) -> None:
    """Run the watch loop inside an event loop (e.g. `unitcost serve`): cycles run in a worker
    thread, so the server keeps answering; cancel the task or set `stop` to end it."""
    await _cycles(
        lambda: asyncio.to_thread(watcher.run_once), watcher.settings.interval_s, stop or asyncio.Event()
    )


async def _cycles(
    cycle: Callable[[], Awaitable[CycleReport]], interval_s: float, stop: asyncio.Event
) -> None:
    """Await one cycle after another, `interval_s` apart, until `stop` is set."""
    while not stop.is_set():
        try:
            report = await cycle()
            if report.notifications:
                log.info("watch cycle: %d notifications", len(report.notifications))
        except Exception:  # keep watching: the next cycle starts from the same watermarks
            log.exception("watch cycle failed")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval_s)


class HostedWatch:
    """The watch loop inside a server whose ledger is owned by a writer thread (`unitcost serve`):
    each cycle is handed to that thread (`BatchWriter.call`) and runs between two commits, so the
    one write connection of a DuckDB ledger is never used by two threads at once, and the server
    keeps answering while a cycle runs."""

    def __init__(
        self,
        call: Callable[[Callable[[Any], CycleReport]], Future[CycleReport]],
        settings: WatchSettings,
        *,
        sinks: list[Sink] | None = None,
    ) -> None:
        self._call = call
        self.settings = settings
        # Built now, not with the watcher on the writer's thread: a sink that cannot be built (no
        # URL) stops the server before it listens rather than failing every cycle.
        self._sinks = sinks if sinks is not None else build_sinks(settings.sinks)
        self.watcher: Watcher | None = None
        self.cycles = 0

    def _cycle(self, ledger: Any) -> CycleReport:
        if self.watcher is None:  # built on the writer's thread, once its ledger is open
            self.watcher = Watcher(ledger.store, self.settings, sinks=self._sinks)
        report = self.watcher.run_once()
        self.cycles += 1
        return report

    async def run(self, stop: asyncio.Event) -> None:
        await _cycles(lambda: asyncio.wrap_future(self._call(self._cycle)), self.settings.interval_s, stop)

    def close(self, flush_timeout: float = 10.0) -> bool:
        """Wait up to `flush_timeout` s for deliveries (call before the writer closes the ledger)."""
        return self.watcher.close(flush_timeout) if self.watcher is not None else True
