"""PriceBook: the three layers composed into one timeline per model and tier.

Precedence, highest first, decided instant by instant:

1. the user's overrides file (explicit prices, then tier rules);
2. unitcost's corrections shipped with the package (explicit prices, then tier rules);
3. the pinned genai-prices data (its standard prices, and its tier variants on top of the
   standard price in force at that instant).

A tier rule marked `data_first` steps behind the data's own tier price where there is one at
that instant, and fills in for the models the data leaves out (genai-prices carries batch
prices from October 2026, and only for some of the models the discount applies to).

User discounts then scale whatever price results. A tier with no price at an instant is
"no price", never the standard price: a batch call priced as a standard one would be
wrong by a factor of two.
"""

from __future__ import annotations

import difflib
import functools
import re
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from decimal import Decimal
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any

from ..money import MAX_EVENT_PICO, TOO_BIG_REASON, pico_to_usd
from ..utc import as_utc
from .genai_layer import GenaiLayer, ModelRef
from .layers import TIERS, Layer, Period, close_periods, load_layer
from .model import (
    Adjustment,
    Option,
    Price,
    PriceError,
    RatePlan,
    Segment,
    Timeline,
    compile_price,
    missing_reason,
)
from .quantities import (
    BREAKDOWN_COLUMNS,
    BREAKDOWN_OF_QUANTITY,
    QUANTITIES,
    QUANTITY_INDEX,
    split_one,
    usage_problem,
)

CORRECTIONS_FILE = "corrections.toml"

# Provider prefixes in model names (LiteLLM's spelling) that are not genai-prices' provider ids.
PROVIDER_PREFIXES: Mapping[str, str] = {
    "gemini": "google",
    "vertex_ai": "google",
    "google_genai": "google",
    "xai": "x-ai",
    "bedrock": "aws",
    "together_ai": "together",
    "fireworks_ai": "fireworks",
    "mistralai": "mistral",
    # pydantic-ai's spelling, `google-gla:gemini-2.5-pro`
    "google-gla": "google",
    "google-vertex": "google",
}


@dataclass(frozen=True)
class _Quote:
    ref: ModelRef
    at: datetime
    timeline: Timeline
    segment: Segment
    option: Option
    quantities: list[int]
    row: tuple[int, ...]
    parts: list[int]
    """Pico-USD per BREAKDOWN_COLUMNS entry."""
    context_tier: int | None


@dataclass(frozen=True)
class EarliestKnown:
    """A call dated before its model's first known date, priced at the model's earliest known
    price: the data give that price no start date, and nothing says it was in force then."""

    since: datetime
    """The first date the model is known to have been callable at."""
    dated_by: str
    """The model name whose date says so: `gpt-4o-2024-08-06`."""

    def describe(self, at: datetime) -> str:
        return (
            f"earliest known price, from {self.since:%Y-%m-%d} (the date of {self.dated_by}): "
            f"not in force on {at:%Y-%m-%d}"
        )


class UnknownModelError(LookupError):
    """No layer knows this model; the message says what was looked for and where."""


@dataclass(frozen=True)
class CostBreakdown:
    total: Decimal
    input: Decimal
    cache_read: Decimal
    cache_write_5m: Decimal
    cache_write_1h: Decimal
    output: Decimal
    reasoning: Decimal
    other: Decimal
    cache_savings: Decimal
    """What prompt caching saved on this call against paying uncached input (negative when writes cost more)."""

    def as_dict(self) -> dict[str, Decimal]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


@dataclass(frozen=True)
class PricedCall:
    provider: str | None
    model: str | None
    tier: str
    at: datetime
    breakdown: CostBreakdown | None
    price: Price | None
    effective_from: datetime | None
    effective_to: datetime | None
    window: str | None
    unpriced_reason: str | None
    rates: Mapping[str, Decimal]
    """USD per million tokens (per thousand for web searches and requests) actually applied."""
    quantities: Mapping[str, int] = field(default_factory=dict)
    """The disjoint billable quantities of the call (see `quantities.QUANTITIES`)."""
    quantity_costs: Mapping[str, Decimal] = field(default_factory=dict)
    """The cost of each quantity: they add up to the total exactly."""
    context_tier: int | None = None
    """The long-context threshold the prompt exceeded (200000 for Gemini 2.5 Pro above 200k
    prompt tokens), when the price has such tiers and the call crossed one."""
    earliest_known: EarliestKnown | None = None
    """Set when the call is dated before the model's first known date: its price is only the
    earliest one known, not one in force that day (a finance team must not read it as billed)."""

    @property
    def cost(self) -> Decimal | None:
        return self.breakdown.total if self.breakdown else None

    @property
    def price_ref(self) -> str | None:
        return self.price.ref if self.price else None


