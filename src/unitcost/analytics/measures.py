"""The exact sums behind every report, from the events or from their hourly rollups.

Every measure of a report is an aggregate of events: a count, a sum of integers or exact
decimals, a first or last time. The report computes them straight from the events, or from
the hourly report rollups (`ledger.report_rollups`), whose rows hold partial aggregates
(`PARTIALS`) per hour and combination of `ROLLUP_DIMS` and `FLAGS`. Partial counts and sums
add up and partial minima take the minimum, and every condition a measure puts on an event
is a column of the rollup row that holds it, so both roads add the same exact integers and
decimals and give the same numbers to the last digit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

ROLLUP_DIMS: tuple[str, ...] = (
    "provider",
    "model",
    "served_model",
    "priced_provider",
    "priced_model",
    "unpriced_reason",
    "operation",
    "service_tier",
    "status",
    "team",
    "app",
    "feature",
    "environment",
    "unit",
    "source",
)
"""The event columns report rollups keep: what reports group and filter by most, all of low
cardinality. A report by or filtered on anything else (users, customers, traces, tags) reads
the events. The priced provider and model and the unpriced reason serve the section on
unpriced calls."""

RETRY = "(attempt > 1 OR retry_of IS NOT NULL)"
"""A retry: a second or later attempt, or an event that names the one it retries (a source that
sends `retry_of` without counting attempts; the watch counts its waste the same way)."""

FLAGS: tuple[tuple[str, str], ...] = (
    ("priced", "cost IS NOT NULL"),
    ("retry", RETRY),
    ("cache_hit", "cache_hit"),
    ("has_unit", "unit_id IS NOT NULL"),
)
"""Conditions measures put on single events, kept as keys of the rollup rows."""

SENT = "NOT coalesce(cache_hit, false)"
"""A call the provider answered: not one unitcost's gateway served from its own response cache.
A response-cache hit costs nothing and carries the usage of the call it repeats, cache reads
included: counted with the provider's calls, it would dilute a cost per 1k tokens and pass for
prompt caching. The rollup rows keep the flag under the same name, so the condition reads the
same on events and on rollups."""

RATED_INPUT = (
    "input_tokens - (coalesce(input_audio_tokens, 0) - coalesce(cache_audio_read_tokens, 0))"
    " - (coalesce(input_image_tokens, 0) - coalesce(cache_image_read_tokens, 0))"
)
"""The input tokens whose cost is in `cost_input`, `cost_cache_read` and `cost_cache_write`:
all of them but the uncached audio and image tokens, whose rates differ and whose cost is in
`cost_other` (with output audio and images, web searches and per-request fees)."""

RATED_OUTPUT = "output_tokens - coalesce(output_audio_tokens, 0) - coalesce(output_image_tokens, 0)"
"""The output tokens whose cost is in `cost_output` and `cost_reasoning`: all but audio and
image output, whose cost is in `cost_other`."""

Merge = Literal["count", "sum", "min", "max"]


@dataclass(frozen=True)
class Partial:
    """A column of the hourly rollups: an aggregate of events that merges across rows."""

    name: str
    sql: str
    merge: Merge
    type: str

    def merged(self) -> str:
        if self.merge == "count":
            # A count of no rows is 0, where a sum of no rows is NULL.
            return f"CAST(coalesce(sum({self.name}), 0) AS BIGINT)"
        if self.type == "BIGINT":
            return f"CAST(sum({self.name}) AS BIGINT)"
        return f"{self.merge}({self.name})"


_MONEY = "DECIMAL(38, 12)"


def _money(name: str, column: str | None = None) -> Partial:
    return Partial(name, f"sum({column or name})", "sum", _MONEY)


def _tokens(name: str) -> Partial:
    return Partial(name, f"CAST(sum({name}) AS BIGINT)", "sum", "BIGINT")


PARTIALS: tuple[Partial, ...] = (
    Partial("calls", "CAST(count(*) AS BIGINT)", "count", "BIGINT"),
    _tokens("requests"),
    _money("spend", "cost"),
    _money("cost_input"),
    _money("cost_cache_read"),
    _money("cost_cache_write", "cost_cache_write_5m + cost_cache_write_1h"),
    _money("cost_output"),
    _money("cost_reasoning"),
    _money("cost_other"),
    _money("cache_savings"),
    _money("avoided_cost"),
    _tokens("input_tokens"),
    _tokens("cache_read_tokens"),
    _tokens("output_tokens"),
    _tokens("reasoning_tokens"),
    Partial("rated_input_tokens", f"CAST(sum({RATED_INPUT}) AS BIGINT)", "sum", "BIGINT"),
    Partial("rated_output_tokens", f"CAST(sum({RATED_OUTPUT}) AS BIGINT)", "sum", "BIGINT"),
    _money("billed_cost"),
    Partial("billed_calls", "CAST(count(billed_cost) AS BIGINT)", "count", "BIGINT"),
    Partial("first_seen", "min(ts)", "min", "TIMESTAMPTZ"),
    Partial("last_seen", "max(ts)", "max", "TIMESTAMPTZ"),
)
_PARTIAL = {p.name: p for p in PARTIALS}


@dataclass(frozen=True)
class Measure:
    name: str
    sql: str
    """The aggregate over events."""
    rollup: str
    """The same aggregate over rollup rows."""


def _same(name: str) -> Measure:
    """A measure that is one of the partials."""
    partial = _PARTIAL[name]
    return Measure(name, partial.sql, partial.merged())


def _sum_if(
    name: str, condition: str, flag: str, value: str, partial: str, *, count: bool = False
) -> Measure:
    """sum(value) over the events meeting `condition`; over rollup rows, sum(partial) over the
    rows whose `flag` (the same condition, kept as a key) holds. A count is 0, not NULL, when
    no event meets the condition."""
    otherwise = " ELSE 0" if count else ""
    events = f"sum(CASE WHEN {condition} THEN {value}{otherwise} END)"
    rollup = f"sum(CASE WHEN {flag} THEN {partial}{otherwise} END)"
    if count:
        # A sum over no rows at all (an empty window) is NULL too: coalesce, so it counts 0.
        return Measure(
            name, f"CAST(coalesce({events}, 0) AS BIGINT)", f"CAST(coalesce({rollup}, 0) AS BIGINT)"
        )
    return Measure(name, events, rollup)


def _count_if(name: str, condition: str, flag: str) -> Measure:
    return _sum_if(name, condition, flag, "1", "calls", count=True)


PRICED, UNPRICED = "cost IS NOT NULL", "cost IS NULL"

MEASURES: tuple[Measure, ...] = (
    _same("calls"),
    _same("requests"),
    _sum_if("priced_requests", PRICED, "priced", "requests", "requests", count=True),
    _same("spend"),
    _same("cost_input"),
    _same("cost_cache_read"),
    _same("cost_cache_write"),
    _same("cost_output"),
    _same("cost_reasoning"),
    _same("cost_other"),
    _same("cache_savings"),
    _same("avoided_cost"),
    _same("input_tokens"),
    _same("cache_read_tokens"),
    _same("output_tokens"),
    _same("reasoning_tokens"),
    # What the costs per 1k tokens divide by: the tokens their costs pay for, on the priced
    # calls the provider answered (see RATED_INPUT, RATED_OUTPUT and SENT).
    _sum_if(
        "rated_input_tokens",
        f"{PRICED} AND {SENT}",
        f"priced AND {SENT}",
        RATED_INPUT,
        "rated_input_tokens",
        count=True,
    ),
    _sum_if(
        "rated_output_tokens",
        f"{PRICED} AND {SENT}",
        f"priced AND {SENT}",
        RATED_OUTPUT,
        "rated_output_tokens",
        count=True,
    ),
    # The prompt cache hit ratio's tokens: those the provider saw, not the response cache's.
    _sum_if("sent_input_tokens", SENT, SENT, "input_tokens", "input_tokens", count=True),
    _sum_if("sent_cache_read_tokens", SENT, SENT, "cache_read_tokens", "cache_read_tokens", count=True),
    _count_if("errors", "status = 'error'", "status = 'error'"),
    _count_if("timeouts", "status = 'timeout'", "status = 'timeout'"),
    _sum_if("failed_cost", "status <> 'ok'", "status <> 'ok'", "cost", "spend"),
    _sum_if("retry_cost", RETRY, "retry", "cost", "spend"),
    _count_if("retries", RETRY, "retry"),
    _count_if("failed_calls", "status <> 'ok'", "status <> 'ok'"),
    # The failed calls and retries whose cost is unknown: their costs above leave them out,
    # and a reader must be told so, not shown a smaller figure as if it were whole.
    _count_if("failed_unpriced_calls", f"status <> 'ok' AND {UNPRICED}", "status <> 'ok' AND NOT priced"),
    _count_if("retry_unpriced_calls", f"{RETRY} AND {UNPRICED}", "retry AND NOT priced"),
    # A failed retry is both failed and a retry: counted once here, so waste never tops spend.
    _sum_if("wasted_cost", f"status <> 'ok' OR {RETRY}", "status <> 'ok' OR retry", "cost", "spend"),
    _count_if("response_cache_hits", "cache_hit", "cache_hit"),
    _count_if("unpriced_calls", UNPRICED, "NOT priced"),
    _sum_if(
        "unpriced_tokens",
        UNPRICED,
        "NOT priced",
        "input_tokens + output_tokens",
        "input_tokens + output_tokens",
        count=True,
    ),
    _sum_if("unit_spend", "unit_id IS NOT NULL", "has_unit", "cost", "spend"),
    _same("billed_cost"),
    _same("billed_calls"),
    # The unpriced section dates its rows by their unpriced calls alone.
    Measure(
        "unpriced_first_seen",
        f"min(CASE WHEN {UNPRICED} THEN ts END)",
        "min(CASE WHEN NOT priced THEN first_seen END)",
    ),
    Measure(
        "unpriced_last_seen",
        f"max(CASE WHEN {UNPRICED} THEN ts END)",
        "max(CASE WHEN NOT priced THEN last_seen END)",
    ),
)
MEASURE_BY_NAME = {m.name: m for m in MEASURES}
