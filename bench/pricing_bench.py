"""Batch pricing against genai-prices, per event, on the same 1M mixed events, in one run.

    .venv/bin/python bench/pricing_bench.py                 # 1M events, genai-prices on all of them
    .venv/bin/python bench/pricing_bench.py --genai 100000  # genai-prices on the first 100k only

The events mix every model of fourteen providers whose prices no unitcost correction
touches, random usage (uncached and cached input, 5m and 1h cache writes, reasoning,
audio, images, web searches) and random dates from 2023 to 2026, so price periods and
long-context tiers are exercised. The PriceBook runs with its genai-prices layer only, so
both sides must give the same total to the pico-dollar; the script fails if they do not.
"""

from __future__ import annotations

import argparse
import platform
import resource
import statistics
import sys
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import genai_prices
import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_pricing_parity import _eligible  # the same model selection as the parity test
from unitcost.events import EVENT_SCHEMA, USAGE_FIELDS
from unitcost.money import arrow_to_pico
from unitcost.pricing.batch import price_table
from unitcost.pricing.book import PriceBook
from unitcost.pricing.genai_layer import ModelRef
from unitcost.pricing.layers import Layer

START = datetime(2023, 6, 1, tzinfo=UTC)
END = datetime(2026, 11, 1, tzinfo=UTC)


# Usage column -> the priced quantities it feeds.
_COLUMN_OF = {
    "cache_read_tokens": ("cache_read_text",),
    "cache_write_5m_tokens": ("cache_write_5m",),
    "cache_write_1h_tokens": ("cache_write_1h",),
    "input_audio_tokens": ("input_audio",),
    "input_image_tokens": ("input_image",),
    "output_tokens": ("output_text",),
    "reasoning_tokens": ("output_text", "reasoning"),
    "web_searches": ("web_searches",),
}


def mixed_events(book: PriceBook, n: int, seed: int = 1) -> tuple[pa.Table, int]:
    rng = np.random.default_rng(seed)
    models = _eligible(book)
    pick = rng.integers(0, len(models), size=n)
    # Only usage a model has a price for: an embedding model has no output price, most models
    # no audio price. (unitcost refuses to price such usage; genai-prices would count it as $0.)
    unpriceable = np.zeros((len(models), len(_COLUMN_OF)), dtype=bool)
    for m_index, ref in enumerate(models):
        missing = {
            name
            for segment in book.timeline(ref, "standard").segments
            for option in segment.options
            if option.price
            for name in book.plan(option.price).missing
        }
        for c_index, names in enumerate(_COLUMN_OF.values()):
            unpriceable[m_index, c_index] = bool(missing & set(names))

    def usable(name: str, values: np.ndarray) -> np.ndarray:
        return np.where(unpriceable[pick, list(_COLUMN_OF).index(name)], 0, values)

    big = rng.random(n) < 0.05  # a few long prompts cross the >200k tiers
    cache_read = usable("cache_read_tokens", np.where(rng.random(n) < 0.4, rng.integers(0, 20_000, n), 0))
    cw5 = usable("cache_write_5m_tokens", np.where(rng.random(n) < 0.05, rng.integers(0, 5_000, n), 0))
    cw1 = usable("cache_write_1h_tokens", np.where(rng.random(n) < 0.02, rng.integers(0, 5_000, n), 0))
    audio = usable("input_audio_tokens", np.where(rng.random(n) < 0.02, rng.integers(0, 2_000, n), 0))
    image = usable("input_image_tokens", np.where(rng.random(n) < 0.05, rng.integers(0, 2_000, n), 0))
    text = np.where(big, rng.integers(150_000, 400_000, n), rng.integers(0, 30_000, n))
    reasoning = usable("reasoning_tokens", np.where(rng.random(n) < 0.3, rng.integers(0, 4_000, n), 0))
    output = usable("output_tokens", reasoning + rng.integers(1, 2_000, n))
    ts = rng.integers(int(START.timestamp() * 1e6), int(END.timestamp() * 1e6), size=n)
    columns = {
        "event_id": pa.array([f"b{i}" for i in range(n)]),
        "ts": pa.array(ts, type=pa.int64()).cast(pa.timestamp("us", tz="UTC")),
        "provider": pa.array([models[i].provider for i in pick]),
        "model": pa.array([models[i].model for i in pick]),
        "input_tokens": text + cache_read + cw5 + cw1 + audio + image,
        "cache_read_tokens": cache_read,
        "cache_write_5m_tokens": cw5,
        "cache_write_1h_tokens": cw1,
        "input_audio_tokens": audio,
        "input_image_tokens": image,
        "output_tokens": output,
        "reasoning_tokens": reasoning,
        "web_searches": usable("web_searches", np.where(rng.random(n) < 0.01, 1, 0)),
        "requests": np.ones(n, dtype=np.int64),
    }
    arrays = []
    for f in EVENT_SCHEMA:
        if f.name in columns:
            arrays.append(pa.array(columns[f.name]).cast(f.type))
        elif f.name in USAGE_FIELDS:
            arrays.append(pa.array(np.zeros(n, dtype=np.int64)).cast(f.type))
        else:
            arrays.append(pa.nulls(n, f.type))
    return pa.Table.from_arrays(arrays, schema=EVENT_SCHEMA), len(models)


