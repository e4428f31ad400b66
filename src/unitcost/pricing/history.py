"""Price history of one model and the changes across the book between two dates.

Rates shown are the *effective* rates: what a token of each kind is charged, after the
"most specific priced component" rule (a model with no 1-hour cache-write price charges
1-hour writes at its cache-write price, a model with no reasoning price charges reasoning
at its output price). That is what a bill reflects, so it is what history shows.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from datetime import datetime
from decimal import Decimal
from itertools import pairwise
from typing import Any

from ..money import pico_to_usd
from .book import PriceBook
from .genai_layer import ModelRef
from .layers import TIERS
from .model import Adjustment, Option, Price, PriceError, RatePlan, Segment, Timeline
from .quantities import QUANTITIES

_SHOWN = {
    "input_text": "input",
    "cache_read_text": "cache_read",
    "cache_write_5m": "cache_write_5m",
    "cache_write_1h": "cache_write_1h",
    "output_text": "output",
    "reasoning": "reasoning",
}


def _rate_usd(plan: RatePlan, row: int, index: int) -> Decimal:
    return pico_to_usd(plan.rows[row][index] * QUANTITIES[index].per).normalize()


def _priced_rate(plan: RatePlan, index: int) -> Decimal | None:
    """The rate of a quantity, or None when the price has none: a call using it is unpriced, so
    showing it as $0 (and a change to it as -100 %) would say it is free."""
    if QUANTITIES[index].name in plan.missing:
        return None
    return _rate_usd(plan, 0, index)


def _plan(book: PriceBook, option: Option) -> RatePlan | None:
    if option.price is None:
        return None
    try:
        return book.plan(option.price)
    except PriceError:
        return None


def _tiers_text(plan: RatePlan) -> str | None:
    if not plan.thresholds:
        return None
    parts = []
    for row, start in enumerate(plan.thresholds, start=1):
        inp = _rate_usd(plan, row, 0)
        out = _rate_usd(plan, row, 8)
        parts.append(f">{start // 1000}k: in {inp}, out {out}")
    return "; ".join(parts)


def tiers_with_prices(book: PriceBook, ref: ModelRef, tiers: Sequence[str] | None = None) -> list[str]:
    out = []
    for tier in checked_tiers(tiers):
        timeline = book.timeline(ref, tier)
        if any(o.price is not None for s in timeline.segments for o in s.options):
            out.append(tier)
    return out


def checked_tiers(tiers: Sequence[str] | None) -> list[str]:
    """The tiers asked for, all of them by default; an unknown one is a mistake, not an empty answer."""
    for tier in tiers or ():
        if tier not in TIERS:
            raise ValueError(f"unknown service tier {tier!r}; expected one of {', '.join(TIERS)}")
    return list(tiers or TIERS)


def price_history(book: PriceBook, ref: ModelRef, tiers: Sequence[str] | None = None) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    earliest = earliest_known_note(book, ref)
    for tier in tiers_with_prices(book, ref, tiers):
        timeline = book.timeline(ref, tier)
        for index, segment in enumerate(timeline.segments):
            end = timeline.segments[index + 1].start if index + 1 < len(timeline.segments) else None
            for option in segment.options:
                row = _history_row(book, tier, segment, end, option)
                if earliest and segment.start is None and row["ref"]:
                    # "from: null" is the start of the data, not a date the price was billed at.
                    row["note"] = "; ".join(n for n in (earliest, row["note"]) if n)
                rows.append(row)
    return rows


def earliest_known_note(book: PriceBook, ref: ModelRef) -> str | None:
    """What an undated first price means, when the model's names date it."""
    known = book.known_since(ref)
    if known is None:
        return None
    return (
        f"earliest known price, from {known.since:%Y-%m-%d} (the date of {known.dated_by}); "
        "not in force before"
    )


