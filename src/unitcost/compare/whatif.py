"""What the recorded workload would cost under other models, dates, tiers and cache behaviour.

    unitcost whatif --since 30d --where feature=support --as anthropic:claude-sonnet-4-5

Each alternative reprices the selection token for token: the recorded quantities of every
group of calls, transformed only by what the alternative states (tokenizer ratio, reasoning
multiplier, cache assumption), priced exactly at the alternative's model, tier and date.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from ..analytics.report import per_unit
from ..analytics.window import Window, parse_instant
from ..money import pico_to_usd
from ..pricing.book import PriceBook
from ..pricing.layers import TIERS
from .costing import (
    COMPONENT_OF_BREAKDOWN,
    COMPONENTS,
    Costed,
    Line,
    Pricer,
    Q,
    scale,
    scale_tokens,
    text_prompt,
    with_cache,
)
from .rules import cache_rule_for, ratios_to, tokenizer_family, tokenizer_ratio
from .workload import Cuts, Group, ModelKey, Workload, day_span, timeline_cuts, window_span

_DASHED_DATE = re.compile(r"\d{4}-\d{2}|\d+\s*(?:m|min|h|d|w)$", re.IGNORECASE)
"""What `--as` takes as a date after an `@`: a month, a date or a datetime as ISO 8601 writes
them (`2025-09`, `2025-10-01`, `2025-10-01T13:00`), or an age (`30d`). Anything else is part
of the model's name."""
_DATED = re.compile(r"@\s*\d{4}-\d{2}")


class WhatIfError(ValueError):
    pass


@dataclass(frozen=True)
class CacheAssumption:
    """How prompt caching behaves under the alternative.

    keep    the recorded cache reads and writes, token for token;
    hit     a set share of each prompt read from cache (`hit_ratio`), writes as recorded;
    prefix  the target provider's rules: a stable prefix of `prefix_share` of each prompt is
            cached when it reaches the minimum cacheable size; one call in `prefix_reuse`
            writes it (billed at the write premium where the provider charges one), the
            others read it.
    """

    mode: str = "keep"
    hit_ratio: Decimal = Decimal(0)
    prefix_share: Decimal = Decimal("0.5")
    prefix_reuse: int = 5

    @staticmethod
    def parse(
        text: str, prefix_share: Decimal | None = None, prefix_reuse: int | None = None
    ) -> CacheAssumption:
        text = text.strip().lower()
        share = prefix_share if prefix_share is not None else Decimal("0.5")
        reuse = prefix_reuse if prefix_reuse is not None else 5
        if not Decimal(0) <= share <= Decimal(1) or reuse < 1:
            raise WhatIfError("--prefix-share must be within 0..1 and --prefix-reuse at least 1")
        if text == "keep":
            return CacheAssumption("keep")
        if text == "prefix":
            return CacheAssumption("prefix", prefix_share=share, prefix_reuse=reuse)
        raw = text.removeprefix("hit=").removesuffix("%")
        try:
            ratio = Decimal(raw) / (100 if text.endswith("%") else 1)
        except ArithmeticError:
            ratio = Decimal(-1)
        if not Decimal(0) <= ratio <= Decimal(1):
            raise WhatIfError(f"--cache is keep, prefix or a hit ratio like 0.6 or 60%, got {text!r}")
        return CacheAssumption("hit", hit_ratio=ratio)

    def describe(self) -> str:
        if self.mode == "keep":
            return "cache: recorded cache reads and writes kept token for token"
        if self.mode == "hit":
            return f"cache: {self.hit_ratio * 100:g}% of each prompt read from cache, writes as recorded"
        return (
            f"cache: provider prefix caching, stable prefix {self.prefix_share * 100:g}% of each prompt, "
            f"each prefix written once per {self.prefix_reuse} calls"
        )


