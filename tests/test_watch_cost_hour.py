"""Cost per hour: a doubling of one feature is caught and named, however large the rest of its
team; a quiet hour of a cheap scope is not an incident; a busier weekday is expected on that
weekday. The detector is fed hand-built hourly rollups (four weeks of seeded traffic)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from unitcost.watch.detectors.base import Context, Finding
from unitcost.watch.detectors.cost_hour import CostPerHour
from unitcost.watch.detectors.seasonal import expect
from unitcost.watch.scope import Scope, ScopedValue

START = datetime(2025, 3, 3, tzinfo=UTC)  # a Monday
DAYS = 29
JUDGED = START + timedelta(days=28)  # Monday 31 March: four weeks of history before it
OFFICE = np.array([1, 1, 1, 1, 1, 2, 4, 7, 10, 11, 11, 10, 8, 9, 10, 10, 9, 8, 6, 4, 3, 2, 2, 1]) / 11


@dataclass(frozen=True)
class Feature:
    team: str
    feature: str
    peak_calls: float
    call_cost: float
    """Dollars; calls cost 0.5x to 1.5x of it."""


def rollups(
    features: list[Feature],
    factor: Callable[[Feature, datetime], float] = lambda f, h: 1.0,
    noise: float = 0.15,
    seed: int = 7,
    weekdays: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0, 1.0, 0.3, 0.3),
) -> pd.DataFrame:
    """Hourly rollup rows: calls are Poisson around an office-hours profile with `noise` of
    lognormal hour-to-hour traffic dispersion, times `factor` (the injected change)."""
    rng = np.random.default_rng(seed)
    rows: list[dict[str, Any]] = []
    for h in range(DAYS * 24):
        hour = START + timedelta(hours=h)
        for f in features:
            rate = f.peak_calls * OFFICE[hour.hour] * weekdays[hour.weekday()] * rng.lognormal(0, noise)
            calls = int(rng.poisson(rate * factor(f, hour)))
            costs = f.call_cost * rng.uniform(0.5, 1.5, calls)
            rows.append(
                {
                    "hour": pd.Timestamp(hour),
                    "team": f.team,
                    "app": f.team,
                    "feature": f.feature,
                    "provider": "openai",
                    "model": "gpt-4.1",
                    "calls": calls,
                    "cost": float(costs.sum()),
                    "cost_sq": float(np.square(costs).sum()),
                }
            )
    return pd.DataFrame(rows)


def detect(frame: pd.DataFrame, first: datetime = JUDGED, hours: int = 24, **settings: Any) -> list[Finding]:
    detector = CostPerHour()
    judged = list(pd.date_range(first, periods=hours, freq="h", tz="UTC").to_pydatetime())
    start = judged[0] - detector.lookback
    ctx = Context(
        store=None,  # type: ignore[arg-type]  # the detector reads the rollups only
        frame=frame[frame["hour"] >= pd.Timestamp(start)],
        start=start,
        end=judged[-1] + timedelta(hours=1),
        eval_hours=judged,
        data_start=START,
        settings=ScopedValue({**detector.defaults, **settings}),
        state={},
    )
    return detector.detect(ctx)


SUPPORT = [Feature("support", "reply", 400, 0.02), Feature("support", "draft", 400, 0.02)]
SPIKE = JUDGED + timedelta(hours=10)


def doubled(feature: str) -> Callable[[Feature, datetime], float]:
    return lambda f, h: 2.0 if f.feature == feature and SPIKE <= h < SPIKE + timedelta(hours=3) else 1.0


def test_a_doubling_of_one_feature_is_caught_on_that_feature_alone() -> None:
    frame = rollups(SUPPORT, doubled("reply"))
    findings = detect(frame)
    assert findings, "the doubling was not detected"
    # One incident, one scope: the feature that explains it, not also its team or the org.
    assert {f.scope for f in findings} == {Scope.of(team="support", feature="reply")}
    first = min(findings, key=lambda f: f.at)
    assert SPIKE < first.at <= SPIKE + timedelta(hours=3)
    assert first.since == SPIKE
    assert first.observed >= 1.5 * first.expected
    assert first.contributors and first.contributors[0]["dimension"] == "model"


def test_the_same_traffic_without_the_doubling_raises_nothing() -> None:
    assert detect(rollups(SUPPORT)) == []


def test_a_doubling_spread_over_a_team_is_reported_on_the_team() -> None:
    frame = rollups(SUPPORT, lambda f, h: 2.0 if SPIKE <= h < SPIKE + timedelta(hours=3) else 1.0)
    scopes = {f.scope for f in detect(frame)}
    # Neither feature explains most of it alone: the team is the finest scope that does.
    assert Scope.of(team="support") in scopes
    assert Scope.of(team="support", feature="reply") not in scopes


def test_two_incidents_at_once_are_two_findings_not_one_on_the_org() -> None:
    # reply and review, on two teams, each rise by about as many dollars; the rest is flat.
    legal = Feature("legal", "review", 150, 0.05)
    others = [Feature("search", "answer", 400, 0.02), Feature("eng", "agent", 200, 0.05)]

    def factor(f: Feature, h: datetime) -> float:
        return 2.5 if f.feature in ("reply", "review") and SPIKE <= h < SPIKE + timedelta(hours=3) else 1.0

    frame = rollups([*SUPPORT, legal, *others], factor)
    scopes = {f.scope for f in detect(frame)}
    assert scopes == {Scope.of(team="support", feature="reply"), Scope.of(team="legal", feature="review")}


def test_a_quiet_hour_blip_on_a_cheap_scope_is_not_an_incident() -> None:
    # A feature spending cents an hour triples at 03:00: far above its baseline in relative terms,
    # but a few cents of money (below min_excess).
    nightly = Feature("ops", "nightly", 400, 0.0002)
    blip = JUDGED + timedelta(hours=3)
    frame = rollups([*SUPPORT, nightly], lambda f, h: 3.0 if f.feature == "nightly" and h == blip else 1.0)
    ops = frame[(frame["hour"] == pd.Timestamp(blip)) & (frame["team"] == "ops")]["cost"].sum()
    assert ops < 1.0
    assert detect(frame) == []
    # With no money floor the same blip is an incident: the floor is what keeps it quiet.
    assert Scope.of(team="ops", feature="nightly") in {f.scope for f in detect(frame, min_excess=0.0)}


def test_a_quiet_evening_hour_of_few_calls_is_judged_by_its_own_noise() -> None:
    # Sunday 19:00 of a team with a few dozen expensive calls: +150 % is within the noise of so few
    # calls (compound Poisson), though it is many times the team's hour-to-hour traffic dispersion.
    legal = [Feature("legal", "review", 60, 1.0)]
    evening = JUDGED - timedelta(hours=5)  # Sunday 30 March 19:00
    frame = rollups(legal, lambda f, h: 2.5 if h == evening else 1.0)
    series = frame.groupby("hour")[["cost", "cost_sq"]].sum()
    hours = pd.DatetimeIndex(series.index)
    e = expect(series[["cost"]].to_numpy(), series[["cost_sq"]].to_numpy(), hours, len(hours) - 48, 4)
    i = int(hours.searchsorted(pd.Timestamp(evening)))
    observed = float(series["cost"].iloc[i])
    assert series["cost"].iloc[i] - e.base[i, 0] > 1.0  # above min_excess
    assert np.log(observed / e.base[i, 0]) > 4 * e.dispersion[i, 0]
    assert detect(frame, first=evening - timedelta(hours=2), hours=8) == []


def test_a_busier_weekday_is_expected_on_that_weekday() -> None:
    # Mondays are 40 % busier than the other weekdays: on a Monday that is not an incident.
    frame = rollups(SUPPORT, weekdays=(1.4, 1.0, 1.0, 1.0, 1.0, 0.3, 0.3))
    assert detect(frame) == []
    series = frame.groupby("hour")[["cost", "cost_sq"]].sum()
    hours = pd.DatetimeIndex(series.index)
    week = len(hours) - 7 * 24
    e = expect(series[["cost"]].to_numpy(), series[["cost_sq"]].to_numpy(), hours, week, weeks=4)
    monday_noon, tuesday_noon = len(hours) - 12, week + 12
    assert hours[monday_noon].day_of_week == 0 and hours[tuesday_noon].day_of_week == 1
    assert e.base[monday_noon, 0] > 1.25 * e.base[tuesday_noon, 0]


def test_the_traffic_dispersion_is_measured_from_the_series_itself() -> None:
    for noise in (0.08, 0.25):
        frame = rollups(SUPPORT[:1], noise=noise, seed=3)
        series = frame.groupby("hour")[["cost", "cost_sq"]].sum()
        hours = pd.DatetimeIndex(series.index)
        e = expect(
            series[["cost"]].to_numpy(), series[["cost_sq"]].to_numpy(), hours, len(hours) - 24, weeks=4
        )
        assert 0.75 * noise <= e.dispersion[-1, 0] <= 1.25 * noise


def test_ordinary_hours_are_standard_normal_in_units_of_the_noise_model() -> None:
    # What `sigmas` means: on traffic with no change, an hour's log(observed / baseline) divided
    # by the modelled standard deviation spreads like a standard normal variable, busy or quiet.
    frame = rollups([Feature("legal", "review", 80, 0.03), Feature("search", "answer", 500, 0.002)], seed=5)
    for _, part in frame.groupby("feature"):
        series = part.set_index("hour")[["cost", "cost_sq"]]
        hours = pd.DatetimeIndex(series.index)
        week = len(hours) - 7 * 24
        e = expect(series[["cost"]].to_numpy(), series[["cost_sq"]].to_numpy(), hours, week, weeks=3)
        x = series["cost"].to_numpy()[week:]
        sd = np.sqrt(e.own_var + e.base_var + e.level_var)[week:, 0]
        spent = x > 0  # an hour with no call at all has no log
        z = np.log(x[spent] / e.base[week:, 0][spent]) / sd[spent]
        assert len(z) > 150
        assert abs(float(np.mean(z))) < 0.25
        assert 0.8 < float(np.std(z)) < 1.25
