"""One call priced, as a document for programs: what `unitcost price --format json` prints and the
JSON API's `POST /api/v1/price` answers (the breakdown, every quantity with its rate, the price's
source, layer and effective dates), and the checks both make of the usage they are given."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .book import PriceBook, PricedCall
    from .genai_layer import ModelRef

USAGE_FIELDS = (
    "input_tokens",
    "cache_read_tokens",
    "cache_write_5m_tokens",
    "cache_write_1h_tokens",
    "output_tokens",
    "reasoning_tokens",
    "input_audio_tokens",
    "output_audio_tokens",
    "input_image_tokens",
    "output_image_tokens",
    "web_searches",
    "requests",
)
"""The usage of one call that can be priced, as the event fields name it."""

_SUBSETS = (
    (
        "input_tokens",
        (
            "cache_read_tokens",
            "cache_write_5m_tokens",
            "cache_write_1h_tokens",
            "input_audio_tokens",
            "input_image_tokens",
        ),
    ),
    ("output_tokens", ("reasoning_tokens", "output_audio_tokens", "output_image_tokens")),
)


def subset_problem(usage: Mapping[str, int], names: Mapping[str, str] | None = None) -> str | None:
    """Input and output tokens are totals: their parts cannot add up to more. The message names
    the fields as the caller knows them (`names`: the CLI's flags; the field names by default)."""
    label = (lambda field: names.get(field, field)) if names else (lambda field: field)
    for total, parts in _SUBSETS:
        given = {label(name): usage.get(name, 0) for name in parts if usage.get(name, 0)}
        if sum(given.values()) > usage.get(total, 0):
            listed = " + ".join(f"{flag} {count:,}" for flag, count in given.items())
            what = "every prompt token, cached or not" if total == "input_tokens" else "every generated token"
            return (
                f"{label(total)} {usage.get(total, 0):,} is less than its parts ({listed}): "
                f"{label(total)} counts {what}"
            )
    return None


def require_model(book: PriceBook, provider: str | None, model: str) -> ModelRef:
    """The book's key for a model, or an `UnknownModelError` that names the close matches."""
    from .book import UnknownModelError

    resolution = book.resolve(provider, model)
    if resolution.ref is not None:
        return resolution.ref
    suggestions = book.suggestions(provider, model)
    hint = f"; did you mean {', '.join(suggestions)}?" if suggestions else ""
    raise UnknownModelError(f"{resolution.reason}{hint}")


def window_hours(book: PriceBook, call: PricedCall) -> str | None:
    """The time-of-day window of the price, with its hours ("off-peak, 16:30-00:30 UTC")."""
    if call.window is None or call.provider is None or call.model is None:
        return call.window
    from .genai_layer import ModelRef

    timeline = book.timeline(ModelRef(call.provider, call.model), call.tier)
    option = timeline.option_at(call.at)
    return option.window.title() if option.window else call.window


def also_listed(book: PriceBook, model: str, provider: str | None, call: PricedCall) -> list[str]:
    """Other providers that list the same model id, when the name alone chose one of them."""
    if provider or "/" in model or ":" in model or call.model is None:
        return []
    return [p for p in book.providers_of(call.model) if p != call.provider]


def quote_document(book: PriceBook, model: str, provider: str | None, call: PricedCall) -> dict[str, Any]:
    """A priced call (`call.breakdown` set) as a document: money as exact Decimals, every billable
    quantity with its rate, the costs adding up to `cost` to the last digit."""
    from .quantities import QUANTITIES

    price = call.price
    assert price is not None and call.breakdown is not None, "quote_document is for a priced call"
    parts = call.breakdown.as_dict()
    per_mtok = {q.name for q in QUANTITIES if q.per == 1_000_000}
    per = {q.name: q.per for q in QUANTITIES}
    return {
        "model": call.model,
        "provider": call.provider,
        "tier": call.tier,
        "at": call.at,
        "price_ref": price.ref,
        "layer": price.layer,
        "source": price.source,
        # Tier rules and discounts on top of the base price, each with its own layer and source.
        "adjustments": [
            {
                "kind": a.kind,
                "layer": a.layer,
                "ref": a.ref,
                "factor": a.factor,
                "source": a.source,
                "note": a.note or None,
            }
            for a in price.adjustments
        ],
        "effective_from": call.effective_from,
        "effective_to": call.effective_to,
        "window": call.window,
        "window_utc": window_hours(book, call),
        "context_tier_above": call.context_tier,
        "note": _note(call),
        "also_listed_for": also_listed(book, model, provider, call),
        "cost": parts["total"],
        "breakdown": parts,
        "lines": [
            {
                "quantity": q.name,
                "count": call.quantities[q.name],
                "rate_usd": call.rates[q.name],
                "per": per[q.name],
                "cost": call.quantity_costs[q.name],
            }
            for q in QUANTITIES
            if call.quantities[q.name]
        ],
        # Web searches and requests are priced per thousand, not per million tokens.
        "rates_usd_per_mtok": {k: v for k, v in call.rates.items() if k in per_mtok},
        "rates_usd_per_thousand": {k: v for k, v in call.rates.items() if k not in per_mtok},
    }


def _note(call: PricedCall) -> str | None:
    """The price's note, and first whether the price was in force at all on the call's date."""
    assert call.price is not None
    notes = [call.earliest_known.describe(call.at)] if call.earliest_known else []
    notes += [call.price.note] if call.price.note else []
    return "; ".join(notes) or None


def unpriced_document(
    book: PriceBook, model: str, provider: str | None, tier: str, at: datetime, reason: str
) -> dict[str, Any]:
    """A call with no price: why, with cost null (never $0), and for a name no layer knows the
    names close to it."""
    ref = book.resolve(provider, model).ref
    return {
        "model": model,
        # `deepseek-chat --tier batch` has no price, but it is DeepSeek's model: say whose.
        "provider": ref.provider if ref else provider,
        "tier": tier,
        "at": at,
        "cost": None,
        "unpriced_reason": reason,
        "suggestions": [] if ref else book.suggestions(provider, model),
    }
