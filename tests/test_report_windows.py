"""An age in a report's window counts whole units back from the current one.

`unitcost report --since 30d --period day` used to start at "now minus 30 days" to the
second, so its first day was cut at the time of day the report ran and read as a drop in
spend. An age is now aligned to the start of its unit, in UTC, the report's time zone: `30d`
is the 30 whole days before today and today so far, `12h` the 12 whole hours before this one
and this hour so far, `2w` the two whole weeks (from Monday) before this one and this week so
far. Only the last period, the one still going, is partial. Dates are taken as they are.

The report is made at a fixed instant (`Window.parse(now=...)`, `ReportQuery(now=...)`), on
Wednesday October 15, 2025 at 14:25:12 UTC. The workload: one $0.01 gpt-4o call at noon every
day, plus calls either side of the window's edges and of the edges of the window before it.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from typer.testing import CliRunner

from unitcost.analytics.report import Report, ReportQuery, report_document, run_report
from unitcost.analytics.window import Window, parse_instant
from unitcost.api import Ledger
from unitcost.cli import app
from unitcost.cli.ledger_cmds import headline_lines
from unitcost.config import Config
from unitcost.pricing.book import PriceBook

NOW = datetime(2025, 10, 15, 14, 25, 12, tzinfo=UTC)
CENT = Decimal("0.01")
runner = CliRunner()


def _utc(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _call(event_id: str, ts: str, cents: int) -> dict[str, Any]:
    # 4,000 gpt-4o input tokens at $2.50 per million: $0.01 (the bundled price book)
    return {"event_id": event_id, "ts": ts, "model": "gpt-4o", "input_tokens": 4_000 * cents, "team": "a"}


def workload() -> list[dict[str, Any]]:
    events = []
    day = _utc("2025-08-10T12:00:00Z")
    while day < NOW - timedelta(days=1):  # noon of August 10 to October 14
        events.append(_call(f"noon-{day:%m%d}", day.isoformat(), 1))
        day += timedelta(days=1)
    edges = [
        ("2025-08-15T09:34:47Z", 100),  # just before the window before: left out of the trend
        ("2025-08-15T09:34:48Z", 10),  # the first instant of the window before
        ("2025-09-14T23:59:59Z", 100),  # the last second before the aligned window
        ("2025-09-15T00:00:00Z", 10),  # its first instant
        ("2025-10-15T09:00:00Z", 1),  # today so far
        ("2025-10-15T14:25:11Z", 1),
        ("2025-10-15T14:25:12Z", 100),  # now: excluded
        ("2025-10-15T18:00:00Z", 100),  # later today: not yet
    ]
    events += [_call(f"edge-{k}", ts, cents) for k, (ts, cents) in enumerate(edges)]
    return events


@pytest.fixture(scope="module")
def ledger(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("windows") / "ledger.duckdb"
    with Ledger(path, book=PriceBook(), config=Config()) as book_ledger:
        summary = book_ledger.ingest_records(workload())
        assert summary.accepted == 66 + 8 and not summary.unpriced
    return str(path)


def make(ledger: str, since: str, until: str | None = None, period: str | None = "day", **kw: Any) -> Report:
    query = ReportQuery(Window.parse(since, until, now=NOW), ["team"], period, now=NOW)
    with Ledger(ledger, config=Config(), read_only=True) as book_ledger:
        return run_report(book_ledger.store, query, **kw)


@pytest.mark.parametrize("use_rollups", [True, False])
def test_30d_by_day_is_30_whole_days_and_today_so_far(ledger: str, use_rollups: bool) -> None:
    report = make(ledger, "30d", use_rollups=use_rollups)
    window = report.query.window
    assert (window.since, window.until) == (_utc("2025-09-15T00:00:00Z"), NOW)
    days = report.periods
    assert len(days) == 31
    assert [p["period"] for p in days[:1]] == [_utc("2025-09-15T00:00:00Z")]
    # the first day is whole; today, the last one, alone is partial
    assert [p["partial"] for p in days] == [False] * 30 + [True]
    assert (days[0]["covered_since"], days[0]["covered_until"]) == (
        _utc("2025-09-15T00:00:00Z"),
        _utc("2025-09-16T00:00:00Z"),
    )
    assert (days[-1]["covered_since"], days[-1]["covered_until"]) == (_utc("2025-10-15T00:00:00Z"), NOW)
    # the first day holds midnight's call and noon's, not the second before midnight
    assert (days[0]["calls"], days[0]["spend"]) == (2, 11 * CENT)
    assert [row["partial"] for row in report.rows] == [False] * 30 + [True]
    # exactly the aligned window: 30 noons, September 15 00:00, two calls today before now
    assert report.headline["calls"] == 33
    assert report.headline["spend"] == 30 * CENT + 10 * CENT + 2 * CENT


def test_today_compares_with_the_same_hours_of_yesterday(ledger: str) -> None:
    today = make(ledger, "30d").rows[-1]
    assert (today["previous_since"], today["previous_until"]) == (
        _utc("2025-10-14T00:00:00Z"),
        _utc("2025-10-14T14:25:12Z"),
    )
    assert today["spend"] == 2 * CENT and today["previous_spend"] == CENT and today["trend_pct"] == 100.0


def test_the_window_before_follows_the_aligned_window(ledger: str) -> None:
    report = make(ledger, "30d")
    document = report_document(report)
    # as long as the window (30 days, 14:25:12), ending where it begins
    assert document["window"]["previous"] == {
        "since": _utc("2025-08-15T09:34:48Z"),
        "until": _utc("2025-09-15T00:00:00Z"),
    }
    # 31 noons, its first instant's call and the second before midnight, not the one before it
    assert report.headline["previous_spend"] == 31 * CENT + 10 * CENT + 100 * CENT
    assert headline_lines(report)[0] == (
        "Spend $0.42 over 2025-09-15 00:00 → 2025-10-15 14:25 UTC "
        "(-70.2% vs 2025-08-15 09:34 → 2025-09-15 00:00 UTC)"
    )


def test_12h_by_hour_starts_on_the_hour(ledger: str) -> None:
    report = make(ledger, "12h", period="hour")
    assert report.query.window.since == _utc("2025-10-15T02:00:00Z")
    assert [p["partial"] for p in report.periods] == [False] * 12 + [True]
    assert report.headline["calls"] == 2  # 09:00 and 14:25:11; yesterday's noon is before 02:00


def test_2w_by_week_starts_on_a_monday(ledger: str) -> None:
    report = make(ledger, "2w", period="week")
    # Wednesday October 15: the weeks of September 29 and October 6, and this one so far
    assert report.query.window.since == _utc("2025-09-29T00:00:00Z")
    assert [p["partial"] for p in report.periods] == [False, False, True]


def test_an_age_in_until_ends_at_the_start_of_its_unit(ledger: str) -> None:
    report = make(ledger, "7d", "0d")
    window = report.query.window
    assert (window.since, window.until) == (_utc("2025-10-08T00:00:00Z"), _utc("2025-10-15T00:00:00Z"))
    assert not any(p["partial"] for p in report.periods) and len(report.periods) == 7
    assert "vs the previous 7 days" in headline_lines(report)[0]


def test_a_2d_window_is_still_read_by_the_hour(ledger: str) -> None:
    """The sparkline's buckets follow the age's whole units: two days and today so far are
    63 hours, not three bars of a day."""
    report = make(ledger, "2d", period=None)
    assert report.bucket == "hour"
    assert len(report.spend_per_bucket()) == 48 + 15


def test_dates_and_instants_are_taken_as_they_are() -> None:
    window = Window.parse("2025-09-03T12:30:00Z", now=NOW)
    assert (window.since, window.until) == (_utc("2025-09-03T12:30:00Z"), NOW)
    assert window.describe() == "2025-09-03 12:30 → 2025-10-15 14:25 UTC"
    # an instant alone (`watch --now 2h`, `reprice --since`) stays exact to the second
    assert parse_instant("30d", NOW) == NOW - timedelta(days=30)


@pytest.mark.parametrize(
    ("zone", "since", "now", "start"),
    [
        # 23:25 in Tokyo: from midnight of September 15 there, 15:00 UTC the day before
        ("Asia/Tokyo", "30d", NOW, "2025-09-14T15:00:00Z"),
        # 20:00 on October 14 in Los Angeles (PDT, UTC-7): midnight of September 14 there
        ("America/Los_Angeles", "30d", _utc("2025-10-15T03:00:00Z"), "2025-09-14T07:00:00Z"),
        # across the end of daylight saving time (November 2): midnight EDT of October 29,
        # so the window is 7 days and 12 hours long, 7 whole days of which one lasts 25 hours
        ("America/New_York", "7d", _utc("2025-11-05T15:00:00Z"), "2025-10-29T04:00:00Z"),
        # 19:55 in Kolkata (UTC+5:30): the start of its hour, 19:00, less 12 hours
        ("Asia/Kolkata", "12h", NOW, "2025-10-15T01:30:00Z"),
    ],
)
def test_a_time_zone_aligns_to_its_own_midnight(zone: str, since: str, now: datetime, start: str) -> None:
    tz = ZoneInfo(zone)
    window = Window.parse(since, now=now, tz=tz)
    assert (window.since, window.until) == (_utc(start), now)
    local = window.since.astimezone(tz)
    if since.endswith("d"):
        assert local.time() == time(0, 0)
        assert (now.astimezone(tz).date() - local.date()).days == int(since[:-1])


def test_the_cli_aligns_30d_to_midnight_utc(ledger: str) -> None:
    """`unitcost report` on the real clock: its JSON window starts at midnight (UTC) 30 days
    before today, and only today's period is partial."""
    before = datetime.now(UTC).date()
    result = runner.invoke(
        app, ["report", "--ledger", ledger, "--since", "30d", "--period", "day", "-f", "json"]
    )
    if datetime.now(UTC).date() != before:
        pytest.skip("the day changed while the report ran")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    midnight = datetime.combine(before - timedelta(days=30), time(0, 0), tzinfo=UTC)
    assert _utc(document["window"]["since"]) == midnight
    assert [p["partial"] for p in document["periods"]] == [False] * 30 + [True]
