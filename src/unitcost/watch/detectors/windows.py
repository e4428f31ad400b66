"""Trailing-window sums over an hourly series, for detectors that judge the last N hours."""

from __future__ import annotations

import numpy as np


class Trailing:
    """O(1) sums of the last `width` hours ending at hour `i` (NaN hours count as 0)."""

    def __init__(self, values: np.ndarray) -> None:
        self._prefix = np.concatenate([[0.0], np.cumsum(np.nan_to_num(values.astype(float)))])

    def sum(self, i: int, width: int) -> float:
        lo = max(0, i - width + 1)
        return float(self._prefix[i + 1] - self._prefix[lo])


def window_start(i: int, width: int) -> int:
    return max(0, i - width + 1)
