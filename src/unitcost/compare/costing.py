"""Exact prices of aggregated quantities: a `Line` of summed usage priced once by the PriceBook.

A line is what one group of calls would use under a scenario: a model, a tier, an instant
(which price segment and time-of-day window apply), the smallest prompt of its calls in
the target's tokens (which prompt-length tier applies) and the summed quantities. Cost is
quantity x integer pico-USD rate per quantity, so it is exact and linear.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal

from ..pricing.book import PriceBook
from ..pricing.genai_layer import ModelRef
from ..pricing.layers import TIERS
from ..pricing.model import PriceError, RatePlan
from ..pricing.quantities import BREAKDOWN_COLUMNS, BREAKDOWN_OF_QUANTITY, N_QUANTITIES, QUANTITY_INDEX

COMPONENTS: tuple[str, ...] = ("input", "cache_read", "cache_write", "output", "reasoning", "other")
"""What the outputs show: uncached input, cache read, cache write (5m + 1h), output, reasoning, other."""
COMPONENT_OF_BREAKDOWN = {
    "cost_input": "input",
    "cost_cache_read": "cache_read",
    "cost_cache_write_5m": "cache_write",
    "cost_cache_write_1h": "cache_write",
    "cost_output": "output",
    "cost_reasoning": "reasoning",
    "cost_other": "other",
}
COMPONENT_OF_QUANTITY: tuple[str, ...] = tuple(
    COMPONENT_OF_BREAKDOWN[BREAKDOWN_COLUMNS[b]] for b in BREAKDOWN_OF_QUANTITY
)
TOKEN_QUANTITIES = frozenset(
    i for name, i in QUANTITY_INDEX.items() if name not in ("web_searches", "requests")
)
Q = QUANTITY_INDEX


@dataclass(frozen=True)
class Line:
    provider: str
    model: str
    tier: str
    at: int
    """Epoch seconds of the instant whose price applies."""
    min_prompt: Decimal
    """Smallest prompt of the line's calls, in the target's tokens: selects the prompt-length tier."""
    quantities: tuple[int, ...]
    calls: int
    free: bool = False
    """Served from unitcost's response cache: costs nothing."""

    def with_quantities(self, quantities: Iterable[int]) -> Line:
        return replace(self, quantities=tuple(quantities))


@dataclass
class Costed:
    """The cost of some lines, per component, in pico-USD; lines with no price are counted apart."""

    components: dict[str, int]
    calls: int = 0
    unpriced_calls: int = 0
    unpriced_reasons: dict[str, int] | None = None

    @property
    def total(self) -> int:
        return sum(self.components.values())

    @staticmethod
    def zero() -> Costed:
        return Costed(dict.fromkeys(COMPONENTS, 0), 0, 0, {})

    def add(self, other: Costed) -> None:
        for k, v in other.components.items():
            self.components[k] += v
        self.calls += other.calls
        self.unpriced_calls += other.unpriced_calls
        for reason, n in (other.unpriced_reasons or {}).items():
            reasons = self.unpriced_reasons if self.unpriced_reasons is not None else {}
            reasons[reason] = reasons.get(reason, 0) + n
            self.unpriced_reasons = reasons


class Pricer:
    """Rates for (model, tier, instant, prompt size), resolved once and reused across lines."""

    def __init__(self, book: PriceBook) -> None:
        self.book = book

    def resolve(self, provider: str | None, model: str) -> ModelRef:
        return self.book.require(provider, model)

    def rates(self, line: Line) -> tuple[tuple[int, ...] | None, RatePlan | None, str | None]:
        """(rates per quantity, plan, None) or (None, None, why there is no price)."""
        if line.tier not in TIERS:
            return None, None, f"unknown service tier {line.tier!r}"
        try:
            timeline = self.book.timeline(ModelRef(line.provider, line.model), line.tier)
        except PriceError as exc:
            return None, None, str(exc)
        option = timeline.option_at(datetime.fromtimestamp(line.at, UTC))
        if option.price is None:
            return None, None, option.reason or "no price"
        try:
            plan = self.book.plan(option.price)
        except PriceError as exc:
            return None, None, str(exc)
        # rows[i] applies above thresholds[i-1]: count the thresholds the prompt exceeds.
        row = bisect.bisect_left([Decimal(t) for t in plan.thresholds], line.min_prompt)
        return plan.rows[row], plan, None

    def available(self, provider: str, model: str, tier: str, at: int) -> bool:
        probe = Line(provider, model, tier, at, Decimal(0), (0,) * N_QUANTITIES, 0)
        return self.rates(probe)[0] is not None

    def cost(self, lines: Iterable[Line]) -> Costed:
        out = Costed.zero()
        reasons: dict[str, int] = {}
        for line in lines:
            out.calls += line.calls
            if line.free:
                continue
            rates, plan, reason = self.rates(line)
            if rates is not None and plan is not None:
                missing = [m for m in plan.missing if line.quantities[Q[m]] > 0]
                if missing:
                    reason = f"no price for {', '.join(missing)} on {line.provider}/{line.model}"
                    rates = None
            if rates is None:
                out.unpriced_calls += line.calls
                key = reason or "no price"
                reasons[key] = reasons.get(key, 0) + line.calls
                continue
            for i, amount in enumerate(line.quantities):
                if amount:
                    out.components[COMPONENT_OF_QUANTITY[i]] += amount * rates[i]
        out.unpriced_reasons = reasons
        return out


def scale(value: int, factor: Decimal) -> int:
    """A token count times a factor, rounded half-even to a whole token."""
    return int((Decimal(value) * factor).to_integral_value(rounding=ROUND_HALF_EVEN))


def scale_tokens(quantities: Iterable[int], factor: Decimal) -> tuple[int, ...]:
    """Every token quantity times `factor` (requests and web searches unchanged)."""
    return tuple(scale(q, factor) if i in TOKEN_QUANTITIES else q for i, q in enumerate(quantities))


def scale_all(quantities: Iterable[int], factor: Decimal) -> tuple[int, ...]:
    return tuple(scale(q, factor) for q in quantities)


def text_prompt(q: tuple[int, ...] | list[int]) -> int:
    """Text prompt tokens: uncached + cache read + cache writes."""
    return q[Q["input_text"]] + q[Q["cache_read_text"]] + q[Q["cache_write_5m"]] + q[Q["cache_write_1h"]]


def with_cache(q: tuple[int, ...], reads: int, writes_5m: int, writes_1h: int) -> tuple[int, ...]:
    """The same text prompt re-split into cache reads, cache writes and uncached input."""
    total = text_prompt(q)
    reads = min(reads, total)
    writes_5m = min(writes_5m, total - reads)
    writes_1h = min(writes_1h, total - reads - writes_5m)
    out = list(q)
    out[Q["cache_read_text"]] = reads
    out[Q["cache_write_5m"]] = writes_5m
    out[Q["cache_write_1h"]] = writes_1h
    out[Q["input_text"]] = total - reads - writes_5m - writes_1h
    return tuple(out)


def component_tokens(quantities: Iterable[int]) -> dict[str, int]:
    out = dict.fromkeys(COMPONENTS, 0)
    for i, q in enumerate(quantities):
        if i in TOKEN_QUANTITIES:
            out[COMPONENT_OF_QUANTITY[i]] += q
    return out


def merge(costs: Mapping[str, int], other: Mapping[str, int]) -> dict[str, int]:
    return {k: costs.get(k, 0) + other.get(k, 0) for k in COMPONENTS}
