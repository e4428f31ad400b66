"""Why a price cut did not cut the bill: the change in effective cost, factor by factor.

    unitcost explain-price-change --model deepseek-chat --from 2025-09-20 --to 2025-10-05

The cost of a period is written as an exact product of factors:

    cost = calls x [ tokens/call x input share x ((1-h-w) p_input + h p_cache_read + w p_cache_write)
                   + tokens/call x (1 - input share) x ((1-r) p_output + r p_reasoning) + p_other ]

with h the cache-hit share of the prompt, w its cache-write share, r the reasoning share of
the output and p the effective price of each component (its cost / its tokens in that
period: time-of-day windows and tiers included). The change between two periods is split
among price, mix and volume factors with the Shapley value (`decompose.shapley`): the parts
add up to the change exactly. Beside it: the list-price change per component, and the
list-price change weighted by the first period's workload.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction

from ..analytics.window import Window, parse_instant
from ..money import pico_to_usd
from ..pricing.book import PriceBook
from ..pricing.genai_layer import ModelRef
from ..pricing.model import Price, Tiered
from .costing import COMPONENT_OF_BREAKDOWN, COMPONENTS, Line, Pricer, Q, component_tokens
from .decompose import shapley
from .whatif import at_date, group_line
from .workload import Group

PRICE_FACTORS = {c: f"price: {c.replace('_', ' ')}" for c in COMPONENTS}
MIX_FACTORS = {
    "hit": "mix: cache-hit share",
    "write": "mix: cache-write share",
    "input_share": "mix: input/output ratio",
    "reasoning_share": "mix: reasoning share",
    "tokens_per_call": "mix: tokens per call",
}
VOLUME_FACTORS = {"calls": "volume: calls"}
LABELS = {**{f"p_{c}": v for c, v in PRICE_FACTORS.items()}, **MIX_FACTORS, **VOLUME_FACTORS}

EXAMPLES: Mapping[str, tuple[int, Decimal, int, str]] = {
    # name: (prompt tokens per call, cache-hit share, output tokens per call, what it stands for)
    "cache-heavy": (
        30_000,
        Decimal("0.9"),
        400,
        "an agent re-reading a long, stable context: 90% of prompts hit the cache",
    ),
    "cache-miss-heavy": (
        8_000,
        Decimal(0),
        400,
        "retrieval answers with a fresh context every call: no cache hits",
    ),
}
EXAMPLE_CALLS = 100_000


@dataclass
class PeriodCost:
    label: str
    calls: int
    tokens: dict[str, int]
    costs: dict[str, int]
    """pico-USD per component"""
    note: str = ""

    @property
    def total(self) -> int:
        return sum(self.costs.values())


@dataclass
class Explanation:
    a: PeriodCost
    b: PeriodCost
    factors_a: dict[str, Fraction]
    factors_b: dict[str, Fraction]
    contributions: dict[str, Fraction]
    list_prices: list[dict[str, object]] = field(default_factory=list)
    list_change_on_a_mix: Decimal | None = None
    headline: str = ""
    undefined_a: frozenset[str] = frozenset()
    """Factors with nothing to measure in period A (no tokens of that kind): shown as absent, not $0."""
    undefined_b: frozenset[str] = frozenset()

    @property
    def change(self) -> Fraction:
        return Fraction(self.b.total - self.a.total, 10**12)

    def change_pct(self) -> Decimal | None:
        return (
            None if not self.a.total else Decimal(self.b.total - self.a.total) * 100 / Decimal(self.a.total)
        )

    def rows(self) -> list[dict[str, object]]:
        base = Fraction(self.a.total, 10**12)
        out: list[dict[str, object]] = []
        for key, label in LABELS.items():
            c = self.contributions[key]
            out.append(
                {
                    "factor": label,
                    # A price of a component the period did not use is not a price of 0: shown
                    # empty ("—"), its borrowed value only keeps the factor still.
                    "before": None if key in self.undefined_a else _show(self.factors_a[key], key),
                    "after": None if key in self.undefined_b else _show(self.factors_b[key], key),
                    "contribution": _dec(c),
                    "points": _dec(c / base * 100) if base else None,
                    # The same values as numbers, for programs: `before`/`after` are for reading.
                    "before_value": None if key in self.undefined_a else _value(self.factors_a[key], key),
                    "after_value": None if key in self.undefined_b else _value(self.factors_b[key], key),
                    "unit": _unit(key),
                }
            )
        return out


def _dec(value: Fraction) -> Decimal:
    return (Decimal(value.numerator) / Decimal(value.denominator)).quantize(Decimal("1e-12"))


def _unit(key: str) -> str:
    if key == "p_other":
        return "USD/call"
    if key.startswith("p_"):
        return "USD/Mtok"
    return {"calls": "calls", "tokens_per_call": "tokens/call"}.get(key, "share")


def _value(value: Fraction, key: str) -> Decimal:
    """A factor in the unit `_unit` names (prices per million tokens), to 12 decimal places."""
    return _dec(value * 10**6 if _unit(key) == "USD/Mtok" else value)


def _show(value: Fraction, key: str) -> str:
    if key.startswith("p_"):
        per = "call" if key == "p_other" else "Mtok"
        return f"${float(value * (1 if key == 'p_other' else 10**6)):.6g}/{per}"
    if key in ("calls",):
        return f"{int(value):,}"
    if key == "tokens_per_call":
        return f"{float(value):,.1f}"
    return f"{float(value) * 100:.2f}%"


def period_from_groups(label: str, groups: Sequence[Group], note: str = "") -> PeriodCost:
    tokens = dict.fromkeys(COMPONENTS, 0)
    costs = dict.fromkeys(COMPONENTS, 0)
    calls = 0
    for g in groups:
        if g.response_cache_hit:  # not billed: no price and no tokens to explain
            continue
        calls += g.calls
        for k, v in component_tokens(g.quantities).items():
            tokens[k] += v
        for column, component in COMPONENT_OF_BREAKDOWN.items():
            costs[component] += g.recorded[column]
    return PeriodCost(label, calls, tokens, costs, note)


def period_from_lines(pricer: Pricer, label: str, lines: Sequence[Line], note: str = "") -> PeriodCost:
    tokens = dict.fromkeys(COMPONENTS, 0)
    calls = 0
    for line in lines:
        if line.free:
            continue
        calls += line.calls
        for k, v in component_tokens(line.quantities).items():
            tokens[k] += v
    costed = pricer.cost([line for line in lines if not line.free])
    if costed.unpriced_calls:
        reasons = "; ".join(costed.unpriced_reasons or {})
        raise ValueError(f"{label}: {costed.unpriced_calls:,} calls have no price ({reasons})")
    return PeriodCost(label, calls, tokens, dict(costed.components), note)


def factors(p: PeriodCost) -> dict[str, Fraction | None]:
    """The factors of a period; None where a factor is undefined (no tokens of that kind)."""
    t = p.tokens
    prompt = t["input"] + t["cache_read"] + t["cache_write"]
    completion = t["output"] + t["reasoning"]
    total = prompt + completion
    out: dict[str, Fraction | None] = {}
    for c in COMPONENTS:
        if c == "other":
            out["p_other"] = Fraction(p.costs["other"], 10**12 * p.calls) if p.calls else None
        else:
            out[f"p_{c}"] = Fraction(p.costs[c], 10**12 * t[c]) if t[c] else None
    out["hit"] = Fraction(t["cache_read"], prompt) if prompt else None
    out["write"] = Fraction(t["cache_write"], prompt) if prompt else None
    out["input_share"] = Fraction(prompt, total) if total else None
    out["reasoning_share"] = Fraction(t["reasoning"], completion) if completion else None
    out["tokens_per_call"] = Fraction(total, p.calls) if p.calls else None
    out["calls"] = Fraction(p.calls)
    return out


def cost_of(f: Mapping[str, Fraction]) -> Fraction:
    prompt = f["tokens_per_call"] * f["input_share"]
    completion = f["tokens_per_call"] * (1 - f["input_share"])
    per_call = (
        prompt
        * (
            (1 - f["hit"] - f["write"]) * f["p_input"]
            + f["hit"] * f["p_cache_read"]
            + f["write"] * f["p_cache_write"]
        )
        + completion * ((1 - f["reasoning_share"]) * f["p_output"] + f["reasoning_share"] * f["p_reasoning"])
        + f["p_other"]
    )
    return f["calls"] * per_call


def _complete(
    a: dict[str, Fraction | None], b: dict[str, Fraction | None]
) -> tuple[dict[str, Fraction], dict[str, Fraction]]:
    """An undefined factor takes the other period's value (or 0): it then moves by nothing."""
    fa: dict[str, Fraction] = {}
    fb: dict[str, Fraction] = {}
    for key, va in a.items():
        vb = b[key]
        fa[key] = va if va is not None else (vb if vb is not None else Fraction(0))
        fb[key] = vb if vb is not None else fa[key]
    return fa, fb


