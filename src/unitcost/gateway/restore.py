"""Seed in-process budget counters from the ledger when the gateway starts.

Without this, a restart would forget what the current periods already spent. Redis state
survives restarts by itself; the in-process state is rebuilt from the gateway's own events:
spend is the sum of their costs in the period, plus the reservation still held for each call
whose usage the provider did not report (its `reserved_usd` tag), calls the requests that took
a reservation (first attempts that were not a fallback, a cascade escalation, a cache hit or a
rejection).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation

from ..analytics.dialect import Dialect, dialect_for
from ..events import ATTRIBUTION_FIELDS
from ..ledger.base import Store
from ..money import usd_to_pico
from .budgets import MemoryBudgetState, lines_for, period_bounds, pico_to_nano_ceil
from .config import Budget
from .records import HELD_TAG

log = logging.getLogger("unitcost.gateway.budget")

# Rows are told apart by fields only the gateway sets, never by a tag alone: before the gateway
# reserved its tag names, a client could send `blocked_by_budget` or `escalation` in
# x-unitcost-tags, and rows written then would otherwise escape `max_calls` after a restart.
# A rejection is the one gateway event with HTTP 429 and no upstream latency (every attempt
# that reached an upstream has one); a cascade's strong attempt carries `escalated_from`, and
# on such rows the gateway writes the `escalation` tag over whatever the client sent.


def _reserved_call(d: Dialect) -> str:
    rejected = f"(coalesce(http_status, 0) = 429 AND latency_ms IS NULL AND {d.tag('blocked_by_budget')} IS NOT NULL)"
    cascade_step = (
        f"(escalated_from IS NOT NULL AND coalesce({d.tag('escalation')}, '') = 'cascade_check_failed')"
    )
    return (
        "attempt = 1 AND fallback_from IS NULL AND NOT coalesce(cache_hit, false) "
        f"AND NOT {rejected} AND NOT {cascade_step}"
    )


def _scope_sql(budget: Budget, d: Dialect) -> str:
    scope = budget.scope
    if scope == "global":
        return "'*'"
    if scope == "key":
        return d.tag("key")
    if scope in ("trace", "session"):
        return f"{scope}_id"
    if scope.startswith("tag:"):
        name = scope[4:]
        if name in ATTRIBUTION_FIELDS:
            return f'coalesce({d.tag(name)}, "{name}")'
        return d.tag(name)
    return f'"{scope}"'


def _period_start(budget: Budget, now: datetime) -> datetime | None:
    label, _ = period_bounds(budget, now)
    if label == "all":
        return None
    day = datetime.fromisoformat(label).replace(tzinfo=budget.timezone)
    return day.astimezone(UTC)


def restore_budgets(store: Store, budgets: Sequence[Budget], state: MemoryBudgetState, prefix: str) -> int:
    """Load the current period's spend and calls of every budget line; returns the lines seeded."""
    now = datetime.now(UTC)
    seeded = 0
    d = dialect_for(store.dialect)
    for budget in budgets:
        scope = _scope_sql(budget, d)
        start = _period_start(budget, now)
        where = ["source = 'gateway'", f"{scope} IS NOT NULL"]
        params: list[object] = []
        if start is not None:
            where.append("ts >= ?")
            params.append(start)
        if budget.match is not None:
            where.append(f"{scope} = ?")
            params.append(budget.match)
        sql = (
            f"SELECT {scope} AS value, sum(cost) AS spend, {d.count_if(_reserved_call(d))} AS calls "
            f"FROM events WHERE {' AND '.join(where)} GROUP BY 1"
        )
        held = _held(store, d, scope, where, params)
        for row in store.fetch(sql, params).to_pylist():
            attrs = _attrs_for(budget, str(row["value"]))
            for line in lines_for([budget], attrs, prefix, now):
                spend = row["spend"] if isinstance(row["spend"], Decimal) else Decimal(0)
                spend += held.get(str(row["value"]), Decimal(0))
                state.seed(line.key, pico_to_nano_ceil(usd_to_pico(spend)), int(row["calls"] or 0))
                seeded += 1
    if seeded:
        log.info("budgets: %d budget lines restored from the ledger", seeded)
    return seeded


def _held(store: Store, d: Dialect, scope: str, where: list[str], params: list[object]) -> dict[str, Decimal]:
    """Per scope value, the reservations kept for calls of unknown usage (cost NULL): a handful
    of rows, summed here rather than cast in two SQL dialects."""
    held_tag = d.tag(HELD_TAG)
    sql = (
        f"SELECT {scope} AS value, {held_tag} AS held FROM events "
        f"WHERE {' AND '.join(where)} AND cost IS NULL AND {held_tag} IS NOT NULL"
    )
    totals: dict[str, Decimal] = defaultdict(Decimal)
    for row in store.fetch(sql, params).to_pylist():
        try:
            amount = Decimal(row["held"])
        except InvalidOperation:
            continue  # not written by the gateway (the tag is reserved since it exists)
        if amount.is_finite() and amount > 0:
            totals[str(row["value"])] += amount
    return totals


def _attrs_for(budget: Budget, value: str) -> dict[str, object]:
    if budget.scope == "global":
        return {}
    if budget.scope.startswith("tag:"):
        return {"tags": {budget.scope[4:]: value}}
    return {budget.scope: value, "tags": {}}
