"""What `unitcost report` prints: the headline, the sparkline, hints, and tables as text."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from unitcost.api import Ledger
from unitcost.cli import app
from unitcost.config import Config
from unitcost.pricing.book import PriceBook

runner = CliRunner()
WINDOW = ("--since", "2025-09-09", "--until", "2025-09-14")


def _call(event_id: str, ts: str, thousands: int, **kw: object) -> dict[str, object]:
    # 1,000 gpt-4o input tokens cost $0.0025
    return {"event_id": event_id, "ts": ts, "model": "gpt-4o", "input_tokens": thousands * 1_000, **kw}


def _ledger(tmp_path: Path, book: PriceBook, *events: dict[str, object]) -> str:
    path = tmp_path / "report.duckdb"
    with Ledger(path, book=book, config=Config()) as ledger:
        ledger.ingest_records(list(events))
    return str(path)


def report(ledger: str, *args: str, code: int = 0) -> tuple[str, str]:
    result = runner.invoke(app, ["report", "--ledger", ledger, *args])
    assert result.exit_code == code, result.output
    return result.stdout, " ".join(result.stderr.split())


@pytest.fixture
def days(tmp_path: Path, book: PriceBook) -> str:
    return _ledger(
        tmp_path,
        book,
        _call("d1", "2025-09-10T09:00:00Z", 4, team="ops"),
        _call("d2", "2025-09-11T09:00:00Z", 9, team="ops"),
        _call("d3", "2025-09-12T09:00:00Z", 4, team="ops"),
    )


def test_the_sparkline_has_a_bar_per_bucket_and_names_its_size(days: str) -> None:
    out, _ = report(days, *WINDOW, "--period", "day")
    # empty 9th and 13th as the lowest bar, $0.01 / $0.0225 / $0.01 between
    assert "spend per day: ▁▄█▄▁\n" in out
    out, _ = report(days, *WINDOW, "--period", "hour")
    line = next(line for line in out.splitlines() if line.startswith("spend per "))
    assert line.startswith("spend per hour: ") and len(line.split(": ")[1]) == 5 * 24


def test_a_filter_that_matches_nothing_says_so(days: str) -> None:
    out, hint = report(days, *WINDOW, "--where", "team=nobody")
    assert "0 calls" in out
    assert "matches --where team=nobody: the window holds 3 events, none of them matching" in hint
    assert "try --since" not in hint
    # no event in the window at all: where the events are is the hint
    _, hint = report(days, "--since", "2024-01-01", "--until", "2024-01-02", "--where", "team=nobody")
    assert "try --since 2025-09-10 --until 2025-09-13" in hint


@pytest.mark.parametrize("top", ["0", "-1"])
def test_top_below_one_is_an_error(days: str, top: str) -> None:
    out = runner.invoke(app, ["report", "--ledger", days, *WINDOW, "--top", top]).output
    assert "--top is how many groups to show, at least 1" in " ".join(out.split())


def test_a_small_spend_shows_its_digits(tmp_path: Path, book: PriceBook) -> None:
    # 1,000 input and 100 output tokens: $0.0025 + $0.001
    ledger = _ledger(tmp_path, book, _call("s1", "2025-09-10T10:00:00Z", 1, output_tokens=100))
    out, _ = report(ledger, *WINDOW)
    assert out.startswith("Spend $0.0035 over ")
    assert "$0.003500 per request" in out


def test_a_line_break_in_a_name_stays_in_its_markdown_cell(tmp_path: Path, book: PriceBook) -> None:
    ledger = _ledger(tmp_path, book, _call("n1", "2025-09-10T10:00:00Z", 1, team="ops\nnight"))
    out, _ = report(ledger, *WINDOW, "--by", "team", "-f", "markdown")
    table = [line for line in out.splitlines() if line.startswith("| ") or "night" in line]
    assert table[2].startswith("| ops<br>night | 1 |")
    assert all(line.startswith("|") for line in table)
