"""What every detector shares: the finding it reports, and the hourly data it reads."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, Protocol

import numpy as np
import pandas as pd

from ...ledger.base import Store
from ..scope import ORG, Scope, ScopedValue, show

HOUR = timedelta(hours=1)


def floor_hour(moment: datetime) -> datetime:
    """The start of the UTC clock hour holding `moment`."""
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


HOURS_PER_WEEK = 168


@dataclass
class Finding:
    """One detector's verdict for one scope at one hour: what changed, by how much, since when."""

    detector: str
    scope: Scope
    at: datetime
    """End of the hour in which the change was seen (when it became detectable)."""
    since: datetime
    title: str
    observed: float
    expected: float
    unit: str
    contributors: list[dict[str, Any]] = field(default_factory=list)
    severity: str = "warning"
    subject: str = ""
    """Distinguishes incidents of one detector in one scope (a trace id, a model)."""
    notes: list[str] = field(default_factory=list)
    what: str = ""
    """Overrides the generic "observed against expected" line when a plainer sentence exists."""
    level: float | None = None
    """For a condition that goes up in steps (a budget's highest threshold crossed): a step above
    the one last notified is what makes the incident worse, not the size of `change`."""

    @property
    def key(self) -> str:
        return f"{self.detector}:{self.scope.label}" + (f":{self.subject}" if self.subject else "")

    @property
    def change(self) -> float | None:
        return (self.observed / self.expected - 1.0) if self.expected else None

    def message(self) -> str:
        change = self.change
        how_much = f"{change:+.0%}" if change is not None else "new"
        lines = [
            f"{self.title} [{self.scope.label}]",
            "what changed: "
            + (
                self.what
                or f"{self.unit} {_fmt(self.observed)} against {_fmt(self.expected)} expected ({how_much})"
            ),
            f"since: {self.since:%Y-%m-%d %H:%M} UTC (seen by {self.at:%Y-%m-%d %H:%M} UTC)",
        ]
        if self.contributors:
            top = "; ".join(f"{c['dimension']}={show(c['name'])} {c['label']}" for c in self.contributors[:3])
            lines.append(f"top contributors: {top}")
        lines.extend(self.notes)
        return "\n".join(lines)

    def details(self) -> dict[str, Any]:
        return {
            "detector": self.detector,
            "scope": self.scope.as_dict(),
            "subject": self.subject,
            "observed": self.observed,
            "expected": self.expected,
            "change": self.change,
            "unit": self.unit,
            "since": self.since.isoformat(),
            "at": self.at.isoformat(),
            "contributors": self.contributors,
            "notes": self.notes,
        } | ({"level": self.level} if self.level is not None else {})


@dataclass(frozen=True)
class Cleared:
    """A detector's word that the condition behind an incident is gone (a model that got a price):
    the incident with this key, if open, is resolved `at`, for the reason `why`, without waiting for
    a quiet spell."""

    key: str
    at: datetime
    why: str


def _fmt(value: float) -> str:
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 1:
        return f"{value:,.2f}"
    return f"{value:.4g}"


@dataclass
class Context:
    """The hourly rollups a cycle reads, the hours it must judge, and the detector's settings."""

    store: Store
    frame: pd.DataFrame
    """Hourly rollups from `start` (lookback) to `end`; money as float (statistics, not accounting)."""
    start: datetime
    end: datetime
    eval_hours: list[datetime]
    """Start of each complete hour to judge, in order."""
    data_start: datetime
    """The first hour the ledger has data for: earlier hours are unknown, not zero."""
    settings: ScopedValue
    state: dict[str, Any]
    cleared: list[Cleared] = field(default_factory=list)
    """Incidents the detector found over (see `Cleared`); most detectors leave this empty and let
    their incidents resolve after a quiet spell."""

    def at_hours(self, hours: Sequence[pd.Timestamp]) -> pd.DataFrame:
        """The rollup rows of the given hours (indexed once per cycle: contributors ask often)."""
        if not hasattr(self, "_by_hour"):
            self._by_hour = (
                {h: part for h, part in self.frame.groupby("hour")} if not self.frame.empty else {}
            )
        parts = [
            self._by_hour[h] for h in dict.fromkeys(pd.Timestamp(x) for x in hours) if h in self._by_hour
        ]
        return pd.concat(parts) if parts else self.frame.iloc[0:0]

    def hours(self) -> pd.DatetimeIndex:
        return pd.date_range(self.start, self.end - HOUR, freq="h", tz="UTC")

    def pivot(
        self, value: str, by: str | Sequence[str] | None, frame: pd.DataFrame | None = None
    ) -> pd.DataFrame:
        """One column per group (a single 'org' column when by is None or empty; a tuple per column
        when by names several dimensions), one row per hour, 0 for quiet hours and NaN before the
        ledger's first hour."""
        source = self.frame if frame is None else frame
        index = self.hours()
        if source.empty:
            return pd.DataFrame(index=index)
        dims = [by] if isinstance(by, str) else list(by or ())
        if not dims:
            wide = source.groupby("hour")[value].sum().to_frame("org")
        else:
            wide = source.groupby(["hour", *dims], dropna=False)[value].sum().unstack(dims)
        wide = wide.reindex(index).fillna(0.0)
        wide.loc[wide.index < pd.Timestamp(self.data_start)] = np.nan
        return wide

    def params(self, scope: Scope) -> dict[str, Any]:
        return self.settings.for_scope(scope)


