"""Worst-case cost of a request before it is sent, for budget reservations.

Exact pricing of a call takes a few hundred microseconds; a reservation is an upper bound
and is computed from per-token rates cached per model, input-size bucket and hour. The
rates are taken from the price book at the bucket's upper edge, so a long-context tier is
never under-reserved, and the output rate is the full output price. A request that asks
the provider to write its prompt cache (`cache_control`) has its prompt reserved at the
cache-write rate it asks for (Anthropic bills 1.25x, or 2x for one hour, the input price).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from ..money import usd_to_pico
from ..pricing.book import PriceBook
from .tokens import requested_output_cap

_PROBE = 1_000_000
_WRITE_FIELDS = {"5m": "cache_write_5m_tokens", "1h": "cache_write_1h_tokens"}


def _bucket(tokens: int) -> int:
    """Powers of two from 1024: a handful of cache entries per model."""
    return max(1024, 1 << max(tokens - 1, 0).bit_length())


def _cache_controls(value: Any, found: list[Mapping[str, Any]], depth: int = 0) -> None:
    if depth > 8:
        return
    if isinstance(value, Mapping):
        control = value.get("cache_control")
        if isinstance(control, Mapping):
            found.append(control)
        for item in value.values():
            _cache_controls(item, found, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _cache_controls(item, found, depth + 1)


def prompt_cache_writes(body: Mapping[str, Any]) -> str | None:
    """The dearest prompt-cache write a request asks for: "1h", "5m" or None.

    Anthropic (and OpenRouter in front of it) write the cache where a `cache_control` asks,
    at the top level or on a block of the system prompt, messages or tools, and bill those
    tokens at 1.25x (5 minutes, the default) or 2x (`"ttl": "1h"`) the input price."""
    found: list[Mapping[str, Any]] = []
    top = body.get("cache_control")
    if isinstance(top, Mapping):
        found.append(top)
    for part in ("system", "messages", "tools"):
        _cache_controls(body.get(part), found)
    if not found:
        return None
    return "1h" if any(control.get("ttl") == "1h" for control in found) else "5m"


def output_tokens(body: Mapping[str, Any], operation: str, default: int) -> int:
    """The most output a request can be billed for: its cap (or the default), times the number
    of choices a Chat Completions request asks for (`n`: each choice is generated and billed)."""
    if operation == "embeddings":
        return 0
    cap = requested_output_cap(body) or default
    n = body.get("n")
    if operation == "chat" and isinstance(n, int) and not isinstance(n, bool) and n > 1:
        cap *= n
    return cap


class WorstCase:
    def __init__(self, book: PriceBook, max_entries: int = 4096) -> None:
        self._book = book
        self._rates: dict[tuple[str, str, int, int, str | None], tuple[int, int] | None] = {}
        self._max = max_entries

    def rates(
        self, provider: str, model: str, input_tokens: int, cache_writes: str | None = None
    ) -> tuple[int, int] | None:
        """(pico-USD per input token, pico-USD per output token), rounded up; None when unpriced."""
        key = (provider, model, _bucket(input_tokens), int(time.time() // 3600), cache_writes)
        if key in self._rates:
            return self._rates[key]
        if len(self._rates) >= self._max:
            self._rates.clear()
        bucket = key[2]
        found: tuple[int, int] | None = None
        try:
            inp = self._book.price(model, provider=provider, input_tokens=bucket).cost
            both = self._book.price(model, provider=provider, input_tokens=bucket, output_tokens=_PROBE).cost
            writes = []
            if cache_writes in _WRITE_FIELDS:
                usage = {"input_tokens": bucket, _WRITE_FIELDS[cache_writes]: bucket}
                writes.append(self._book.price(model, usage, provider=provider).cost)
        except ValueError:
            inp = both = None
            writes = []
        if inp is not None and both is not None:
            in_pico, both_pico = usd_to_pico(inp), usd_to_pico(both)
            dearest = max([in_pico, *(usd_to_pico(cost) for cost in writes if cost is not None)])
            found = (-(-dearest // bucket), -(-(both_pico - in_pico) // _PROBE))
        self._rates[key] = found
        return found

    def bound_pico(
        self,
        provider: str,
        model: str,
        input_tokens: int,
        output_tokens: int,
        cache_writes: str | None = None,
    ) -> int | None:
        """The most the call can cost, or None for a model with no price (nothing bounds it)."""
        rates = self.rates(provider, model, input_tokens, cache_writes)
        if rates is None:
            return None
        return input_tokens * rates[0] + output_tokens * rates[1]

    def worst_case_pico(self, provider: str, model: str, input_tokens: int, output_tokens: int) -> int:
        """bound_pico, 0 for a model with no price."""
        return self.bound_pico(provider, model, input_tokens, output_tokens) or 0
