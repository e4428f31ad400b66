"""Layer 1: the pinned genai-prices data, read into unitcost's timelines.

genai-prices describes a model's price as a list of conditional prices (the last active
one wins) plus request variants (batch, flex, priority) that override some components.
This module turns that into `Segment`s with the same meaning, so one engine prices
every layer. It never fetches anything: the data is the bundled snapshot of the pinned
package, or a snapshot the user fetched on purpose with `unitcost prices update`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from functools import cached_property
from importlib.metadata import version as package_version
from types import MappingProxyType
from typing import Any

from genai_prices import types as gp
from genai_prices.data_snapshot import DataSnapshot

from .model import Component, Option, Price, Segment, Tiered, Window

# How a unitcost service tier is expressed in genai-prices' request context.
TIER_CONTEXT: Mapping[str, Mapping[str, str]] = MappingProxyType(
    {
        "standard": MappingProxyType({}),
        "batch": MappingProxyType({"processing": "batch"}),
        "flex": MappingProxyType({"service_tier": "flex"}),
        "priority": MappingProxyType({"service_tier": "priority"}),
    }
)


@dataclass(frozen=True)
class ModelRef:
    provider: str
    model: str


class GenaiLayer:
    """Read-only view of one genai-prices snapshot."""

    layer = "genai-prices"

    def __init__(self, providers: Sequence[gp.Provider] | None = None, label: str | None = None) -> None:
        if providers is None:
            from genai_prices.data import providers as bundled

            providers = bundled
            label = label or f"genai-prices {package_version('genai-prices')} (bundled)"
        self.providers = list(providers)
        self.label = label or "genai-prices (custom snapshot)"
        self._snapshot = DataSnapshot(providers=self.providers, from_auto_update=False)

    # ------------------------------------------------------------------ lookup

    def resolve(self, provider: str | None, model: str) -> tuple[gp.Provider, gp.ModelInfo]:
        """Find provider and model the way genai-prices does. Raises LookupError with its message."""
        return self._snapshot.find_provider_model(model, None, provider or None, None)

    def find_by_id(self, provider: str | None, model_id: str) -> ModelRef | None:
        """A model named by its genai-prices id (what `unitcost prices` lists), when matching rules miss it."""
        wanted = model_id.lower()
        for p in self.providers:
            if provider and p.id != provider.lower():
                continue
            for m in p.models:
                if m.id.lower() == wanted:
                    return ModelRef(p.id, m.id)
        return None

    def provider(self, provider_id: str) -> gp.Provider | None:
        return next((p for p in self.providers if p.id == provider_id), None)

    def model_info(self, ref: ModelRef) -> gp.ModelInfo | None:
        provider = self.provider(ref.provider)
        if provider is None:
            return None
        return next((m for m in provider.models if m.id == ref.model), None)

    @cached_property
    def all_models(self) -> list[ModelRef]:
        return [ModelRef(p.id, m.id) for p in self.providers for m in p.models]

    def source_url(self, provider: gp.Provider) -> str:
        return (provider.pricing_urls or ["https://github.com/pydantic/genai-prices"])[0]

    # ------------------------------------------------------------------ timelines

    def standard_segments(self, ref: ModelRef) -> list[Segment]:
        """Segments for the standard tier, with genai-prices' "last active price wins" rule."""
        provider, model = self._lookup(ref)
        source = self.source_url(provider)
        base_ref = f"{self.layer}:{provider.id}/{model.id}"
        if isinstance(model.prices, gp.ModelPrice):
            price = self._price(model.prices, source, base_ref, model.price_comments)
            return [Segment(None, (Option(None, price),))]

        conditional = list(model.prices)
        starts = sorted(
            {c.constraint.start_date for c in conditional if isinstance(c.constraint, gp.StartDateConstraint)}
        )
        segments: list[Segment] = []
        for start in [None, *starts]:
            options: list[Option] = []
            default: gp.ConditionalPrice | None = None
            for cp in reversed(conditional):
                constraint = cp.constraint
                if constraint is None or (
                    isinstance(constraint, gp.StartDateConstraint)
                    and start is not None
                    and start >= constraint.start_date
                ):
                    default = cp
                    break
                if isinstance(constraint, gp.TimeOfDateConstraint):
                    window = Window.from_times(constraint.start_time, constraint.end_time)
                    options.append(
                        Option(
                            window,
                            self._price(
                                cp.prices,
                                source,
                                f"{base_ref}{_date_tag(cp)}~{window.describe()}",
                                model.price_comments,
                            ),
                        )
                    )
            if default is None:
                # genai-prices falls back to the first price when no condition is active.
                default = conditional[0]
            options.append(
                Option(
                    None,
                    self._price(default.prices, source, base_ref + _date_tag(default), model.price_comments),
                )
            )
            segments.append(Segment(_midnight(start), tuple(options)))
        return _merge_equal(segments)

    def tier_overrides(
        self, ref: ModelRef, tier: str
    ) -> list[tuple[datetime | None, dict[str, Component], str]]:
        """For a non-standard tier: (from, overriding components, ref) in time order.

        An empty list means genai-prices has no price for that tier on this model.
        Mirrors genai-prices: variants are tried in order and the first that sets a
        component wins it; a variant applies from its start date.
        """
        if tier == "standard":
            return []
        _, model = self._lookup(ref)
        context = TIER_CONTEXT[tier]
        variants = [
            v
            for v in (model.price_variants or ())
            if all(context.get(k) == val for k, val in v.when.items())
            and isinstance(v.constraint, gp.StartDateConstraint | None)
        ]
        if not variants:
            return []
        starts = sorted(
            {v.constraint.start_date for v in variants if isinstance(v.constraint, gp.StartDateConstraint)}
        )
        out: list[tuple[datetime | None, dict[str, Component], str]] = []
        for start in [None, *starts]:
            active = [
                v
                for v in variants
                if v.constraint is None
                or (
                    isinstance(v.constraint, gp.StartDateConstraint)
                    and start is not None
                    and start >= v.constraint.start_date
                )
            ]
            if not active:
                continue
            overrides: dict[str, Component] = {}
            for variant in active:
                for key, value in _components(variant.prices).items():
                    overrides.setdefault(key, value)
            tag = f"@{start.isoformat()}" if start else ""
            out.append((_midnight(start), overrides, f"{self.layer}:{ref.provider}/{ref.model}[{tier}]{tag}"))
        return out

    def _lookup(self, ref: ModelRef) -> tuple[gp.Provider, gp.ModelInfo]:
        provider = self.provider(ref.provider)
        model = self.model_info(ref) if provider else None
        if provider is None or model is None:
            raise LookupError(f"{ref.provider}/{ref.model} is not in {self.label}")
        return provider, model

    def _price(self, prices: gp.ModelPrice, source: str, ref: str, note: str | None) -> Price:
        return Price(MappingProxyType(_components(prices)), self.layer, source, ref, "")


