"""The shape of a price, and how a price becomes integer rates.

A `Price` is what a provider publishes for one model at one moment: components in USD
per unit (per million tokens, per thousand requests), some of them tiered by prompt
length, plus where it comes from. A `Timeline` says which price applies when, for one
model and one service tier: segments in time, each with time-of-day windows checked
before its default price. `RatePlan` is a price compiled to integer pico-USD per unit of
each billable quantity, which is all the pricing engines read.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time
from decimal import Decimal, InvalidOperation
from types import MappingProxyType

from genai_prices.data_units import unit_data

from ..money import MAX_EVENT_PICO, rate_pico
from .quantities import QUANTITIES

# genai-prices' unit registry: price key -> (usage dimensions, units per price).
PRICE_KEY_DIMS: Mapping[str, tuple[frozenset[tuple[str, str]], int]] = MappingProxyType(
    {
        raw.get("price_key", usage_key): (frozenset(raw.get("dimensions", {}).items()), int(raw["per"]))
        for usage_key, raw in unit_data.items()
    }
)


class PriceError(ValueError):
    """A price that cannot be compiled into rates (unknown key, ambiguous components)."""


@dataclass(frozen=True)
class Tiered:
    """A price that changes with prompt length: `tiers` is ((start, price), ...).

    As providers bill it, crossing a tier charges *all* tokens at that tier's price when
    the prompt's total input tokens are strictly above `start`.
    """

    base: Decimal
    tiers: tuple[tuple[int, Decimal], ...]

    def at(self, input_tokens: int) -> Decimal:
        price = self.base
        for start, tier_price in self.tiers:
            if input_tokens > start:
                price = tier_price
        return price

    def scaled(self, factor: Decimal) -> Tiered:
        return Tiered(self.base * factor, tuple((s, p * factor) for s, p in self.tiers))


Component = Decimal | Tiered


@dataclass(frozen=True)
class Adjustment:
    """A multiple applied on top of a price (a tier rule, a negotiated discount).

    It has its own layer and source: a batch price made of genai-prices' standard price and
    unitcost's "-50 %" rule has two provenances, and a change of either one is a price change
    that must be attributed to the right file."""

    kind: str
    """"tier rule" or "discount"."""
    layer: str
    ref: str
    source: str
    factor: Decimal
    note: str = ""


@dataclass(frozen=True)
class Price:
    """A dated price with its provenance."""

    components: Mapping[str, Component]
    layer: str
    """genai-prices | unitcost | user: where the base price comes from (see `adjustments`)."""
    source: str
    """URL of the published price, or the file and entry it was read from."""
    ref: str
    """Stable, human-readable id stored with every event priced by it."""
    note: str = ""
    adjustments: tuple[Adjustment, ...] = ()
    """Tier rules and discounts applied to the base price, in the order applied."""
    unpriced: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    """Quantities with no published price of their own (quantity -> why): a call that uses one is
    unpriced with that reason rather than charged at a rate derived from another component (a
    1-hour cache write at the 5-minute write price)."""

    def scaled(self, adjustment: Adjustment) -> Price:
        factor = adjustment.factor
        comps: dict[str, Component] = {
            k: v * factor if isinstance(v, Decimal) else v.scaled(factor) for k, v in self.components.items()
        }
        return replace(
            self,
            components=MappingProxyType(comps),
            ref=f"{self.ref}|{adjustment.ref}",
            note="; ".join(n for n in (self.note, adjustment.note) if n),
            adjustments=(*self.adjustments, adjustment),
        )

    def overridden(
        self, overrides: Mapping[str, Component], layer: str, source: str, ref: str, note: str = ""
    ) -> Price:
        comps = dict(self.components)
        comps.update(overrides)
        return Price(MappingProxyType(comps), layer, source, ref, note, self.adjustments, self.unpriced)

    @property
    def layers(self) -> str:
        """Every layer the price is made of, base first: "genai-prices + unitcost"."""
        names = [self.layer]
        for adjustment in self.adjustments:
            if adjustment.layer not in names:
                names.append(adjustment.layer)
        return " + ".join(names)

    @property
    def sources(self) -> tuple[str, ...]:
        """The base price's source, then each adjustment's, without repeats."""
        return tuple(dict.fromkeys((self.source, *(a.source for a in self.adjustments))))


@dataclass(frozen=True)
class Window:
    """A daily UTC time-of-day window [start, end), possibly wrapping midnight. Seconds since 00:00 UTC."""

    start: int
    end: int
    label: str = ""

    @staticmethod
    def from_times(start: time, end: time, label: str = "") -> Window:
        return Window(_utc_seconds(start), _utc_seconds(end), label)

    def contains(self, second_of_day: int) -> bool:
        if self.end < self.start:
            return second_of_day >= self.start or second_of_day < self.end
        return self.start <= second_of_day < self.end

    def describe(self) -> str:
        def hm(s: int) -> str:
            return f"{s // 3600:02d}:{s % 3600 // 60:02d}"

        return f"{hm(self.start)}-{hm(self.end)} UTC"

    def title(self) -> str:
        """The label with its hours ("off-peak, 16:30-00:30 UTC"): a label alone does not say when."""
        return f"{self.label}, {self.describe()}" if self.label else self.describe()


def _utc_seconds(t: time) -> int:
    if t.tzinfo is not None:
        t = datetime.combine(date(2000, 1, 1), t).astimezone(UTC).time()
    return t.hour * 3600 + t.minute * 60 + t.second


@dataclass(frozen=True)
class Option:
    """A price that applies inside `window` (or always, when window is None). price None = no price."""

    window: Window | None
    price: Price | None
    reason: str = ""
    """Why there is no price, when price is None."""


@dataclass(frozen=True)
class Segment:
    """From `start` (inclusive; None = since forever) until the next segment: windows first, then default."""

    start: datetime | None
    options: tuple[Option, ...]

    @property
    def default(self) -> Option:
        return self.options[-1]

    def select(self, second_of_day: int) -> Option:
        for option in self.options:
            if option.window is None or option.window.contains(second_of_day):
                return option
        return self.options[-1]


@dataclass
class Timeline:
    """Which price applies when, for one (provider, model, service tier)."""

    provider: str
    model: str
    tier: str
    segments: list[Segment]
    _starts: list[float] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        self.segments.sort(key=lambda s: _epoch(s.start))
        self._starts = [_epoch(s.start) for s in self.segments]

    def segment_at(self, ts: datetime) -> Segment:
        index = bisect.bisect_right(self._starts, ts.timestamp()) - 1
        return self.segments[max(index, 0)]

    def option_at(self, ts: datetime) -> Option:
        seconds = int(ts.timestamp())
        return self.segment_at(ts).select(seconds % 86400)


def _epoch(start: datetime | None) -> float:
    return float("-inf") if start is None else start.timestamp()


# --------------------------------------------------------------------------- compiled rates


@dataclass(frozen=True)
class RatePlan:
    """A price compiled to integer pico-USD per unit of each quantity, per prompt-length tier.

    `rows[i]` applies when the prompt's input tokens exceed `thresholds[i-1]` (row 0 below
    every threshold).
    """

    thresholds: tuple[int, ...]
    rows: tuple[tuple[int, ...], ...]
    exact: bool
    missing: tuple[str, ...]
    """Quantities that have no applicable price (charging them would be a guess)."""

    def row_for(self, input_tokens: int) -> tuple[int, ...]:
        return self.rows[bisect.bisect_left(self.thresholds, input_tokens)]


# Quantities for which "no price" means "free" rather than "unknown": most models do not
# charge per request.
_FREE_WHEN_UNPRICED = frozenset({"requests"})


def compile_price(price: Price) -> RatePlan:
    """Compile a price into rates. Raises PriceError for keys genai-prices does not define."""
    unknown = sorted(k for k in price.components if k not in PRICE_KEY_DIMS)
    if unknown:
        raise PriceError(f"unknown price component(s) {', '.join(unknown)} in {price.ref}")
    thresholds = sorted(
        {start for comp in price.components.values() if isinstance(comp, Tiered) for start, _ in comp.tiers}
    )
    # The prompt length that selects each row: 0 for the base row, start+1 for each tier.
    probes = [0, *(start + 1 for start in thresholds)]
    rows: list[tuple[int, ...]] = []
    exact = True
    missing: list[str] = []
    for row_index, probe in enumerate(probes):
        resolved = {
            key: comp.at(probe) if isinstance(comp, Tiered) else comp
            for key, comp in price.components.items()
        }
        row = []
        for quantity in QUANTITIES:
            key = _most_specific_key(quantity.dims, resolved, price.ref)
            if (
                key is not None
                and quantity.name in price.unpriced
                and PRICE_KEY_DIMS[key][0] != frozenset(quantity.dims.items())
            ):
                key = None  # only a rate derived from another component: not published, not charged
            if key is None:
                if quantity.name not in _FREE_WHEN_UNPRICED and row_index == 0:
                    missing.append(quantity.name)
                row.append(0)
                continue
            dims_per = PRICE_KEY_DIMS[key][1]
            pico, is_exact = rate_pico(resolved[key], dims_per)
            if pico > MAX_EVENT_PICO:
                # Rates are int64 in the array engine; one unit above $1M is a typo, not a price.
                raise PriceError(f"{price.ref}: {_too_high(key, resolved[key])}")
            exact = exact and is_exact
            row.append(pico)
        rows.append(tuple(row))
    return RatePlan(tuple(thresholds), tuple(rows), exact, tuple(missing))


def missing_reason(price: Price, names: list[str]) -> str:
    """Why a call that uses quantities its price has no rate for is unpriced; the same words in
    both engines (`PriceBook.price` and `batch.price_table`)."""
    reason = f"{price.ref} has no price for {', '.join(names)}"
    whys = list(dict.fromkeys(price.unpriced[n] for n in names if n in price.unpriced))
    return f"{reason}: {'; '.join(whys)}" if whys else reason


def _most_specific_key(dims: Mapping[str, str], resolved: Mapping[str, Decimal], ref: str) -> str | None:
    have = frozenset(dims.items())
    best: str | None = None
    best_size = -1
    tie = False
    for key in resolved:
        key_dims = PRICE_KEY_DIMS[key][0]
        if key_dims <= have:
            if len(key_dims) > best_size:
                best, best_size, tie = key, len(key_dims), False
            elif len(key_dims) == best_size:
                tie = True
    if tie:
        raise PriceError(
            f"{ref}: two components apply equally to {dict(dims)}; add the price of their overlap"
        )
    return best


def parse_components(raw: Mapping[str, object], where: str) -> dict[str, Component]:
    """Components from TOML-like data: numbers or strings, or {base=..., tiers=[{start=..., price=...}]}."""
    out: dict[str, Component] = {}
    for key, value in raw.items():
        if key not in PRICE_KEY_DIMS:
            known = ", ".join(sorted(k for k in PRICE_KEY_DIMS if k.endswith(("mtok", "kcount"))))
            raise PriceError(f"{where}: unknown price component {key!r} (known: {known})")
        if isinstance(value, Mapping):
            out[key] = _parse_tiered(key, value, where)
        else:
            out[key] = parse_number(value, f"{where}: {key}")
        for price in _prices_of(out[key]):
            if rate_pico(price, PRICE_KEY_DIMS[key][1])[0] > MAX_EVENT_PICO:
                raise PriceError(f"{where}: {_too_high(key, price)}")
    return out


def _parse_tiered(key: str, value: Mapping[str, object], where: str) -> Tiered:
    """`{base = "1.25", tiers = [{start = 200000, price = "2.50"}]}`: a price by prompt length."""
    unknown = sorted(set(value) - {"base", "tiers"})
    if unknown or "base" not in value:
        raise PriceError(
            f"{where}: {key} as a table needs base = ... and optionally tiers = [{{start = ..., price = ...}}]"
            + (f"; unknown key(s) {', '.join(unknown)}" if unknown else "")
        )
    tiers_raw = value.get("tiers", [])
    if not isinstance(tiers_raw, list):
        raise PriceError(f"{where}: {key}.tiers must be a list of {{start = ..., price = ...}}")
    tiers: list[tuple[int, Decimal]] = []
    for index, tier in enumerate(tiers_raw):
        at = f"{where}: {key}.tiers[{index}]"
        if not isinstance(tier, Mapping) or set(tier) != {"start", "price"}:
            raise PriceError(f"{at}: expected {{start = <prompt tokens>, price = ...}}, got {tier!r}")
        start = tier["start"]
        if isinstance(start, bool) or not isinstance(start, int) or start < 0:
            raise PriceError(f"{at}: start must be a whole number of prompt tokens, got {start!r}")
        tiers.append((start, parse_number(tier["price"], f"{at}.price")))
    return Tiered(parse_number(value["base"], f"{where}: {key}.base"), tuple(sorted(tiers)))


def _prices_of(component: Component) -> tuple[Decimal, ...]:
    if isinstance(component, Tiered):
        return (component.base, *(price for _, price in component.tiers))
    return (component,)


def _too_high(key: str, price: Decimal) -> str:
    unit = "million tokens" if key.endswith("_mtok") else "thousand" if key.endswith("_kcount") else "unit"
    return (
        f"{key} = {price} USD per {unit} makes one unit cost $1M or more; "
        "check the number (prices are per million tokens or per thousand)"
    )


def parse_number(value: object, where: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
        raise PriceError(f"{where}: expected a number, got {value!r}")
    # floats from TOML go through repr so 0.1 stays 0.1, not 0.1000000000000000055...
    try:
        number = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    except InvalidOperation as exc:
        raise PriceError(f"{where}: expected a number, got {value!r}") from exc
    if not number.is_finite() or number < 0:
        raise PriceError(f"{where}: must be a finite non-negative number, got {value!r}")
    return number
