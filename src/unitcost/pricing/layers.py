"""Layers 2 and 3: unitcost's corrections and the user's overrides, from TOML.

Both files share one format, so anything unitcost ships as a correction a user can also
write for themselves:

    [[price]]                       # a dated price for one model and tier
    provider = "deepseek"
    model = "deepseek-chat"
    tier = "standard"               # standard (default), batch, flex, priority
    from = 2025-09-05T16:00:00Z     # TOML date or datetime, UTC; omitted = since forever
    to = 2025-09-29T00:00:00Z       # optional; default: until the next entry of the same model and tier
    first = false                   # true: the model's first price; before `from` it has no price at all
    source = "https://api-docs.deepseek.com/quick_start/pricing"
    input_mtok = 0.56
    cache_read_mtok = 0.07
    output_mtok = 1.68
    [[price.window]]                # optional time-of-day windows (UTC), checked before the default
    from = "16:30"
    to = "00:30"
    label = "off-peak"
    input_mtok = 0.135              # components not given are inherited from the entry
    [price.batch]                   # optional tier price for the entry's dates (standard entries):
    factor = 0.5                    # a multiple of the entry, or rates of its own (others inherited)

    [[tier_rule]]                   # a tier as a multiple of the standard price
    provider = "anthropic"
    models = "*"                    # or a list of model ids
    tier = "batch"
    factor = 0.5
    from = 2024-10-08
    data_first = true               # genai-prices' own price for the tier, where it has one, first
    source = "https://docs.anthropic.com/en/docs/build-with-claude/batch-processing#pricing"

    [[unpriced]]                    # a quantity whose price is not published: a call using it is unpriced
    provider = "aws"
    models = ["regional.anthropic.claude-sonnet-4-20250514-v1:0"]   # or "*"
    quantity = "cache_write_1h"     # a billable quantity (unitcost.pricing.quantities.QUANTITIES)
    reason = "Bedrock: no published price for 1-hour cache writes of {model}"
    source = "https://aws.amazon.com/bedrock/pricing/"

An `[[unpriced]]` entry only stops a rate being *derived* (a 1-hour cache write charged at
the 5-minute write price because the price has no 1-hour rate): a price that states the
quantity's own rate (`cache_write_1h_mtok`) still prices it.

The user's file adds:

    [[discount]]                    # negotiated discounts, in percent, on every tier
    provider = "openai"             # provider, model, or both
    model = "gpt-4o"
    percent = 12.5
    from = 2025-01-01
    to = 2026-01-01                 # optional
    note = "Enterprise agreement 2025"
    source = "MSA-2025-014"         # optional; default: the file and entry

    [aliases]                       # a name your code uses -> provider/model
    "corp-gpt" = "openai/gpt-4o"

Prices are USD per million tokens (`*_mtok`) or per thousand (`*_kcount`), with the
component names of genai-prices (input_mtok, cache_read_mtok, cache_write_mtok,
cache_write_1h_mtok, output_mtok, output_reasoning_mtok, input_audio_mtok, ...).
"""

from __future__ import annotations

import difflib
import hashlib
import re
import tomllib
from collections import defaultdict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time
from decimal import Decimal
from pathlib import Path
from types import MappingProxyType
from typing import Any

from ..utc import as_utc
from .model import (
    PRICE_KEY_DIMS,
    Adjustment,
    Option,
    Price,
    PriceError,
    Window,
    parse_components,
    parse_number,
)
from .quantities import QUANTITY_INDEX

TIERS = ("standard", "batch", "flex", "priority")


@dataclass(frozen=True)
class Period:
    """A price for [start, end) for one (provider, model, tier), with its windows."""

    provider: str
    model: str
    tier: str
    start: datetime | None
    end: datetime | None
    options: tuple[Option, ...]
    aliases: tuple[str, ...] = ()
    origin: str = ""
    """The file and entry it was read from, to name both entries of an overlap."""
    tier_prices: tuple[Period, ...] = ()
    """The batch, flex or priority prices declared inside this entry (`batch = {factor = "0.5"}`
    or a `[price.batch]` table): they hold for exactly this entry's dates."""
    first: bool = False
    """The model's first published price (`first = true`): before `start` the model has no price
    in any lower layer either. A lower layer's undated price (genai-prices' price *now*) must not
    be stretched back to before the model existed: deepseek-reasoner in 2024."""

    def covers(self, at: datetime | None) -> bool:
        """Whether the instant `at` (None = the beginning of time) is in [start, end)."""
        return _in_range(at, self.start, self.end)


