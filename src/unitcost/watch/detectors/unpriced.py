"""A model with no price appearing: its calls are in the ledger with no cost, so every report
undercounts until someone adds a price.

A model with no price is one standing problem, however sparse its calls: its incident stays open
while the model is unpriced (each hour with unpriced calls updates it), not only while its calls
keep coming, and `resolve_after_hours` does not apply to it. It resolves in one of two ways:

- **priced**: the model got a price (an override, a correction, `unitcost prices update`) and its
  calls were repriced (`unitcost reprice`), so the ledger holds no unpriced call of the model in
  the 25 hours up to the end of the last hour judged (the hours whose findings would keep the
  incident open: `STANDING` and the hour before it). The first cycle that judges an hour after
  the reprice finds that in the events themselves (the hourly rollups keep the calls as they
  were ingested) and resolves the incident at the end of that hour. A price added with no
  reprice does not: the calls already stored still have no cost;
- **gone quiet**: no unpriced call of the model for a day (`STANDING`): its calls stopped, or now
  come priced (a price added but no reprice run). It resolves at the end of that day (the end of
  its last hour with unpriced calls + 24 h), as other incidents do after `resolve_after_hours`.

Unpriced calls of the model after that open a new incident, with its own "since".
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, ClassVar

import pandas as pd

from ..scope import Scope, show
from .base import HOUR, Cleared, Context, Finding, dim_value

STANDING = timedelta(hours=24)
"""An unpriced model's incident stays open until this long passes with no unpriced call of it."""


class NewUnpricedModel:
    name = "unpriced_model"
    lookback = timedelta(hours=1)
    resolve_after = STANDING
    """This detector's incidents' quiet spell, instead of the `resolve_after_hours` setting."""
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
        # Models this watcher saw appear (reported whenever their unpriced calls come), with the
        # first hour of their latest incident.
        fresh: dict[str, str] = dict(ctx.state.get("fresh", {}))
        # The incidents this detector holds open: model -> [incident key, end of its last hour with
        # unpriced calls] (the incident's last_seen).
        standing: dict[str, list[str]] = {k: list(v) for k, v in ctx.state.get("open", {}).items()}
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
            seen_by = (at + HOUR).to_pydatetime()
            held = standing.get(name)
            if held is None or seen_by - datetime.fromisoformat(held[1]) > STANDING:
                fresh[name] = at.isoformat()  # a new incident (the last one resolved): its own "since"
            calls = int(part["unpriced_calls"].sum())
            features = sorted({dim_value(f) for f in part["feature"]}, key=lambda f: (f is None, f or ""))
            finding = Finding(
                detector=self.name,
                scope=Scope.series(provider=dim_value(provider), model=dim_value(model)),
                at=seen_by,
                since=pd.Timestamp(fresh[name]).to_pydatetime(),
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
            standing[name] = [finding.key, seen_by.isoformat()]
            findings.append(finding)
        ctx.cleared.extend(self._priced(ctx, standing))
        ctx.state["known"] = sorted(seen)
        ctx.state["fresh"] = fresh
        ctx.state["open"] = standing
        return findings

    def _priced(self, ctx: Context, standing: dict[str, list[str]]) -> list[Cleared]:
        """The incidents of models whose unpriced calls are gone from the ledger (priced and
        repriced), resolved at the end of the last hour judged; forgets those that went quiet
        (resolved after `STANDING` by the incidents, as a quiet spell)."""
        end = ctx.end
        for name, (_, last_seen) in list(standing.items()):
            if end - datetime.fromisoformat(last_seen) > STANDING:
                del standing[name]
        if not standing:
            return []
        # The hours whose findings keep an incident open at `end`: a finding is seen by the end
        # of its hour, and the incident stays open `STANDING` after its last one.
        start = end - STANDING - HOUR
        rows = ctx.store.fetch(
            "SELECT DISTINCT provider, model FROM events WHERE cost IS NULL AND ts >= ? AND ts < ?",
            [start, end],
        ).to_pylist()
        unpriced = {f"{show(dim_value(r['provider']))}/{show(dim_value(r['model']))}" for r in rows}
        out: list[Cleared] = []
        for name, (key, _) in list(standing.items()):
            if name in unpriced:
                continue
            del standing[name]
            why = f"{name} is priced: none of its calls since {start:%Y-%m-%d %H:%M} UTC is left with no cost"
            out.append(Cleared(key=key, at=end, why=why))
        return out
