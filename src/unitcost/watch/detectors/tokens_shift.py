"""Tokens per request of a feature up by a quarter with the same model: the prompt-change leak.

Each (feature, model) series of hourly mean tokens per request is watched by a one-sided
CUSUM on the log scale: each hour adds the log-likelihood ratio of "shifted by `threshold`"
against "unchanged", given its number of calls and the per-call spread measured over the
week before (so a quiet hour weighs little). CUSUM accumulates small persistent excesses
and forgets noise, so it finds the change point (the hour the accumulation started) rather
than a single threshold crossing.
It raises only once the accumulated evidence passes `h`, the typical hour since the change
point (the median of the hourly means) is at least `threshold` above the reference, AND the
calls since the change point are `sigmas` standard deviations above it.
Because a series is one model, a switch to another model starts a new series and is never
reported as a leak.

A burst is not a level shift: a runaway agent's few hours of huge contexts would otherwise
add as much evidence as weeks of a leak, and keep the sum above `h` (and the mean since
the change point above the threshold) for days after the burst ended. So one hour adds at
most the evidence of an hour twice as far off as `threshold`, and the level since the
change point is the median of its hours, which a burst of a few hours does not move once
normal hours outnumber it. A quiet night hour (too few calls to judge) carries an incident
on only if the last judged hour still showed it.

Why `sigmas` as well as `h`: for one hour of n calls the CUSUM step passes `h` once the hour's
z-score reaches h/a + a/2, where a = log(1 + threshold)·√n / spread. At h = 8 that bar is
4 standard deviations for hours of about 80 calls (night and weekend hours of a busy feature,
office hours of a small one), and some hundreds of such hours are judged every week: a 4-sigma
hour (or a 3.6-sigma one in a week whose spread, estimated from 7 days of hours, came out 10 %
low) then alerts on its own. So the calls since the change point, pooled, must also be `sigmas`
standard deviations above the reference. Busy hours are not held back by it: their CUSUM bar is
already higher, and the `threshold` bar higher still.
The CUSUM sum and its start are kept in the detector state between cycles.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from ..scope import Scope, show
from .base import HOUR, Context, Finding, dim_value

BURST_CAP = 2.0
"""One hour's log excess counts at most this many times log(1 + threshold)."""


