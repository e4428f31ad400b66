"""Cost per hour far above what this hour usually costs, on the finest scope that explains it.

Series: the organisation, each team, and each feature of each team (a doubling of one
feature is +100 % on its own series however large the rest of its team). Each hour gets a
seasonal baseline and a noise model (`seasonal`): the same hour on the days of the same
kind over the last weeks, with the series' own measured traffic dispersion plus
compound-Poisson noise. The last 1, 2 and 3 hours (`windows`) are each judged as one: a
large jump is seen in its first hour, a smaller one once two or three hours make it
certain.

A window is anomalous when its cost is at least `threshold` above the baseline, the
excess is at least `min_excess` dollars (so a cheap scope in a quiet hour pages nobody),
and the log of observed over expected is `sigmas` times its standard deviation.

One incident, one finding (`attribution`): when one team or feature accounts for most
(`explain`) of a scope's excess, the finding names that narrower scope instead; when a
few do and the rest of the scope stayed flat, each of them that is anomalous on its own;
when the whole scope rose, the scope, and its children's findings of that hour are part of
it.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from ..scope import Scope
from .attribution import Node, ScopeTree, Window
from .base import HOUR, Context, Finding, contributors, scope_of
from .seasonal import Expectation, expect

CONTEXT_HOURS = 24
"""Hours judged before the first new one, so that `since` finds the start of a run in progress."""


@dataclass
class _Level:
    """The series of one granularity (org, teams, features of teams), as hours × series arrays."""

    scopes: list[Scope]
    cost: np.ndarray
    expectation: Expectation
    windows: dict[int, _Windows] = field(default_factory=dict)
    threshold: np.ndarray = field(default_factory=lambda: np.zeros(0))
    """Each series' `threshold`: an hour that is not that far above its baseline did not start a run."""


@dataclass
class _Windows:
    observed: np.ndarray
    expected: np.ndarray
    z: np.ndarray
    flagged: np.ndarray


@dataclass
class _Hit:
    level: int
    series: int
    hour: int
    width: int
    origin: tuple[int, int]
    """(level, series) of the scope whose own test flagged the window."""


