"""A trace or session that spends, or calls, far more than its feature's traces normally do.

The norm of a feature is the 99th percentile of its traces' spend and call counts over
the last week of trace rollups (one runaway among thousands does not move it). A trace is
runaway once its total passes `factor` times that percentile and an absolute floor. Only
traces active in the hours being judged are looked at, and the hour of crossing is found
from the trace's own hourly rows. The norms are kept for a day, and recomputed at once when a
reprice rebuilds the trace rollups of an hour of their week.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, ClassVar

import pandas as pd

from ...analytics.dialect import dialect_for
from ..rollup import rebuilt_since
from ..scope import Scope, show
from .base import HOUR, Context, Finding, dim_value


class RunawayTrace:
    name = "runaway_trace"
    lookback = timedelta(days=1)
    defaults: ClassVar[dict[str, Any]] = {
        "factor": 5.0,
        "min_cost": 2.0,
        "min_calls": 50,
        "norm_days": 7,
        "min_traces": 50,
    }

    def detect(self, ctx: Context) -> list[Finding]:
        if not ctx.eval_hours:
            return []
        first, last = ctx.eval_hours[0], ctx.eval_hours[-1] + HOUR
        params = ctx.params(Scope())
        norms = self._norms(ctx, first, last, int(params["norm_days"]))
        candidates = ctx.store.fetch(
            """
            WITH active AS (SELECT DISTINCT key_kind, key FROM watch_traces WHERE hour >= ? AND hour < ?)
            SELECT t.key_kind, t.key, any_value(t.feature) AS feature, any_value(t.team) AS team,
                   CAST(sum(t.calls) AS BIGINT) AS calls, CAST(sum(t.cost) AS DOUBLE) AS cost,
                   min(t.first_ts) AS first_ts
            FROM watch_traces t JOIN active a USING (key_kind, key)
            WHERE t.hour >= ? AND t.hour < ?
            GROUP BY 1, 2
            """,
            [first, last, first - timedelta(days=2), last],
        )
        if candidates.num_rows == 0 or norms.empty:
            return []
        # Keep only traces above the loosest factor any scope uses before looking at them one by one.
        loosest = min(
            [float(params["factor"])]
            + [float(v["factor"]) for _, v in ctx.settings.overrides if "factor" in v]
        )
        wide = candidates.to_pandas().merge(norms, on=["key_kind", "feature"], how="inner")
        merged = wide[
            (wide["cost"] >= loosest * wide["p99_cost"]) | (wide["calls"] >= loosest * wide["p99_calls"])
        ]
        findings: list[Finding] = []
        for row in merged.itertuples(index=False):
            scope = Scope.series(feature=dim_value(row.feature))
            p = ctx.params(scope)
            if row.traces < int(p["min_traces"]):
                continue
            cost_limit = max(float(p["factor"]) * float(row.p99_cost), float(p["min_cost"]))
            calls_limit = max(float(p["factor"]) * float(row.p99_calls), float(p["min_calls"]))
            if row.cost < cost_limit and row.calls < calls_limit:
                continue
            crossed = self._crossing(ctx, row.key_kind, row.key, first, last, cost_limit, calls_limit)
            if crossed is None:
                continue
            by_cost = row.cost >= cost_limit
            findings.append(
                Finding(
                    detector=self.name,
                    scope=scope,
                    at=crossed + HOUR,
                    since=pd.Timestamp(row.first_ts).to_pydatetime(),
                    title=f"Runaway {row.key_kind} {row.key}: "
                    + (f"${row.cost:,.2f} spent" if by_cost else f"{row.calls:,} calls")
                    + ", far above its feature's norm",
                    observed=float(row.cost if by_cost else row.calls),
                    expected=float(row.p99_cost if by_cost else row.p99_calls),
                    unit="$ per " + row.key_kind if by_cost else "calls per " + row.key_kind,
                    subject=f"{row.key_kind}={row.key}",
                    severity="critical",
                    contributors=[
                        {
                            "dimension": row.key_kind,
                            "name": row.key,
                            "observed": float(row.cost),
                            "expected": float(row.p99_cost),
                            "delta": float(row.cost - row.p99_cost),
                            "label": f"${row.cost:,.2f} in {row.calls:,} calls (p99 of the feature: "
                            f"${row.p99_cost:,.2f}, {row.p99_calls:,.0f} calls)",
                        }
                    ],
                    notes=[
                        f"team={show(dim_value(row.team))}; stop or cap this {row.key_kind} if it is "
                        "still running"
                    ],
                )
            )
        return findings

    @staticmethod
    def _norms(ctx: Context, first: datetime, last: datetime, days: int) -> pd.DataFrame:
        """Per-feature trace norms, recomputed at most once a day (they move slowly, and the
        query reads a week of trace rollups): the other cycles of the day reuse them, unless a
        reprice has rebuilt trace rollups of an hour they were computed from since (see
        `rollup.REBUILT_STATE`): a price correction would otherwise leave the norms at the old
        costs for up to a day. Telling costs one read of one `watch_state` row."""
        cached = ctx.state.get("norms")
        seq, changed = rebuilt_since(ctx.store, cached.get("seen") if cached else None)
        if cached and pd.Timestamp(cached["at"]) > pd.Timestamp(last) - pd.Timedelta(days=1):
            basis = pd.Timestamp(cached.get("since", cached["at"])), pd.Timestamp(cached["at"])
            if changed is not None and not any(lo < basis[1] and hi > basis[0] for lo, hi in changed):
                cached["seen"] = seq  # the rebuilds since are outside the norms' week
                return pd.DataFrame(cached["rows"])
        since = min(first, last - timedelta(days=days))
        dialect = dialect_for(ctx.store.dialect)
        norms: pd.DataFrame = ctx.store.fetch(
            f"""
            WITH totals AS (
                SELECT key_kind, key, any_value(feature) AS feature, CAST(sum(calls) AS BIGINT) AS calls,
                       CAST(sum(cost) AS DOUBLE) AS cost
                FROM watch_traces WHERE hour >= ? AND hour < ? GROUP BY 1, 2)
            SELECT key_kind, feature, count(*) AS traces,
                   CAST({dialect.quantile("cost", 0.99)} AS DOUBLE) AS p99_cost,
                   CAST({dialect.quantile("calls", 0.99)} AS DOUBLE) AS p99_calls
            FROM totals GROUP BY 1, 2
            """,
            [since, last],
        ).to_pandas()
        ctx.state["norms"] = {
            "at": pd.Timestamp(last).isoformat(),
            "since": pd.Timestamp(since).isoformat(),
            "seen": seq,
            "rows": norms.to_dict("records"),
        }
        return norms

    @staticmethod
    def _crossing(
        ctx: Context,
        kind: str,
        key: str,
        first: datetime,
        last: datetime,
        cost_limit: float,
        calls_limit: float,
    ) -> datetime | None:
        """The first judged hour at which the trace's running totals passed a limit."""
        rows = ctx.store.fetch(
            "SELECT hour, CAST(sum(calls) AS BIGINT) AS calls, CAST(sum(cost) AS DOUBLE) AS cost FROM watch_traces "
            "WHERE key_kind = ? AND key = ? AND hour < ? GROUP BY hour ORDER BY hour",
            [kind, key, last],
        ).to_pylist()
        calls = cost = 0.0
        for row in rows:
            calls += row["calls"]
            cost += row["cost"]
            if (cost >= cost_limit or calls >= calls_limit) and row["hour"] >= first:
                crossed: datetime = row["hour"]
                return crossed
        return None