@dataclass(frozen=True)
class Alternative:
    """One way the workload could have run. None means: as recorded, group by group."""

    provider: str | None = None
    model: str | None = None
    at: datetime | None = None
    tier: str | None = None
    cache: CacheAssumption = field(default_factory=CacheAssumption)
    token_ratio: Decimal | None = None
    """Target tokens per recorded token; None = the documented ratio between tokenizer families."""
    reasoning_multiplier: Decimal = Decimal(1)
    label: str = ""

    @staticmethod
    def parse(
        spec: str | None,
        *,
        at: str | None = None,
        tier: str | None = None,
        cache: CacheAssumption | None = None,
        token_ratio: Decimal | None = None,
        reasoning_multiplier: Decimal = Decimal(1),
    ) -> Alternative:
        """`provider:model`, `model`, optionally `@DATE` and `/tier`: `deepseek:deepseek-chat@2025-10-01/batch`."""
        provider = model = None
        text = (spec or "").strip()
        head, slash, tail = text.rpartition("/")
        # A slash ends a tier only when a tier follows it, or after a date: `openai/gpt-4o`
        # and OpenRouter's `openrouter:openai/gpt-4o` are model names, not a tier `gpt-4o`.
        if slash and (tail.strip().lower() in TIERS or _DATED.search(head) or not tail):
            text = head
            tier = tail.strip().lower() or tier
        name, sign, at_part = text.rpartition("@")
        # `@2025-10-01` is a date; Vertex AI's `claude-3-5-sonnet-v2@20241022` and
        # `gemini-1.5-pro@002` are model names with their version after the `@`.
        if sign and (not at_part.strip() or _DASHED_DATE.match(at_part.strip())):
            text = name
            at = at_part.strip() or at
        text = text.strip()
        if text and text != "same":
            provider, sep, model = text.partition(":")
            if not sep:
                provider, model = None, text
            if not model.strip():
                raise WhatIfError(
                    f"--as {(spec or '').strip()!r} names no model: write provider:model or a model name"
                )
        if tier is not None and tier not in TIERS:
            raise WhatIfError(f"unknown service tier {tier!r}; use one of {', '.join(TIERS)}")
        if token_ratio is not None and not (token_ratio.is_finite() and token_ratio > 0):
            raise WhatIfError(f"--token-ratio must be a number above 0, got {token_ratio}")
        if not (reasoning_multiplier.is_finite() and reasoning_multiplier >= 0):
            raise WhatIfError(f"--reasoning-multiplier must be 0 or more, got {reasoning_multiplier}")
        when = parse_instant(at) if at else None
        return Alternative(
            provider or None,
            model or None,
            when,
            tier,
            cache or CacheAssumption(),
            token_ratio,
            reasoning_multiplier,
            label=(spec or "").strip() or _default_label(when, tier),
        )


def _default_label(at: datetime | None, tier: str | None) -> str:
    parts = ["same models"]
    if at:
        parts.append(f"at {at:%Y-%m-%d}")
    if tier:
        parts.append(f"{tier} tier")
    return ", ".join(parts)


@dataclass
class ScenarioResult:
    label: str
    costed: Costed
    compared_baseline: int
    """Recorded cost of the calls this scenario could price (like for like), pico-USD."""
    baseline_components: dict[str, int]
    assumptions: list[str]
    unit_total: int = 0
    """Cost of the calls that belong to business units, pico-USD: the numerator of cost per unit."""
    judged_total: int = 0
    """Cost of the calls a judgement covers, pico-USD: the numerator of cost per success."""

    @property
    def total(self) -> int:
        return self.costed.total

    @property
    def delta(self) -> int:
        return self.costed.total - self.compared_baseline