class CostPerHour:
    name = "cost_per_hour"
    lookback = timedelta(days=29)
    defaults: ClassVar[dict[str, Any]] = {
        "threshold": 0.30,
        "sigmas": 4.0,
        "min_excess": 1.0,
        "weeks": 4,
        "windows": [1, 2, 3],
        "explain": 0.75,
    }
    levels: tuple[tuple[str, ...], ...] = ((), ("team",), ("team", "feature"))

    def detect(self, ctx: Context) -> list[Finding]:
        index = ctx.hours()
        if not ctx.eval_hours or ctx.frame.empty:
            return []
        first_eval = int(index.searchsorted(pd.Timestamp(ctx.eval_hours[0])))
        from_position = max(0, first_eval - CONTEXT_HOURS)
        weeks = int(ctx.settings.default.get("weeks", self.defaults["weeks"]))
        widths = sorted({int(w) for w in ctx.settings.default.get("windows", self.defaults["windows"])})
        levels = [self._level(ctx, dims, index, from_position, weeks, widths) for dims in self.levels]
        hits = self._hits(ctx, levels)
        since = self._since(levels)
        wanted = {int(index.searchsorted(pd.Timestamp(h))) for h in ctx.eval_hours}
        return [
            self._finding(ctx, levels, hit, since[(*hit.origin, hit.hour)], index, weeks)
            for hit in hits.values()
            if hit.hour in wanted
        ]

    def _level(
        self,
        ctx: Context,
        dims: tuple[str, ...],
        index: pd.DatetimeIndex,
        from_position: int,
        weeks: int,
        widths: list[int],
    ) -> _Level:
        cost = ctx.pivot("cost", dims)
        cost_sq = ctx.pivot("cost_sq", dims).reindex(columns=cost.columns)
        x = cost.to_numpy(dtype=float)
        level = _Level(
            [scope_of(dims, k) if dims else Scope() for k in cost.columns],
            x,
            expect(x, cost_sq.fillna(0.0).to_numpy(dtype=float), index, from_position, weeks),
        )
        params = [ctx.params(s) for s in level.scopes]
        sigmas = np.array([float(p["sigmas"]) for p in params])
        threshold = np.array([float(p["threshold"]) for p in params])
        level.threshold = threshold
        min_excess = np.array([float(p["min_excess"]) for p in params])
        for width in widths:
            observed, expected, z = _window(x, level.expectation, width)
            with np.errstate(invalid="ignore"):
                flagged = (
                    (z >= sigmas[None, :])
                    & (observed >= expected * (1 + threshold[None, :]))
                    & (observed - expected >= min_excess[None, :])
                )
            flagged[:from_position] = False
            level.windows[width] = _Windows(observed, expected, z, flagged)
        return level

    def _hits(self, ctx: Context, levels: list[_Level]) -> dict[tuple[int, int, int], _Hit]:
        """Every flagged scope and hour, handed to the narrowest scopes that explain it, once per
        scope and hour; findings inside a broad change of a wider scope in the same hour are
        part of it."""
        tree = ScopeTree([level.scopes for level in levels])
        hits: dict[tuple[int, int, int], _Hit] = {}
        covered: set[tuple[int, int, int]] = set()
        for li, level in enumerate(levels):
            widths = _best_widths(level)
            for i, j in zip(*np.nonzero(widths), strict=True):
                hour, origin, width = int(i), (li, int(j)), int(widths[i, j])
                params = ctx.params(level.scopes[origin[1]])

                def window(node: Node, hour: int = hour, width: int = width) -> Window:
                    w = levels[node[0]].windows[width]
                    return Window(
                        float(np.nan_to_num(w.observed[hour, node[1]])),
                        float(np.nan_to_num(w.expected[hour, node[1]])),
                    )

                def flagged(node: Node, hour: int = hour) -> bool:
                    return any(w.flagged[hour, node[1]] for w in levels[node[0]].windows.values())

                owners = tree.explain(
                    origin, window, flagged, float(params["explain"]), float(params["min_excess"])
                )
                for owner in owners:
                    if owner.broad:
                        covered.update((*n, hour) for n in tree.inside(owner.node))
                    hit = _Hit(*owner.node, hour, width, origin)
                    key = (*owner.node, hour)
                    if key not in hits or _z(levels, hit) > _z(levels, hits[key]):
                        hits[key] = hit
        return {key: hit for key, hit in hits.items() if key not in covered}

    def _since(self, levels: list[_Level]) -> dict[tuple[int, int, int], int]:
        """For each flagged (level, series, hour): the first hour of the run of flagged hours it
        belongs to, each window counted from its first hour that is itself `threshold` above its
        baseline. Merely above it is not enough: the ordinary hour before a jump is above its
        baseline half the time, and would be named as the start of the incident. A window that
        passes `threshold` as a whole has at least one such hour."""
        starts: dict[tuple[int, int, int], int] = {}
        for li, level in enumerate(levels):
            widths = _best_widths(level)
            for i, j in sorted(zip(*np.nonzero(widths), strict=True)):
                start = int(i) - int(widths[i, j]) + 1
                bar = 1.0 + float(level.threshold[j])
                while start < i and not (
                    level.cost[start, j] > level.expectation.base[start, j]
                    and level.cost[start, j] >= bar * level.expectation.base[start, j]
                ):
                    start += 1
                previous = starts.get((li, int(j), int(i) - 1))
                starts[(li, int(j), int(i))] = min(start, previous) if previous is not None else start
        return starts

    def _finding(
        self,
        ctx: Context,
        levels: list[_Level],
        hit: _Hit,
        since: int,
        index: pd.DatetimeIndex,
        weeks: int,
    ) -> Finding:
        level = levels[hit.level]
        w = level.windows[hit.width]
        scope = level.scopes[hit.series]
        observed = float(w.observed[hit.hour, hit.series]) / hit.width
        expected = float(w.expected[hit.hour, hit.series]) / hit.width
        hour = index[hit.hour]
        notes = []
        if hit.width > 1:
            notes.append(f"averaged over the {hit.width} hours to {hour + HOUR:%H:%M} UTC")
        if hit.origin == (hit.level, hit.series):
            notes.append(
                f"{float(w.z[hit.hour, hit.series]):.1f} standard deviations of this scope's usual hours "
                f"({float(level.expectation.dispersion[hit.hour, hit.series]):.0%} hour-to-hour traffic "
                "dispersion, plus the noise of its number and size of calls)"
            )
        else:
            origin = levels[hit.origin[0]]
            total = _excess(origin, hit.origin[1], hit.hour, hit.width)
            mine = _excess(level, hit.series, hit.hour, hit.width)
            notes.append(
                f"{origin.scopes[hit.origin[1]].label} is ${total:,.2f} above its usual cost over the same "
                f"hours ({_z(levels, hit):.1f} standard deviations of its usual hours); "
                f"{min(mine / total, 1.0):.0%} of it is here"
            )
        return Finding(
            detector=self.name,
            scope=scope,
            at=hour.to_pydatetime() + HOUR,
            since=index[since].to_pydatetime(),
            title="Cost per hour above its usual level for this hour and weekday",
            observed=observed,
            expected=expected,
            unit="$/hour",
            contributors=contributors(ctx, "cost", hour, _sample_hours(index, hit.hour, weeks), scope),
            notes=notes,
        )


