"""Model names as users type them in comparisons, checked before any work starts.

A mistyped `--as opneai:gpt-5` or `--set light.openai=gpt5` must fail at once with the names
it was close to, not after the ledger scan, and not with a bare "unknown model".
"""

from __future__ import annotations

from dataclasses import replace

from ..pricing.book import PriceBook, UnknownModelError
from ..pricing.genai_layer import ModelRef
from ..pricing.layers import TIERS
from .whatif import Alternative, WhatIfError


def require_model(book: PriceBook, provider: str | None, model: str, what: str = "") -> ModelRef:
    """The price book's key for `provider`/`model`, or an error that names the close matches."""
    resolution = book.resolve(provider, model)
    if resolution.ref is not None:
        return resolution.ref
    # A mistyped provider hides every name of the right one: fall back to all providers.
    suggestions = book.suggestions(provider, model) or (book.suggestions(None, model) if provider else [])
    hint = f"; did you mean {', '.join(suggestions)}?" if suggestions else ""
    prefix = f"{what}: " if what else ""
    raise UnknownModelError(f"{prefix}{resolution.reason}{hint}")


def resolve_alternative(book: PriceBook, alt: Alternative) -> Alternative:
    """The alternative with the price book's provider and model (None model: as recorded)."""
    if alt.model is None:
        return alt
    try:
        ref = require_model(book, alt.provider, alt.model, f"--as {alt.label}")
    except UnknownModelError:
        # `gpt-4o-mini/nosuchtier`: no model has that name, but the part before the slash does,
        # so the slash was meant to start a tier (a known tier is taken off by the parser).
        head, slash, tail = alt.model.rpartition("/")
        if slash and head and book.resolve(alt.provider, head).ref is not None:
            raise WhatIfError(f"unknown service tier {tail!r}; use one of {', '.join(TIERS)}") from None
        raise
    return replace(alt, provider=ref.provider, model=ref.model)