def _components(prices: gp.ModelPrice) -> dict[str, Component]:
    out: dict[str, Component] = {}
    for key, value in prices.__dict__.items():
        if key.startswith("_") or value is None:
            continue
        if isinstance(value, Decimal):
            out[key] = value
        elif isinstance(value, gp.TieredPrices):
            out[key] = Tiered(value.base, tuple((t.start, t.price) for t in value.tiers))
    return out


def _date_tag(cp: gp.ConditionalPrice) -> str:
    if isinstance(cp.constraint, gp.StartDateConstraint):
        return f"@{cp.constraint.start_date.isoformat()}"
    return ""


def _midnight(day: date | None) -> datetime | None:
    return None if day is None else datetime(day.year, day.month, day.day, tzinfo=UTC)


def _merge_equal(segments: list[Segment]) -> list[Segment]:
    """Drop a segment that repeats the previous one (same options), keeping history readable."""
    merged: list[Segment] = []
    for segment in segments:
        if merged and _same_options(merged[-1].options, segment.options):
            continue
        merged.append(segment)
    return merged


def _same_options(a: tuple[Option, ...], b: tuple[Option, ...]) -> bool:
    def key(options: tuple[Option, ...]) -> list[Any]:
        return [(o.window, o.price.ref if o.price else None) for o in options]

    return key(a) == key(b)