def explain(a: PeriodCost, b: PeriodCost) -> Explanation:
    raw_a, raw_b = factors(a), factors(b)
    fa, fb = _complete(raw_a, raw_b)
    # The factor model reproduces each period's cost exactly; a mismatch would be a bug here.
    assert cost_of(fa) == Fraction(a.total, 10**12), "period A does not decompose exactly"
    assert cost_of(fb) == Fraction(b.total, 10**12), "period B does not decompose exactly"
    return Explanation(
        a,
        b,
        fa,
        fb,
        shapley(cost_of, fa, fb),
        undefined_a=frozenset(k for k, v in raw_a.items() if v is None),
        undefined_b=frozenset(k for k, v in raw_b.items() if v is None),
    )


def list_price_rows(
    book: PriceBook, ref: ModelRef, at_a: datetime, at_b: datetime
) -> list[dict[str, object]]:
    """The published price of each component at both instants (standard tier, default option).

    A price tiered by prompt length shows its base tier.
    """
    rows: list[dict[str, object]] = []
    price_a, price_b = (book.timeline(ref, "standard").segment_at(at).default.price for at in (at_a, at_b))
    keys = sorted({*(price_a.components if price_a else {}), *(price_b.components if price_b else {})})
    for key in keys:
        before, after = _base(price_a, key), _base(price_b, key)
        change = (after - before) / before * 100 if before and after is not None else None
        rows.append(
            {
                "component": key,
                "before": before,
                "after": after,
                "change_pct": change,
                "before_ref": price_a.ref if price_a else None,
                "after_ref": price_b.ref if price_b else None,
            }
        )
    return rows