def genai_total(book: PriceBook, table: pa.Table, limit: int) -> tuple[Decimal, int, float]:
    """genai-prices, one call per event, on the model entry itself (by id: no name matching,
    which is genai-prices' fastest path and finds models whose id its matchers miss)."""
    rows = table.slice(0, limit).to_pylist()
    refs = {ModelRef(r["provider"], r["model"]) for r in rows}
    models = {ref: book.genai.model_info(ref) for ref in refs}
    providers = {ref.provider: book.genai.provider(ref.provider) for ref in refs}
    total = Decimal(0)
    unpriced = 0
    started = time.perf_counter()
    for r in rows:
        usage = genai_prices.Usage(
            input_tokens=r["input_tokens"],
            cache_read_tokens=r["cache_read_tokens"],
            cache_write_tokens=r["cache_write_5m_tokens"] + r["cache_write_1h_tokens"],
            cache_write_5m_tokens=r["cache_write_5m_tokens"],
            cache_write_1h_tokens=r["cache_write_1h_tokens"],
            input_audio_tokens=r["input_audio_tokens"],
            cache_audio_read_tokens=r["cache_audio_read_tokens"],
            input_image_tokens=r["input_image_tokens"],
            cache_image_read_tokens=r["cache_image_read_tokens"],
            output_tokens=r["output_tokens"],
            output_reasoning_tokens=r["reasoning_tokens"],
            output_audio_tokens=r["output_audio_tokens"],
            output_image_tokens=r["output_image_tokens"],
            web_searches=r["web_searches"],
        )
        try:
            ref = ModelRef(r["provider"], r["model"])
            result = models[ref].calc_price(usage, providers[ref.provider], genai_request_timestamp=r["ts"])
        except LookupError:
            unpriced += 1
            continue
        total += result.total_price
    return total, unpriced, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument(
        "--genai", type=int, default=None, help="events priced by genai-prices (default: all)"
    )
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    book = PriceBook(corrections=Layer("unitcost", "(none)"))  # genai-prices data only: comparable
    table, n_models = mixed_events(book, args.events)
    price_table(book, table.slice(0, 1000))  # warm: resolve names, compile plans
    times = []
    for _ in range(args.repeat):
        started = time.perf_counter()
        priced = price_table(book, table)
        times.append(time.perf_counter() - started)
    best, median = min(times), statistics.median(times)
    limit = args.genai or args.events
    pico, valid = arrow_to_pico(priced.columns["cost"].slice(0, limit))
    ours = Decimal(int(pico[valid].sum(dtype=object))).scaleb(-12)
    theirs, their_unpriced, genai_s = genai_total(book, table, limit)
    per_event_ours = median / args.events
    per_event_genai = genai_s / limit
    print(
        f"machine: {platform.processor() or platform.machine()}, {_cores()} cores, Python {platform.python_version()}"
    )
    print(f"events: {args.events:,} over {n_models} models; genai-prices compared on {limit:,}")
    print(
        f"unitcost price_table: best {best:.3f} s, median {median:.3f} s -> {args.events / median:,.0f} events/s"
    )
    print(
        f"genai-prices calc_price per event: {genai_s:.1f} s for {limit:,} -> {limit / genai_s:,.0f} events/s"
    )
    print(f"speed-up: {per_event_genai / per_event_ours:,.0f}x")
    print(f"totals on the compared events: unitcost ${ours} · genai-prices ${theirs}")
    print(f"unpriced: unitcost {limit - int(valid.sum())} · genai-prices {their_unpriced}")
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MiB")
    if abs(ours - theirs) > Decimal("1e-9") or (limit - int(valid.sum())) != their_unpriced:
        sys.exit("MISMATCH: the totals differ")


def _cores() -> int:
    import os

    return len(os.sched_getaffinity(0))


if __name__ == "__main__":
    main()