class Detector(Protocol):
    name: str
    lookback: timedelta
    defaults: ClassVar[dict[str, Any]]

    def detect(self, ctx: Context) -> list[Finding]: ...


def scope_for(by: str | None, value: Any) -> Scope:
    return ORG if by is None else Scope.series(**{by: dim_value(value)})


def scope_of(dims: Sequence[str], key: Any) -> Scope:
    """The scope of one column of `Context.pivot(value, dims)` (a tuple key when several dims)."""
    values = key if len(dims) > 1 else (key,)
    return Scope.series(**{d: dim_value(v) for d, v in zip(dims, values, strict=True)})


def dim_value(value: Any) -> str | None:
    """A dimension's value from a rollup frame, None when the events had none: pandas turns a
    missing group key into NaN, whose str() is "nan", a name no team has."""
    if value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value)):
        return None
    return str(value)


def in_scope(frame: pd.DataFrame, scope: Scope) -> pd.DataFrame:
    """The rows of a rollup frame inside `scope` (a None value selects the rows with no value)."""
    for key, wanted in scope.dims:
        if key in frame.columns:
            frame = frame[frame[key].isna()] if wanted is None else frame[frame[key] == wanted]
    return frame


def run_start(flags: Sequence[bool] | np.ndarray, position: int) -> int:
    """The first index of the run of True values that ends at `position`."""
    start = position
    while start > 0 and flags[start - 1]:
        start -= 1
    return start


def contributors(
    ctx: Context,
    value: str,
    hour: pd.Timestamp,
    baseline_hours: Sequence[pd.Timestamp],
    scope: Scope,
    dims: Sequence[str] = ("feature", "model"),
    unit: str = "$",
) -> list[dict[str, Any]]:
    """Which groups inside the scope moved most between the baseline hours and `hour`."""
    frame = in_scope(ctx.at_hours([hour, *baseline_hours]), scope)
    out: list[dict[str, Any]] = []
    n_base = max(len(baseline_hours), 1)
    for dim in dims:
        if dim in dict(scope.dims) or frame.empty:
            continue
        at_hour = frame["hour"] == pd.Timestamp(hour)
        now = frame[at_hour].groupby(dim, dropna=False)[value].sum()
        # Median over baseline hours, counting hours where a group had nothing as 0.
        per_hour = frame[~at_hour].groupby(["hour", dim], dropna=False)[value].sum().unstack(dim)
        per_hour = per_hour.reindex(range(n_base)) if per_hour.empty else per_hour
        padded = np.vstack([per_hour.to_numpy(), np.zeros((n_base - len(per_hour), per_hour.shape[1]))])
        base = pd.Series(np.nanmedian(np.nan_to_num(padded), axis=0), index=per_hour.columns)
        delta = now.sub(base, fill_value=0.0).sort_values(ascending=False)
        for name, d in delta.head(3).items():
            if d <= 0:
                continue
            out.append(
                {
                    "dimension": dim,
                    "name": dim_value(name),
                    "observed": float(now.get(name, 0.0)),
                    "expected": float(base.get(name, 0.0)),
                    "delta": float(d),
                    "label": f"+{unit}{d:,.2f}",
                }
            )
    out.sort(key=lambda c: c["delta"], reverse=True)
    return out[:5]
