"""Trailing-window sums over an hourly series, for detectors that judge the last N hours."""

from __future__ import annotations

import numpy as np


def trailing(values: np.ndarray, i: int, width: int) -> float:
    """Sum of values[i - width + 1 .. i], NaN treated as 0."""
    lo = max(0, i - width + 1)
    return float(np.nansum(values[lo : i + 1]))


def window_start(i: int, width: int) -> int:
    return max(0, i - width + 1)