@dataclass(frozen=True)
class Resolution:
    """A (provider, model) name resolved to the book's key, or why it could not be."""

    ref: ModelRef | None
    reason: str | None = None


class PriceBook:
    def __init__(
        self,
        genai: GenaiLayer | None = None,
        corrections: Layer | None = None,
        overrides: Layer | None = None,
    ) -> None:
        self.genai = genai or GenaiLayer()
        self.corrections = corrections if corrections is not None else load_corrections()
        self.overrides = overrides
        self._layers = [layer for layer in (self.overrides, self.corrections) if layer is not None]
        self._timelines: dict[tuple[ModelRef, str], Timeline] = {}
        self._plans: dict[int, tuple[Price, RatePlan]] = {}
        self._resolved: dict[tuple[str, str], Resolution] = {}
        # Per model and called names: the names a ledger or a gateway sees are few.
        self._known_since: dict[tuple[ModelRef, tuple[str | None, ...]], EarliestKnown | None] = {}
        self._lock = threading.Lock()
        for layer in self._layers:
            self._canonical_periods(layer)
        for layer in self._layers:
            self._canonical_scopes(layer)

    # A model named in a price file means what the same name means in a call: Anthropic's
    # `claude-sonnet-4` and `claude-sonnet-4-20250514` are genai-prices' `claude-sonnet-4-0`.
    # Left as written, a discount on `claude-sonnet-4` never applied, and a price pinned to it
    # missed every call made with a dated snapshot name.

    def _canonical_periods(self, layer: Layer) -> None:
        """File each price under the book's id of its model, the name written kept as an alias."""
        for (provider, model, tier), periods in list(layer.periods.items()):
            try:
                found_provider, found_model = self.genai.resolve(provider, model)
            except LookupError:
                continue  # a model of the user's own (self-hosted, custom)
            key = (found_provider.id, found_model.id, tier)
            if key == (provider, model, tier):
                continue
            del layer.periods[(provider, model, tier)]
            renamed = [
                replace(p, provider=key[0], model=key[1], aliases=(*p.aliases, model)) for p in periods
            ]
            merged = layer.periods.get(key, []) + renamed
            layer.periods[key] = close_periods(merged, layer.path)

    def _canonical_scopes(self, layer: Layer) -> None:
        """Discounts and tier rules name their models by the book's ids; a name no layer knows is a mistake."""
        discounts = []
        for discount in layer.discounts:
            if discount.model is None:
                self._scope_provider(layer, discount.provider, f"a discount ({discount.ref})")
                discounts.append(discount)
                continue
            ref = self._scope_model(layer, discount.provider, discount.model, f"a discount ({discount.ref})")
            discounts.append(replace(discount, provider=ref.provider, model=ref.model))
        layer.discounts[:] = discounts
        rules = []
        for rule in layer.tier_rules:
            if rule.models is None:
                self._scope_provider(layer, rule.provider, f"a tier rule ({rule.ref})")
                rules.append(rule)
                continue
            what = f"a tier rule ({rule.ref})"
            names = tuple(self._scope_model(layer, rule.provider, m, what).model for m in rule.models)
            rules.append(replace(rule, models=names))
        layer.tier_rules[:] = rules
        unpriced = []
        for entry in layer.unpriced:
            what = f"an [[unpriced]] entry ({entry.provider} {entry.quantity})"
            if entry.models is None:
                self._scope_provider(layer, entry.provider, what)
                unpriced.append(entry)
                continue
            names = tuple(self._scope_model(layer, entry.provider, m, what).model for m in entry.models)
            unpriced.append(replace(entry, models=names))
        layer.unpriced[:] = unpriced

    def _scope_model(self, layer: Layer, provider: str | None, model: str, what: str) -> ModelRef:
        resolution = self.resolve(provider, model)
        if resolution.ref is not None:
            return resolution.ref
        if layer is self.corrections:
            # The shipped corrections name models of the bundled data; a snapshot fetched with
            # `unitcost prices update` may not have them all, which is no mistake of the user's.
            return ModelRef(provider or "", model)
        raise PriceError(f"{layer.path}: {what} names a model no price layer knows: {resolution.reason}")

    def _scope_provider(self, layer: Layer, provider: str | None, what: str) -> None:
        """A discount or rule for a provider no layer knows discounts nothing: a typo (`opneai`)."""
        if provider is None or layer is self.corrections:
            return
        known = {ref.provider for ref in self.known_models()}
        if provider in known:
            return
        close = difflib.get_close_matches(provider, sorted(known), n=1)
        hint = f' (did you mean "{close[0]}"?)' if close else ""
        raise PriceError(f"{layer.path}: {what} names a provider no price layer knows: {provider!r}{hint}")

    @classmethod
    def load(cls, overrides_path: str | Path | None = None, genai: GenaiLayer | None = None) -> PriceBook:
        overrides = load_layer(overrides_path, "user") if overrides_path else None
        if genai is None:
            from .update import active_layer

            genai = active_layer()  # a snapshot fetched on purpose with `unitcost prices update`, if any
        return cls(genai=genai, overrides=overrides)

    # ------------------------------------------------------------------ names

    def resolve(self, provider: str | None, model: str) -> Resolution:
        key = ((provider or "").strip().lower(), model.strip())
        hit = self._resolved.get(key)
        if hit is None:
            hit = self._resolve(*key)
            with self._lock:
                self._resolved[key] = hit
        return hit

    def _resolve(self, provider: str, model: str) -> Resolution:
        if not model:
            return Resolution(None, "no model name")
        prefixed = self._first_party(provider, model)
        if prefixed is not None:
            return prefixed
        return self._resolve_name(provider, model)

    def _first_party(self, provider: str, model: str) -> Resolution | None:
        """`openai/gpt-4o` (LiteLLM's and many gateways' spelling) is OpenAI's gpt-4o, and so is
        `openai:gpt-4o` (pydantic-ai's).

        genai-prices would match the whole name to OpenRouter's resale entry, which has other
        rates (no cached-input price: cached tokens at the full input rate). A call that says
        its provider is OpenRouter keeps that reading, and `openrouter/openai/gpt-4o` (LiteLLM's
        spelling of an OpenRouter call) is OpenRouter's `openai/gpt-4o`."""
        prefix, sep, rest = model.partition("/")
        if not sep or not rest:
            # Only a known provider before a colon: `ft:gpt-4o:org::id` and Bedrock's
            # `anthropic.claude-3-haiku-20240307-v1:0` are model ids of their own.
            prefix, sep, rest = model.partition(":")
            if not sep or not rest or self._prefix_provider(prefix) is None:
                return None
        named = self._prefix_provider(prefix)
        if named is None or provider not in ("", named):
            return None
        if named == "openrouter":
            resolution = self._resolve_name(named, rest)
            return resolution if resolution.ref is not None else None
        if provider == "openrouter":
            return None
        exact = self.genai.find_by_id(named, model)  # a provider's own id may hold a slash: perplexity/sonar
        if exact is not None:
            return Resolution(exact)
        resolution = self._resolve_name(named, rest)
        return resolution if resolution.ref is not None else None

    def _prefix_provider(self, prefix: str) -> str | None:
        named = PROVIDER_PREFIXES.get(prefix.lower(), prefix.lower())
        return named if self.genai.provider(named) is not None else None

    def _resolve_name(self, provider: str, model: str) -> Resolution:
        for layer in self._layers:
            target = layer.aliases.get(model.lower()) or layer.aliases.get(f"{provider}/{model}".lower())
            if target:
                provider, model = target
                break
        for layer in self._layers:
            found = layer.find_model(provider or None, model)
            if found:
                return Resolution(ModelRef(*found))
        try:
            p, m = self.genai.resolve(provider or None, model)
        except LookupError:
            by_id = self.genai.find_by_id(provider or None, model)
            if by_id is not None:
                return Resolution(by_id)
            where = f"provider {provider!r}" if provider else "any provider"
            return Resolution(
                None,
                f"unknown model {model!r} for {where} in {self.genai.label} and the override layers: "
                "add its price to your overrides file (see docs/pricing.md)",
            )
        return Resolution(ModelRef(p.id, m.id))

    def suggestions(self, provider: str | None, model: str, n: int = 3) -> list[str]:
        """Known names close to one no layer knows, best first, each with the provider it
        resolves to: `gpt-4o (openai)` for `gpt4o`."""
        wanted = (provider or "").strip().lower()
        names = {
            ref.model.lower(): ref.model
            for ref in self.known_models()
            if not wanted or ref.provider == wanted
        }
        for layer in self._layers:
            names.update({alias: alias for alias in layer.aliases})
        bare = model.strip().lower().rpartition("/")[2]
        out = []
        for close in difflib.get_close_matches(bare, list(names), n=n, cutoff=0.75):
            ref = self.resolve(wanted or None, names[close]).ref
            out.append(f"{names[close]} ({ref.provider})" if ref else names[close])
        return out

    def providers_of(self, model: str) -> list[str]:
        """Every provider whose list holds exactly this model id: `qwen3-235b-a22b` is sold
        by several, and a call without a provider is priced as the first one's."""
        wanted = model.strip().lower()
        return sorted({ref.provider for ref in self.known_models() if ref.model.lower() == wanted})

    def require(self, provider: str | None, model: str) -> ModelRef:
        resolution = self.resolve(provider, model)
        if resolution.ref is None:
            raise UnknownModelError(resolution.reason)
        return resolution.ref

    # ------------------------------------------------------------------ timelines

    def timeline(self, ref: ModelRef, tier: str = "standard") -> Timeline:
        if tier not in TIERS:
            raise PriceError(f"unknown service tier {tier!r}; expected one of {', '.join(TIERS)}")
        key = (ref, tier)
        cached = self._timelines.get(key)
        if cached is None:
            cached = Timeline(ref.provider, ref.model, tier, self._compose(ref, tier))
            with self._lock:
                self._timelines[key] = cached
        return cached

    def _compose(self, ref: ModelRef, tier: str) -> list[Segment]:
        standard = self._standard_segments(ref)
        segments = standard if tier == "standard" else self._tier_segments(ref, tier, standard)
        return self._without_unpublished(ref, self._discounted(ref, segments))

    def _without_unpublished(self, ref: ModelRef, segments: list[Segment]) -> list[Segment]:
        """Mark the quantities a provider publishes no price for on this model ([[unpriced]]):
        a call that uses one is unpriced with the reason, not charged at a derived rate."""
        whys: dict[str, str] = {}
        for layer in self._layers:  # the user's file first
            for entry in layer.unpriced:
                if entry.applies(ref.provider, ref.model):
                    whys.setdefault(entry.quantity, entry.why(ref.model))
        if not whys:
            return segments
        marked = MappingProxyType(whys)
        return [
            Segment(
                s.start,
                tuple(
                    Option(
                        o.window, replace(o.price, unpriced=MappingProxyType({**o.price.unpriced, **marked}))
                    )
                    if o.price
                    else o
                    for o in s.options
                ),
            )
            for s in segments
        ]

    def genai_ref(self, ref: ModelRef) -> ModelRef:
        """Where genai-prices keeps the price of `ref`.

        Some providers resell other providers' models at their prices: genai-prices finds
        Azure's `gpt-4o` in OpenAI's list (Azure's "fallback" providers). Looked up under
        Azure itself, the model had no price at any date."""
        if self.genai.model_info(ref) is not None:
            return ref
        provider = self.genai.provider(ref.provider)
        for fallback in (getattr(provider, "fallback_model_providers", None) or ()) if provider else ():
            candidate = ModelRef(fallback, ref.model)
            if self.genai.model_info(candidate) is not None:
                return candidate
        return ref

    def _genai_standard(self, ref: ModelRef) -> list[Segment]:
        source = self.genai_ref(ref)
        segments = self.genai.standard_segments(source)
        if source == ref:
            return segments
        note = f"{ref.provider} sells {ref.model} at {source.provider}'s price (genai-prices)"
        return [
            Segment(
                s.start,
                tuple(
                    Option(o.window, replace(o.price, note="; ".join(n for n in (o.price.note, note) if n)))
                    if o.price
                    else o
                    for o in s.options
                ),
            )
            for s in segments
        ]

    def _standard_segments(self, ref: ModelRef) -> list[Segment]:
        name = f"{ref.provider}/{ref.model}"
        try:
            base = self._genai_standard(ref)
        except LookupError:
            # A model of the layers alone (self-hosted, custom): no price before its first entry.
            no_price = Option(None, None, f"{name} has no price at this date")
            base = [Segment(None, (no_price,))]
            dated = [
                p
                for layer in self._layers
                for p in layer.periods_for(ref.provider, ref.model, "standard")
                if p.start is not None
            ]
            if dated:
                earliest = min(dated, key=lambda p: p.start or _EPOCH)
                before = Option(None, None, _before_first(name, earliest))
                base = [Segment(None, (before,)), Segment(earliest.start, (no_price,))]
        for layer in reversed(self._layers):  # lowest layer first, so the user's file ends up on top
            periods = layer.periods_for(ref.provider, ref.model, "standard")
            base = _overlay(base, periods)
            first = next((p for p in periods if p.first), None)
            if first is not None and first.start is not None:
                # The layer dates the model's first price: the lower layers' undated price (genai-
                # prices' price now) did not apply before it; nothing did.
                base = _blank_before(base, first.start, _before_first(name, first))
        return base

    def _tier_segments(self, ref: ModelRef, tier: str, standard: list[Segment]) -> list[Segment]:
        genai_overrides = self._genai_tier_overrides(ref, tier)
        periods = [(layer, layer.periods_for(ref.provider, ref.model, tier)) for layer in self._layers]
        rules = [
            (layer, [r for r in layer.tier_rules if r.tier == tier and r.applies(ref.provider, ref.model)])
            for layer in self._layers
        ]
        points = _starts(standard)
        for _layer, layer_periods in periods:
            points |= {b for p in layer_periods for b in (p.start, p.end)}
        for _layer, layer_rules in rules:
            points |= {b for r in layer_rules for b in (r.start, r.end)}
        points |= {start for start, _, _ in genai_overrides}

        out: list[Segment] = []
        for at in _sorted_points(points):
            std = _segment_at(standard, at)
            # While the standard price is the user's own, the shipped tier prices are list
            # prices, not theirs: only a tier rule (a known discount) carries to the user's price.
            pinned = self._user_price(std)
            active = [] if pinned else [o for o in genai_overrides if _reached(o[0], at)]
            options: tuple[Option, ...] | None = None
            for (layer, layer_periods), (_l2, layer_rules) in zip(periods, rules, strict=True):
                shipped_list_price = pinned is not None and layer is not self.overrides
                period = (
                    None if shipped_list_price else next((p for p in layer_periods if p.covers(at)), None)
                )
                if period is not None:
                    options = period.options
                    break
                rule = next((r for r in layer_rules if r.covers(at) and not (r.data_first and active)), None)
                if rule is not None:
                    adjustment = Adjustment(
                        "tier rule", layer.name, rule.ref, rule.source, rule.factor, rule.note
                    )
                    options = tuple(_scaled(o, adjustment) for o in std.options)
                    break
            if options is None and active:
                _start, overrides, tier_ref = active[-1]
                options = tuple(
                    Option(
                        o.window,
                        o.price.overridden(
                            overrides,
                            o.price.layer,
                            o.price.source,
                            f"{o.price.ref}|{tier_ref}",
                            o.price.note,
                        ),
                    )
                    if o.price
                    else o
                    for o in std.options
                )
            if options is None:
                options = (Option(None, None, self._no_tier_price(ref, tier, pinned)),)
            out.append(Segment(at, options))
        return _merge(out)

    def _user_price(self, standard: Segment) -> Price | None:
        """The user's own standard price in force in this segment, if it is theirs."""
        if self.overrides is None:
            return None
        price = standard.default.price
        return price if price is not None and price.layer == self.overrides.name else None

    def _no_tier_price(self, ref: ModelRef, tier: str, pinned: Price | None) -> str:
        """Why a tier has no price, and exactly what to add to the overrides file."""
        name = f"{ref.provider}/{ref.model}"
        if pinned is None:
            return (
                f"no {tier} price for {name} at this date "
                '(a [[price]] with tier = "' + tier + '" in the overrides file adds one)'
            )
        assert self.overrides is not None
        entry = next(
            (
                p.origin
                for p in self.overrides.periods_for(ref.provider, ref.model, "standard")
                if any(o.price is pinned for o in p.options)
            ),
            "",
        )
        return (
            f"no {tier} price for {name} at this date: its standard price is yours ({pinned.ref}) and "
            f"no known {tier} discount applies to it (the shipped {tier} prices are list prices, not "
            f'yours): add {tier} = {{ factor = "..." }} or a [price.{tier}] table of rates to '
            f"{self.overrides.path} {entry or 'that [[price]] entry'}, "
            f'or a [[price]] with tier = "{tier}" for {name}'
        )

    def _genai_tier_overrides(self, ref: ModelRef, tier: str) -> list[tuple[datetime | None, Any, str]]:
        try:
            return list(self.genai.tier_overrides(self.genai_ref(ref), tier))
        except LookupError:
            return []

    def _discounted(self, ref: ModelRef, segments: list[Segment]) -> list[Segment]:
        discounts = [
            (layer.name, d)
            for layer in self._layers
            for d in layer.discounts
            if d.applies(ref.provider, ref.model)
        ]
        if not discounts:
            return segments
        points = _starts(segments) | {b for _, d in discounts for b in (d.start, d.end)}
        out: list[Segment] = []
        for at in _sorted_points(points):
            options = _segment_at(segments, at).options
            # Every discount in force applies, one after the other: 12.5 % on the provider and
            # 10 % on a model make 21.25 % off that model (docs/pricing.md).
            for layer_name, discount in ((n, d) for n, d in discounts if d.covers(at)):
                note = f"{discount.percent}% discount" + (f" ({discount.note})" if discount.note else "")
                adjustment = Adjustment(
                    "discount", layer_name, discount.ref, discount.source, discount.factor, note
                )
                options = tuple(_scaled(o, adjustment) for o in options)
            out.append(Segment(at, options))
        return _merge(out)

    # ------------------------------------------------------------------ compiled rates

    def plan(self, price: Price) -> RatePlan:
        """Integer rates of a price, compiled once per distinct price object."""
        hit = self._plans.get(id(price))
        if hit is None or hit[0] is not price:
            hit = (price, compile_price(price))
            with self._lock:
                self._plans[id(price)] = hit
        return hit[1]

    # ------------------------------------------------------------------ one call

    def price(
        self,
        model: str,
        usage: Mapping[str, int] | None = None,
        *,
        provider: str | None = None,
        at: datetime | None = None,
        tier: str = "standard",
        served_model: str | None = None,
        **usage_kwargs: int,
    ) -> PricedCall:
        """Price one call exactly. Usage uses the event fields (input_tokens, cache_read_tokens, ...)."""
        quote = self._quote(model, {**(usage or {}), **usage_kwargs}, provider, at, tier, served_model)
        if isinstance(quote, PricedCall):
            return quote
        components = {
            name.removeprefix("cost_"): pico_to_usd(p)
            for name, p in zip(BREAKDOWN_COLUMNS, quote.parts, strict=True)
        }
        savings = cache_savings_pico(quote.quantities, quote.row)
        breakdown = CostBreakdown(
            total=pico_to_usd(sum(quote.parts)), **components, cache_savings=pico_to_usd(savings)
        )
        option = quote.option
        return PricedCall(
            quote.ref.provider,
            quote.ref.model,
            tier,
            quote.at,
            breakdown,
            option.price,
            quote.segment.start,
            _segment_end(quote.timeline, quote.segment),
            option.window.label or option.window.describe() if option.window else None,
            None,
            rates_usd(quote.row),
            {q.name: amount for q, amount in zip(QUANTITIES, quote.quantities, strict=True)},
            {
                q.name: pico_to_usd(amount * rate)
                for q, amount, rate in zip(QUANTITIES, quote.quantities, quote.row, strict=True)
            },
            quote.context_tier,
            self._earliest_known(quote, model, served_model),
        )

    def _earliest_known(self, quote: _Quote, model: str, served_model: str | None) -> EarliestKnown | None:
        """Whether the call falls before its model's first known date, on the undated first price.

        A price the user or a correction dates (`from = ...`) is in force from that date by their
        word; only the first, undated price of the data is stretched back to the beginning of time."""
        if quote.segment.start is not None:
            return None
        known = self.known_since(quote.ref, model, served_model)
        return known if known is not None and quote.at < known.since else None

    def known_since(self, ref: ModelRef, *called: str | None) -> EarliestKnown | None:
        """The first date the model is known to exist, from the dates written in its names.

        A dated snapshot name (`gpt-4o-2024-08-06`, `claude-3-5-sonnet-20241022`, Vertex's
        `claude-3-5-sonnet-v2@20241022`) cannot be called before its date: the name the call
        used says it first; otherwise the earliest dated name genai-prices matches to the model
        (`o3-2025-04-16` for o3). A model of the user's own is dated by their file instead."""
        key = (ref, called)
        if key not in self._known_since:
            found = self._known_since_uncached(ref, called)
            with self._lock:
                self._known_since[key] = found
        return self._known_since[key]

    def _known_since_uncached(self, ref: ModelRef, called: tuple[str | None, ...]) -> EarliestKnown | None:
        if self.genai.model_info(self.genai_ref(ref)) is None:
            return None
        aliases = {alias for layer in self._layers for alias in layer.aliases}
        dated = [
            (day, name)
            for name in called
            if name and name.strip().lower() not in aliases
            for day in (_name_date(name),)
            if day is not None
        ]
        if dated:
            day, name = max(dated)
            return EarliestKnown(datetime(day.year, day.month, day.day, tzinfo=UTC), name.strip())
        return self._first_catalog_date(ref)

    def _first_catalog_date(self, ref: ModelRef) -> EarliestKnown | None:
        info = self.genai.model_info(self.genai_ref(ref))
        if info is None:
            return None
        names = [info.id, *_clause_names(info.match)]
        # A snapshot dated without its year (gpt-4-1106-preview under gpt-4-turbo) is older than
        # every fully dated name, by an unknown amount: no date can be trusted then.
        if any(_YEARLESS_DATE.search(name) for name in names):
            return None
        dated = [(day, name) for name in names for day in (_name_date(name),) if day is not None]
        if not dated:
            return None
        day, name = min(dated)
        return EarliestKnown(datetime(day.year, day.month, day.day, tzinfo=UTC), name)

    def total_pico(
        self,
        model: str,
        usage: Mapping[str, int],
        *,
        provider: str | None = None,
        at: datetime | None = None,
        tier: str = "standard",
        served_model: str | None = None,
    ) -> int | None:
        """`price(...).cost` in integer pico-USD (None when unpriced), without building the
        breakdown and the rates: the gateway asks this on every request."""
        quote = self._quote(model, usage, provider, at, tier, served_model)
        return None if isinstance(quote, PricedCall) else sum(quote.parts)

    def total_and_savings_pico(
        self,
        model: str,
        usage: Mapping[str, int],
        *,
        provider: str | None = None,
        at: datetime | None = None,
        tier: str = "standard",
        served_model: str | None = None,
    ) -> tuple[int, int] | None:
        """`total_pico` and the call's `cache_savings` (what its cached and cache-written tokens
        would have cost as uncached input, less what they cost), from one quote, in pico-USD."""
        quote = self._quote(model, usage, provider, at, tier, served_model)
        if isinstance(quote, PricedCall):
            return None
        return sum(quote.parts), cache_savings_pico(quote.quantities, quote.row)

    def _quote(
        self,
        model: str,
        usage: Mapping[str, int],
        provider: str | None,
        at: datetime | None,
        tier: str,
        served_model: str | None,
    ) -> _Quote | PricedCall:
        """What pricing one call needs, or the unpriced answer."""
        at = as_utc(at or datetime.now(UTC))
        full = normalise_usage(usage)
        problem = usage_problem(full)
        if problem:
            raise ValueError(f"{problem[0]}: {problem[1]}")
        resolution = self.resolve(provider, served_model or model)
        if resolution.ref is None and served_model:
            resolution = self.resolve(provider, model)
        if resolution.ref is None:
            return _unpriced(provider, model, tier, at, resolution.reason or "unknown model")
        ref = resolution.ref
        if tier not in TIERS:
            return _unpriced(ref.provider, ref.model, tier, at, f"unknown service tier {tier!r}")
        timeline = self.timeline(ref, tier)
        segment = timeline.segment_at(at)
        option = segment.select(int(at.timestamp()) % 86400)
        if option.price is None:
            return _unpriced(ref.provider, ref.model, tier, at, option.reason)
        try:
            plan = self.plan(option.price)
        except PriceError as exc:
            return _unpriced(ref.provider, ref.model, tier, at, str(exc))
        quantities = split_one(full)
        missing = [q for q in plan.missing if quantities[QUANTITY_INDEX[q]] > 0]
        if missing:
            return _unpriced(ref.provider, ref.model, tier, at, missing_reason(option.price, missing))
        row = plan.row_for(full["input_tokens"])
        crossed = [t for t in plan.thresholds if full["input_tokens"] > t]
        parts = [0] * len(BREAKDOWN_COLUMNS)
        for i, amount in enumerate(quantities):
            parts[BREAKDOWN_OF_QUANTITY[i]] += amount * row[i]
        if sum(parts) > MAX_EVENT_PICO:
            return _unpriced(ref.provider, ref.model, tier, at, TOO_BIG_REASON)
        return _Quote(
            ref, at, timeline, segment, option, quantities, row, parts, crossed[-1] if crossed else None
        )

    # ------------------------------------------------------------------ listing

    def known_models(self) -> list[ModelRef]:
        refs = {r: None for r in self.genai.all_models}
        for layer in self._layers:
            for provider, model in sorted(layer.models()):
                refs.setdefault(ModelRef(provider, model), None)
        return list(refs)

    def describe_layers(self) -> list[dict[str, str]]:
        rows = [
            {"layer": "genai-prices", "what": self.genai.label, "updated": "pinned; `unitcost prices update`"}
        ]
        if self.corrections is not None:
            rows.append(
                {
                    "layer": "unitcost",
                    "what": self.corrections.path,
                    "updated": f"corrections as of {self.corrections.data_date or '?'}",
                }
            )
        if self.overrides is not None:
            rows.append({"layer": "user", "what": self.overrides.path, "updated": "your file"})
        return rows