class TokensPerRequest:
    name = "tokens_per_request"
    lookback = timedelta(days=9)
    defaults: ClassVar[dict[str, Any]] = {
        "threshold": 0.25,
        "h": 8.0,
        "sigmas": 5.0,
        "min_calls": 20,
        "reference_days": 7,
    }

    def detect(self, ctx: Context) -> list[Finding]:
        frame = ctx.frame
        if frame.empty:
            return []
        grouped = frame.groupby(["hour", "feature", "model"], dropna=False)[
            ["tokens", "input_tokens", "output_tokens", "calls"]
        ].sum()
        series_state: dict[str, Any] = ctx.state.setdefault("series", {})
        findings: list[Finding] = []
        hours = ctx.hours()
        for (feature, model), rows in grouped.groupby(level=["feature", "model"], dropna=False):
            if dim_value(feature) is None:
                continue
            part = rows.droplevel(["feature", "model"]).reindex(hours).fillna(0.0)
            scope = Scope.series(feature=dim_value(feature), model=dim_value(model))
            params = ctx.params(scope)
            key = f"{feature}|{model}"
            findings.extend(self._series(ctx, scope, part, params, series_state.setdefault(key, {})))
        return findings

    def _series(
        self, ctx: Context, scope: Scope, part: pd.DataFrame, params: dict[str, Any], st: dict[str, Any]
    ) -> list[Finding]:
        threshold, h, sigmas = float(params["threshold"]), float(params["h"]), float(params["sigmas"])
        calls = part["calls"].to_numpy()
        with np.errstate(all="ignore"):
            per_call = np.where(calls >= int(params["min_calls"]), part["tokens"].to_numpy() / calls, np.nan)
        logs = np.log(per_call)
        index = part.index
        positions = {t: i for i, t in enumerate(index)}
        ref_hours = int(params["reference_days"]) * 24
        last = pd.Timestamp(st["last"]) if st.get("last") else None
        s = float(st.get("S", 0.0))
        start = pd.Timestamp(st["start"]) if st.get("start") else None
        findings: list[Finding] = []
        for hour in ctx.eval_hours:
            t = pd.Timestamp(hour)
            i = positions.get(t)
            if i is None or (last is not None and t <= last):
                continue
            last = t
            if start is not None and t - start > pd.Timedelta(hours=ref_hours):
                s, start = 0.0, None  # a shift that has lasted a whole reference period is the new normal
            if np.isnan(logs[i]):
                if s >= h and start is not None and st.get("alarm"):
                    # Too few calls to judge this hour (night): the incident is still on, say so.
                    findings.append(
                        self._finding(
                            scope,
                            hour,
                            start,
                            st["alarm"][0],
                            st["alarm"][1],
                            part,
                            slice(positions[start], i + 1),
                            positions[start],
                            ref_hours,
                        )
                    )
                continue
            ref_end = positions.get(start, i) if (s > 0 and start is not None) else i
            span = slice(max(0, ref_end - ref_hours), ref_end)
            known = ~np.isnan(logs[span])
            ref, ref_calls = logs[span][known], calls[span][known]
            if len(ref) < 24:
                continue
            mu = float(np.median(ref))
            # Spread of one call's log size, from hourly means weighted by their call counts: a
            # quiet night hour of 20 calls is noisier than a busy hour of 500, and is judged so.
            sigma_call = max(1.4826 * float(np.median(np.abs(ref - mu) * np.sqrt(ref_calls))), 0.01)
            delta = math.log1p(threshold)
            # Log-likelihood ratio of "shifted by delta" against "unchanged" for this hour's mean,
            # the hour's excess capped at 2·delta: a burst counts as a large shift, not a huge one.
            excess = min(float(logs[i]) - mu, BURST_CAP * delta)
            step = calls[i] / sigma_call**2 * delta * (excess - delta / 2)
            if s == 0.0 and step > 0:
                start = t
            s = max(0.0, s + step)
            if s == 0.0:
                start = None
                st.pop("alarm", None)
                continue
            if s < h or start is None:
                st.pop("alarm", None)
                continue
            j = positions[start]
            window = slice(j, i + 1)
            judged = ~np.isnan(logs[window])
            since, since_calls = logs[window][judged], calls[window][judged]
            observed = math.exp(float(np.median(since)))
            expected = math.exp(mu)
            if not (
                observed >= expected * (1 + threshold)
                and _z_since(since, since_calls, mu, sigma_call) >= sigmas
            ):
                st.pop("alarm", None)  # a quiet hour after this one must not revive an old alarm
                continue
            st["alarm"] = [observed, expected]
            findings.append(
                self._finding(scope, hour, start, observed, expected, part, window, ref_end, ref_hours)
            )
        st.update({"S": s, "start": start.isoformat() if start is not None else None})
        st["last"] = last.isoformat() if last is not None else None
        return findings

    def _finding(
        self,
        scope: Scope,
        hour: datetime,
        start: pd.Timestamp,
        observed: float,
        expected: float,
        part: pd.DataFrame,
        window: slice,
        ref_end: int,
        ref_hours: int,
    ) -> Finding:
        ref = slice(max(0, ref_end - ref_hours), ref_end)
        contributors: list[dict[str, Any]] = []
        for column in ("input_tokens", "output_tokens"):
            now = part[column].to_numpy()[window].sum() / max(part["calls"].to_numpy()[window].sum(), 1)
            before = part[column].to_numpy()[ref].sum() / max(part["calls"].to_numpy()[ref].sum(), 1)
            contributors.append(
                {
                    "dimension": "usage",
                    "name": column.replace("_", " ") + " per request",
                    "observed": float(now),
                    "expected": float(before),
                    "delta": float(now - before),
                    "label": f"{now - before:+,.0f} ({(now / before - 1) if before else 0:+.0%})",
                }
            )
        contributors.sort(key=lambda c: float(c["delta"]), reverse=True)
        model = show(dict(scope.dims).get("model"))
        return Finding(
            detector=self.name,
            scope=scope,
            at=hour + HOUR,
            since=start.to_pydatetime(),
            title="Tokens per request up with no change of model (prompt or context change?)",
            observed=observed,
            expected=expected,
            unit="tokens/request",
            contributors=contributors,
            notes=[f"model unchanged: every call in this series is {model}; change point found by CUSUM"],
        )


def _z_since(logs: np.ndarray, calls: np.ndarray, mu: float, sigma_call: float) -> float:
    """How many standard deviations the calls since the change point sit above the reference:
    their call-weighted mean log excess, whose deviation is sigma_call / sqrt(calls)."""
    total = float(np.sum(calls))
    return float(np.sum(calls * (logs - mu))) / (sigma_call * math.sqrt(total))
