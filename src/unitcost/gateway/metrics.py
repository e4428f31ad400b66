"""Prometheus `GET /metrics` of one gateway replica: what it answered, spent and enforces.

Counters and histograms are fed on the request path by plain increments (label children are
looked up once and kept); what prompt caching saved comes with the call's price, from the
same quote; everything that must be read (budget lines in the shared state, the
spool's backlog, the ledger writer's counters) is read when Prometheus scrapes, never per
request. Each gateway has its own `CollectorRegistry`, so several gateways in one process do
not mix their figures.

Money here is a float, for monitoring: the spend counter is fed from each call's exact Decimal
cost, so it agrees with the ledger to float precision, and the ledger stays the source of truth.
A call with no price adds nothing to spend: it is counted apart (`unpriced_calls`), never as $0.

Labels are bounded: providers and models come from the configuration (a model the
configuration does not name is "other"), teams from the virtual keys and the budgets (a team
named only by a request header is "other", none is "none"). No label carries a user, a key, a
trace or any other raw request value, and no secret.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from ..config import ConfigError
from ..pricing.book import PriceBook
from ..prometheus_text import exposition
from .budgets import BudgetState, Line, lines_for, nano_to_usd
from .config import Budget, GatewayConfig
from .records import Attempt, Priced
from .spool import Spool, read_checkpoint, segment_name, segments

log = logging.getLogger("unitcost.gateway.metrics")

NONE = "none"
OTHER = "other"

# Seconds. An LLM call takes from a fraction of a second (a short completion) to minutes (a
# long reasoning answer); the first token of a stream comes within a few seconds.
LATENCY_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 3, 5, 8, 13, 20, 30, 45, 60, 90, 120, 180, 300, 600)
TTFT_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 3, 5, 8, 13, 20, 30, 60)
OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1)
BUDGET_READ_TIMEOUT_S = 3.0
"""A scrape gives up on the budget state after this (Prometheus' own scrape timeout is 10 s)."""

# Upstream statuses that are the request's fault, not the provider's.
_CLIENT_STATUSES = frozenset({400, 404, 413, 422})


def outcome_of(status: int, last: Attempt | None) -> str:
    """A proxied request's outcome label from its HTTP status and its last upstream attempt."""
    if last is None:
        return "gateway_error"
    if last.status in ("timeout", "cancelled"):
        return last.status
    if last.http_status == 429:
        return "rate_limited"
    if last.http_status in _CLIENT_STATUSES:
        return "client_error"
    if status >= 400 or last.status != "ok":
        return "upstream_error"
    return "ok"


def metrics_token(config: GatewayConfig) -> str | None:
    """The bearer token /metrics requires, or None. A token variable that is named but not set
    stops the gateway: serving the figures unprotected is not what the file asked for."""
    name = config.metrics_token_env
    if not config.metrics_enabled or name is None:
        return None
    token = os.environ.get(name, "").strip()
    if not token:
        raise ConfigError(
            f"[gateway.metrics] bearer_token_env names {name}, which is not set (or empty): set it, "
            "or remove bearer_token_env to serve /metrics without a token"
        )
    return token


def authorized(header: str | None, token: str) -> bool:
    """`Authorization: Bearer <token>`, compared in constant time."""
    if not header or header[:7].lower() != "bearer ":
        return False
    return hmac.compare_digest(header[7:].strip().encode(), token.encode())


class Metrics:
    """What the request path reports. This base does nothing: the gateway's metrics are off."""

    def request(self, route: str, provider: str, model: str, team: str | None, outcome: str) -> None:
        """One client request answered, by outcome (ok, upstream_error, timeout, ...)."""

    def attempt(self, attempt: Attempt, team: str | None, priced: Priced) -> None:
        """One upstream attempt (retries and fallbacks included): tokens, spend, latency."""

    def cache_hit(self, attempt: Attempt, team: str | None, saved: Decimal | None) -> None:
        """A request answered from the response cache, and what it would have cost."""

    def refusal(self, budget: str, reason: str) -> None:
        """A request a budget refused: reason limit_usd, max_calls or unpriced_model."""

    def model_refusal(self, route: str, model: str, team: str | None) -> None:
        """A request for a model its virtual key may not call (the key's `models` list)."""

    def downgrade(self, budget: str) -> None:
        """A request a budget sent to a cheaper model."""

    def alert(self, budget: str) -> None:
        """A budget line crossed its alert threshold."""

    def overhead(self, seconds: float) -> None:
        """The gateway's own time on a request (not the upstream's)."""

    def spool_failure(self) -> None:
        """An event the spool could not write (the request failed with it)."""


class _Children:
    """A labelled metric's children, looked up once: `labels()` takes a lock and builds a key
    on every call, a dictionary hit does not. Bounded, since every label value is."""

    def __init__(self, metric: Any) -> None:
        self.metric = metric
        self.children: dict[tuple[str, ...], Any] = {}

    def __call__(self, *labels: str) -> Any:
        child = self.children.get(labels)
        if child is None:
            child = self.children[labels] = self.metric.labels(*labels)
        return child


def _scoped_attrs(budget: Budget, value: str) -> dict[str, Any]:
    """Attribution under which `budget` applies to `value` (to rebuild its line's key)."""
    if budget.scope == "global":
        return {}
    if budget.scope.startswith("tag:"):
        return {"tags": {budget.scope[4:]: value}}
    return {budget.scope: value}


def reported_lines(config: GatewayConfig, now: datetime) -> list[Line]:
    """The budget lines /metrics reports: one per budget of the whole gateway (global), of one
    named value (`match`), or of each team or app the virtual keys name. Budgets per user, key,
    trace, session, customer or tag value have one line per value a request brings: not
    reported (their refusals are)."""
    named: dict[str, list[str]] = {
        "team": sorted({k.team for k in config.keys if k.team}),
        "app": sorted({k.app for k in config.keys if k.app}),
    }
    lines: list[Line] = []
    for budget in config.budgets:
        if budget.match is not None:
            values = [budget.match]
        elif budget.scope == "global":
            values = ["*"]
        else:
            values = named.get(budget.scope, [])
        for value in values:
            lines += lines_for([budget], _scoped_attrs(budget, value), config.redis_prefix, now)
    return lines


def spool_backlog_bytes(directory: Path) -> int:
    """Bytes spooled and not yet moved into the ledger (after the writer's checkpoint)."""
    done_segment, done_offset = read_checkpoint(directory)
    backlog = 0
    for number in segments(directory):
        if number < done_segment:
            continue
        with contextlib.suppress(FileNotFoundError):  # removed by the writer meanwhile
            size = (directory / segment_name(number)).stat().st_size
            backlog += max(size - (done_offset if number == done_segment else 0), 0)
    return backlog


class _ScrapeTime:
    """Families read when Prometheus scrapes: budget lines, spool, ledger writer."""

    def __init__(self, owner: GatewayMetrics) -> None:
        self.owner = owner

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        yield from self.owner.scrape_families()


class GatewayMetrics(Metrics):
    def __init__(self, config: GatewayConfig, book: PriceBook, spool: Spool, budgets: BudgetState) -> None:
        self.config = config
        self.book = book
        self.spool = spool
        self.budgets = budgets
        self.writer: Any = None
        """The LedgerWriter, once `server.py` has started it (None: no writer to report)."""
        self.spool_failures = 0
        self._budget_read: list[tuple[Line, int, int]] | None = []
        models: set[str] = {t.model for t in config.models.values()}
        for upstream in config.upstreams.values():
            models.update(upstream.models)
        self._models = frozenset(models)
        self._public = frozenset(config.public_models())
        teams = {k.team for k in config.keys if k.team}
        teams.update(b.match for b in config.budgets if b.scope == "team" and b.match)
        self._teams = frozenset(teams)

        self.registry = CollectorRegistry()
        r = self.registry
        by_model = ["provider", "model"]
        spend_labels = ["provider", "model", "team"]
        self._requests = _Children(
            Counter(
                "unitcost_gateway_requests",
                "Client requests answered, by API route and outcome (ok, upstream_error, timeout, "
                "rate_limited, client_error, model_refused, budget_refused, budget_unavailable, "
                "cache_hit, cancelled, gateway_error). Not counted: /metrics, /health, /v1/models.",
                ["route", "provider", "model", "team", "outcome"],
                registry=r,
            )
        )
        self._attempts = _Children(
            Counter(
                "unitcost_gateway_upstream_attempts",
                "Calls to an upstream, retries and fallbacks each counted, by status (ok, error, "
                "timeout, cancelled).",
                [*by_model, "status"],
                registry=r,
            )
        )
        self._tokens = _Children(
            Counter(
                "unitcost_gateway_tokens",
                "Tokens the upstreams reported, by kind. Kinds do not overlap: input_uncached + "
                "cache_read + cache_write = input tokens, output + reasoning = output tokens. "
                "Answers from the response cache are not counted (no upstream processed them).",
                [*spend_labels, "kind"],
                registry=r,
            )
        )
        self._spend = _Children(
            Counter(
                "unitcost_gateway_spend_usd",
                "What the calls cost, in USD, from each call's exact price (a float for monitoring: "
                "the ledger is the source of truth). Calls with no price are in unpriced_calls, "
                "not here.",
                spend_labels,
                registry=r,
            )
        )
        self._unpriced = _Children(
            Counter(
                "unitcost_gateway_unpriced_calls",
                "Upstream calls whose cost is unknown, never counted as $0 spend: no_price (the "
                "model has no price) or usage_unknown (the provider reported no usage).",
                [*by_model, "reason"],
                registry=r,
            )
        )
        self._cache_saved = _Children(
            Counter(
                "unitcost_gateway_response_cache_saved_usd",
                "What the answers served from the gateway's response cache would have cost, in USD.",
                spend_labels,
                registry=r,
            )
        )
        self._prompt_saved = _Children(
            Counter(
                "unitcost_gateway_prompt_cache_saved_usd",
                "What provider prompt caching saved against paying cached tokens as uncached input, "
                "in USD, on calls where it saved money.",
                spend_labels,
                registry=r,
            )
        )
        self._prompt_premium = _Children(
            Counter(
                "unitcost_gateway_prompt_cache_write_premium_usd",
                "On calls where cache writes cost more than cache reads saved: that excess, in USD "
                "(net saving = prompt_cache_saved - this, the ledger's cache_savings).",
                spend_labels,
                registry=r,
            )
        )
        self._latency = _Children(
            Histogram(
                "unitcost_gateway_upstream_latency_seconds",
                "Time of each upstream call, to its last byte (a stream: to its end).",
                by_model,
                buckets=LATENCY_BUCKETS,
                registry=r,
            )
        )
        self._ttft = _Children(
            Histogram(
                "unitcost_gateway_time_to_first_token_seconds",
                "Streams: time from sending the request upstream to its first chunk.",
                by_model,
                buckets=TTFT_BUCKETS,
                registry=r,
            )
        )
        self._overhead = Histogram(
            "unitcost_gateway_overhead_seconds",
            "The gateway's own time on a request: its total less upstream calls and retry waits.",
            buckets=OVERHEAD_BUCKETS,
            registry=r,
        )
        self._refusals = _Children(
            Counter(
                "unitcost_gateway_budget_refusals",
                "Requests a budget refused, by reason (limit_usd, max_calls, unpriced_model).",
                ["budget", "reason"],
                registry=r,
            )
        )
        self._model_refusals = _Children(
            Counter(
                "unitcost_gateway_model_refusals",
                "Requests refused because their virtual key may not call the model they name (the "
                "key's models list), by route (chat, responses, messages, embeddings, count_tokens) "
                "and the model name asked for. Nothing was sent upstream.",
                ["route", "model", "team"],
                registry=r,
            )
        )
        self._downgrades = _Children(
            Counter(
                "unitcost_gateway_budget_downgrades",
                "Requests a budget sent to its cheaper model.",
                ["budget"],
                registry=r,
            )
        )
        self._alerts = _Children(
            Counter(
                "unitcost_gateway_budget_alerts",
                "Budget lines that crossed their alert threshold (alert_at), once per line.",
                ["budget"],
                registry=r,
            )
        )
        r.register(_ScrapeTime(self))

    # ---------------------------------------------------------------- labels

    def _model(self, model: str) -> str:
        return model if model in self._models else OTHER

    def _team(self, team: str | None) -> str:
        if not team:
            return NONE
        return team if team in self._teams else OTHER

    # ---------------------------------------------------------------- the request path

    def request(self, route: str, provider: str, model: str, team: str | None, outcome: str) -> None:
        model = self._model(model) if model != NONE else NONE
        self._requests(route, provider, model, self._team(team), outcome).inc()

    def attempt(self, attempt: Attempt, team: str | None, priced: Priced) -> None:
        provider, model = attempt.provider, self._model(attempt.model)
        spend_labels = (provider, model, self._team(team))
        self._attempts(provider, model, attempt.status).inc()
        if attempt.latency_ms is not None:
            self._latency(provider, model).observe(attempt.latency_ms / 1000)
        if attempt.ttft_ms is not None:
            self._ttft(provider, model).observe(attempt.ttft_ms / 1000)
        usage = attempt.usage
        if usage:
            self._count_tokens(spend_labels, usage)
        if priced.cost is None:
            reason = "usage_unknown" if attempt.usage_unknown is not None else "no_price"
            self._unpriced(provider, model, reason).inc()
            return
        self._spend(*spend_labels).inc(float(priced.cost))
        # Priced with the call, as the ledger prices it: saved, or the premium of cache writes.
        saved = priced.cache_savings_pico
        if saved > 0:
            self._prompt_saved(*spend_labels).inc(saved / 10**12)
        elif saved < 0:
            self._prompt_premium(*spend_labels).inc(-saved / 10**12)

    def _count_tokens(self, labels: tuple[str, str, str], usage: Mapping[str, int]) -> None:
        read = usage.get("cache_read_tokens") or 0
        write = (usage.get("cache_write_5m_tokens") or 0) + (usage.get("cache_write_1h_tokens") or 0)
        output = usage.get("output_tokens") or 0
        reasoning = usage.get("reasoning_tokens") or 0
        kinds = (
            ("input_uncached", (usage.get("input_tokens") or 0) - read - write),
            ("cache_read", read),
            ("cache_write", write),
            ("output", output - reasoning),
            ("reasoning", reasoning),
        )
        for kind, count in kinds:
            if count > 0:
                self._tokens(*labels, kind).inc(count)

    def cache_hit(self, attempt: Attempt, team: str | None, saved: Decimal | None) -> None:
        if saved:
            self._cache_saved(attempt.provider, self._model(attempt.model), self._team(team)).inc(
                float(saved)
            )

    def refusal(self, budget: str, reason: str) -> None:
        self._refusals(budget, reason).inc()

    def model_refusal(self, route: str, model: str, team: str | None) -> None:
        name = model if model in self._public else OTHER
        self._model_refusals(route, name, self._team(team)).inc()

    def downgrade(self, budget: str) -> None:
        self._downgrades(budget).inc()

    def alert(self, budget: str) -> None:
        self._alerts(budget).inc()

    def overhead(self, seconds: float) -> None:
        self._overhead.observe(max(seconds, 0.0))

    def spool_failure(self) -> None:
        self.spool_failures += 1

    # ---------------------------------------------------------------- scrapes

    async def exposition(self) -> bytes:
        """The text exposition; reads the budget lines first (Redis: the same figures on every
        replica)."""
        await self._read_budgets()
        return exposition(self.registry)

    async def _read_budgets(self) -> None:
        lines = reported_lines(self.config, datetime.now(UTC))
        if not lines:
            self._budget_read = []
            return
        try:
            read = await asyncio.wait_for(self.budgets.read(lines), BUDGET_READ_TIMEOUT_S)
        except Exception as exc:  # an unreachable state is reported as such, not as $0 spent
            log.warning("metrics: budget state not readable: %s", type(exc).__name__)
            self._budget_read = None
            return
        self._budget_read = [(line, spend, calls) for line, (spend, calls) in zip(lines, read, strict=True)]

    def scrape_families(self) -> Iterator[Metric]:
        yield from self._budget_families()
        yield from self._spool_families()
        if self.writer is not None:
            yield from self._writer_families()

    def _budget_families(self) -> Iterator[Metric]:
        labels = ["budget", "scope", "value", "period"]
        up = GaugeMetricFamily(
            "unitcost_gateway_budget_state_up",
            "1 when the budget state (this process, or Redis shared by the replicas) was read for "
            "this scrape, 0 when it could not be (the budget gauges are then absent).",
        )
        up.add_metric([], 0 if self._budget_read is None else 1)
        yield up
        spend = GaugeMetricFamily(
            "unitcost_gateway_budget_spend_usd",
            "Spend counted on a budget line in its current period, in USD, with the worst-case "
            "reservations of requests in flight (what enforcement compares with the limit).",
            labels=labels,
        )
        limit = GaugeMetricFamily("unitcost_gateway_budget_limit_usd", "The line's limit_usd.", labels=labels)
        ratio = GaugeMetricFamily(
            "unitcost_gateway_budget_used_ratio",
            "Spend / limit_usd (1 = the limit is reached).",
            labels=labels,
        )
        calls = GaugeMetricFamily(
            "unitcost_gateway_budget_calls", "Calls counted on the line in its period.", labels=labels
        )
        max_calls = GaugeMetricFamily(
            "unitcost_gateway_budget_max_calls", "The line's max_calls.", labels=labels
        )
        for line, spent, count in self._budget_read or []:
            budget = line.budget
            values = [budget.name, budget.scope, line.value, budget.period]
            spend.add_metric(values, float(nano_to_usd(spent)))
            calls.add_metric(values, count)
            if budget.limit_usd is not None:
                limit.add_metric(values, float(budget.limit_usd))
                if budget.limit_usd > 0:
                    ratio.add_metric(values, float(nano_to_usd(spent) / budget.limit_usd))
            if budget.max_calls is not None:
                max_calls.add_metric(values, budget.max_calls)
        yield from (spend, limit, ratio, calls, max_calls)

    def _spool_families(self) -> Iterator[Metric]:
        yield CounterMetricFamily(
            "unitcost_gateway_spool_events",
            "Events this process appended to the spool (every upstream attempt, cache hit and "
            "refusal), each on disk before its response was returned.",
            value=self.spool.appended,
        )
        yield CounterMetricFamily(
            "unitcost_gateway_spool_append_failures",
            "Events the spool could not write (a full disk): their requests failed.",
            value=self.spool_failures,
        )
        backlog = GaugeMetricFamily(
            "unitcost_gateway_spool_backlog_bytes",
            "Spooled bytes the ledger writer has not moved into the ledger yet.",
        )
        backlog.add_metric([], spool_backlog_bytes(self.spool.directory))
        yield backlog

    def _writer_families(self) -> Iterator[Metric]:
        from .writer import ACCEPTED, DUPLICATES, FAILED_DRAINS, LAST_DRAIN, REJECTED

        stats: Sequence[float] = self.writer.stats
        up = GaugeMetricFamily("unitcost_ledger_writer_up", "1 while the ledger writer process runs.")
        up.add_metric([], 1 if self.writer.alive() else 0)
        yield up
        events = CounterMetricFamily(
            "unitcost_ledger_writer_events",
            "Spooled events the ledger writer handed to the ledger, by result: accepted (new), "
            "duplicate (already there: a replay), rejected (refused by the ledger's checks, logged).",
            labels=["result"],
        )
        for result, slot in (("accepted", ACCEPTED), ("duplicate", DUPLICATES), ("rejected", REJECTED)):
            events.add_metric([result], stats[slot])
        yield events
        yield CounterMetricFamily(
            "unitcost_ledger_writer_failed_drains",
            "Drains that failed (the ledger could not be written); their events stay spooled and are retried.",
            value=stats[FAILED_DRAINS],
        )
        last = GaugeMetricFamily(
            "unitcost_ledger_writer_last_drain_timestamp_seconds",
            "Unix time of the writer's last successful drain (0: none yet).",
        )
        last.add_metric([], stats[LAST_DRAIN])
        yield last