@dataclass(frozen=True)
class TierRule:
    provider: str
    models: tuple[str, ...] | None
    """None means every model of the provider."""
    tier: str
    factor: Decimal
    start: datetime | None
    end: datetime | None
    source: str
    note: str
    ref: str
    data_first: bool = False
    """Where genai-prices has its own price for the tier at an instant, that price is used and
    the rule only fills in for the models the data leaves out."""

    def applies(self, provider: str, model: str) -> bool:
        return provider == self.provider and (self.models is None or model in self.models)

    def covers(self, at: datetime | None) -> bool:
        return _in_range(at, self.start, self.end)


@dataclass(frozen=True)
class Unpriced:
    """A quantity a provider publishes no price for, on some of its models: a call that uses it is
    unpriced with `reason`, instead of charged at a rate derived from another component."""

    provider: str
    models: tuple[str, ...] | None
    """None means every model of the provider."""
    quantity: str
    reason: str
    source: str
    note: str = ""

    def applies(self, provider: str, model: str) -> bool:
        return provider == self.provider and (self.models is None or model in self.models)

    def why(self, model: str) -> str:
        """The reason for one model, with its source."""
        return f"{self.reason.replace('{model}', model)} (source: {self.source})"


@dataclass(frozen=True)
class Discount:
    provider: str | None
    model: str | None
    percent: Decimal
    start: datetime | None
    end: datetime | None
    note: str
    ref: str
    source: str = ""
    """The agreement it comes from, or the file and entry it was read from."""

    def applies(self, provider: str, model: str) -> bool:
        return (self.provider is None or self.provider == provider) and (
            self.model is None or self.model == model
        )

    @property
    def factor(self) -> Decimal:
        return (Decimal(100) - self.percent) / Decimal(100)

    def covers(self, at: datetime | None) -> bool:
        return _in_range(at, self.start, self.end)


def _in_range(at: datetime | None, start: datetime | None, end: datetime | None) -> bool:
    if at is None:  # the beginning of time
        return start is None
    return (start is None or at >= start) and (end is None or at < end)


@dataclass
class Layer:
    """Parsed entries of one TOML price file."""

    name: str
    """unitcost | user"""
    path: str
    periods: dict[tuple[str, str, str], list[Period]] = field(default_factory=lambda: defaultdict(list))
    tier_rules: list[TierRule] = field(default_factory=list)
    discounts: list[Discount] = field(default_factory=list)
    unpriced: list[Unpriced] = field(default_factory=list)
    aliases: dict[str, tuple[str, str]] = field(default_factory=dict)
    data_date: str | None = None
    sha256: str | None = None
    """Of the file's bytes as read (None for a layer not read from a file): the audit of a
    reprice names the exact version of a negotiated-discount file it priced with."""

    def periods_for(self, provider: str, model: str, tier: str) -> list[Period]:
        return self.periods.get((provider, model, tier), [])

    def models(self) -> set[tuple[str, str]]:
        return {(p, m) for (p, m, _t) in self.periods}

    def find_model(self, provider: str | None, model: str) -> tuple[str, str] | None:
        """Exact, case-insensitive match of a model (or one of its aliases) defined in this layer."""
        wanted = model.lower()
        for (p, m, _t), periods in self.periods.items():
            if provider and provider.lower() != p:
                continue
            names = {m.lower(), *(a.lower() for per in periods for a in per.aliases)}
            if wanted in names:
                return p, m
        return None