@dataclass
class WhatIfResult:
    workload: Workload
    baseline: ScenarioResult
    scenarios: list[ScenarioResult]

    def rows(self) -> list[dict[str, object]]:
        """One row per scenario, every row with the same keys: an amount this scenario cannot
        price is None (never 0), and its calls are counted in `unpriced_calls` by reason."""
        w = self.workload
        out = []
        for s in [self.baseline, *self.scenarios]:
            priced_calls = s.costed.calls - s.costed.unpriced_calls
            row: dict[str, object] = dict.fromkeys(ROW_KEYS)
            row.update(
                scenario=s.label,
                calls=s.costed.calls,
                unpriced_calls=s.costed.unpriced_calls,
                unpriced_reasons=dict(s.costed.unpriced_reasons or {}),
                assumptions="; ".join(s.assumptions),
            )
            if priced_calls == 0:
                out.append(row)
                continue
            total = pico_to_usd(s.total)
            base = pico_to_usd(s.compared_baseline)
            row.update(
                {
                    "total": total,
                    "delta": total - base,
                    # A percentage, as the report's trends: a ratio of two amounts is not money.
                    "delta_pct": float((total - base) / base * 100) if base else None,
                    **{c: pico_to_usd(s.costed.components[c]) for c in COMPONENTS},
                    **{
                        f"delta_{c}": pico_to_usd(s.costed.components[c] - s.baseline_components[c])
                        for c in COMPONENTS
                    },
                    "cost_per_request": per_unit(total, priced_calls),
                    # As in the report: the cost of the units' calls over the units, not every call's.
                    "cost_per_unit": per_unit(pico_to_usd(s.unit_total), w.units)
                    if not s.costed.unpriced_calls
                    else None,
                    "cost_per_success": per_unit(pico_to_usd(s.judged_total), w.successes)
                    if not s.costed.unpriced_calls
                    else None,
                }
            )
            out.append(row)
        return out


ROW_KEYS: tuple[str, ...] = (
    "scenario",
    "total",
    "delta",
    "delta_pct",
    *COMPONENTS,
    *(f"delta_{c}" for c in COMPONENTS),
    "calls",
    "unpriced_calls",
    "unpriced_reasons",
    "cost_per_request",
    "cost_per_unit",
    "cost_per_success",
    "assumptions",
)
"""The keys of every what-if row, in order (JSON consumers rely on them being all there)."""


def needs_recorded_models(alternatives: Sequence[Alternative]) -> bool:
    """Whether some alternative keeps the recorded models (their price changes then matter)."""
    return any(alt.model is None for alt in alternatives)


def needed_cuts(
    book: PriceBook, alternatives: Sequence[Alternative], window: Window | None = None
) -> Callable[[list[ModelKey]], Cuts]:
    """A `cuts_for` function for `load_workload`: recorded models' cuts plus every alternative's.

    With the selection `window`, cuts that cannot matter are left out: an alternative priced
    `--at` a date only needs that day's time-of-day windows, not the selection's price changes.
    """
    selection = [window_span(window)] if window is not None else None

    def cuts_for(recorded: list[ModelKey]) -> Cuts:
        cuts = Cuts()
        for provider, model, tier in recorded:
            cuts |= timeline_cuts(book, provider, model, tier, selection)
        # Without the recorded models (see needs_recorded_models), every alternative names its
        # model: take its cuts for every source tokenizer family it could be scaled from.
        sources = recorded or [("", "", t) for t in TIERS]
        for provider, model, tier in sources:
            for alt in alternatives:
                if alt.model is None and not model:
                    continue
                target_p, target_m, target_t = _target(book, alt, provider, model, tier)
                ratios = (
                    {_ratio(alt, provider, model, target_p, target_m)[0]}
                    if model or alt.token_ratio is not None
                    else ratios_to(target_p, target_m)
                )
                spans = [day_span(alt.at)] if alt.at else selection
                alt_cuts = timeline_cuts(book, target_p, target_m, target_t, spans)
                # A target threshold t on r x input is crossed when input > floor(t / r).
                sizes = {int(Decimal(t) / ratio) for t in alt_cuts.prompt_sizes for ratio in ratios}
                if alt.cache.mode == "prefix":
                    sizes |= {_prefix_cut(alt.cache, target_p, target_m, ratio) for ratio in ratios}
                if alt.at:
                    # Priced on one day, the selection's own price changes do not matter, but a
                    # price change during that day splits it by time of day.
                    day_cuts = frozenset(t % 86400 for t in alt_cuts.instants)
                    cuts |= Cuts(frozenset(), alt_cuts.seconds_of_day | day_cuts, frozenset(sizes))
                else:
                    cuts |= Cuts(alt_cuts.instants, alt_cuts.seconds_of_day, frozenset(sizes))
        return cuts

    return cuts_for


