"""Time windows as users write them: `30d`, `12h`, `2w`, `2025-09`, `2025-09-01`, `2025-09-01T12:00Z`."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

_RELATIVE = re.compile(r"^\s*(\d+)\s*(m|min|h|d|w)\s*$", re.IGNORECASE)
_UNITS = {"m": "minutes", "min": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_MONTH = re.compile(r"^\s*(\d{4})-(\d{2})\s*$")


def parse_instant(text: str | datetime | date, now: datetime | None = None) -> datetime:
    """An absolute UTC instant from a date, a datetime, a month (`2025-09`: its first midnight,
    UTC), or an age such as `30d` (counted back from now)."""
    now = now or datetime.now(UTC)
    if isinstance(text, datetime):
        return text.replace(tzinfo=UTC) if text.tzinfo is None else text.astimezone(UTC)
    if isinstance(text, date):
        return datetime(text.year, text.month, text.day, tzinfo=UTC)
    match = _RELATIVE.match(text)
    if match:
        amount, unit = int(match.group(1)), _UNITS[match.group(2).lower()]
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


@dataclass(frozen=True)
class Window:
    since: datetime
    until: datetime

    @classmethod
    def parse(
        cls,
        since: str | datetime | date | None,
        until: str | datetime | date | None = None,
        now: datetime | None = None,
        default_since: str = "30d",
    ) -> Window:
        now = now or datetime.now(UTC)
        end = parse_instant(until, now) if until else now
        start = parse_instant(since or default_since, end if since is None else now)
        if start >= end:
            raise ValueError(
                f"the window is empty: since {start.isoformat()} is not before until {end.isoformat()}"
            )
        return cls(start, end)

    @property
    def length(self) -> timedelta:
        return self.until - self.since

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


def _month_start(instant: datetime) -> bool:
    instant = instant.astimezone(UTC)
    return instant.day == 1 and instant.time() == datetime.min.time()
