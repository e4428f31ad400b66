"""Budgets: spend to date in a calendar period, burn rate, forecast at period end, run-out day.

A budget has a scope, an amount, a calendar period (day, week starting Monday, month) in
its own time zone, and thresholds (50, 85 and 100 % by default). Spend is read from the
events table for the period (exact Decimal sums, any scope including user, customer and
tags). The forecast adds the mean daily spend of the period's complete days for the time
left, with a 90 % interval from their day-to-day spread (plus the uncertainty of the mean
itself); with fewer than two complete days it uses the last seven days instead. Only days
the ledger has data for are samples: the days before its first event are unknown, not $0
(a ledger started yesterday would otherwise forecast a month at a seventh of its pace, with
an interval that excludes it). One day of data gives a forecast with no interval, none gives
no forecast.
"Daily variation" compares yesterday's spend with the same weekday a week earlier, so a
quiet Sunday is not mistaken for a change of pace. Days are calendar days of the budget's
zone; when the clocks change, the two days are compared on the clock hours both have (see
`_comparable`).
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_FLOOR, ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ..analytics.dialect import Dialect, dialect_for
from ..ledger.base import Store
from .detectors.base import Finding, floor_hour
from .scope import SCOPE_DIMS, Scope

BUDGET_DETECTOR = "budget"
"""The detector name of budget findings and incidents."""
PERIODS = ("day", "week", "month")
DEFAULT_THRESHOLDS = (Decimal(50), Decimal(85), Decimal(100))
BUDGET_KEYS = (
    "name",
    "scope",
    "amount",
    "period",
    "timezone",
    "thresholds",
    "variation_pct",
    "forecast_margin_pct",
)
DEFAULT_FORECAST_MARGIN = Decimal(5)
Z90 = 1.645
MICRO = Decimal("0.000001")
_MICROSECOND = timedelta(microseconds=1)


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
    forecast_margin_pct: Decimal = DEFAULT_FORECAST_MARGIN
    """Hysteresis of the forecast alert, in % of the amount: once open, it resolves only when the
    forecast falls this far under the amount, and it notifies again each time the forecast passes
    another step of this size above it. A forecast hovering around the amount (it rises during
    the working day and sinks at night) is then one incident, not one an evening."""

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
    named: dict[str, int] = {}
    for i, entry in enumerate(raw):
        where = f"[[budget]] #{i + 1}"
        if not isinstance(entry, Mapping):
            raise ValueError(f"{where} must be a table, got {entry!r}")
        name = entry.get("name", f"budget-{i + 1}")
        if not isinstance(name, str) or not name:
            raise ValueError(f"{where}: name: expected a non-empty string, got {name!r}")
        if name in named:
            # Alerts are keyed by the name, scope and period start: a monthly and a weekly
            # "support" would share one alert and overwrite each other's title every cycle.
            raise ValueError(
                f"{where}: name: {name!r} is already the name of [[budget]] #{named[name]}; "
                "each budget needs a name of its own (its alerts are keyed by it)"
            )
        named[name] = i + 1
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
        scope = _scope(entry.get("scope", {}), where)
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
        margin = _number(
            entry.get("forecast_margin_pct", DEFAULT_FORECAST_MARGIN), f"{where}: forecast_margin_pct"
        )
        if not 0 <= margin < 100:
            raise ValueError(
                f"{where}: forecast_margin_pct: expected a percentage from 0 to under 100, "
                f"got {entry['forecast_margin_pct']!r}"
            )
        budgets.append(
            Budget(
                name=name,
                scope=scope,
                amount=amount,
                period=period,
                timezone=str(zone),
                thresholds=tuple(sorted(set(thresholds))),
                variation_pct=float(variation),
                forecast_margin_pct=margin,
            )
        )
    return budgets


def _scope(raw: Any, where: str) -> Scope:
    """The budget's scope, each value checked: `team = ["a", "b"]` would otherwise become the
    team named "['a', 'b']", match nothing and read $0 spent."""
    if not isinstance(raw, Mapping):
        raise ValueError(f'{where}: scope must be a table, e.g. {{ team = "search" }}, got {raw!r}')
    for key, value in raw.items():
        if key == "org":
            if value is not True or len(raw) > 1:
                raise ValueError(
                    f"{where}: scope.org: write org = true alone (or leave scope out) for the whole "
                    f"organisation, got scope = {dict(raw)!r}"
                )
        elif key == "tags" and isinstance(value, Mapping):
            for tag, tag_value in value.items():
                _scope_value(tag_value, f"{where}: scope.tags.{tag}")
        elif key in SCOPE_DIMS:
            _scope_value(value, f"{where}: scope.{key}")
    return Scope.parse(raw, where)


def _scope_value(value: Any, where: str) -> None:
    # An integer id (customer = 1042) is the text "1042", as the events store it.
    if isinstance(value, list | tuple):
        raise ValueError(
            f"{where}: expected one value, got {value!r}; a budget covers one value per "
            "dimension: write one budget per value"
        )
    if isinstance(value, bool) or not isinstance(value, str | int) or value == "":
        raise ValueError(f"{where}: expected a non-empty string, got {value!r}")


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
    """Dollars per day so far in the period (since the ledger's first day, if it began later)."""
    forecast: Decimal | None
    """Spend at period end at the current pace; None before the ledger has a complete day of data."""
    forecast_low: Decimal | None
    """The 90 % interval, never below the spend already made; None with fewer than two days to
    measure the day-to-day spread on."""
    forecast_high: Decimal | None
    runs_out: date | None
    """The local day spend reaches the amount at the current pace (or did), None if not this period."""
    daily_change: float | None
    """Yesterday against the same weekday a week before (0.05 = +5 %, -1.0 = spend stopped); None
    when the day a week before had no spend (see `spend_started`) or is before the ledger's data."""
    daily_days: list[tuple[date, Decimal]] = field(default_factory=list)
    spend_started: bool = False
    """Yesterday had spend and the same weekday a week before, within the ledger's data, had none:
    no percentage describes it, but it is a change of pace."""
    forecast_basis: str = ""
    """Which days the forecast's pace is the mean of, or why there is no forecast or interval."""
    forecast_pace: float | None = None
    """Dollars per day the forecast and the run-out day go on at: the mean spend of the days in
    `forecast_basis` (the burn rate, since the period began, can be an hour's worth)."""

    @property
    def used(self) -> float:
        return float(self.spent / self.budget.amount)

    def crossed(self) -> list[Decimal]:
        """The thresholds reached, lowest first, compared in Decimal (5.70 of 10 is 57 %, not 56.99…)."""
        return [t for t in self.budget.thresholds if self.spent * 100 >= t * self.budget.amount]

    @property
    def variation_alarm(self) -> bool:
        if self.spend_started:
            return True
        return self.daily_change is not None and abs(self.daily_change) * 100 > self.budget.variation_pct

    @property
    def over_budget(self) -> bool:
        return self.spent > self.budget.amount

    @property
    def forecast_over(self) -> bool:
        return self.forecast is not None and self.forecast > self.budget.amount

    def runs_out_text(self) -> str:
        """The run-out day as `unitcost budgets` and the dashboard show it."""
        if self.runs_out is not None:
            return str(self.runs_out.isoformat())
        if self.forecast is None:
            return "— (no forecast yet)"
        return "not this period"

    def variation_text(self) -> str:
        """The daily-variation flag, saying what it compares (the budget's own limit)."""
        limit = f"{self.budget.variation_pct:g}%"
        if self.spend_started:
            return "yes (spend started)"
        if self.daily_change is None:
            return "—"
        return f"yes (> {limit})" if self.variation_alarm else f"no (≤ {limit})"

    def standing(self) -> str:
        if self.over_budget:
            return "OVER BUDGET"
        if self.spent == 0 and self.unpriced_calls:
            # $0 of priced spend is not "ok" when every call in scope is of unknown cost.
            return "no priced calls"
        if self.forecast_over:
            return "forecast over"
        return "ok"

    def interval_text(self) -> str:
        if self.forecast is None:
            return "— (no full day of data yet)"
        if self.forecast_low is None or self.forecast_high is None:
            return "— (needs 2 days of data)"
        return f"${self.forecast_low:,.2f} – ${self.forecast_high:,.2f}"

    def as_row(self) -> dict[str, Any]:
        """Exact amounts (Decimal, as summed from the ledger): a table shows cents, JSON and CSV
        every digit, so a program can add budgets up or compare them to an invoice."""
        b = self.budget
        crossed = self.crossed()
        return {
            "budget": b.name,
            "scope": b.scope.label,
            "period": f"{b.period} from {self.start.astimezone(b.zone):%Y-%m-%d} ({b.timezone})",
            "period_start": self.start,
            "period_end": self.end,
            "timezone": b.timezone,
            "amount": b.amount,
            "spent": self.spent,
            "used": self.used,
            "burn_per_day": self.burn_rate.quantize(MICRO),
            "forecast": self.forecast,
            "forecast_low": self.forecast_low,
            "forecast_high": self.forecast_high,
            "forecast_90": self.interval_text(),
            "forecast_basis": self.forecast_basis,
            "runs_out": self.runs_out,
            "threshold_crossed": crossed[-1] if crossed else None,
            "daily_change": self.daily_change,
            "variation_over_limit": self.variation_alarm,
            "spend_started": self.spend_started,
            "over_budget": self.over_budget,
            "unpriced_calls": self.unpriced_calls,
        }


def budget_status(store: Store, budget: Budget, now: datetime | None = None) -> BudgetStatus:
    now = now or datetime.now(UTC)
    start, end = budget.bounds(now)
    today = now.astimezone(budget.zone).date()
    # From the local midnight that starts the day a week before yesterday: `now - 9 days` cut
    # that day short by an hour once the clocks had changed in between.
    history_start = min(start, budget._instant(today - timedelta(days=8)))
    dialect = dialect_for(store.dialect)
    condition, params = scope_where(budget.scope, dialect)
    rows = store.fetch(
        f"""
        SELECT {dialect.local_date("ts", budget.timezone)} AS day,
               {dialect.local_hour("ts", budget.timezone)} AS clock_hour,
               ts >= ? AS in_period, coalesce(sum(cost), 0) AS cost, count(*) - count(cost) AS unpriced
        FROM events WHERE ts >= ? AND ts < ? AND {condition}
        GROUP BY 1, 2, 3 ORDER BY 1, 2
        """,
        [start, history_start, now, *params],
    ).to_pylist()
    spent = sum((Decimal(r["cost"]) for r in rows if r["in_period"]), Decimal(0))
    unpriced = sum(int(r["unpriced"]) for r in rows if r["in_period"])
    daily: dict[date, Decimal] = {}
    hourly: dict[date, dict[int, Decimal]] = {}
    for r in rows:
        daily[r["day"]] = daily.get(r["day"], Decimal(0)) + Decimal(r["cost"])
        by_hour = hourly.setdefault(r["day"], {})
        by_hour[r["clock_hour"]] = by_hour.get(r["clock_hour"], Decimal(0)) + Decimal(r["cost"])
    period_first = start.astimezone(budget.zone).date()
    # The ledger's first day, in any scope: a scope quiet since then spent $0 on those days, but
    # before it nobody recorded anything.
    first_event = _first_event(store)
    data_first = first_event.astimezone(budget.zone).date() if first_event else today + timedelta(days=1)
    counted_from = max(start, budget._instant(data_first))
    # Exact, to the microsecond (no float in money), and over an hour at least (a call a minute
    # after midnight is not a pace of 1,440 calls a day).
    elapsed = max(now - counted_from, timedelta(hours=1))
    burn = spent * (timedelta(days=1) // _MICROSECOND) / (elapsed // _MICROSECOND)
    # A forecast sample is a whole day: the ledger's first local day is one only if its data began
    # in that day's first hour (a UTC ledger begun at 00:00 is half of Auckland's first day).
    full_first = data_first
    if first_event and budget._instant(data_first) < floor_hour(first_event):
        full_first += timedelta(days=1)
    remaining_s = max((end - now).total_seconds(), 0.0)
    forecast = _forecast(spent, daily, today, period_first, full_first, remaining_s)
    runs_out = _run_out(budget, spent, daily, forecast.mean, now, end, period_first)
    yesterday, week_before = today - timedelta(days=1), today - timedelta(days=8)
    # A day with no event at all has no row: it is $0, not "unknown".
    y_spend, w_spend = _comparable(
        budget.zone, yesterday, hourly.get(yesterday, {}), week_before, hourly.get(week_before, {})
    )
    change: float | None = None
    started = False
    if w_spend > 0:
        change = float(y_spend / w_spend - 1)
    elif y_spend > 0:
        # Spend from nothing, unless "nothing" is only the ledger not existing yet.
        started = first_event is not None and first_event < budget._instant(week_before + timedelta(days=1))
    return BudgetStatus(
        budget=budget,
        start=start,
        end=end,
        now=now,
        spent=spent,
        unpriced_calls=unpriced,
        burn_rate=burn,
        forecast=forecast.point,
        forecast_low=forecast.low,
        forecast_high=forecast.high,
        runs_out=runs_out,
        daily_change=change,
        daily_days=sorted(daily.items()),
        spend_started=started,
        forecast_basis=forecast.basis,
        forecast_pace=forecast.mean if forecast.point is not None else None,
    )


@dataclass(frozen=True)
class _Forecast:
    point: Decimal | None
    low: Decimal | None
    high: Decimal | None
    mean: float
    """Dollars per day the forecast runs at (0 with no forecast): the run-out day's pace too."""
    basis: str


def _forecast(
    spent: Decimal,
    daily: Mapping[date, Decimal],
    today: date,
    period_first: date,
    full_first: date,
    remaining_s: float,
) -> _Forecast:
    """Spend at period end: the spend so far plus the mean of the sample days for the time left.

    Computed as spent + a non-negative amount, so the forecast and its interval are never below
    the spend already made and the interval always holds the forecast, to the last digit."""
    # Quiet days are days too (no event is $0), but only from the ledger's first whole day on.
    period_days = [d for d in _days(period_first, today) if d >= full_first]
    recent = [d for d in _days(today - timedelta(days=7), today) if d >= full_first]
    days, basis = period_days, f"mean of the period's {_n_days(len(period_days), 'complete day')}"
    if len(period_days) < 2 and len(recent) > len(period_days):
        days, basis = recent, f"mean of the last {_n_days(len(recent), 'day')}"
    if not days:
        return _Forecast(None, None, None, 0.0, "no complete day of data yet")
    samples = [float(daily.get(d, 0)) for d in days]
    mean = sum(samples) / len(samples)
    remaining = remaining_s / 86400
    extra = Decimal(str(round(mean * remaining, 6)))
    point = spent + extra
    if len(samples) < 2:
        return _Forecast(point, None, None, mean, f"{basis}; no interval before 2 days of data")
    sd = math.sqrt(sum((x - mean) ** 2 for x in samples) / (len(samples) - 1))
    spread = Decimal(str(round(Z90 * sd * math.sqrt(remaining + remaining**2 / len(samples)), 6)))
    return _Forecast(point, spent + max(extra - spread, Decimal(0)), point + spread, mean, basis)


def _n_days(n: int, what: str) -> str:
    return f"{n} {what}" if n == 1 else f"{n} {what}s"


def _days(first: date, stop: date) -> list[date]:
    """The days from `first` to the day before `stop`."""
    return [first + timedelta(days=i) for i in range((stop - first).days)]


def _first_event(store: Store) -> datetime | None:
    """The instant of the ledger's first event, in any scope (None for an empty ledger: ClickHouse's
    min() of no rows is 1970, not NULL)."""
    rows = store.fetch("SELECT min(ts) AS first FROM events HAVING count(*) > 0").to_pylist()
    first = rows[0]["first"] if rows else None
    if not isinstance(first, datetime):
        return None
    return first if first.tzinfo else first.replace(tzinfo=UTC)


def scope_where(scope: Scope, dialect: Dialect) -> tuple[str, list[Any]]:
    """`scope.where()` for the store's engine: ClickHouse has no `element_at` on maps, so its
    tag conditions read the map through the dialect (a missing tag is NULL on both engines)."""
    if dialect.name != "clickhouse" or not scope.tags:
        return scope.where()
    condition, params = Scope(scope.dims).where()
    clauses = [condition]
    for key, value in scope.tags:
        clauses.append(f"{dialect.tag(key)} = ?")
        params.append(value)
    return " AND ".join(clauses), params


def _comparable(
    zone: ZoneInfo, day: date, spend: Mapping[int, Decimal], other: date, other_spend: Mapping[int, Decimal]
) -> tuple[Decimal, Decimal]:
    """The spend of two local days over the clock hours both have, each clock hour counted once.

    A day the clocks change has 23 or 25 hours. Comparing whole days would call the same hourly
    traffic +4 % (or -4 %); comparing spend per hour would do the same to a job that runs once a
    day, and to office-hours traffic whose extra hour is a quiet night hour. By clock hour, both
    read 0 %: the hour skipped in spring is left out of the other day too, and the hour lived
    twice in autumn counts for its spend per hour of real time."""
    lengths, other_lengths = _clock_hours(zone, day), _clock_hours(zone, other)
    common = lengths.keys() & other_lengths.keys()

    def total(by_hour: Mapping[int, Decimal], length: Mapping[int, Decimal]) -> Decimal:
        return sum(
            (value if length[h] == 1 else value / length[h] for h, value in by_hour.items() if h in common),
            Decimal(0),
        )

    return total(spend, lengths), total(other_spend, other_lengths)


def _clock_hours(zone: ZoneInfo, day: date) -> dict[int, Decimal]:
    """Hours of real time that each clock hour of a local day lasts (1 except around a clock change,
    which is on a quarter hour in every zone)."""
    quarter = timedelta(minutes=15)
    # Local days lie between UTC-12 and UTC+14.
    moment = datetime(day.year, day.month, day.day, tzinfo=UTC) - timedelta(hours=15)
    stop = moment + timedelta(hours=54)
    quarters: dict[int, int] = {}
    while moment < stop:
        local = moment.astimezone(zone)
        if local.date() == day:
            quarters[local.hour] = quarters.get(local.hour, 0) + 1
        moment += quarter
    return {h: Decimal(n) / 4 for h, n in quarters.items()}


def budget_row(store: Store, budget: Budget, at: datetime) -> tuple[BudgetStatus, dict[str, Any]]:
    """A budget's status and its row as `unitcost budgets` and the dashboard list it: `as_row()`
    plus the day-vs-week change in % (`daily_change_pct`), the variation flag as text, a note
    (no event matches the scope, or calls without a price) and the standing (`status`)."""
    status = budget_status(store, budget, at)
    row = status.as_row()
    change = row["daily_change"]
    row["daily_change_pct"] = None if change is None else change * 100
    row["variation"] = status.variation_text()
    unmatched = None if status.daily_days else unmatched_scope_note(store, budget)
    row["note"] = unmatched or unpriced_note(status)
    row["status"] = "no matching events" if unmatched else status.standing()
    return status, row


def unmatched_scope_note(store: Store, budget: Budget) -> str | None:
    """A note when no event in the whole ledger matches the budget's scope: a misspelt or
    wrongly cased name would otherwise read $0 spent, forever, which looks like good news."""
    if budget.scope.is_org:
        return None
    condition, params = scope_where(budget.scope, dialect_for(store.dialect))
    if store.fetch(f"SELECT 1 AS found FROM events WHERE {condition} LIMIT 1", params).num_rows:
        return None
    near: list[str] = []
    for key, value in budget.scope.dims:
        if value is None:
            continue
        rows = store.fetch(
            f'SELECT DISTINCT "{key}" AS v FROM events WHERE lower("{key}") = lower(?) LIMIT 3', [value]
        ).to_pylist()
        near.extend(f'{key} = "{r["v"]}"' for r in rows)
    hint = f" (did you mean {' or '.join(near)}?)" if near else ""
    return (
        f"budget {budget.name}: no event in the ledger matches {budget.scope.label}{hint}; "
        "it reads $0 until one does"
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


def budget_findings(status: BudgetStatus, open_keys: Collection[str] = ()) -> list[Finding]:
    """At most two findings, each its own incident open while it holds: the highest threshold
    crossed this period, and the forecast passing the amount. The threshold finding of a
    budget and period is one incident whichever threshold it names, so crossing a higher one
    updates it (its level rises) instead of opening another and leaving the lower one to be
    announced as resolved while spend is still above it.

    `open_keys` are the incidents open before this cycle: a forecast alert among them is kept
    while the forecast stays within the budget's `forecast_margin_pct` under the amount, so a
    forecast that hovers around the amount is one incident with updates, not one per crossing."""
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
                title=f"Budget {b.name}: {_used_pct(status, top)}% used ({_pct(top)} % threshold crossed)",
                observed=float(status.spent),
                expected=float(b.amount),
                unit=f"$ spent this {b.period}",
                subject=f"{b.name}:{period}:thresholds",
                what=f"${status.spent:,.2f} spent of ${b.amount:,.2f} ({_used_pct(status, top)}%) this {b.period}",
                severity="critical" if top >= 100 else "warning",
                notes=_budget_notes(status),
                level=float(top),
            )
        )
    forecast = _forecast_finding(status, common, f"{b.name}:{period}:forecast", open_keys)
    if forecast is not None:
        findings.append(forecast)
    return findings


def _forecast_finding(
    status: BudgetStatus, common: dict[str, Any], subject: str, open_keys: Collection[str]
) -> Finding | None:
    """The forecast alert's finding: over the amount, or (for an alert already open) back under it
    by less than the margin. Kept past 100 % of spend too: dropping it there would announce
    "forecast exceeds" as resolved at the moment spend itself passes the amount."""
    b, forecast = status.budget, status.forecast
    if forecast is None:
        return None
    release = b.amount * (1 - b.forecast_margin_pct / 100)
    over = forecast > b.amount
    if over:
        title = f"Budget {b.name}: forecast ${forecast:,.2f} exceeds ${b.amount:,.2f}"
    else:
        title = (
            f"Budget {b.name}: forecast ${forecast:,.2f} back under ${b.amount:,.2f} "
            f"(alert kept until under ${release:,.2f})"
        )
    finding = Finding(
        **common,
        title=title,
        observed=float(forecast),
        expected=float(b.amount),
        unit=f"$ forecast at {b.period} end",
        subject=subject,
        what=f"forecast at {b.period} end ${forecast:,.2f} for a budget of ${b.amount:,.2f}",
        notes=_budget_notes(status),
        level=_forecast_step(forecast, b),
    )
    # Under the amount, it only keeps an open alert open, and only inside the margin.
    held = finding.key in open_keys and forecast > release
    return finding if over or held else None


def _forecast_step(forecast: Decimal, budget: Budget) -> float | None:
    """How many whole margins the forecast is above the amount (-1 in the band under it): the
    alert notifies again when this rises, not when a tiny overage grows by a quarter (100.1 %
    to 100.2 % of the amount is no news). None with no margin: the change decides, as for any
    incident."""
    if budget.forecast_margin_pct == 0:
        return None
    step = budget.amount * budget.forecast_margin_pct / 100
    return float(math.floor((forecast - budget.amount) / step))


def _used_pct(status: BudgetStatus, crossed: Decimal) -> str:
    """The share used, to the crossed threshold's precision, never rounded up to a threshold (or
    100 %) not reached: 99.6 % shown as "100% used (85 % threshold crossed)" reads as a 100 %
    threshold crossed and not announced."""
    exponent = crossed.normalize().as_tuple().exponent  # -1 for 57.5, 1 for 50 (5E+1)
    step = Decimal(1).scaleb(min(0, exponent if isinstance(exponent, int) else 0))
    share = status.spent * 100 / status.budget.amount
    shown = share.quantize(step, rounding=ROUND_HALF_UP)
    if any(share < limit <= shown for limit in (*status.budget.thresholds, Decimal(100))):
        shown = share.quantize(step, rounding=ROUND_FLOOR)
    return _pct(shown)


def _pct(value: Decimal) -> str:
    """50 for Decimal('50'), Decimal('50.0') or Decimal('5E+1'); 57.5 for 57.5."""
    return f"{value.normalize():f}"


def _runs_out_note(status: BudgetStatus) -> str:
    """The run-out day and the pace it comes from, which is the forecast's, not the burn rate's."""
    if status.spent >= status.budget.amount:
        return status.runs_out.isoformat() if status.runs_out else "already"
    pace = f" at the forecast's ${status.forecast_pace:,.2f}/day" if status.forecast_pace else ""
    if status.runs_out is None:
        return f"not this period{pace or ' at this pace'}"
    return f"{status.runs_out.isoformat()}{pace}"


def _budget_notes(status: BudgetStatus) -> list[str]:
    if status.forecast is None:
        forecast = f"no forecast ({status.forecast_basis})"
    else:
        forecast = f"forecast ${status.forecast:,.2f} (90 %: {status.interval_text()})"
    notes = [
        f"burn rate ${status.burn_rate:,.2f}/day; {forecast}",
        f"runs out: {_runs_out_note(status)}",
    ]
    if status.unpriced_calls:
        n = status.unpriced_calls
        calls, have, are = ("calls", "have", "are") if n > 1 else ("call", "has", "is")
        notes.append(f"{n:,} {calls} {have} no price and {are} not in the spend or the forecast")
    return notes


def unpriced_note(status: BudgetStatus) -> str | None:
    """A budget's spend leaves out the calls in its scope that have no price: say so, with how
    many, rather than let $0 (or a low figure) read as money not spent."""
    n = status.unpriced_calls
    if not n:
        return None
    calls, have = ("calls", "have") if n > 1 else ("call", "has")
    return (
        f"budget {status.budget.name}: {n:,} {calls} in scope this {status.budget.period} {have} no price "
        "and are not in spent, burn rate or forecast (lower bounds); `unitcost report` lists them"
    )
