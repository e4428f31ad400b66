"""Disjoint billable quantities derived from an event's usage.

An event reports totals with subsets (input ⊇ cache reads, output ⊇ reasoning, ...).
Pricing needs the opposite: non-overlapping quantities, each charged at one rate.
`QUANTITIES` lists them; `split_usage` turns usage into them, for one event or for
columns of millions at once.

Each quantity carries the genai-prices unit dimensions of the tokens it holds. Its rate
is the price of the most specific priced unit whose dimensions it has: a cache read is
charged at `cache_read_mtok` when the model has one, else at `input_mtok`; reasoning at
`output_reasoning_mtok` when the model has one, else at `output_mtok`. This is the same
rule genai-prices applies with its leaf decomposition.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np


@dataclass(frozen=True)
class Quantity:
    name: str
    dims: Mapping[str, str]
    per: int
    breakdown: str
    """Which cost column of the ledger the quantity's cost goes to."""


def _q(name: str, breakdown: str, per: int = 1_000_000, **dims: str) -> Quantity:
    return Quantity(name, MappingProxyType(dims), per, breakdown)


QUANTITIES: tuple[Quantity, ...] = (
    _q("input_text", "cost_input", family="tokens", direction="input"),
    _q("cache_read_text", "cost_cache_read", family="tokens", direction="input", token_type="cache_read"),
    _q(
        "cache_write_5m",
        "cost_cache_write_5m",
        family="tokens",
        direction="input",
        token_type="cache_write",
        cache_ttl="5m",
    ),
    _q(
        "cache_write_1h",
        "cost_cache_write_1h",
        family="tokens",
        direction="input",
        token_type="cache_write",
        cache_ttl="1h",
    ),
    _q("input_audio", "cost_other", family="tokens", direction="input", modality="audio"),
    _q(
        "cache_audio_read",
        "cost_cache_read",
        family="tokens",
        direction="input",
        modality="audio",
        token_type="cache_read",
    ),
    _q("input_image", "cost_other", family="tokens", direction="input", modality="image"),
    _q(
        "cache_image_read",
        "cost_cache_read",
        family="tokens",
        direction="input",
        modality="image",
        token_type="cache_read",
    ),
    _q("output_text", "cost_output", family="tokens", direction="output"),
    _q("reasoning", "cost_reasoning", family="tokens", direction="output", token_type="reasoning"),
    _q("output_audio", "cost_other", family="tokens", direction="output", modality="audio"),
    _q("output_image", "cost_other", family="tokens", direction="output", modality="image"),
    _q("web_searches", "cost_other", per=1_000, family="tool_calls", tool_type="web_search"),
    _q("requests", "cost_other", per=1_000, family="requests"),
)
QUANTITY_INDEX: Mapping[str, int] = MappingProxyType({q.name: i for i, q in enumerate(QUANTITIES)})
N_QUANTITIES = len(QUANTITIES)
BREAKDOWN_COLUMNS: tuple[str, ...] = (
    "cost_input",
    "cost_cache_read",
    "cost_cache_write_5m",
    "cost_cache_write_1h",
    "cost_output",
    "cost_reasoning",
    "cost_other",
)
BREAKDOWN_OF_QUANTITY: tuple[int, ...] = tuple(BREAKDOWN_COLUMNS.index(q.breakdown) for q in QUANTITIES)