def _window(x: np.ndarray, e: Expectation, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Observed and expected cost of the `width` hours ending at each hour, and the z-score of
    their log ratio. Neighbouring hours' own noises are correlated by ρ, and so are the errors
    of their medians (the same days, one hour apart); the weekday level's error is shared."""
    n = len(x)
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        base = e.base
        sd = np.where(base > 0, base * np.sqrt(e.own_var + e.base_var), 0.0)
        xs, bs, sds = ([_shift(a, lag, n) for lag in range(width)] for a in (x, base, sd))
        observed = np.sum(xs, axis=0)
        expected = np.sum(bs, axis=0)
        variance = np.zeros_like(expected)
        for a in range(width):
            variance += sds[a] ** 2
            for b in range(a + 1, width):
                variance += 2 * e.rho ** (b - a) * sds[a] * sds[b]
        # The weekday's level scales every hour of the window alike.
        z = np.log(observed / expected) / np.sqrt(variance / expected**2 + e.level_var)
    return observed, expected, np.where(np.isfinite(z), z, -np.inf)


def _shift(values: np.ndarray, lag: int, n: int) -> np.ndarray:
    if lag == 0:
        return values
    out = np.full_like(values, np.nan)
    out[lag:] = values[: n - lag]
    return out


def _best_widths(level: _Level) -> np.ndarray:
    """hours × series: the width of the most significant flagged window, 0 where none is flagged.
    Each scope and hour is judged by that window alone."""
    widths = np.array(list(level.windows))
    z = np.stack([np.where(w.flagged, w.z, -np.inf) for w in level.windows.values()])
    best = widths[np.argmax(z, axis=0)]
    return np.where(np.isfinite(np.max(z, axis=0)), best, 0)


def _excess(level: _Level, series: int, hour: int, width: int) -> float:
    w = level.windows[width]
    return float(np.nan_to_num(w.observed[hour, series] - w.expected[hour, series]))


def _z(levels: list[_Level], hit: _Hit) -> float:
    return float(levels[hit.origin[0]].windows[hit.width].z[hit.hour, hit.origin[1]])


def _sample_hours(index: pd.DatetimeIndex, i: int, weeks: int) -> list[pd.Timestamp]:
    """The hours the baseline of hour i was taken from: the same hour on days of the same kind."""
    hour = index[i]
    weekend = hour.day_of_week >= 5
    past = [hour - pd.Timedelta(days=d) for d in range(1, 7 * weeks + 1)]
    return [h for h in past if (h.day_of_week >= 5) == weekend and h >= index[0]]
