"""Latency percentiles from log-bucket histograms: mergeable, and within 1 % of the exact value.

A latency x > 0 ms falls in bucket i = ceil(ln x / ln γ), the interval (γ^(i-1), γ^i], with
γ = 1.02, and every value of bucket i is represented by 2·γ^i / (γ + 1), which is within
(γ - 1) / (γ + 1) = 0.990 % of it. Zero has a bucket of its own, represented exactly. The
histograms of any split of the events add up bucket by bucket, so the hourly report rollups
keep one per hour and group, and a report merges those of its window.

A percentile interpolates between the two values around rank (n - 1)·q, as quantile_cont
and PERCENTILE.INC do; with both values replaced by their representatives the result is a
weighted mean of numbers each within 0.990 % of the exact ones, so it is within 0.990 % of
the exact percentile too. Every engine and every path of the report (rollups or events)
buckets the same way, so they agree to the last digit.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Sequence

GAMMA = 1.02
RELATIVE_ERROR = (GAMMA - 1) / (GAMMA + 1)
ZERO_BUCKET = -1_000_000
"""Below every real bucket: the smallest positive double falls in bucket -37,640."""

# Written in exponent notation so that every engine reads a double, never a decimal.
_PER_LN_GAMMA = f"{1 / math.log(GAMMA):.17e}"


def bucket_sql(expr: str) -> str:
    """The bucket of a latency in SQL (NULL stays NULL); ln() is only ever given a positive number."""
    positive = f"CASE WHEN {expr} > 0 THEN {expr} ELSE 1 END"
    return (
        f"CASE WHEN {expr} > 0 THEN CAST(ceil(ln({positive}) * {_PER_LN_GAMMA}) AS INTEGER) "
        f"WHEN {expr} = 0 THEN {ZERO_BUCKET} END"
    )


def bucket_value(bucket: int) -> float:
    """What every latency of a bucket is reported as."""
    if bucket == ZERO_BUCKET:
        return 0.0
    return 2 * GAMMA**bucket / (GAMMA + 1)


def percentile(histogram: Sequence[tuple[int, int]], q: float) -> float | None:
    """The q-th percentile (0 <= q <= 1) of a histogram given as (bucket, count) sorted by bucket."""
    buckets = [b for b, n in histogram if n > 0]
    ends = list(itertools.accumulate(n for _, n in histogram if n > 0))
    if not ends:
        return None
    rank = (ends[-1] - 1) * q
    low = math.floor(rank)
    fraction = rank - low

    def value_at(position: int) -> float:
        # The bucket holding the value of 0-based rank `position`.
        return bucket_value(buckets[bisect.bisect_right(ends, position)])

    below = value_at(low)
    above = value_at(low + 1) if fraction else below
    return round(below + fraction * (above - below), 6)