def load_layer(path: str | Path, name: str) -> Layer:
    path = Path(path)
    try:
        body = path.read_bytes()
        text = body.decode("utf-8")
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PriceError(f"{path}: not valid TOML: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise PriceError(f"{path}: not UTF-8 text: {exc}") from exc
    layer = parse_layer(raw, name, str(path), entry_lines(text))
    layer.sha256 = hashlib.sha256(body).hexdigest()
    return layer


_ENTRY_HEADER = re.compile(r"^\s*\[\[\s*(price|tier_rule|discount|unpriced)\s*\]\]")


def entry_lines(text: str) -> dict[str, list[int]]:
    """Line number of each `[[price]]`, `[[tier_rule]]` and `[[discount]]` header, in order:
    an error in the tenth price of a long file says where to look, as TOML errors do."""
    lines: dict[str, list[int]] = defaultdict(list)
    for number, line in enumerate(text.splitlines(), start=1):
        match = _ENTRY_HEADER.match(line)
        if match:
            lines[match.group(1)].append(number)
    return lines


_ENTRY_SECTIONS = ("price", "tier_rule", "discount", "unpriced")


def parse_layer(
    raw: Mapping[str, Any], name: str, where: str, lines: Mapping[str, list[int]] | None = None
) -> Layer:
    layer = Layer(name=name, path=where, data_date=_opt_str(raw.get("data_date")))
    known = {"price", "tier_rule", "discount", "unpriced", "aliases", "data_date"}
    unknown = set(raw) - known
    if unknown:
        raise PriceError(
            f"{where}: unknown section(s) {', '.join(sorted(unknown))}; expected {sorted(known)}"
        )
    for section in _ENTRY_SECTIONS:
        listed = raw.get(section, [])
        if not isinstance(listed, list) or not all(isinstance(e, Mapping) for e in listed):
            # `[price]` instead of `[[price]]` is one table, not a list of entries.
            raise PriceError(f"{where}: write each {section} entry under its own [[{section}]] header")
    if not isinstance(raw.get("aliases", {}), Mapping):
        raise PriceError(f'{where}: aliases must be a table: [aliases] then "name" = "provider/model"')

    def entries(section: str) -> list[tuple[str, Mapping[str, Any], str]]:
        """(where, entry, line suffix) for each entry of a section."""
        found = (lines or {}).get(section, [])
        raw_entries = raw.get(section, [])
        # Line numbers only when every entry has its own header (not an inline array).
        numbered = len(found) == len(raw_entries)
        return [
            (f"{where} [[{section}]] #{i + 1}", entry, f" (at line {found[i]})" if numbered else "")
            for i, entry in enumerate(raw_entries)
        ]

    for entry_where, entry, line in entries("price"):
        with _located(line):
            period = _parse_period(entry, name, entry_where)
        period = replace(period, origin=f"[[price]] #{entry_where.rsplit('#', 1)[1]}{line}")
        layer.periods[(period.provider, period.model, period.tier)].append(period)
    for key, periods in list(layer.periods.items()):
        layer.periods[key] = close_periods(periods, where)
    _add_tier_prices(layer)

    for entry_where, entry, line in entries("tier_rule"):
        with _located(line):
            layer.tier_rules.append(_parse_rule(entry, name, entry_where))

    for entry_where, entry, line in entries("unpriced"):
        with _located(line):
            layer.unpriced.append(_parse_unpriced(entry, name, entry_where))

    first_at: dict[tuple[str | None, str | None, datetime | None], tuple[str, Discount]] = {}
    for entry_where, entry, line in entries("discount"):
        with _located(line):
            discount = _parse_discount(entry, name, entry_where)
            scope = (discount.provider, discount.model and discount.model.lower(), discount.start)
            if scope in first_at:
                raise PriceError(_same_start(first_at[scope], (entry_where, discount)))
            first_at[scope] = (entry_where, discount)
            layer.discounts.append(discount)

    for alias, target in (raw.get("aliases") or {}).items():
        if not isinstance(target, str) or "/" not in target:
            raise PriceError(f"{where} [aliases]: {alias!r} must map to 'provider/model', got {target!r}")
        provider, model = target.split("/", 1)
        layer.aliases[alias.lower()] = (provider.strip().lower(), model.strip())
    return layer


_PERIOD_KEYS = {
    "provider",
    "model",
    "tier",
    "from",
    "to",
    "first",
    "source",
    "note",
    "window",
    "aliases",
    *TIERS[1:],
}


def _parse_period(entry: Mapping[str, Any], layer: str, where: str) -> Period:
    provider = _req_str(entry, "provider", where).lower()
    model = _req_str(entry, "model", where)
    tier = _tier(entry.get("tier", "standard"), where)
    start, end = _interval(entry, where)
    _refuse_unknown_keys(
        entry,
        _PERIOD_KEYS | set(PRICE_KEY_DIMS),
        where,
        f"{', '.join(sorted(_PERIOD_KEYS))} or price components such as input_mtok (see docs/pricing.md)",
    )
    source = _req_str(entry, "source", where) if layer == "unitcost" else str(entry.get("source") or where)
    note = str(entry.get("note", ""))
    first = entry.get("first", False)
    if not isinstance(first, bool):
        raise PriceError(f"{where}: first must be true or false, got {first!r}")
    if first and start is None:
        raise PriceError(f"{where}: first = true needs 'from': the date the model's first price starts")
    if first and tier != "standard":
        raise PriceError(f"{where}: first = true is for a standard price (its tiers follow it)")
    comps = parse_components({k: v for k, v in entry.items() if k not in _PERIOD_KEYS}, where)
    if not comps:
        raise PriceError(f"{where}: a price needs at least one component such as input_mtok")
    tier_tag = "" if tier == "standard" else f"[{tier}]"
    ref = f"{layer}:{provider}/{model}{tier_tag}@{_tag(start, minutes=True)}"
    options: list[Option] = []
    raw_windows = entry.get("window", [])
    if not isinstance(raw_windows, list) or not all(isinstance(w, Mapping) for w in raw_windows):
        raise PriceError(f"{where}: write each time-of-day window under its own [[price.window]] header")
    for w_index, raw_window in enumerate(raw_windows):
        w_where = f"{where} window #{w_index + 1}"
        _refuse_unknown_keys(
            raw_window,
            _WINDOW_KEYS | set(PRICE_KEY_DIMS),
            w_where,
            "from, to, label or price components such as input_mtok",
        )
        window = Window.from_times(
            _clock(raw_window.get("from"), w_where),
            _clock(raw_window.get("to"), w_where),
            str(raw_window.get("label", "")),
        )
        if window.start == window.end:
            raise PriceError(f"{w_where}: 'from' and 'to' are the same time, so the window never applies")
        w_comps = dict(comps)
        w_comps.update(
            parse_components({k: v for k, v in raw_window.items() if k not in _WINDOW_KEYS}, w_where)
        )
        options.append(
            Option(
                window,
                Price(
                    MappingProxyType(w_comps),
                    layer,
                    source,
                    f"{ref}~{window.label or window.describe()}",
                    note,
                ),
            )
        )
    options.append(Option(None, Price(MappingProxyType(comps), layer, source, ref, note)))
    period = Period(provider, model, tier, start, end, tuple(options), _aliases(entry, where), first=first)
    tier_prices = tuple(
        _parse_tier_price(period, t, entry[t], layer, f"{where} {t}") for t in TIERS[1:] if t in entry
    )
    if tier_prices and tier != "standard":
        raise PriceError(f"{where}: a {tier} price cannot hold tier tables; write them in the standard entry")
    return replace(period, tier_prices=tier_prices)


def _aliases(entry: Mapping[str, Any], where: str) -> tuple[str, ...]:
    """A bare string would be read letter by letter: `aliases = "gpt4"` made `g` a name of the model."""
    raw = entry.get("aliases", [])
    if not isinstance(raw, list) or not all(isinstance(a, str) and a.strip() for a in raw):
        raise PriceError(
            f'{where}: aliases must be a list of names, e.g. aliases = ["my-model"], got {raw!r}'
        )
    return tuple(a.strip() for a in raw)


_TIER_TABLE_KEYS = {"factor", "note"}
_WINDOW_KEYS = {"from", "to", "label"}


def _parse_tier_price(standard: Period, tier: str, raw: Any, layer: str, where: str) -> Period:
    """A tier price declared inside a standard entry: a multiple of it, or rates of its own.

    `batch = { factor = "0.5" }` scales every rate of the entry, its time-of-day windows
    included. `[price.batch]` with rates is the tier's price all day; the rates it leaves out
    are the entry's own, as in a window. Its dates are the entry's, set when the file's
    entries are closed (`_add_tier_prices`)."""
    if not isinstance(raw, Mapping):
        raise PriceError(
            f'{where}: expected a table, e.g. {tier} = {{ factor = "0.5" }} or [price.{tier}] with rates, got {raw!r}'
        )
    _refuse_unknown_keys(
        raw,
        _TIER_TABLE_KEYS | set(PRICE_KEY_DIMS),
        where,
        "factor, note or price components such as input_mtok",
    )
    rates = {k: v for k, v in raw.items() if k not in _TIER_TABLE_KEYS}
    note = str(raw.get("note", ""))
    base = standard.options[-1].price
    assert base is not None  # a standard entry always has its default price
    if "factor" in raw:
        if rates:
            raise PriceError(f"{where}: give either factor or the tier's own rates, not both")
        factor = parse_number(raw["factor"], f"{where}: factor")
        if factor == 0:
            raise PriceError(f"{where}: factor must be more than 0 (a free tier is rates of 0)")
        adjustment = Adjustment(
            "tier rule",
            layer,
            f"{layer}:{standard.provider}/{standard.model}[{tier}]x{factor}@{_tag(standard.start)}",
            base.source,
            factor,
            note or f"{tier} at {factor} x this entry's standard price",
        )
        options = tuple(
            Option(o.window, o.price.scaled(adjustment) if o.price else None) for o in standard.options
        )
    else:
        if not rates:
            raise PriceError(f"{where}: a tier table needs factor = ... or rates such as input_mtok")
        comps = dict(base.components)
        comps.update(parse_components(rates, where))
        ref = f"{layer}:{standard.provider}/{standard.model}[{tier}]@{_tag(standard.start, minutes=True)}"
        options = (Option(None, Price(MappingProxyType(comps), layer, base.source, ref, note or base.note)),)
    return replace(standard, tier=tier, options=options, tier_prices=())


def _add_tier_prices(layer: Layer) -> None:
    """File each entry's tier prices under their tier, for exactly the entry's closed dates."""
    added: set[tuple[str, str, str]] = set()
    for (provider, model, tier), periods in list(layer.periods.items()):
        if tier != "standard":
            continue
        for period in periods:
            for tier_price in period.tier_prices:
                key = (provider, model, tier_price.tier)
                origin = f"{period.origin.split(' (at', 1)[0]} {tier_price.tier}{_line_of(period.origin)}"
                layer.periods[key].append(replace(tier_price, end=period.end, origin=origin))
                added.add(key)
    for key in added:
        layer.periods[key] = close_periods(layer.periods[key], layer.path)


def _line_of(origin: str) -> str:
    return origin[origin.index(" (at") :] if " (at" in origin else ""


def _tag(start: datetime | None, *, minutes: bool = False) -> str:
    """How a ref dates its entry: the day, and the time when it does not start at midnight UTC
    (a discount from noon on the 15th must not read as one from the 15th)."""
    if start is None:
        return "origin"
    if minutes or (start.hour, start.minute, start.second) != (0, 0, 0):
        return start.strftime("%Y-%m-%dT%H:%MZ")
    return start.strftime("%Y-%m-%d")


@contextmanager
def _located(line: str) -> Iterator[None]:
    """Add the entry's line to an error found in it."""
    try:
        yield
    except PriceError as exc:
        raise PriceError(f"{exc}{line}") from None


def close_periods(periods: list[Period], where: str) -> list[Period]:
    """Sort, give open-ended entries the next entry's start as their end, and refuse overlaps.

    Two entries from the same instant overlap too: one of them would be silently dropped,
    and which one would depend on the order of the file (a price written for
    `gpt-4o-2024-08-06` is one for `gpt-4o`)."""
    ordered = sorted(periods, key=lambda p: p.start or datetime.min.replace(tzinfo=UTC))
    late_first = next((p for p in ordered[1:] if p.first), None)
    if late_first is not None:
        raise PriceError(
            f"{where}: {late_first.provider}/{late_first.model} {late_first.origin or ''} says first = true "
            f"but {ordered[0].origin or 'another entry'} starts before it"
        )
    closed: list[Period] = []
    for i, period in enumerate(ordered):
        nxt = ordered[i + 1] if i + 1 < len(ordered) else None
        end = period.end
        if end is None and nxt is not None:
            end = nxt.start
        same_start = nxt is not None and nxt.start == period.start
        if nxt is not None and (
            same_start or (end is not None and nxt.start is not None and nxt.start < end)
        ):
            when = nxt.start.isoformat() if nxt.start else "the beginning (no 'from')"
            entries = " and ".join(o for o in (period.origin, nxt.origin) if o)
            raise PriceError(
                f"{where}: prices for {period.provider}/{period.model} [{period.tier}] overlap "
                f"at {when}" + (f": {entries}" if entries else "")
            )
        closed.append(replace(period, end=end))
    return closed


_RULE_KEYS = {"provider", "models", "tier", "factor", "from", "to", "source", "note", "data_first"}
_UNPRICED_KEYS = {"provider", "models", "quantity", "reason", "source", "note"}
_DISCOUNT_KEYS = {"provider", "model", "percent", "from", "to", "source", "note"}


def _models(entry: Mapping[str, Any], where: str) -> tuple[str, ...] | None:
    models_raw = entry.get("models", "*")
    if models_raw == "*":
        return None
    if (
        isinstance(models_raw, list)
        and models_raw
        and all(isinstance(m, str) and m.strip() for m in models_raw)
    ):
        return tuple(m.strip() for m in models_raw)
    # A bare string would otherwise be read letter by letter and match no model.
    raise PriceError(f'{where}: models must be "*" or a list of model ids, got {models_raw!r}')


def _parse_unpriced(entry: Mapping[str, Any], layer: str, where: str) -> Unpriced:
    _refuse_unknown_keys(entry, _UNPRICED_KEYS, where)
    provider = _req_str(entry, "provider", where).lower()
    quantity = _req_str(entry, "quantity", where)
    if quantity not in QUANTITY_INDEX:
        raise PriceError(
            f"{where}: unknown quantity {quantity!r}; expected one of {', '.join(QUANTITY_INDEX)}"
        )
    source = _req_str(entry, "source", where) if layer == "unitcost" else str(entry.get("source") or where)
    return Unpriced(
        provider,
        _models(entry, where),
        quantity,
        _req_str(entry, "reason", where),
        source,
        str(entry.get("note", "")),
    )


def _parse_rule(entry: Mapping[str, Any], layer: str, where: str) -> TierRule:
    _refuse_unknown_keys(entry, _RULE_KEYS, where)
    provider = _req_str(entry, "provider", where).lower()
    models = _models(entry, where)
    tier = _tier(entry.get("tier"), where)
    if tier == "standard":
        raise PriceError(f"{where}: a tier rule is for batch, flex or priority, not standard")
    factor = parse_number(entry.get("factor"), f"{where}: factor")
    if factor == 0:
        raise PriceError(f"{where}: factor must be more than 0 (a free tier is a [[price]] of 0)")
    start, end = _interval(entry, where)
    source = _req_str(entry, "source", where) if layer == "unitcost" else str(entry.get("source") or where)
    data_first = entry.get("data_first", False)
    if not isinstance(data_first, bool):
        raise PriceError(f"{where}: data_first must be true or false, got {data_first!r}")
    tag = _tag(start)
    return TierRule(
        provider,
        models,
        tier,
        factor,
        start,
        end,
        source,
        str(entry.get("note", "")),
        f"{layer}:{provider}[{tier}]x{factor}@{tag}",
        data_first,
    )


def _parse_discount(entry: Mapping[str, Any], layer: str, where: str) -> Discount:
    _refuse_unknown_keys(entry, _DISCOUNT_KEYS, where)
    provider = _opt_str(entry.get("provider"))
    model = _opt_str(entry.get("model"))
    if provider is None and model is None:
        raise PriceError(f"{where}: a discount needs a provider, a model or both")
    percent = parse_number(entry.get("percent"), f"{where}: percent")
    if percent > 100:
        raise PriceError(f"{where}: percent must be between 0 and 100, got {percent}")
    start, end = _interval(entry, where)
    scope = "/".join(x for x in (provider, model) if x)
    tag = _tag(start)
    return Discount(
        provider.lower() if provider else None,
        model,
        percent,
        start,
        end,
        str(entry.get("note", "")),
        f"{layer}:discount({scope} -{percent}%@{tag})",
        str(entry.get("source") or where),
    )


def _same_start(first: tuple[str, Discount], second: tuple[str, Discount]) -> str:
    """Two discounts on one scope from the same instant are a copy or an update written as a
    new entry: both would apply, one after the other, and bill less than either says."""
    (where_a, a), (where_b, b) = first, second
    both = 100 - a.factor * b.factor * 100
    scope = "/".join(x for x in (a.provider, a.model) if x)
    return (
        f"{where_b}: a second discount on {scope} from the same date as {where_a} "
        f"({a.percent}% and {b.percent}%); both would apply, {both.normalize():f}% off in all. "
        "Write one entry with the percent you were given, or give the second its own 'from'"
    )


def _interval(entry: Mapping[str, Any], where: str) -> tuple[datetime | None, datetime | None]:
    start = _instant(entry.get("from"), f"{where}: from")
    end = _instant(entry.get("to"), f"{where}: to")
    if start and end and end <= start:
        raise PriceError(f"{where}: 'to' ({end.isoformat()}) must be after 'from' ({start.isoformat()})")
    return start, end


_SYNONYMS = {
    "until": "to",
    "till": "to",
    "end": "to",
    "since": "from",
    "start": "from",
    "discount": "percent",
    "pct": "percent",
    "percentage": "percent",
}


def _refuse_unknown_keys(entry: Mapping[str, Any], known: set[str], where: str, expected: str = "") -> None:
    """A misspelt key must not be dropped: `until` for `to` would make a dated discount last for
    ever, `models` for `model` would give a model's discount to the whole provider."""
    for key in entry:
        if key in known:
            continue
        close = [_SYNONYMS[key]] if _SYNONYMS.get(key) in known else []
        close = close or difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.6)
        hint = f' (did you mean "{close[0]}"?)' if close else ""
        raise PriceError(
            f"{where}: unknown key {key!r}{hint}; expected {expected or 'some of ' + ', '.join(sorted(known))}"
        )


