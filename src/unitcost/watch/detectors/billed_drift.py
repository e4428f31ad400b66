"""Provider-billed cost drifting from unitcost's computed cost: a price in the book is wrong.

Over the trailing `window` hours, per provider, the billed total of the calls that carry
a billed cost is compared with the cost unitcost computed for the same calls.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, ClassVar

import numpy as np

from ..scope import Scope
from .base import HOUR, Context, Finding, dim_value, in_scope, run_start, scope_for
from .windows import Trailing


class BilledDrift:
    name = "billed_drift"
    lookback = timedelta(days=2)
    defaults: ClassVar[dict[str, Any]] = {"threshold": 0.02, "window": 24, "min_calls": 20, "min_delta": 0.10}

    def detect(self, ctx: Context) -> list[Finding]:
        index = ctx.hours()
        positions = {h: i for i, h in enumerate(index)}
        wanted = [positions[h] for h in index[index.isin(ctx.eval_hours)]]
        if not wanted:
            return []
        findings: list[Finding] = []
        billed, computed, calls = (
            ctx.pivot(v, "provider") for v in ("billed_cost", "billed_computed_cost", "billed_calls")
        )
        for provider in billed.columns:
            scope = scope_for("provider", provider)
            p = ctx.params(scope)
            width = int(p["window"])
            b, c, n = (Trailing(x[provider].to_numpy()) for x in (billed, computed, calls))
            flags = np.zeros(len(index), dtype=bool)
            for i in range(max(0, min(wanted) - width), max(wanted) + 1):
                tb, tc = b.sum(i, width), c.sum(i, width)
                flags[i] = (
                    n.sum(i, width) >= int(p["min_calls"])
                    and tc > 0
                    and abs(tb - tc) > float(p["threshold"]) * tc
                    and abs(tb - tc) >= float(p["min_delta"])
                )
            for i in wanted:
                if not flags[i]:
                    continue
                tb, tc = b.sum(i, width), c.sum(i, width)
                findings.append(
                    Finding(
                        detector=self.name,
                        scope=scope,
                        at=index[i].to_pydatetime() + HOUR,
                        since=index[run_start(flags, i)].to_pydatetime(),
                        title=f"Billed cost differs from computed cost by {tb / tc - 1:+.1%}",
                        observed=tb,
                        expected=tc,
                        unit=f"$ billed over {width} h",
                        contributors=_models(ctx, scope, index[max(0, i - width + 1) : i + 1]),
                        notes=[
                            "a price in the book (or a discount in the overrides) is probably wrong; "
                            "check `unitcost prices show` for these models"
                        ],
                    )
                )
        return findings


def _models(ctx: Context, scope: Scope, hours: Any) -> list[dict[str, Any]]:
    frame = in_scope(ctx.frame[ctx.frame["hour"].isin(hours)], scope)
    grouped = frame.groupby("model", dropna=False)[["billed_cost", "billed_computed_cost"]].sum()
    grouped["delta"] = grouped["billed_cost"] - grouped["billed_computed_cost"]
    grouped = grouped.reindex(grouped["delta"].abs().sort_values(ascending=False).index).head(3)
    return [
        {
            "dimension": "model",
            "name": dim_value(m),
            "observed": float(r.billed_cost),
            "expected": float(r.billed_computed_cost),
            "delta": float(r.delta),
            "label": f"billed ${r.billed_cost:,.2f} vs computed ${r.billed_computed_cost:,.2f}",
        }
        for m, r in grouped.iterrows()
        if r.delta != 0
    ]