def load_corrections() -> Layer:
    path = resources.files("unitcost.pricing").joinpath("data", CORRECTIONS_FILE)
    return load_layer(Path(str(path)), "unitcost")


def normalise_usage(usage: Mapping[str, Any]) -> dict[str, int]:
    defaults = _usage_defaults()
    if not usage.keys() <= defaults.keys():
        unknown = set(usage) - set(defaults)
        raise ValueError(
            f"unknown usage field(s): {', '.join(sorted(unknown))}; expected some of {', '.join(defaults)}"
        )
    out = dict(defaults)
    for name, value in usage.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{name}: expected a non-negative integer, got {value!r}")
        out[name] = value
    return out


@functools.cache
def _usage_defaults() -> dict[str, int]:
    from ..events import FIELD_BY_NAME, USAGE_FIELDS

    return {name: FIELD_BY_NAME[name].default for name in USAGE_FIELDS}


_CACHED_PAIRS: tuple[tuple[str, str], ...] = (
    ("cache_read_text", "input_text"),
    ("cache_audio_read", "input_audio"),
    ("cache_image_read", "input_image"),
    ("cache_write_5m", "input_text"),
    ("cache_write_1h", "input_text"),
)


def cache_savings_pico(quantities: Iterable[int], row: tuple[int, ...]) -> int:
    """Uncached price of every cached or cache-written token minus what was paid for it."""
    q = list(quantities)
    return sum(
        int(q[_quantity_index(c)]) * (row[_quantity_index(u)] - row[_quantity_index(c)])
        for c, u in _CACHED_PAIRS
    )


