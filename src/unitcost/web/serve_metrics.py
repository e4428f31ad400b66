"""`/metrics` of `unitcost serve`, in Prometheus' text format, from a registry of its own.

The counters are the server's own tallies, read at scrape time (the receiver's and the writer's:
nothing is counted twice); the watch cycles are timed as they run. The gauges read from the
ledger are computed at scrape time on cursors of the server's store: the open alerts (a small
table) and each budget's spend to date, amount and share used (`budget_status`, the numbers of
`unitcost budgets`). A scrape that cannot read the ledger still answers, with
`unitcost_ledger_read_ok 0`, so the writer's and the receiver's counters are never lost to it.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from ..prometheus_text import CONTENT_TYPE, exposition

if TYPE_CHECKING:
    from ..api import Ledger
    from ..connectors.writer import BatchWriter
    from ..otlp.receiver import TraceReceiver
    from ..watch.budgets import Budget
    from .api import ApiSettings, LedgerSource

log = logging.getLogger("unitcost.metrics")

Call = Callable[[Callable[["Ledger"], Any]], Future[Any]]


class ServeMetrics:
    """The metrics of one server: `routes()` serves them, `timed(call)` times the watch cycles."""

    def __init__(
        self,
        receiver: TraceReceiver,
        writer: BatchWriter,
        source: LedgerSource,
        *,
        budgets: Sequence[Budget] = (),
        settings: ApiSettings | None = None,
    ) -> None:
        self.receiver = receiver
        self.writer = writer
        self.source = source
        self.budgets = list(budgets)
        self.settings = settings
        self.registry = CollectorRegistry(auto_describe=True)
        self.cycles = 0
        self.cycle_failures = 0
        self.cycle_seconds = Histogram(
            "unitcost_watch_cycle_seconds",
            "Duration of the watch cycles (roll-up, detectors, budgets, incidents).",
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=self.registry,
        )
        self.registry.register(_Collector(self))

    def timed(self, call: Call) -> Call:
        """`call` (the writer's) with each watch cycle it runs counted and timed."""

        def timed_call(fn: Callable[[Ledger], Any]) -> Future[Any]:
            def cycle(ledger: Ledger) -> Any:
                try:
                    report = fn(ledger)
                except BaseException:
                    self.cycle_failures += 1
                    raise
                self.cycles += 1
                seconds = getattr(report, "seconds", None)
                if isinstance(seconds, float):
                    self.cycle_seconds.observe(seconds)
                return report

            return call(cycle)

        return timed_call

    def routes(self) -> list[BaseRoute]:
        return [Route("/metrics", self.endpoint, methods=["GET"])]

    async def endpoint(self, request: Request) -> Response:
        if self.settings is not None:
            refusal = self.settings.refusal(request)
            if refusal is not None:
                return refusal
        # The ledger gauges read the ledger: in a worker thread, not on the event loop.
        body = await run_in_threadpool(exposition, self.registry)
        return Response(body, media_type=CONTENT_TYPE)


class _Collector:
    """Reads the tallies and the ledger when Prometheus scrapes, not before."""

    def __init__(self, metrics: ServeMetrics) -> None:
        self.metrics = metrics

    def describe(self) -> list[Metric]:
        # Described without reading the ledger (registration would otherwise read it).
        return []

    def collect(self) -> Iterator[Metric]:
        m = self.metrics
        stats, writer = m.receiver.stats, m.writer
        requests = CounterMetricFamily("unitcost_otlp_requests", "OTLP export requests decoded.")
        requests.add_metric([], stats.requests)
        yield requests
        spans = CounterMetricFamily(
            "unitcost_otlp_spans",
            "Spans received, by outcome: accepted (new events), duplicate (already in the ledger), "
            "rejected (could not become an event; the exporter was told why), ignored (not a GenAI call).",
            labels=["outcome"],
        )
        for outcome, count in (
            ("accepted", stats.spans_accepted),
            ("duplicate", stats.spans_duplicate),
            ("rejected", stats.spans_rejected),
            ("ignored", stats.spans_ignored),
        ):
            spans.add_metric([outcome], count)
        yield spans
        received = CounterMetricFamily("unitcost_otlp_spans_received", "Spans received, every outcome.")
        received.add_metric(
            [], stats.spans_accepted + stats.spans_duplicate + stats.spans_rejected + stats.spans_ignored
        )
        yield received
        for name, doc, value in (
            (
                "unitcost_events_unpriced",
                "Events written with no price (cost unknown, not zero).",
                writer.events_unpriced,
            ),
            ("unitcost_writer_commits", "Ledger commits of the writer.", writer.commits),
            (
                "unitcost_writer_events",
                "Events the writer has committed (duplicates included).",
                writer.events_written,
            ),
            (
                "unitcost_writer_failures",
                "Commits that failed (the producers were told to retry).",
                writer.failures,
            ),
            ("unitcost_writer_seconds", "Time the writer spent writing.", writer.write_seconds),
            ("unitcost_watch_cycles", "Watch cycles run.", m.cycles),
            ("unitcost_watch_cycle_failures", "Watch cycles that failed (logged).", m.cycle_failures),
        ):
            counter = CounterMetricFamily(name, doc)
            counter.add_metric([], value)
            yield counter
        pending = GaugeMetricFamily("unitcost_writer_pending_events", "Events waiting for the writer.")
        pending.add_metric([], writer.pending)
        yield pending
        yield from self._ledger_gauges()

    def _ledger_gauges(self) -> Iterator[Metric]:
        from ..watch.budgets import budget_status
        from ..watch.incidents import open_alerts

        m = self.metrics
        ok = GaugeMetricFamily(
            "unitcost_ledger_read_ok", "1 when this scrape could read the alerts and budgets from the ledger."
        )
        try:
            store = m.source.ledger().store
            alerts = Counter((r["detector"], r["severity"] or "", r["status"]) for r in open_alerts(store))
            now = datetime.now(UTC)
            statuses = [budget_status(store, budget, now) for budget in m.budgets]
        except Exception as exc:  # the counters above are still worth a scrape
            log.warning("/metrics: the ledger could not be read: %s", exc)
            ok.add_metric([], 0)
            yield ok
            return
        ok.add_metric([], 1)
        yield ok
        open_gauge = GaugeMetricFamily(
            "unitcost_alerts_open",
            "Alerts not resolved, by detector, severity and status (open or acknowledged).",
            labels=["detector", "severity", "status"],
        )
        for (detector, severity, status), count in sorted(alerts.items()):
            open_gauge.add_metric([detector, severity, status], count)
        yield open_gauge
        labels = ["budget", "scope", "period"]
        spent = GaugeMetricFamily(
            "unitcost_budget_spent_usd", "Priced spend of the period so far.", labels=labels
        )
        amount = GaugeMetricFamily("unitcost_budget_amount_usd", "The budget's amount.", labels=labels)
        used = GaugeMetricFamily("unitcost_budget_used_ratio", "Spent / amount.", labels=labels)
        forecast = GaugeMetricFamily(
            "unitcost_budget_forecast_usd",
            "Spend at period end at the current pace (absent before a day of data).",
            labels=labels,
        )
        unpriced = GaugeMetricFamily(
            "unitcost_budget_unpriced_calls",
            "Calls in scope this period with no price (not in spent).",
            labels=labels,
        )
        for status in statuses:
            key = [status.budget.name, status.budget.scope.label, status.budget.period]
            spent.add_metric(key, float(status.spent))
            amount.add_metric(key, float(status.budget.amount))
            used.add_metric(key, status.used)
            if status.forecast is not None:
                forecast.add_metric(key, float(status.forecast))
            unpriced.add_metric(key, status.unpriced_calls)
        yield from (spent, amount, used, forecast, unpriced)
