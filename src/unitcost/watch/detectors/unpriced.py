"""A model with no price appearing: its calls are in the ledger with no cost, so every report
undercounts until someone adds a price."""

from __future__ import annotations

from datetime import timedelta
from typing import Any, ClassVar

import pandas as pd

from ..scope import Scope, show
from .base import HOUR, Context, Finding, dim_value


class NewUnpricedModel:
    name = "unpriced_model"
    lookback = timedelta(hours=1)
    defaults: ClassVar[dict[str, Any]] = {}

    def detect(self, ctx: Context) -> list[Finding]:
        known = ctx.state.get("known")
        if known is None:
            # First cycle: models already unpriced before the judged hours are not news.
            before = ctx.store.fetch(
                "SELECT DISTINCT provider, model FROM watch_hourly WHERE unpriced_calls > 0 AND hour < ?",
                [ctx.eval_hours[0] if ctx.eval_hours else ctx.end],
            ).to_pylist()
            known = sorted(f"{r['provider']}/{r['model']}" for r in before)
        seen = set(known)
        # Models this watcher saw appear: their incident stays open while their calls keep coming.
        fresh: dict[str, str] = dict(ctx.state.get("fresh", {}))
        findings: list[Finding] = []
        frame = ctx.frame[ctx.frame["unpriced_calls"] > 0]
        frame = frame[frame["hour"].isin(ctx.eval_hours)].sort_values("hour")
        for (hour, provider, model), part in frame.groupby(
            ["hour", "provider", "model"], dropna=False, sort=True
        ):
            name = f"{show(dim_value(provider))}/{show(dim_value(model))}"
            if name in seen and name not in fresh:
                continue
            seen.add(name)
            at = pd.Timestamp(hour)  # type: ignore[arg-type]
            first_hour = fresh.setdefault(name, at.isoformat())
            calls = int(part["unpriced_calls"].sum())
            features = sorted({dim_value(f) for f in part["feature"]}, key=lambda f: (f is None, f or ""))
            findings.append(
                Finding(
                    detector=self.name,
                    scope=Scope.series(provider=dim_value(provider), model=dim_value(model)),
                    at=at.to_pydatetime() + HOUR,
                    since=pd.Timestamp(first_hour).to_pydatetime(),
                    title=f"New model with no price: {name}",
                    observed=float(calls),
                    expected=0.0,
                    unit="unpriced calls",
                    what=f"{calls:,} calls to {name} in the hour, stored with no cost (no price in the book)",
                    severity="warning",
                    contributors=[
                        {
                            "dimension": "feature",
                            "name": f,
                            "observed": 0.0,
                            "expected": 0.0,
                            "delta": 0.0,
                            "label": "calls with no cost",
                        }
                        for f in features[:3]
                    ],
                    notes=[
                        "its calls are stored with no cost and counted as unpriced; add a price to the "
                        "overrides file, then `unitcost reprice`"
                    ],
                )
            )
        ctx.state["known"] = sorted(seen)
        ctx.state["fresh"] = fresh
        return findings
