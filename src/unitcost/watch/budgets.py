"""Budgets: spend to date in a calendar period, burn rate, forecast at period end, run-out day.

A budget has a scope, an amount, a calendar period (day, week starting Monday, month) in
its own time zone, and thresholds (50, 85 and 100 % by default). Spend is read from the
events table for the period (exact Decimal sums, any scope including user, customer and
tags). The forecast adds the mean daily spend of the period's complete days for the time
left, with a 90 % interval from their day-to-day spread (plus the uncertainty of the mean
itself); with fewer than two complete days it uses the last seven days instead.
"Daily variation" compares yesterday's spend with the same weekday a week earlier, so a
quiet Sunday is not mistaken for a change of pace.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ..ledger.base import Store
from .detectors.base import Finding
from .scope import Scope

BUDGET_DETECTOR = "budget"
"""The detector name of budget findings and incidents."""
PERIODS = ("day", "week", "month")
DEFAULT_THRESHOLDS = (Decimal(50), Decimal(85), Decimal(100))
BUDGET_KEYS = ("name", "scope", "amount", "period", "timezone", "thresholds", "variation_pct")
Z90 = 1.645
CENT = Decimal("0.01")


@dataclass(frozen=True)
class Budget:
    name: str
    scope: Scope
    amount: Decimal
    period: str = "month"
    timezone: str = "UTC"
    thresholds: tuple[Decimal, ...] = DEFAULT_THRESHOLDS
    """Percentages of the amount, exact: 57 % of $10 is crossed by $5.70, which a float misses."""
    variation_pct: float = 3.0

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def bounds(self, now: datetime) -> tuple[datetime, datetime]:
        """The period containing `now`, as UTC instants of local calendar boundaries."""
        local = now.astimezone(self.zone)
        day = local.date()
        if self.period == "day":
            start, end = day, day + timedelta(days=1)
        elif self.period == "week":
            start = day - timedelta(days=day.weekday())
            end = start + timedelta(days=7)
        else:
            start = day.replace(day=1)
            end = (start + timedelta(days=32)).replace(day=1)
        return self._instant(start), self._instant(end)

    def _instant(self, day: date) -> datetime:
        return datetime(day.year, day.month, day.day, tzinfo=self.zone).astimezone(UTC)


def parse_budgets(raw: Any) -> list[Budget]:
    """The `[[budget]]` tables, each checked: a misspelt key or a value of the wrong kind is an
    error naming the budget, the key and the value, never a default used without a word."""
    if isinstance(raw, Mapping):
        raise ValueError("[budget] is a single table: write [[budget]] (double brackets), one per budget")
    if not isinstance(raw, list):
        raise ValueError(f"budget must be [[budget]] tables, got {raw!r}")
    budgets = []
    for i, entry in enumerate(raw):
        where = f"[[budget]] #{i + 1}"
        if not isinstance(entry, Mapping):
            raise ValueError(f"{where} must be a table, got {entry!r}")
        name = entry.get("name", f"budget-{i + 1}")
        if not isinstance(name, str) or not name:
            raise ValueError(f"{where}: name: expected a non-empty string, got {name!r}")
        where = f"{where} ({name})"
        _known_keys(entry, where)
        if "amount" not in entry:
            raise ValueError(f"{where}: amount is required")
        amount = _number(entry["amount"], f"{where}: amount")
        if amount <= 0:
            raise ValueError(f"{where}: amount must be positive, got {entry['amount']!r}")
        period = entry.get("period", "month")
        if period not in PERIODS:
            raise ValueError(f"{where}: period: expected one of {', '.join(PERIODS)}, got {period!r}")
        zone = entry.get("timezone", "UTC")
        try:
            ZoneInfo(str(zone))
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"{where}: timezone: unknown time zone {zone!r}") from exc
        scope_raw = entry.get("scope", {})
        if not isinstance(scope_raw, Mapping):
            raise ValueError(f'{where}: scope must be a table, e.g. {{ team = "search" }}, got {scope_raw!r}')
        thresholds_raw = entry.get("thresholds", list(DEFAULT_THRESHOLDS))
        if not isinstance(thresholds_raw, list):
            raise ValueError(
                f"{where}: thresholds: expected a list of percentages, e.g. [50, 85, 100], "
                f"got {thresholds_raw!r}"
            )
        thresholds = [_number(t, f"{where}: thresholds") for t in thresholds_raw]
        if any(t <= 0 for t in thresholds):
            raise ValueError(f"{where}: thresholds: expected positive percentages, got {thresholds_raw!r}")
        variation = _number(entry.get("variation_pct", 3), f"{where}: variation_pct")
        if variation < 0:
            raise ValueError(
                f"{where}: variation_pct: expected a non-negative number, got {entry['variation_pct']!r}"
            )
        budgets.append(
            Budget(
                name=name,
                scope=Scope.parse(scope_raw, where),
                amount=amount,
                period=period,
                timezone=str(zone),
                thresholds=tuple(sorted(set(thresholds))),
                variation_pct=float(variation),
            )
        )
    return budgets


def _known_keys(entry: Mapping[str, Any], where: str) -> None:
    unknown = sorted(set(entry) - set(BUDGET_KEYS))
    if not unknown:
        return
    named = []
    for key in unknown:
        close = difflib.get_close_matches(key, BUDGET_KEYS, n=1)
        named.append(f"{key!r}" + (f' (did you mean "{close[0]}"?)' if close else ""))
    plural = "s" if len(unknown) > 1 else ""
    raise ValueError(f"{where}: unknown setting{plural} {', '.join(named)}; known: {', '.join(BUDGET_KEYS)}")


def _number(value: Any, where: str) -> Decimal:
    """A number from the config file, or an error that names the budget and the field."""
    text = "" if isinstance(value, bool) else str(value)  # true is not 1 dollar
    try:
        number = Decimal(text)
    except InvalidOperation:
        raise ValueError(f"{where}: expected a number, got {value!r}") from None
    if not number.is_finite():
        raise ValueError(f"{where}: expected a finite number, got {value!r}")
    return number


@dataclass
class BudgetStatus:
    budget: Budget
    start: datetime
    end: datetime
    now: datetime
    spent: Decimal
    unpriced_calls: int
    burn_rate: Decimal
    """Dollars per day so far in the period."""
    forecast: Decimal
    forecast_low: Decimal
    forecast_high: Decimal
    runs_out: date | None
    """The local day spend reaches the amount at the current pace (or did), None if not this period."""
    daily_change: float | None
    """Yesterday against the same weekday a week before (0.05 = +5 %)."""
    daily_days: list[tuple[date, Decimal]] = field(default_factory=list)

    @property
    def used(self) -> float:
        return float(self.spent / self.budget.amount)

    def crossed(self) -> list[Decimal]:
        """The thresholds reached, lowest first, compared in Decimal (5.70 of 10 is 57 %, not 56.99…)."""
        return [t for t in self.budget.thresholds if self.spent * 100 >= t * self.budget.amount]

    @property
    def variation_alarm(self) -> bool:
        return self.daily_change is not None and abs(self.daily_change) * 100 > self.budget.variation_pct

    def as_row(self) -> dict[str, Any]:
        b = self.budget
        return {
            "budget": b.name,
            "scope": b.scope.label,
            "period": f"{b.period} from {self.start.astimezone(b.zone):%Y-%m-%d} ({b.timezone})",
            "amount": b.amount,
            "spent": self.spent.quantize(CENT),
            "used": self.used,
            "burn_per_day": self.burn_rate.quantize(CENT),
            "forecast": self.forecast.quantize(CENT),
            "forecast_90": f"{self.forecast_low.quantize(CENT)} – {self.forecast_high.quantize(CENT)}",
            "runs_out": self.runs_out.isoformat() if self.runs_out else "not this period",
            "daily_change": self.daily_change,
            "variation_over_limit": self.variation_alarm,
            "unpriced_calls": self.unpriced_calls,
        }


def budget_status(store: Store, budget: Budget, now: datetime | None = None) -> BudgetStatus:
    now = now or datetime.now(UTC)
    start, end = budget.bounds(now)
    history_start = min(start, now - timedelta(days=9))
    condition, params = budget.scope.where()
    rows = store.fetch(
        f"""
        SELECT CAST(timezone(?, ts) AS DATE) AS day, ts >= ? AS in_period,
               coalesce(sum(cost), 0) AS cost, count(*) - count(cost) AS unpriced
        FROM events WHERE ts >= ? AND ts < ? AND {condition}
        GROUP BY 1, 2 ORDER BY 1
        """,
        [budget.timezone, start, history_start, now, *params],
    ).to_pylist()
    spent = sum((Decimal(r["cost"]) for r in rows if r["in_period"]), Decimal(0))
    unpriced = sum(int(r["unpriced"]) for r in rows if r["in_period"])
    daily: dict[date, Decimal] = {}
    for r in rows:
        daily[r["day"]] = daily.get(r["day"], Decimal(0)) + Decimal(r["cost"])
    today = now.astimezone(budget.zone).date()
    period_first = start.astimezone(budget.zone).date()
    days_elapsed = max((now - start).total_seconds() / 86400, 1 / 24)
    burn = spent / Decimal(str(days_elapsed))
    # Quiet days are days too: fill the complete days of the period with no spend.
    n_complete = (today - period_first).days
    samples = [float(daily.get(period_first + timedelta(days=i), 0)) for i in range(n_complete)]
    if len(samples) < 2:
        samples = [float(daily.get(today - timedelta(days=i), 0)) for i in range(1, 8)]
    mean = sum(samples) / len(samples)
    sd = math.sqrt(sum((x - mean) ** 2 for x in samples) / (len(samples) - 1)) if len(samples) > 1 else mean
    remaining = max((end - now).total_seconds() / 86400, 0.0)
    forecast = float(spent) + mean * remaining
    spread = Z90 * sd * math.sqrt(remaining + remaining**2 / len(samples)) if remaining else 0.0
    low = max(float(spent), forecast - spread)
    runs_out = _run_out(budget, spent, daily, mean, now, end, period_first)
    yesterday, week_before = daily.get(today - timedelta(days=1)), daily.get(today - timedelta(days=8))
    change = float(yesterday / week_before - 1) if yesterday is not None and week_before else None
    return BudgetStatus(
        budget=budget,
        start=start,
        end=end,
        now=now,
        spent=spent,
        unpriced_calls=unpriced,
        burn_rate=burn,
        forecast=Decimal(str(round(forecast, 6))),
        forecast_low=Decimal(str(round(low, 6))),
        forecast_high=Decimal(str(round(forecast + spread, 6))),
        runs_out=runs_out,
        daily_change=change,
        daily_days=sorted(daily.items()),
    )


def _run_out(
    budget: Budget,
    spent: Decimal,
    daily: Mapping[date, Decimal],
    mean: float,
    now: datetime,
    end: datetime,
    period_first: date,
) -> date | None:
    if spent >= budget.amount:
        running = Decimal(0)
        for day, value in sorted(daily.items()):
            if day < period_first:
                continue
            running += value
            if running >= budget.amount:
                return day
        return now.astimezone(budget.zone).date()
    if mean <= 0:
        return None
    when = now + timedelta(days=float(budget.amount - spent) / mean)
    return when.astimezone(budget.zone).date() if when < end else None


def budget_findings(status: BudgetStatus) -> list[Finding]:
    """At most two findings, each its own incident open while it holds: the highest threshold
    crossed this period, and the forecast passing the amount. The threshold finding of a
    budget and period is one incident whichever threshold it names, so crossing a higher one
    updates it (its level rises) instead of opening another and leaving the lower one to be
    announced as resolved while spend is still above it."""
    b = status.budget
    period = f"{status.start.astimezone(b.zone):%Y-%m-%d}"
    common: dict[str, Any] = {
        "detector": BUDGET_DETECTOR,
        "scope": b.scope,
        "at": status.now,
        "since": status.start,
    }
    findings = []
    crossed = status.crossed()
    if crossed:
        top = crossed[-1]
        findings.append(
            Finding(
                **common,
                title=f"Budget {b.name}: {status.used:.0%} used ({_pct(top)} % threshold crossed)",
                observed=float(status.spent),
                expected=float(b.amount),
                unit=f"$ spent this {b.period}",
                subject=f"{b.name}:{period}:thresholds",
                what=f"${status.spent:,.2f} spent of ${b.amount:,.2f} ({status.used:.0%}) this {b.period}",
                severity="critical" if top >= 100 else "warning",
                notes=_budget_notes(status),
                level=float(top),
            )
        )
    # Kept past 100 % too: dropping it there would announce "forecast exceeds" as resolved
    # at the moment spend itself passes the amount.
    if status.forecast > b.amount:
        findings.append(
            Finding(
                **common,
                title=f"Budget {b.name}: forecast ${status.forecast:,.2f} exceeds ${b.amount:,.2f}",
                observed=float(status.forecast),
                expected=float(b.amount),
                unit=f"$ forecast at {b.period} end",
                subject=f"{b.name}:{period}:forecast",
                what=f"forecast at {b.period} end ${status.forecast:,.2f} for a budget of ${b.amount:,.2f}",
                notes=_budget_notes(status),
            )
        )
    return findings


def _pct(value: Decimal) -> str:
    """50 for Decimal('50'), Decimal('50.0') or Decimal('5E+1'); 57.5 for 57.5."""
    return f"{value.normalize():f}"


def _budget_notes(status: BudgetStatus) -> list[str]:
    notes = [
        f"burn rate ${status.burn_rate:,.2f}/day; forecast ${status.forecast:,.2f} "
        f"(90 %: ${status.forecast_low:,.2f} – ${status.forecast_high:,.2f})",
        f"runs out: {status.runs_out.isoformat() if status.runs_out else 'not this period at this pace'}",
    ]
    if status.unpriced_calls:
        notes.append(f"{status.unpriced_calls:,} calls have no price and are not in the spend")
    return notes
