"""Time windows as users write them: `30d`, `12h`, `2w`, `2025-09`, `2025-09-01`, `2025-09-01T12:00Z`.

An age in a window (`Window.parse`: `unitcost report`, the dashboard, the JSON API, `whatif`,
`levers`, `reconcile`, `export focus`) counts whole units back from the start of the current
one, as billing consoles read "the last 30 days": `30d` is the 30 whole days before today plus
today so far (from midnight 30 days ago), `12h` the 12 whole hours before this one plus this
hour so far, `2w` the two whole weeks (Monday to Sunday) before this one plus this week so far,
`90m` whole minutes likewise. So a window by day has whole days but for today, the one still
going. `parse_instant` alone keeps an age exact to the second (`unitcost watch --now 2h`,
`reprice --since`): an instant, not a window of whole periods.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, tzinfo

from ..utc import as_utc

_RELATIVE = re.compile(r"^\s*(\d+)\s*(m|min|h|d|w)\s*$", re.IGNORECASE)
_UNITS = {"m": "minutes", "min": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_MONTH = re.compile(r"^\s*(\d{4})-(\d{2})\s*$")


def parse_instant(text: str | datetime | date, now: datetime | None = None) -> datetime:
    """An absolute UTC instant from a date, a datetime, a month (`2025-09`: its first midnight,
    UTC), or an age such as `30d` (counted back from now, to the second: `Window.parse` aligns
    the ages of a window to whole units)."""
    now = now or datetime.now(UTC)
    if isinstance(text, datetime):
        return as_utc(text)
    if isinstance(text, date):
        return datetime(text.year, text.month, text.day, tzinfo=UTC)
    age = parse_age(text)
    if age:
        amount, unit = age
        return now - timedelta(**{unit: amount})
    month = _MONTH.match(text)
    if month and 1 <= int(month.group(2)) <= 12:
        # Month-end closes read `--since 2025-09 --until 2025-10`: September, the end excluded.
        return datetime(int(month.group(1)), int(month.group(2)), 1, tzinfo=UTC)
    try:
        parsed = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError as exc:
        raise ValueError(
            f"not a date, a datetime, a month (2025-09) or an age like 30d/12h/2w: {text!r}"
        ) from exc
    return parse_instant(parsed)


def parse_age(text: str | datetime | date) -> tuple[int, str] | None:
    """(amount, unit) of an age (`30d`: (30, "days"); units minutes, hours, days, weeks), or
    None for anything else."""
    match = _RELATIVE.match(text) if isinstance(text, str) else None
    return (int(match.group(1)), _UNITS[match.group(2).lower()]) if match else None


def _unit_start(instant: datetime, unit: str, tz: tzinfo = UTC) -> datetime:
    """The start (UTC) of the minute, hour, day or week (from Monday, as the report's weeks)
    that holds `instant` on the clocks of `tz`."""
    local = instant.astimezone(tz)
    if unit == "minutes":
        return local.replace(second=0, microsecond=0).astimezone(UTC)
    if unit == "hours":
        return local.replace(minute=0, second=0, microsecond=0).astimezone(UTC)
    day = local.date() - timedelta(days=local.weekday() if unit == "weeks" else 0)
    return _midnight(day, tz)


def age_start(amount: int, unit: str, now: datetime, tz: tzinfo = UTC) -> datetime:
    """Where an age of a window begins: the start of the unit `amount` whole units before the
    one `now` is in (`30d` at 14:25 on October 15: September 15 00:00). Days and weeks are
    calendar ones on the clocks of `tz` (a day across a daylight-saving change lasts 23 or 25
    hours); hours and minutes are counted as elapsed time."""
    current = _unit_start(now, unit, tz)
    if unit in ("minutes", "hours"):
        return current - timedelta(**{unit: amount})
    days = amount * (7 if unit == "weeks" else 1)
    return _midnight(current.astimezone(tz).date() - timedelta(days=days), tz)


def _midnight(day: date, tz: tzinfo) -> datetime:
    # A midnight the clocks skip (a daylight-saving change at 00:00) is the first instant of the day.
    return datetime(day.year, day.month, day.day, tzinfo=tz).astimezone(UTC)


@dataclass(frozen=True)
class Window:
    since: datetime
    until: datetime
    age: tuple[int, str] | None = field(default=None, compare=False)
    """For a window that starts at an age (`--since 30d`): (30, "days"), the whole units it
    counts before the current one; None for any other window."""

    @classmethod
    def parse(
        cls,
        since: str | datetime | date | None,
        until: str | datetime | date | None = None,
        now: datetime | None = None,
        default_since: str = "30d",
        tz: tzinfo = UTC,
    ) -> Window:
        """The window from `since` to `until` (default: now). An age is aligned to whole units on
        the clocks of `tz` (see the module's doc): `30d` begins at midnight 30 days before today,
        and in `until` an age ends where the same age would begin (`--since 7d --until 0d` is
        the seven whole days before today). Dates, months and datetimes are taken as they are."""
        now = now or datetime.now(UTC)
        end = _bound(until, now, tz) if until else now
        start = _bound(since or default_since, end if since is None else now, tz)
        if start >= end:
            raise ValueError(
                f"the window is empty: since {start.isoformat()} is not before until {end.isoformat()}"
            )
        return cls(start, end, parse_age(since or default_since))

    @property
    def length(self) -> timedelta:
        return self.until - self.since

    @property
    def nominal_length(self) -> timedelta:
        """How long the window is said to be: the whole units of its age (`30d`: 30 days, not
        the 30 days and the part of today it also covers), else its length."""
        if self.age is None:
            return self.length
        amount, unit = self.age
        return min(self.length, timedelta(**{unit: amount}))

    @property
    def months(self) -> int:
        """How many calendar months the window spans when it runs from the first midnight of
        a month (UTC) to that of a later one; 0 for any other window."""
        if not (_month_start(self.since) and _month_start(self.until)):
            return 0
        return (self.until.year - self.since.year) * 12 + self.until.month - self.since.month

    @property
    def previous(self) -> Window:
        """The window before, to compare with: the months before for whole calendar months
        (September's trend is against August's 31 days, not the 30 days before September),
        else as long as this one."""
        if self.months:
            index = self.since.year * 12 + self.since.month - 1 - self.months
            return Window(self.since.replace(year=index // 12, month=index % 12 + 1), self.since)
        return Window(self.since - self.length, self.since)

    def describe(self) -> str:
        return f"{self.since:%Y-%m-%d %H:%M} → {self.until:%Y-%m-%d %H:%M} UTC"


def _bound(text: str | datetime | date, now: datetime, tz: tzinfo) -> datetime:
    """An end of a window: an age aligned to whole units (`age_start`), anything else as
    `parse_instant` reads it."""
    age = parse_age(text)
    if age:
        return age_start(*age, as_utc(now), tz)
    return parse_instant(text, now)


def _month_start(instant: datetime) -> bool:
    instant = instant.astimezone(UTC)
    return instant.day == 1 and instant.time() == datetime.min.time()
