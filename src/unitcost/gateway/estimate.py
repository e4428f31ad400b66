"""Worst-case cost of a request before it is sent, for budget reservations.

Exact pricing of a call takes a few hundred microseconds; a reservation is an upper bound
and is computed from per-token rates cached per model, input-size bucket and hour. The
rates are taken from the price book at the bucket's upper edge, so a long-context tier is
never under-reserved, and the output rate is the full output price.
"""

from __future__ import annotations

import time

from ..money import usd_to_pico
from ..pricing.book import PriceBook

_PROBE = 1_000_000


def _bucket(tokens: int) -> int:
    """Powers of two from 1024: a handful of cache entries per model."""
    return max(1024, 1 << max(tokens - 1, 0).bit_length())


class WorstCase:
    def __init__(self, book: PriceBook, max_entries: int = 4096) -> None:
        self._book = book
        self._rates: dict[tuple[str, str, int, int], tuple[int, int] | None] = {}
        self._max = max_entries

    def rates(self, provider: str, model: str, input_tokens: int) -> tuple[int, int] | None:
        """(pico-USD per input token, pico-USD per output token), rounded up; None when unpriced."""
        key = (provider, model, _bucket(input_tokens), int(time.time() // 3600))
        if key in self._rates:
            return self._rates[key]
        if len(self._rates) >= self._max:
            self._rates.clear()
        bucket = key[2]
        found: tuple[int, int] | None = None
        try:
            inp = self._book.price(model, provider=provider, input_tokens=bucket)
            both = self._book.price(model, provider=provider, input_tokens=bucket, output_tokens=_PROBE)
        except ValueError:
            inp = both = None  # type: ignore[assignment]
        if inp is not None and both is not None and inp.cost is not None and both.cost is not None:
            in_pico, both_pico = usd_to_pico(inp.cost), usd_to_pico(both.cost)
            found = (-(-in_pico // bucket), -(-(both_pico - in_pico) // _PROBE))
        self._rates[key] = found
        return found

    def worst_case_pico(self, provider: str, model: str, input_tokens: int, output_tokens: int) -> int:
        """0 for a model with no price: the call is still counted, and its ledger cost stays NULL."""
        rates = self.rates(provider, model, input_tokens)
        if rates is None:
            return 0
        return input_tokens * rates[0] + output_tokens * rates[1]