def _history_row(
    book: PriceBook, tier: str, segment: Segment, end: datetime | None, option: Option
) -> dict[str, Any]:
    row: dict[str, Any] = {
        "tier": tier,
        "from": segment.start,
        "to": end,
        "window": option.window.title() if option.window else None,
    }
    plan = _plan(book, option)
    if option.price is None or plan is None:
        row.update(
            {
                "layer": None,
                "ref": None,
                "source": None,
                "adjustments": None,
                "note": option.reason or "no price",
                "components": None,
            }
        )
        return row
    for index, quantity in enumerate(QUANTITIES):
        if quantity.name in _SHOWN:
            row[_SHOWN[quantity.name]] = _priced_rate(plan, index)
    row["tiers"] = _tiers_text(plan)
    price = option.price
    row.update(
        {
            # A batch price made of genai-prices' standard price and unitcost's rule is both.
            "layer": price.layers,
            "ref": price.ref,
            "source": "; ".join(price.sources),
            "note": price.note or None,
            "adjustments": [_adjustment_json(a) for a in price.adjustments] or None,
            "components": {
                k: str(v) if isinstance(v, Decimal) else repr(v) for k, v in price.components.items()
            },
        }
    )
    return row


def _adjustment_json(adjustment: Adjustment) -> dict[str, Any]:
    return {
        "kind": adjustment.kind,
        "layer": adjustment.layer,
        "ref": adjustment.ref,
        "factor": adjustment.factor,
        "source": adjustment.source,
        "note": adjustment.note or None,
    }


def attribution(old: Price | None, new: Price | None) -> tuple[str | None, str]:
    """(layer, source) of what changed from `old` to `new`.

    When only a tier rule or a discount started or ended, the change is theirs: the user's
    discount ending on 2026-01-01 is not a genai-prices change, whatever the base price."""
    if new is None:
        return None, "no price"
    if old is None:
        # A tier price that appears because a tier rule starts is the rule's doing.
        rule = next((a for a in new.adjustments if a.kind == "tier rule"), None)
        return (rule.layer, rule.source) if rule else (new.layer, new.source)
    if _base_ref(old) != _base_ref(new):
        return new.layer, new.source
    added = [a for a in new.adjustments if a not in old.adjustments]
    if added:
        return added[-1].layer, added[-1].source
    removed = [a for a in old.adjustments if a not in new.adjustments]
    if removed:
        return removed[-1].layer, f"{removed[-1].source} (ended)"
    return new.layer, new.source


def _base_ref(price: Price) -> str:
    """The ref of the price before its tier rules and discounts (they end the ref, in order)."""
    ref = price.ref
    for adjustment in reversed(price.adjustments):
        ref = ref.removesuffix(f"|{adjustment.ref}")
    return ref


def _has_tier_data(book: PriceBook, ref: ModelRef, tier: str) -> bool:
    """Cheap test before composing a tier timeline: does any layer say anything about this tier?"""
    if tier == "standard":
        return True
    for layer in (book.overrides, book.corrections):
        if layer is None:
            continue
        if layer.periods_for(ref.provider, ref.model, tier):
            return True
        if any(r.tier == tier and r.applies(ref.provider, ref.model) for r in layer.tier_rules):
            return True
    info = book.genai.model_info(book.genai_ref(ref))
    return bool(info and info.price_variants)