def _prefix_cut(cache: CacheAssumption, provider: str, model: str, ratio: Decimal) -> int:
    """Calls whose recorded prompt exceeds this have a stable prefix the target can cache."""
    rule = cache_rule_for(provider, model)
    if cache.prefix_share == 0:
        return 2**62
    # eligible when share x ratio x input >= minimum, i.e. input > ceil(min / (share x ratio)) - 1
    need = Decimal(rule.min_prefix_tokens) / (cache.prefix_share * ratio)
    return int(need.to_integral_value(rounding="ROUND_CEILING")) - 1


def _target(book: PriceBook, alt: Alternative, provider: str, model: str, tier: str) -> ModelKey:
    if alt.model is None:
        return provider, model, alt.tier or tier
    ref = book.require(alt.provider, alt.model)
    return ref.provider, ref.model, alt.tier or tier


def _ratio(
    alt: Alternative, source_provider: str, source_model: str, target_provider: str, target_model: str
) -> tuple[Decimal, str]:
    if alt.token_ratio is not None:
        return alt.token_ratio, "set with --token-ratio"
    return tokenizer_ratio(source_provider, source_model, target_provider, target_model)


def group_line(group: Group) -> Line:
    """The group as recorded."""
    return Line(
        group.provider,
        group.model,
        group.tier,
        group.first_ts,
        Decimal(group.min_input),
        tuple(group.quantities),
        group.calls,
        free=group.response_cache_hit,
    )


def at_date(at: datetime, first_ts: int) -> int:
    """The instant on `at`'s day at the same UTC time of day as the recorded call."""
    midnight = datetime(at.year, at.month, at.day, tzinfo=UTC)
    return int((midnight + timedelta(seconds=first_ts % 86400)).timestamp())


def alternative_line(book: PriceBook, alt: Alternative, group: Group, notes: set[str]) -> Line:
    provider, model, tier = _target(book, alt, group.provider, group.model, group.tier)
    ratio, why = _ratio(alt, group.provider, group.model, provider, model)
    # Also said when one provider serves both sides in different tokenizer families (Gemini and
    # Claude on Vertex AI): a ratio of 1 there is an assumption, not a fact.
    crosses = tokenizer_family(group.provider, group.model).family != tokenizer_family(provider, model).family
    if ratio != 1 or provider != group.provider or (crosses and alt.token_ratio is None):
        notes.add(f"tokens x{ratio:.4g} {group.provider}→{provider} ({why})")
    q = scale_tokens(group.quantities, ratio) if ratio != 1 else tuple(group.quantities)
    if alt.reasoning_multiplier != 1:
        q = _scale_reasoning(q, alt.reasoning_multiplier)
    min_prompt = Decimal(group.min_input) * ratio
    q = apply_cache(alt.cache, q, provider, model, min_prompt, notes)
    if alt.cache.mode == "keep" and provider != group.provider:
        _note_cache_mismatch(q, provider, model, notes)
    when = at_date(alt.at, group.first_ts) if alt.at else group.first_ts
    return Line(provider, model, tier, when, min_prompt, q, group.calls, free=group.response_cache_hit)


def _note_cache_mismatch(q: tuple[int, ...], provider: str, model: str, notes: set[str]) -> None:
    rule = cache_rule_for(provider, model)
    writes = q[Q["cache_write_5m"]] + q[Q["cache_write_1h"]]
    if writes and not rule.writes_billed:
        notes.add(f"{provider} charges no cache-write premium: recorded cache writes are billed as its input")
    if rule.writes_billed and not writes and q[Q["cache_read_text"]]:
        notes.add(
            f"{provider} bills cache writes but the recorded calls wrote none: --cache keep under-states "
            "the target; --cache prefix models its writes"
        )