def cached_pair_indexes() -> list[tuple[int, int]]:
    return [(_quantity_index(c), _quantity_index(u)) for c, u in _CACHED_PAIRS]


def rates_usd(row: tuple[int, ...]) -> dict[str, Decimal]:
    return {q.name: pico_to_usd(rate * q.per) for q, rate in zip(QUANTITIES, row, strict=True)}


def _quantity_index(name: str) -> int:
    return QUANTITY_INDEX[name]


# A date written in a model name: 2024-08-06, 20241022 (not a digit either side).
_NAME_DATE = re.compile(r"(?<!\d)(20\d\d)-?(0[1-9]|1[0-2])-?(0[1-9]|[12]\d|3[01])(?!\d)")
# A snapshot dated by month and day alone: gpt-4-1106-preview, deepseek-r1-0528, gpt-4-0613.
_YEARLESS_DATE = re.compile(r"-(0[1-9]|1[0-2])(0[1-9]|[12]\d|3[01])(?=-|$)")


def _name_date(name: str) -> date | None:
    match = _NAME_DATE.search(name)
    if match is None:
        return None
    try:
        return date(int(match.group(1)), int(match.group(2)), int(match.group(3)))
    except ValueError:  # 2024-02-30 is no date
        return None


def _clause_names(clause: Any) -> list[str]:
    """The literal names of a genai-prices match clause (equals, starts_with, ...), nested ones too."""
    names = [
        value
        for attr in ("equals", "starts_with", "ends_with", "contains")
        if isinstance(value := getattr(clause, attr, None), str)
    ]
    for attr in ("or_", "and_"):
        for sub in getattr(clause, attr, None) or ():
            names.extend(_clause_names(sub))
    return names