def split_usage(usage: Mapping[str, np.ndarray]) -> np.ndarray:
    """Quantities (N_QUANTITIES × events, int64; one contiguous row per quantity) from usage
    columns of validated events.

    Works for one event too: pass arrays of length 1. Usage must already satisfy the
    subset rules (see `usage_problem`), so every quantity is >= 0.
    """

    def col(name: str) -> np.ndarray:
        return np.asarray(usage[name], dtype=np.int64)

    inp, out = col("input_tokens"), col("output_tokens")
    cache_read, cw5, cw1 = (
        col("cache_read_tokens"),
        col("cache_write_5m_tokens"),
        col("cache_write_1h_tokens"),
    )
    audio_in, cache_audio = col("input_audio_tokens"), col("cache_audio_read_tokens")
    image_in, cache_image = col("input_image_tokens"), col("cache_image_read_tokens")
    reasoning, audio_out, image_out = (
        col("reasoning_tokens"),
        col("output_audio_tokens"),
        col("output_image_tokens"),
    )

    q = np.empty((N_QUANTITIES, len(inp)), dtype=np.int64)
    q[0] = inp - cache_read - cw5 - cw1 - (audio_in - cache_audio) - (image_in - cache_image)
    q[1] = cache_read - cache_audio - cache_image
    q[2] = cw5
    q[3] = cw1
    q[4] = audio_in - cache_audio
    q[5] = cache_audio
    q[6] = image_in - cache_image
    q[7] = cache_image
    q[8] = out - reasoning - audio_out - image_out
    q[9] = reasoning
    q[10] = audio_out
    q[11] = image_out
    q[12] = col("web_searches")
    q[13] = col("requests")
    return q


def split_one(u: Mapping[str, int]) -> list[int]:
    """`split_usage` for one event as plain integers (no arrays: a single call's price is
    asked for on a request path, where numpy's per-call overhead would dominate)."""
    cache_audio, cache_image = u["cache_audio_read_tokens"], u["cache_image_read_tokens"]
    audio_in, image_in = u["input_audio_tokens"], u["input_image_tokens"]
    reasoning, audio_out, image_out = (
        u["reasoning_tokens"],
        u["output_audio_tokens"],
        u["output_image_tokens"],
    )
    cache_read, cw5, cw1 = u["cache_read_tokens"], u["cache_write_5m_tokens"], u["cache_write_1h_tokens"]
    return [
        u["input_tokens"] - cache_read - cw5 - cw1 - (audio_in - cache_audio) - (image_in - cache_image),
        cache_read - cache_audio - cache_image,
        cw5,
        cw1,
        audio_in - cache_audio,
        cache_audio,
        image_in - cache_image,
        cache_image,
        u["output_tokens"] - reasoning - audio_out - image_out,
        reasoning,
        audio_out,
        image_out,
        u["web_searches"],
        u["requests"],
    ]


def usage_problem(u: Mapping[str, int]) -> tuple[str, str] | None:
    """(field, reason) for the first way `u` breaks the subset rules, or None if it is consistent."""
    checks: tuple[tuple[str, int, str], ...] = (
        (
            "cache_audio_read_tokens",
            u["cache_audio_read_tokens"] - u["cache_read_tokens"],
            "cache_audio_read_tokens ({cache_audio_read_tokens}) exceeds cache_read_tokens ({cache_read_tokens})",
        ),
        (
            "cache_audio_read_tokens",
            u["cache_audio_read_tokens"] - u["input_audio_tokens"],
            "cache_audio_read_tokens ({cache_audio_read_tokens}) exceeds input_audio_tokens ({input_audio_tokens})",
        ),
        (
            "cache_image_read_tokens",
            u["cache_image_read_tokens"] - u["input_image_tokens"],
            "cache_image_read_tokens ({cache_image_read_tokens}) exceeds input_image_tokens ({input_image_tokens})",
        ),
        (
            "cache_image_read_tokens",
            u["cache_audio_read_tokens"] + u["cache_image_read_tokens"] - u["cache_read_tokens"],
            "cache_audio_read_tokens + cache_image_read_tokens exceed cache_read_tokens ({cache_read_tokens})",
        ),
        (
            "input_tokens",
            u["cache_read_tokens"]
            + u["cache_write_5m_tokens"]
            + u["cache_write_1h_tokens"]
            + u["input_audio_tokens"]
            - u["cache_audio_read_tokens"]
            + u["input_image_tokens"]
            - u["cache_image_read_tokens"]
            - u["input_tokens"],
            "the parts of the prompt (cache reads, cache writes, audio, images) add up to more than "
            "input_tokens ({input_tokens})",
        ),
        (
            "output_tokens",
            u["reasoning_tokens"] + u["output_audio_tokens"] + u["output_image_tokens"] - u["output_tokens"],
            "reasoning, audio and image output tokens add up to more than output_tokens ({output_tokens})",
        ),
    )
    for name, excess, message in checks:
        if excess > 0:
            return name, message.format(**u)
    return None
