"""Cost per hour far above what this hour of this weekday usually costs.

The baseline of an hour is the median of the same hour of the same weekday over the last
weeks (falling back to the same hour on days of the same kind, weekday or weekend, in the
last week while history is short). An hour is anomalous when it is at least `threshold`
above that baseline AND the excess is `sigmas` times the noise: the larger of the spread
seen between those baseline hours and the spread a compound-Poisson hour of those calls
would have (the square root of the summed squared call costs). Quiet night hours with a
few calls are noisy; this keeps them from paging anyone.
"""

from __future__ import annotations

import warnings
from datetime import timedelta
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from .base import HOUR, Context, Finding, contributors, run_start, scope_for


class CostPerHour:
    name = "cost_per_hour"
    lookback = timedelta(days=29)
    defaults: ClassVar[dict[str, Any]] = {"threshold": 0.30, "sigmas": 5.0, "min_excess": 1.0, "weeks": 4}
    by: tuple[str | None, ...] = (None, "team")

    def detect(self, ctx: Context) -> list[Finding]:
        findings: list[Finding] = []
        weeks = int(self.defaults["weeks"])
        for by in self.by:
            cost = ctx.pivot("cost", by)
            noise = ctx.pivot("cost_sq", by)
            for column in cost.columns:
                scope = scope_for(by, column)
                params = ctx.params(scope)
                findings.extend(self._series(ctx, scope, cost[column], noise[column], params, weeks))
        return findings

    def _series(
        self,
        ctx: Context,
        scope: Any,
        cost: pd.Series,
        cost_sq: pd.Series,
        params: dict[str, Any],
        weeks: int,
    ) -> list[Finding]:
        first_eval = (
            int(cost.index.searchsorted(pd.Timestamp(ctx.eval_hours[0]))) if ctx.eval_hours else len(cost)
        )
        # Baselines are only needed for the judged hours and the run of hours before them (for `since`).
        base, spread, sample_hours = baseline(
            cost, cost_sq, int(params.get("weeks", weeks)), max(0, first_eval - 48)
        )
        excess = cost - base
        flagged = (
            (cost >= base * (1 + float(params["threshold"])))
            & (excess >= float(params["sigmas"]) * spread)
            & (excess >= float(params["min_excess"]))
            & base.notna()
        ).to_numpy()
        findings: list[Finding] = []
        index = cost.index
        positions = {h: i for i, h in enumerate(index)}
        for hour in ctx.eval_hours:
            i = positions.get(pd.Timestamp(hour))
            if i is None or not flagged[i]:
                continue
            since = index[run_start(flagged, i)]
            findings.append(
                Finding(
                    detector=self.name,
                    scope=scope,
                    at=hour + HOUR,
                    since=since.to_pydatetime(),
                    title="Cost per hour above its usual level for this hour and weekday",
                    observed=float(cost.iloc[i]),
                    expected=float(base.iloc[i]),
                    unit="$/hour",
                    contributors=contributors(ctx, "cost", index[i], sample_hours(i), scope),
                )
            )
        return findings


def baseline(
    cost: pd.Series, cost_sq: pd.Series, weeks: int, from_position: int = 0
) -> tuple[pd.Series, pd.Series, Any]:
    """Median and noise of the same hour-of-week over `weeks` weeks (same hour, same day kind as fallback)."""
    weekly = [cost.shift(168 * k) for k in range(1, weeks + 1)]
    weekly_sq = [cost_sq.shift(168 * k) for k in range(1, weeks + 1)]
    same_kind_lags = _same_kind_lags(pd.DatetimeIndex(cost.index))
    stacked = np.vstack([s.to_numpy() for s in weekly]).T
    enough = np.sum(~np.isnan(stacked), axis=1) >= 2
    fallback = np.full(len(cost), np.nan)
    fallback_sq = np.full(len(cost), np.nan)
    daily = np.vstack([cost.shift(24 * d).to_numpy() for d in range(1, 8)]).T
    daily_sq = np.vstack([cost_sq.shift(24 * d).to_numpy() for d in range(1, 8)]).T
    for i in np.flatnonzero(~enough[from_position:]) + from_position:
        lags = same_kind_lags[i]
        values = daily[i, lags]
        values = values[~np.isnan(values)]
        if len(values) >= 2:
            fallback[i] = np.median(values)
            fallback_sq[i] = np.nanmean(daily_sq[i, lags])
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)  # hours with no history yet are NaN, on purpose
        weekly_median = np.nanmedian(stacked, axis=1) if stacked.size else fallback
        mad = np.nanmedian(np.abs(stacked - weekly_median[:, None]), axis=1)
        # The mean, not the median: squared costs are heavy-tailed (one long-context call dominates).
        sq = np.nanmean(np.vstack([s.to_numpy() for s in weekly_sq]).T, axis=1)
    base = np.where(enough, weekly_median, fallback)
    # Compound-Poisson noise of an hour costing `base`: variance = base * E[c^2]/E[c], with the
    # ratio taken over the whole lookback, so rare expensive calls (long contexts) are priced in.
    total = float(np.nansum(cost.to_numpy()))
    ratio = float(np.nansum(cost_sq.to_numpy())) / total if total > 0 else 0.0
    poisson = np.sqrt(np.maximum(np.nan_to_num(base), 0.0) * ratio)
    spread = np.maximum(np.where(enough, 1.4826 * mad, 0.0), np.maximum(poisson, np.sqrt(np.nan_to_num(sq))))
    spread = np.where(enough, spread, np.maximum(poisson, np.sqrt(np.nan_to_num(fallback_sq))))
    # Traffic itself wanders from hour to hour beyond Poisson noise: measure how far this series'
    # hours usually sit from their baselines (robustly) and never assume less than that.
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        judged = np.arange(len(base)) >= from_position
        # Busy hours only: in quiet ones the Poisson spread above already dominates.
        judged &= np.nan_to_num(base) >= np.nanmedian(np.where(judged, base, np.nan))
        ratio_log = np.log(cost.to_numpy()[judged] / base[judged])
        ratio_log = ratio_log[np.isfinite(ratio_log)]
        relative = 1.4826 * float(np.median(np.abs(ratio_log))) if len(ratio_log) >= 12 else 0.0
    spread = np.maximum(spread, relative * np.nan_to_num(base))
    index = cost.index

    def sample_hours(i: int) -> list[pd.Timestamp]:
        if enough[i]:
            return [index[i] - pd.Timedelta(weeks=k) for k in range(1, weeks + 1)]
        return [index[i] - pd.Timedelta(days=int(d) + 1) for d in same_kind_lags[i]]

    return pd.Series(base, index=index), pd.Series(spread, index=index), sample_hours


def _same_kind_lags(index: pd.DatetimeIndex) -> list[np.ndarray]:
    """For each hour, which of the previous 7 days (0 = yesterday) are the same kind of day."""
    dow = np.asarray(index.day_of_week)
    lag_dow = (dow[:, None] - np.arange(1, 8)[None, :]) % 7
    same = (lag_dow >= 5) == (dow[:, None] >= 5)
    return [np.flatnonzero(row) for row in same]