def _scale_reasoning(q: tuple[int, ...], multiplier: Decimal) -> tuple[int, ...]:
    out = list(q)
    out[Q["reasoning"]] = scale(q[Q["reasoning"]], multiplier)
    return tuple(out)


def apply_cache(
    cache: CacheAssumption,
    q: tuple[int, ...],
    provider: str,
    model: str,
    min_prompt: Decimal,
    notes: set[str],
) -> tuple[int, ...]:
    if cache.mode == "keep":
        return q
    prompt = text_prompt(q)
    if cache.mode == "hit":
        writes_5m, writes_1h = q[Q["cache_write_5m"]], q[Q["cache_write_1h"]]
        reads = min(scale(prompt, cache.hit_ratio), prompt - writes_5m - writes_1h)
        return with_cache(q, reads, writes_5m, writes_1h)
    rule = cache_rule_for(provider, model)
    notes.add(rule.describe())
    if cache.prefix_share * min_prompt < rule.min_prefix_tokens:
        return with_cache(q, 0, 0, 0)
    prefix = scale(prompt, cache.prefix_share)
    writes = scale(prefix, Decimal(1) / Decimal(cache.prefix_reuse))
    reads = prefix - writes
    if not rule.writes_billed:
        return with_cache(q, reads, 0, 0)
    # A 1-hour TTL writes at the long-lived price; shorter ones (5 minutes, OpenAI's 30) at the short one.
    return with_cache(q, reads, 0, writes) if rule.ttl == "1h" else with_cache(q, reads, writes, 0)


def recorded_cost(groups: Sequence[Group]) -> Costed:
    """What the ledger recorded for these groups, per component."""
    out = Costed.zero()
    for group in groups:
        out.calls += group.calls
        for column, component in COMPONENT_OF_BREAKDOWN.items():
            out.components[component] += group.recorded[column]
    return out


def run_whatif(book: PriceBook, workload: Workload, alternatives: Sequence[Alternative]) -> WhatIfResult:
    pricer = Pricer(book)
    recorded = recorded_cost(workload.groups)
    baseline = ScenarioResult(
        "as recorded",
        recorded,
        recorded.total,
        dict(recorded.components),
        ["recorded prices, models and usage"],
        recorded_cost([g for g in workload.groups if g.of_units]).total,
        recorded_cost([g for g in workload.groups if g.judged]).total,
    )
    scenarios = []
    for alt in alternatives:
        notes: set[str] = set()
        costed = Costed.zero()
        like_for_like = Costed.zero()
        unit_total = judged_total = 0
        for group in workload.groups:
            part = pricer.cost([alternative_line(book, alt, group, notes)])
            costed.add(part)
            if group.of_units:
                unit_total += part.total
            if group.judged:
                judged_total += part.total
            if not part.unpriced_calls:
                like_for_like.add(recorded_cost([group]))
        assumptions = [alt.cache.describe(), *sorted(notes)]
        if alt.reasoning_multiplier != 1:
            assumptions.append(f"reasoning tokens x{alt.reasoning_multiplier}")
        if alt.at:
            assumptions.append(f"prices in force on {alt.at:%Y-%m-%d}, at each call's time of day")
        if costed.unpriced_calls:
            reason = max((costed.unpriced_reasons or {}).items(), key=lambda kv: kv[1], default=("", 0))[0]
            assumptions.append(
                f"{costed.unpriced_calls:,} calls have no price under this alternative ({reason}) and are left "
                "out of its total and of the recorded total it is compared with"
            )
        scenarios.append(
            ScenarioResult(
                alt.label,
                costed,
                like_for_like.total,
                dict(like_for_like.components),
                assumptions,
                unit_total,
                judged_total,
            )
        )
    return WhatIfResult(workload, baseline, scenarios)