def _unpriced(provider: str | None, model: str | None, tier: str, at: datetime, reason: str) -> PricedCall:
    return PricedCall(provider, model, tier, at, None, None, None, None, None, reason, {})


def _segment_end(timeline: Timeline, segment: Segment) -> datetime | None:
    index = timeline.segments.index(segment)
    return timeline.segments[index + 1].start if index + 1 < len(timeline.segments) else None


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _before_first(name: str, first: Period) -> str:
    """Why a call before a model's first published price has none, naming the date it starts."""
    assert first.start is not None
    price = first.options[-1].price
    where = price.ref if price is not None else first.origin
    source = f", source: {price.source}" if price is not None and price.source else ""
    return (
        f"{name} has no price before {_when(first.start)}: its first published price starts then "
        f"({where}{source})"
    )


def _when(at: datetime) -> str:
    """A date, with its time when it is not midnight UTC."""
    if (at.hour, at.minute, at.second) == (0, 0, 0):
        return f"{at:%Y-%m-%d}"
    return f"{at:%Y-%m-%d %H:%M} UTC"


def _blank_before(segments: list[Segment], start: datetime, reason: str) -> list[Segment]:
    """No price before `start`; the segments from `start` on unchanged."""
    kept = [s for s in segments if s.start is not None and s.start >= start]
    if not kept or kept[0].start != start:
        kept.insert(0, Segment(start, _segment_at(segments, start).options))
    return _merge([Segment(None, (Option(None, None, reason),)), *kept])


