"""A period the report's window covers only in part is marked so, and its trend compares like
with like.

`unitcost report --period week` up to now ends on the current week, a few days of it; a window
cut by `--since` starts in the middle of one. Compared with whole weeks, such a week reads as a
fall in spend that is only fewer days. Every format marks it (`partial` and the span covered in
JSON, CSV and `Ledger.report()`, a marker and a footnote in the table and markdown), and its
trend is against the same span of the week before; the week after a partial first one is
compared with the whole week before it. DuckDB (from the rollups and from the events) and
ClickHouse (chDB) give the same answer.

The workload is a flat rate: one $0.01 call of team `a` every six hours, from August 1 to
October 12 (UTC), so any like-for-like trend is 0 % exactly; team `b` spends $0.10 on September 1
(before the windows below start) and on September 10.
"""

from __future__ import annotations

import csv
import io
import json
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from typer.testing import CliRunner

from unitcost.analytics.report import ReportQuery, report_document, run_report
from unitcost.analytics.window import Window
from unitcost.api import Ledger
from unitcost.cli import app
from unitcost.cli.output import to_json
from unitcost.config import Config
from unitcost.pricing.book import PriceBook

runner = CliRunner()

# Monday September 1 is the start of a week: the first week of this window is Wednesday noon
# to Monday (4.5 of 7 days), the last Monday to Wednesday 06:00 (2.25 days).
WEEKS = ("--since", "2025-09-03T12:00:00Z", "--until", "2025-09-24T06:00:00Z", "--period", "week")
# August 1 to October 11: October is covered 10 of its 31 days.
MONTHS = ("--since", "2025-08-01", "--until", "2025-10-11", "--period", "month", "--by", "team")
DAYS = ("--since", "2025-09-10T09:00:00Z", "--until", "2025-09-12T15:00:00Z", "--period", "day")
CENT = Decimal("0.01")