def _req_str(entry: Mapping[str, Any], key: str, where: str) -> str:
    value = entry.get(key)
    if not isinstance(value, str) or not value.strip():
        raise PriceError(f"{where}: '{key}' is required and must be a non-empty string")
    return value.strip()


def _opt_str(value: Any) -> str | None:
    return str(value).strip() if value not in (None, "") else None


def _tier(value: Any, where: str) -> str:
    if value not in TIERS:
        raise PriceError(f"{where}: tier must be one of {', '.join(TIERS)}, got {value!r}")
    return str(value)


def _instant(value: Any, where: str) -> datetime | None:
    """A TOML date/datetime or ISO string as an aware UTC datetime; dates are midnight UTC."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return as_utc(value)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError as exc:
            raise PriceError(f"{where}: not a date or datetime: {value!r}") from exc
        return _instant(parsed, where)
    raise PriceError(f"{where}: not a date or datetime: {value!r}")


def _clock(value: Any, where: str) -> time:
    if isinstance(value, time):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value
    if isinstance(value, str):
        try:
            parsed = time.fromisoformat(value)
        except ValueError as exc:
            raise PriceError(f"{where}: not a time of day (HH:MM): {value!r}") from exc
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed
    raise PriceError(f"{where}: a window needs 'from' and 'to' as \"HH:MM\" (UTC)")