# ---------------------------------------------------------------------- segment algebra


def _starts(segments: list[Segment]) -> set[datetime | None]:
    return {s.start for s in segments}


def _sorted_points(points: set[datetime | None]) -> list[datetime | None]:
    real = sorted(p for p in points if p is not None)
    return [None, *real]


def _reached(start: datetime | None, at: datetime | None) -> bool:
    return start is None or (at is not None and at >= start)


def _segment_at(segments: list[Segment], at: datetime | None) -> Segment:
    current = segments[0]
    for segment in segments:
        if _reached(segment.start, at):
            current = segment
        else:
            break
    return current


def _overlay(lower: list[Segment], periods: list[Period]) -> list[Segment]:
    if not periods:
        return lower
    points = _starts(lower) | {b for p in periods for b in (p.start, p.end)}
    out: list[Segment] = []
    for at in _sorted_points(points):
        period = next((p for p in periods if p.covers(at)), None)
        out.append(Segment(at, period.options if period else _segment_at(lower, at).options))
    return _merge(out)


def _scaled(option: Option, adjustment: Adjustment) -> Option:
    if option.price is None:
        return option
    return Option(option.window, option.price.scaled(adjustment))


def _merge(segments: list[Segment]) -> list[Segment]:
    merged: list[Segment] = []
    for segment in segments:
        if merged and _signature(merged[-1]) == _signature(segment):
            continue
        merged.append(segment)
    return merged


def _signature(segment: Segment) -> list[tuple[Any, ...]]:
    return [(o.window, o.price.ref if o.price else None, o.reason) for o in segment.options]
