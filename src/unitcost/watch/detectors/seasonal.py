"""The usual cost of an hour, and how far an ordinary hour strays from it, for many series at once.

Baseline: the median of the same hour of the day over the days of the same kind (weekday or
weekend) in the `weeks` weeks before the judged day, each of those days first divided by
its weekday's level (the median daily total of that weekday against the median of the
kind), and the result multiplied by the judged day's level. Every weekday of four weeks is
about twenty samples where the same weekday alone is four: the baseline is twice as
precise, and a busier Monday is still expected on Mondays.

Noise, in log space (an ordinary hour costs baseline × e^ε):

    var ε = δ² + κ / baseline              the hour's own noise
          + π/2 · (δ² + κ / baseline) / n  the uncertainty of a median of n days

κ = Σc²/Σc over the series' calls is compound-Poisson noise: an hour of a few large calls
strays more than an hour of many small ones, so quiet night hours are judged leniently.
δ is the series' own traffic dispersion beyond Poisson, measured on the same weeks (both
kinds of day, the busier half of the hours): the value for which 80 % of those hours lie
within ±1.28 of their predicted spread, as for a normal variable. ρ, the correlation of
consecutive hours' residuals, is measured too, so that a window of several hours is not
trusted more than the data allow.

Everything about a day is computed from the days before it: a cycle run hour by hour
judges each hour exactly as one catch-up cycle does.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

HOURS_PER_DAY = 24
_Z80 = 1.2816
"""80 % of a standard normal variable lies within ±1.2816."""
MIN_DISPERSION = 0.05
"""No series is assumed steadier than 5 % from hour to hour, however quiet its history."""
FALLBACK_DISPERSION = 0.30
"""Assumed while a series has too little history to measure its own."""
_MIN_FIT_CELLS = 24


@dataclass(frozen=True)
class Expectation:
    """Per hour (rows, aligned with the input) and series (columns); NaN where not computed."""

    base: np.ndarray
    own_var: np.ndarray
    """Variance of log(observed / base) from the hour's own noise (δ² + κ / base)."""
    base_var: np.ndarray
    """Variance of log(base) from the median of each hour (independent between hours, up to ρ)."""
    level_var: np.ndarray
    """Variance of log(base) from the weekday's level (shared by every hour of the day)."""
    rho: np.ndarray
    """Correlation of the residuals of consecutive hours."""
    dispersion: np.ndarray
    """δ, the series' measured traffic dispersion."""


