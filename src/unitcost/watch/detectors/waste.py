"""Retries and failed attempts costing more than 5 % of spend.

Spend on failed attempts (error, timeout, cancelled) and on retries is money a first-time
success would not have cost. Judged over trailing windows (24 hours by default; add 3 or 6
to see a burst of rate limits within hours, at the price of noisier alerts when a few
expensive calls are retried); a window needs `min_spend` dollars and `min_calls` wasted
calls to count.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, ClassVar

import numpy as np

from .base import HOUR, Context, Finding, dim_value, in_scope, run_start, scope_for
from .windows import Trailing


class RetryWaste:
    name = "retry_waste"
    lookback = timedelta(days=2)
    defaults: ClassVar[dict[str, Any]] = {
        "threshold": 0.05,
        "windows": [24],
        "min_spend": 5.0,
        "min_calls": 20,
    }
    by: tuple[str | None, ...] = (None, "team", "feature")

    def detect(self, ctx: Context) -> list[Finding]:
        findings: list[Finding] = []
        index = ctx.hours()
        positions = {h: i for i, h in enumerate(index)}
        wanted = [positions[h] for h in index[index.isin(ctx.eval_hours)]]
        if not wanted:
            return []
        for by in self.by:
            cost, waste, waste_calls = (ctx.pivot(v, by) for v in ("cost", "waste_cost", "waste_calls"))
            for column in cost.columns:
                scope = scope_for(by, column)
                params = ctx.params(scope)
                c, w, wc = (Trailing(x[column].to_numpy()) for x in (cost, waste, waste_calls))
                flags = np.zeros(len(index), dtype=bool)
                seen: dict[int, tuple[float, float, int]] = {}
                for i in range(max(0, min(wanted) - 24), max(wanted) + 1):
                    for width in params["windows"]:
                        spend, wasted = c.sum(i, int(width)), w.sum(i, int(width))
                        if (
                            spend >= float(params["min_spend"])
                            and wc.sum(i, int(width)) >= int(params["min_calls"])
                            and wasted > float(params["threshold"]) * spend
                        ):
                            flags[i] = True
                            seen[i] = (wasted, spend, int(width))
                            break
                for i in wanted:
                    if not flags[i]:
                        continue
                    wasted, spend, width = seen[i]
                    findings.append(
                        Finding(
                            detector=self.name,
                            scope=scope,
                            at=index[i].to_pydatetime() + HOUR,
                            since=index[run_start(flags, i)].to_pydatetime(),
                            title=f"Retries and failed attempts cost {wasted / spend:.1%} of spend "
                            f"over the last {width} h",
                            observed=wasted / spend * 100,
                            expected=float(params["threshold"]) * 100,
                            unit="% of spend wasted",
                            contributors=_by_feature(ctx, scope, index[max(0, i - width + 1) : i + 1]),
                            notes=[f"${wasted:,.2f} of ${spend:,.2f} went to failed attempts and retries"],
                        )
                    )
        return findings


def _by_feature(ctx: Context, scope: Any, hours: Any) -> list[dict[str, Any]]:
    frame = in_scope(ctx.frame[ctx.frame["hour"].isin(hours)], scope)
    top = frame.groupby("feature", dropna=False)["waste_cost"].sum().sort_values(ascending=False).head(3)
    return [
        {
            "dimension": "feature",
            "name": dim_value(k),
            "observed": float(v),
            "expected": 0.0,
            "delta": float(v),
            "label": f"${v:,.2f} wasted",
        }
        for k, v in top.items()
        if v > 0
    ]