def diff_prices(
    book: PriceBook,
    start: datetime,
    end: datetime,
    *,
    provider: str | None = None,
    model_filter: str | None = None,
    tiers: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """Every change of a component's effective rate between `start` and `end`, step by step.

    Each row is one step: the rate before and after a price that took effect in the interval,
    and when. Comparing the two ends alone would hide a price that came and went inside it
    (DeepSeek's V3.1 price between 2025-09-05 and 2025-09-29), and date every step by the first."""
    if end <= start:
        raise ValueError(
            f"--to ({end:%Y-%m-%d %H:%M} UTC) must be after --from ({start:%Y-%m-%d %H:%M} UTC): "
            "a date means its midnight, so one day's changes are --from DAY --to NEXT-DAY"
        )
    rows: list[dict[str, Any]] = []
    wanted = checked_tiers(tiers)
    # A misspelt provider, model or tier must not read as "no price changed".
    if provider and not any(ref.provider == provider.lower() for ref in book.known_models()):
        known = sorted({ref.provider for ref in book.known_models()})
        close = difflib.get_close_matches(provider.lower(), known, n=1)
        hint = f' (did you mean "{close[0]}"?)' if close else ""
        raise ValueError(f"unknown provider {provider!r}{hint}")
    if model_filter and not any(_models(book, provider, model_filter)):
        where = f" of provider {provider!r}" if provider else ""
        raise ValueError(f"no model id{where} contains {model_filter!r}")
    for ref in _models(book, provider, model_filter):
        for tier in wanted:
            if not _has_tier_data(book, ref, tier):
                continue
            for before, after in pairwise(_segments_between(book.timeline(ref, tier), start, end)):
                rows.extend(_compare(book, ref, tier, before, after))
    rows.sort(
        key=lambda r: (r["model"], TIERS.index(r["tier"]), r["changed_at"], r["window"] or "", r["component"])
    )
    return rows


def _models(book: PriceBook, provider: str | None, model_filter: str | None) -> Iterable[ModelRef]:
    for ref in book.known_models():
        if provider and ref.provider != provider.lower():
            continue
        if model_filter and model_filter.lower() not in ref.model.lower():
            continue
        yield ref


def _segments_between(timeline: Timeline, start: datetime, end: datetime) -> list[Segment]:
    """The segment in force at `start`, then each one that began after it and by `end`, in order."""
    began = [s for s in timeline.segments if s.start is not None and start < s.start <= end]
    return [timeline.segment_at(start), *began]


# Quantities that, unless priced on their own, cost what another one costs.
_DERIVED_FROM = {
    "input_audio": "input_text",
    "input_image": "input_text",
    "cache_audio_read": "cache_read_text",
    "cache_image_read": "cache_read_text",
    "cache_write_5m": "input_text",
    "cache_write_1h": "input_text",
    "output_audio": "output_text",
    "output_image": "output_text",
    "reasoning": "output_text",
}


def _index_of(name: str) -> int:
    return next(i for i, q in enumerate(QUANTITIES) if q.name == name)


def _follows(old_plan: RatePlan | None, new_plan: RatePlan | None, index: int, base: int) -> bool:
    """Whether a quantity's rate equals its base quantity's rate before and after."""
    return all(
        plan is None or _priced_rate(plan, index) == _priced_rate(plan, base) for plan in (old_plan, new_plan)
    )


def _compare(
    book: PriceBook, ref: ModelRef, tier: str, before: Segment, after: Segment
) -> list[dict[str, Any]]:
    """One row per component whose rate differs from one segment to the next, dated by the next."""
    rows = []
    windows = {o.window for o in before.options} | {o.window for o in after.options}
    for window in sorted(windows, key=lambda w: (w is not None, w.start if w else 0)):
        old_opt = next((o for o in before.options if o.window == window), before.default)
        new_opt = next((o for o in after.options if o.window == window), after.default)
        old_plan, new_plan = _plan(book, old_opt), _plan(book, new_opt)
        label = window.title() if window else None
        layer, source = attribution(old_opt.price, new_opt.price)
        if new_opt.price is None:
            source = new_opt.reason or "no price"
        base = {
            "model": f"{ref.provider}/{ref.model}",
            "tier": tier,
            "window": label,
            "changed_at": after.start,
            "layer": layer,
            "source": source,
        }
        for index, quantity in enumerate(QUANTITIES):
            old = _priced_rate(old_plan, index) if old_plan else None
            new = _priced_rate(new_plan, index) if new_plan else None
            if old == new or (not old and not new):
                continue
            base_name = _DERIVED_FROM.get(quantity.name)
            if base_name is not None and _follows(old_plan, new_plan, index, _index_of(base_name)):
                continue  # e.g. audio input at the text price: the text row already says it
            change = float((new - old) / old * 100) if old and new is not None else None
            rows.append(
                {
                    **base,
                    "component": _SHOWN.get(quantity.name, quantity.name),
                    "old": old,
                    "new": new,
                    "change_pct": change,
                }
            )
        old_tiers = _tiers_text(old_plan) if old_plan else None
        new_tiers = _tiers_text(new_plan) if new_plan else None
        if old_tiers != new_tiers:
            rows.append(
                {
                    **base,
                    "component": f"long context ({new_tiers or old_tiers})",
                    "old": None,
                    "new": None,
                    "change_pct": None,
                }
            )
    return rows