def expect(
    cost: np.ndarray,
    cost_sq: np.ndarray,
    hours: pd.DatetimeIndex,
    from_position: int,
    weeks: int,
) -> Expectation:
    """Baseline and noise of every hour from `from_position` on, for each column of `cost`."""
    n_hours, n_series = cost.shape
    shape = (n_hours, n_series)
    keys = ("base", "own_var", "base_var", "level_var", "rho", "dispersion")
    out = {k: np.full(shape, np.nan) for k in keys}
    if n_hours == 0 or n_series == 0:
        return Expectation(**out)
    offset = int(hours[0].hour)
    n_days = -(-(offset + n_hours) // HOURS_PER_DAY)
    pad_end = n_days * HOURS_PER_DAY - offset - n_hours
    days = _by_day(cost, offset, pad_end, n_days)
    days_sq = _by_day(cost_sq, offset, pad_end, n_days)
    first_day = hours[0].normalize()
    dow = (first_day.day_of_week + np.arange(n_days)) % 7
    first = (offset + from_position) // HOURS_PER_DAY
    for d in range(first, n_days):
        lo, hi = d * HOURS_PER_DAY - offset, (d + 1) * HOURS_PER_DAY - offset
        day = _expect_day(days, days_sq, dow, d, weeks)
        if day is None:
            continue
        rows = slice(max(lo, 0), min(hi, n_hours))
        cells = slice(max(lo, 0) - lo, min(hi, n_hours) - lo)
        for key, value in day.items():
            out[key][rows] = value[cells]
    return Expectation(**out)


def _by_day(values: np.ndarray, offset: int, pad_end: int, n_days: int) -> np.ndarray:
    """days × 24 × series, NaN outside the data."""
    padded = np.pad(values.astype(float), ((offset, pad_end), (0, 0)), constant_values=np.nan)
    return padded.reshape(n_days, HOURS_PER_DAY, values.shape[1])


def _expect_day(
    days: np.ndarray, days_sq: np.ndarray, dow: np.ndarray, d: int, weeks: int
) -> dict[str, np.ndarray] | None:
    window = np.arange(max(0, d - 7 * weeks), d)
    weekend = dow >= 5
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices (no history yet) are NaN on purpose
        mine = _profile(days, dow, window[weekend[window] == weekend[d]], int(dow[d]))
        if mine is None:
            return None
        spent = np.nansum(days[window], axis=(0, 1))
        kappa = np.where(spent > 0, np.nansum(days_sq[window], axis=(0, 1)) / spent, 0.0)
        # The dispersion is a property of the series, not of the kind of day: it is measured on the
        # residuals of both kinds of day, each against its own profile.
        other = _profile(days, dow, window[weekend[window] != weekend[d]], int(dow[d]))
        parts = [p for p in (mine, other) if p is not None]
        residual = np.concatenate([p.residual for p in parts])
        expected = np.concatenate([p.expected for p in parts])
        poisson = kappa[None, None, :] / expected
        valid = (expected > 0) & ~np.isnan(residual)
        # ...on the busier half of the hours: in hours of a few calls the log of a sum of
        # heavy-tailed call costs is far from normal, and would bias it low.
        busy = np.nanmedian(np.where(valid, expected, np.nan).reshape(-1, expected.shape[-1]), axis=0)
        valid &= expected >= busy[None, None, :]
        delta2 = _fit_dispersion(residual, poisson, valid)
        rho = _lag_one_correlation(residual, poisson, delta2, valid)
        base, n = mine.base, mine.n
        own = delta2[None, :] + kappa[None, :] / base
        base_var = np.pi / 2 * own / n
    ok = (n >= 2) & (base > 0)
    return {
        "base": np.where(n >= 2, base, np.nan),
        "own_var": np.where(ok, own, np.inf),
        "base_var": np.where(ok, base_var, np.inf),
        "level_var": np.broadcast_to(mine.level_var, base.shape).copy(),
        "rho": np.broadcast_to(rho, base.shape).copy(),
        "dispersion": np.broadcast_to(np.sqrt(delta2), base.shape).copy(),
    }


@dataclass(frozen=True)
class _Profile:
    base: np.ndarray
    """24 × series: the expected cost of each hour of the judged day."""
    n: np.ndarray
    """24 × series: how many days the median of each hour was taken over."""
    expected: np.ndarray
    """rows × 24 × series: what the profile expects of each sample day."""
    residual: np.ndarray
    """rows × 24 × series: log(sample / expected), NaN where unknown."""
    level_var: np.ndarray
    """series: variance of the log of the judged day's level."""


def _profile(days: np.ndarray, dow: np.ndarray, rows: np.ndarray, target_dow: int) -> _Profile | None:
    """The hour-of-day profile of some days of one kind, scaled to the judged day's weekday."""
    if len(rows) < 2:
        return None
    samples = days[rows]  # rows × 24 × series
    level, level_var = _day_levels(samples, dow[rows], target_dow)
    normal = samples / level[:-1, None, :]
    median = np.nanmedian(normal, axis=0)
    n = np.sum(~np.isnan(normal), axis=0)
    usable = (median > 0) & (n >= 2)
    # In-sample residuals, enlarged for the share of each that the median absorbed (a median of
    # n normal samples takes (2 - π/2)/n of it).
    absorbed = np.maximum(1 - (2 - np.pi / 2) / np.maximum(n, 1), 0.5)
    residual = np.where(usable[None], np.log(normal / median[None]) / np.sqrt(absorbed)[None], np.nan)
    return _Profile(median * level[-1][None, :], n, median[None] * level[:-1, None, :], residual, level_var)


def _day_levels(
    samples: np.ndarray, sample_dow: np.ndarray, target_dow: int
) -> tuple[np.ndarray, np.ndarray]:
    """The level of each sample day's weekday, then of the judged day's (last row): the median
    daily total of that weekday over the median of the kind, 1 while fewer than 2 complete days
    of that weekday (or 4 of the kind) are known. Also the variance of the log of the judged
    day's level: a median of a few daily totals, whose spread around their weekday's median is
    measured on the same days."""
    totals = samples.sum(axis=1)  # NaN for incomplete days
    kind = np.nanmedian(totals, axis=0)
    complete = ~np.isnan(totals)
    levels, medians, counts = {}, {}, {}
    for w in {*sample_dow.tolist(), target_dow}:
        rows = sample_dow == w
        counts[w] = np.sum(complete[rows], axis=0)
        enough = (counts[w] >= 2) & (np.sum(complete, axis=0) >= 4) & (kind > 0)
        medians[w] = np.nanmedian(totals[rows], axis=0) if rows.any() else np.full(kind.shape, np.nan)
        ratio = medians[w] / kind
        levels[w] = np.where(enough & (ratio > 0), ratio, 1.0)
    spread = np.log(totals / np.vstack([medians[w] for w in sample_dow]))
    per_day = np.square(1.4826 * np.nanmedian(np.abs(spread), axis=0))
    n = np.maximum(counts[target_dow], 1)
    level_var = np.where(levels[target_dow] != 1.0, np.pi / 2 * np.nan_to_num(per_day) / n, 0.0)
    return np.vstack([levels[w] for w in sample_dow] + [levels[target_dow]]), level_var


def _fit_dispersion(residual: np.ndarray, poisson: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """δ² per series such that 80 % of the residuals r lie within z80 · sqrt(δ² + poisson), as for a
    normal variable. A residual stays inside exactly when δ² ≥ r²/z80² − poisson, so δ² is the
    80th percentile of that quantity. Not the median of |r|: every day that is the median of its
    hour has a residual of exactly 0, which pulls the median down by a tenth with 20 days."""
    n_series = residual.shape[-1]
    need = np.where(valid, np.square(residual) / _Z80**2 - poisson, np.nan).reshape(-1, n_series)
    count = np.sum(~np.isnan(need), axis=0)
    ordered = np.sort(need, axis=0)  # NaN last
    rank = np.floor(0.8 * np.maximum(count - 1, 0)).astype(int)
    delta2 = np.take_along_axis(ordered, rank[None, :], axis=0)[0]
    delta2 = np.maximum(np.nan_to_num(delta2, nan=0.0, posinf=4.0), MIN_DISPERSION**2)
    return np.where(count >= _MIN_FIT_CELLS, np.minimum(delta2, 4.0), FALLBACK_DISPERSION**2)


def _lag_one_correlation(
    residual: np.ndarray, poisson: np.ndarray, delta2: np.ndarray, valid: np.ndarray
) -> np.ndarray:
    """Correlation of consecutive hours' standardized residuals (clipped, so one outlier does
    not decide it), between 0 and 0.9."""
    z = np.where(valid, np.clip(residual / np.sqrt(delta2[None, None, :] + poisson), -3, 3), np.nan)
    pairs = z[:, 1:, :] * z[:, :-1, :]
    rho: np.ndarray = np.nanmean(pairs, axis=(0, 1)) / np.nanmean(z * z, axis=(0, 1))
    clipped: np.ndarray = np.clip(np.nan_to_num(rho), 0.0, 0.9)
    return clipped