def price_changes_within(book: PriceBook, ref: ModelRef, period: Window) -> list[datetime]:
    """Instants strictly inside `period` at which the model's standard price changes.

    A period that straddles a change pays a blend of both prices: its effective prices are
    that blend, while the list price shown for it is the one at its start."""
    segments = book.timeline(ref, "standard").segments
    return [
        seg.start for seg in segments if seg.start is not None and period.since < seg.start < period.until
    ]


def _base(price: Price | None, key: str) -> Decimal | None:
    component = price.components.get(key) if price else None
    return component.base if isinstance(component, Tiered) else component


def parse_period(text: str, window: str) -> Window:
    """`2025-09-20` (a period of `window`, e.g. 7d, from that date) or `2025-09-01..2025-09-15`."""
    if ".." in text:
        start, _, end = text.partition("..")
        since, until = parse_instant(start), parse_instant(end)
        if until <= since:
            # A reversed period holds no call: it would explain a change between empty periods.
            raise ValueError(f"a period A..B needs B after A, got {text!r}")
        return Window(since, until)
    start_at = parse_instant(text)
    reference = datetime(2000, 1, 1, tzinfo=UTC)
    length = reference - parse_instant(window, now=reference)
    if (
        length <= timedelta(0)
        or parse_instant(window, now=reference + timedelta(days=1)) == reference - length
    ):
        raise ValueError(f"--window is a length like 7d, 36h or 2w, got {window!r}")
    return Window(start_at, start_at + length)


def shifted(lines: Sequence[Line], to: datetime) -> list[Line]:
    from dataclasses import replace

    return [replace(line, at=at_date(to, line.at)) for line in lines]


def example_lines(book: PriceBook, name: str, provider: str | None, model: str, at: datetime) -> list[Line]:
    prompt, hit, output, _ = EXAMPLES[name]
    ref = book.require(provider, model)
    q = [0] * len(Q)
    reads = int(prompt * hit)
    q[Q["cache_read_text"]] = reads * EXAMPLE_CALLS
    q[Q["input_text"]] = (prompt - reads) * EXAMPLE_CALLS
    q[Q["output_text"]] = output * EXAMPLE_CALLS
    q[Q["requests"]] = EXAMPLE_CALLS
    noon = int(datetime(at.year, at.month, at.day, 12, tzinfo=UTC).timestamp())
    return [Line(ref.provider, ref.model, "standard", noon, Decimal(prompt), tuple(q), EXAMPLE_CALLS)]


def list_change_on_mix(pricer: Pricer, lines: Sequence[Line], to: datetime) -> Decimal | None:
    """How much the bill of `lines` changes when only the list prices move to those of `to`."""
    before = pricer.cost(lines)
    after = pricer.cost(shifted(lines, to))
    if before.unpriced_calls or after.unpriced_calls or not before.total:
        return None
    return Decimal(after.total - before.total) * 100 / Decimal(before.total)


def lines_of(groups: Sequence[Group]) -> list[Line]:
    return [group_line(g) for g in groups]


def change_summary(e: Explanation) -> str:
    pct = e.change_pct()
    groups: dict[str, Fraction] = {"price": Fraction(0), "mix": Fraction(0), "volume": Fraction(0)}
    for key, value in e.contributions.items():
        groups[LABELS[key].split(":")[0]] += value
    base = Fraction(e.a.total, 10**12)
    parts = ", ".join(f"{k} {float(v / base * 100):+.1f} pts" for k, v in groups.items()) if base else ""
    return (
        f"effective cost {pico_to_usd(e.a.total):.2f} → {pico_to_usd(e.b.total):.2f} USD"
        + (f" ({float(pct):+.1f}%)" if pct is not None else "")
        + (f" = {parts}" if parts else "")
    )