def _utc(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def workload() -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    instant, end = _utc("2025-08-01T00:00:00Z"), _utc("2025-10-12T00:00:00Z")
    while instant < end:
        # 4,000 gpt-4o input tokens at $2.50 per million: $0.01
        events.append(
            {
                "event_id": f"a-{instant:%Y%m%d%H}",
                "ts": instant.isoformat().replace("+00:00", "Z"),
                "model": "gpt-4o",
                "input_tokens": 4_000,
                "team": "a",
            }
        )
        instant += timedelta(hours=6)
    for day in ("2025-09-01T06:00:00Z", "2025-09-10T06:00:00Z"):
        events.append(
            {"event_id": f"b-{day[:10]}", "ts": day, "model": "gpt-4o", "input_tokens": 40_000, "team": "b"}
        )
    return events


@pytest.fixture(scope="module")
def ledger(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("partial") / "ledger.duckdb"
    with Ledger(path, book=PriceBook(), config=Config()) as book_ledger:
        summary = book_ledger.ingest_records(workload())
        assert summary.accepted == 288 + 2 and not summary.unpriced
    return str(path)


def report(ledger: str, *args: str) -> str:
    result = runner.invoke(app, ["report", "--ledger", ledger, *args], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    return result.stdout


def rows_of(document: dict[str, Any], team: str) -> list[dict[str, Any]]:
    return [row for row in document["rows"] if row["team"] == team]


def test_json_marks_the_partial_weeks_and_compares_the_same_days(ledger: str) -> None:
    document = json.loads(report(ledger, *WEEKS, "--by", "team", "-f", "json"))
    a = rows_of(document, "a")
    assert [row["period"] for row in a] == [f"2025-09-{d:02d}T00:00:00+00:00" for d in (1, 8, 15, 22)]
    assert [row["partial"] for row in a] == [True, False, False, True]
    assert [(row["covered_since"], row["covered_until"]) for row in a] == [
        ("2025-09-03T12:00:00+00:00", "2025-09-08T00:00:00+00:00"),
        ("2025-09-08T00:00:00+00:00", "2025-09-15T00:00:00+00:00"),
        ("2025-09-15T00:00:00+00:00", "2025-09-22T00:00:00+00:00"),
        ("2025-09-22T00:00:00+00:00", "2025-09-24T06:00:00+00:00"),
    ]
    # the last week: 9 calls from Monday to Wednesday 06:00, against the same 2.25 days of the
    # week before (9 calls), not against its 28 calls (-67.9 %, a fall that is only fewer days)
    last = a[3]
    assert Decimal(last["spend"]) == 9 * CENT
    assert (last["previous_since"], last["previous_until"]) == (
        "2025-09-15T00:00:00+00:00",
        "2025-09-17T06:00:00+00:00",
    )
    assert Decimal(last["previous_spend"]) == 9 * CENT and last["trend_pct"] == 0.0
    # the week after the partial first one: against the whole week before (28 calls, those
    # before --since included), not the 18 calls the window holds of it (+55.6 %)
    second = a[1]
    assert (second["previous_since"], second["previous_until"]) == (
        "2025-09-01T00:00:00+00:00",
        "2025-09-08T00:00:00+00:00",
    )
    assert Decimal(second["previous_spend"]) == 28 * CENT and second["trend_pct"] == 0.0
    assert a[0]["previous_spend"] is None and a[0]["previous_since"] is None  # outside the window
    # team b spent $0.10 on September 1, before --since: its September 10 is flat, not new
    (b,) = rows_of(document, "b")
    assert b["period"].startswith("2025-09-08") and Decimal(b["previous_spend"]) == 10 * CENT
    assert b["trend_pct"] == 0.0
    # the spend per period carries the same marks
    periods = document["periods"]
    assert [p["partial"] for p in periods] == [True, False, False, True]
    assert periods[3]["covered_until"] == "2025-09-24T06:00:00+00:00"


def test_the_table_and_markdown_mark_the_partial_weeks(ledger: str) -> None:
    table = report(ledger, *WEEKS, "--by", "team")
    assert "spend per week: " in table
    assert "(partial: first week, 4.5 of 7 days; last week, 2.2 of 7 days)" in table
    assert "2025-09-01 00:00 (partial: 4.5 of 7 days)" in table
    assert "2025-09-22 00:00 (partial: 2.2 of 7 days)" in table
    assert "2025-09-15 00:00 (partial" not in table
    flat = " ".join(table.split())
    assert (
        "partial: 2025-09-22 00:00 covers 2025-09-22 00:00 → 2025-09-24 06:00 UTC (2.2 of 7 days); its trend "
        "is against the same span of the week before (2025-09-15 00:00 → 2025-09-17 06:00 UTC)"
    ) in flat
    assert "no trend (the week before is outside the window)" in flat
    assert "calls before --since included" in flat
    markdown = report(ledger, *WEEKS, "--by", "team", "-f", "markdown")
    assert "| a | 2025-09-22 00:00 (partial: 2.2 of 7 days) | 9 | $0.09 |" in markdown
    assert "| a | 2025-09-15 00:00 | 28 | $0.28 |" in markdown
    assert "\npartial: 2025-09-01 00:00 covers" in markdown
    assert " · partial: 2025-09-22 00:00 covers" in markdown


def test_csv_has_the_flag_and_the_spans(ledger: str) -> None:
    rows = list(csv.DictReader(io.StringIO(report(ledger, *WEEKS, "--by", "team", "-f", "csv"))))
    last = next(r for r in rows if r["team"] == "a" and r["period"].startswith("2025-09-22"))
    assert last["partial"] == "True" and last["trend_pct"] == "0.0"
    assert (last["covered_since"], last["covered_until"]) == (
        "2025-09-22T00:00:00+00:00",
        "2025-09-24T06:00:00+00:00",
    )
    assert (last["previous_since"], last["previous_until"]) == (
        "2025-09-15T00:00:00+00:00",
        "2025-09-17T06:00:00+00:00",
    )
    full = next(r for r in rows if r["team"] == "a" and r["period"].startswith("2025-09-15"))
    assert full["partial"] == "False"
    # without --period there is no period to be partial
    header = report(ledger, "--since", "2025-09-03", "--until", "2025-09-24", "--by", "team", "-f", "csv")
    assert "partial" not in header.splitlines()[0]


def test_the_python_frame_has_the_flag(ledger: str) -> None:
    with Ledger(ledger, config=Config(), read_only=True) as book_ledger:
        frame = book_ledger.report(WEEKS[1], WEEKS[3], by="team", period="week")
        empty = book_ledger.report("2024-01-01", "2024-01-08", by="team", period="day")
    a = frame[frame["team"] == "a"]
    assert a["partial"].tolist() == [True, False, False, True]
    assert str(frame["partial"].dtype) == "bool[pyarrow]"
    assert a["trend_pct"].tolist()[1:] == [0.0, 0.0, 0.0]
    assert a["previous_until"].tolist()[3] == _utc("2025-09-17T06:00:00Z")
    # a quiet window keeps the columns, so a script reading them does not break
    assert {"partial", "covered_since", "covered_until", "previous_since", "previous_until"} <= set(empty)


def test_a_partial_month_against_the_same_days_of_the_month_before(ledger: str) -> None:
    document = json.loads(report(ledger, *MONTHS, "-f", "json"))
    october = rows_of(document, "a")[2]
    assert october["partial"] and october["covered_until"] == "2025-10-11T00:00:00+00:00"
    # October 1-10 against September 1-10, not all 30 days of September
    assert (october["previous_since"], october["previous_until"]) == (
        "2025-09-01T00:00:00+00:00",
        "2025-09-11T00:00:00+00:00",
    )
    assert Decimal(october["spend"]) == Decimal(october["previous_spend"]) == 40 * CENT
    assert [r["partial"] for r in rows_of(document, "a")] == [False, False, True]
    table = report(ledger, *MONTHS)
    assert "2025-10-01 00:00 (partial: 10 of 31 days)" in table


def test_partial_days_count_hours(ledger: str) -> None:
    table = report(ledger, *DAYS, "-w", "team=a")
    assert "(partial: first day, 15 of 24 hours; last day, 15 of 24 hours)" in table
    document = json.loads(report(ledger, *DAYS, "-w", "team=a", "-f", "json"))
    last = document["rows"][-1]
    assert last["partial"] and Decimal(last["spend"]) == 3 * CENT and last["trend_pct"] == 0.0
    assert last["previous_until"] == "2025-09-11T15:00:00+00:00"


def test_a_period_not_over_when_the_report_is_made_is_partial(ledger: str) -> None:
    """`--until` in the future (a month-to-date report): the week of the report's day is
    partial, and so are the weeks after it, which cover nothing yet."""
    window = Window(_utc("2025-10-01T00:00:00Z"), _utc("2025-11-01T00:00:00Z"))
    query = ReportQuery(window, ["team"], "week", now=_utc("2025-10-12T00:00:00Z"))
    with Ledger(ledger, config=Config(), read_only=True) as book_ledger:
        result = run_report(book_ledger.store, query)
    (first, current) = result.rows
    assert first["partial"] and current["partial"]
    assert (current["covered_since"], current["covered_until"]) == (
        _utc("2025-10-06T00:00:00Z"),
        _utc("2025-10-12T00:00:00Z"),
    )
    # six days against the same six days of the week before, September 29-30 included
    assert (current["previous_since"], current["previous_until"]) == (
        _utc("2025-09-29T00:00:00Z"),
        _utc("2025-10-05T00:00:00Z"),
    )
    assert current["previous_spend"] == current["spend"] == 24 * CENT and current["trend_pct"] == 0.0
    later = result.periods[2:]
    assert [p["partial"] for p in result.periods] == [True] * 5
    assert all(p["covered_since"] == p["covered_until"] == p["period"] for p in later)


@pytest.mark.parametrize("until", [WEEKS[3], "2025-09-24T06:30:00Z"])  # on the hour, and within one
def test_the_rollups_and_the_events_give_the_same_marks(ledger: str, until: str) -> None:
    query = ReportQuery(Window(_utc(WEEKS[1]), _utc(until)), ["team"], "week")
    with Ledger(ledger, config=Config(), read_only=True) as book_ledger:
        rolled = run_report(book_ledger.store, query)
        events = run_report(book_ledger.store, query, use_rollups=False)
    assert rolled.from_rollups and not events.from_rollups
    assert to_json(report_document(rolled)) == to_json(report_document(events))
    assert rolled.rows[-1]["trend_pct"] == 0.0


@pytest.fixture(scope="module")
def clickhouse() -> Iterator[str]:
    pytest.importorskip("chdb", reason="the chdb package runs ClickHouse in-process")
    url = f"chdb://?database=partial_{uuid.uuid4().hex}"
    # an in-memory chDB database lives while a client has it open
    keeper = Ledger(url, book=PriceBook(), config=Config())
    try:
        keeper.ingest_records(workload())
        yield url
    finally:
        keeper.close()


@pytest.mark.parametrize(
    "args",
    [
        [*WEEKS, "--by", "team", "-f", "json"],
        [*WEEKS, "--by", "team", "-f", "csv"],
        [*MONTHS, "-f", "json"],
        [*DAYS, "-f", "json"],
        [*WEEKS, "--by", "team", "--top", "1"],
    ],
    ids=" ".join,
)
def test_clickhouse_gives_the_same_answer(ledger: str, clickhouse: str, args: list[str]) -> None:
    on_duckdb, on_clickhouse = report(ledger, *args), report(clickhouse, *args)
    assert on_duckdb == on_clickhouse.replace(clickhouse, ledger)
    assert "partial" in on_duckdb
