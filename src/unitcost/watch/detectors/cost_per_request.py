"""Cost per request of a feature at least 15 % above its previous week, within a day.

Several trailing windows are judged (1, 6 and 24 hours by default): a large jump is seen
in the first hour, a small one once a day of calls makes it certain. A window is anomalous
when its mean cost per request is `threshold` above the mean of the week before it and the
difference is `sigmas` standard errors (from the summed squared call costs), so a handful
of expensive calls in a quiet hour is not an incident.
"""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any, ClassVar

import numpy as np

from .base import HOUR, Context, Finding, contributors, run_start, scope_for
from .windows import Trailing, window_start


class CostPerRequest:
    name = "cost_per_request"
    lookback = timedelta(days=9)
    defaults: ClassVar[dict[str, Any]] = {
        "threshold": 0.15,
        "sigmas": 4.0,
        "min_calls": 100,
        "windows": [1, 6, 24],
        "reference_days": 7,
    }
    by: tuple[str | None, ...] = ("feature",)

    def detect(self, ctx: Context) -> list[Finding]:
        findings: list[Finding] = []
        for by in self.by:
            cost, calls, sq = (ctx.pivot(v, by) for v in ("cost", "priced_calls", "cost_sq"))
            for column in cost.columns:
                scope = scope_for(by, column)
                params = ctx.params(scope)
                findings.extend(
                    self._series(
                        ctx,
                        scope,
                        params,
                        cost[column].to_numpy(),
                        calls[column].to_numpy(),
                        sq[column].to_numpy(),
                    )
                )
        return findings

    def _series(
        self,
        ctx: Context,
        scope: Any,
        params: dict[str, Any],
        cost: np.ndarray,
        calls: np.ndarray,
        sq: np.ndarray,
    ) -> list[Finding]:
        index = ctx.hours()
        positions = {h: i for i, h in enumerate(index)}
        ref_hours = int(params["reference_days"]) * 24
        wanted = [positions[h] for h in (index[index.isin(ctx.eval_hours)])]
        if not wanted:
            return []
        cost_t, calls_t, sq_t = Trailing(cost), Trailing(calls), Trailing(sq)
        flags = np.zeros(len(index), dtype=bool)
        best: dict[int, tuple[float, float, int]] = {}
        for i in range(max(0, min(wanted) - 48), max(wanted) + 1):
            for width in params["windows"]:
                verdict = self._window(cost, cost_t, calls_t, sq_t, i, int(width), ref_hours, params)
                if verdict is not None:
                    flags[i] = True
                    best.setdefault(i, (*verdict, int(width)))
                    break
        findings = []
        for i in wanted:
            if not flags[i]:
                continue
            observed, expected, width = best[i]
            since = index[self._since(flags, best, cost, calls, i, float(params["threshold"]))]
            ref = index[max(0, window_start(i, width) - ref_hours) : window_start(i, width)]
            findings.append(
                Finding(
                    detector=self.name,
                    scope=scope,
                    at=index[i].to_pydatetime() + HOUR,
                    since=since.to_pydatetime(),
                    title=f"Cost per request up over the last {width} h against the week before",
                    observed=observed,
                    expected=expected,
                    unit="$/request",
                    contributors=contributors(
                        ctx, "cost", index[i], list(ref[-24 * 7 :: 24]), scope, ("model",)
                    ),
                )
            )
        return findings

    @staticmethod
    def _since(
        flags: np.ndarray,
        best: dict[int, tuple[float, float, int]],
        cost: np.ndarray,
        calls: np.ndarray,
        i: int,
        threshold: float,
    ) -> int:
        """The first hour of the incident: in the first flagged window of the run that hour `i`
        ends, the first hour whose own cost per request is `threshold` above the reference.
        Taken from the run's first window, not hour i's, so it does not move with the window
        as later hours are judged; and not the window's first hour, which can be a day before
        anything changed."""
        first = run_start(flags, i)
        _, reference, width = best[first]
        hour = window_start(first, width)
        with np.errstate(all="ignore"):
            per_call = np.nan_to_num(cost) / calls
        while hour < first and not per_call[hour] >= reference * (1 + threshold):
            hour += 1
        return hour

    @staticmethod
    def _window(
        cost: np.ndarray,
        cost_t: Trailing,
        calls_t: Trailing,
        sq_t: Trailing,
        i: int,
        width: int,
        ref_hours: int,
        params: dict[str, Any],
    ) -> tuple[float, float] | None:
        n = calls_t.sum(i, width)
        if n < int(params["min_calls"]):
            return None
        start = window_start(i, width)
        if start - ref_hours < 0 or np.isnan(cost[start - ref_hours]):
            return None
        ref_n = calls_t.sum(start - 1, ref_hours)
        if ref_n < int(params["min_calls"]):
            return None
        mean = cost_t.sum(i, width) / n
        ref_mean = cost_t.sum(start - 1, ref_hours) / ref_n
        var = max(sq_t.sum(i, width) / n - mean * mean, 0.0)
        ref_var = max(sq_t.sum(start - 1, ref_hours) / ref_n - ref_mean * ref_mean, 0.0)
        se = math.sqrt(var / n + ref_var / ref_n)
        if (
            mean >= ref_mean * (1 + float(params["threshold"]))
            and mean - ref_mean >= float(params["sigmas"]) * se
        ):
            return mean, ref_mean
        return None
