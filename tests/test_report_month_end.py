"""`unitcost report` as a finance team runs it at month-end: every format adds up to the
ledger's own SQL sum of cost, to the last pico-dollar, with unpriced calls counted and the
calls without a customer or a tag in a bucket of their own.

Prices: gpt-4o costs $2.50 per million input tokens and $10 per million output tokens, so
one input token is $0.0000025; `acme-x` (self-hosted) has no price."""

from __future__ import annotations

import csv
import io
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from unitcost.analytics.window import Window
from unitcost.api import Ledger
from unitcost.cli import app
from unitcost.config import Config
from unitcost.pricing.book import PriceBook

runner = CliRunner()
D = Decimal
SEPTEMBER = ("--since", "2025-09-01", "--until", "2025-10-01")


def _call(event_id: str, ts: str, input_tokens: int, **kw: object) -> dict[str, object]:
    return {
        "event_id": event_id,
        "ts": ts,
        "provider": "openai",
        "model": "gpt-4o",
        "input_tokens": input_tokens,
        **kw,
    }


EVENTS = [
    # the last instant of August and the first of October: outside September
    _call("aug", "2025-08-31T23:59:59.999Z", 1_000, customer="acme"),
    _call("oct", "2025-10-01T00:00:00Z", 1_000, customer="acme"),
    # September: sub-cent costs, a customer missing, an unpriced model, a tag empty or absent
    _call("s1", "2025-09-01T00:00:00Z", 1, customer="acme", tags={"region": "eu"}),
    _call("s2", "2025-09-01T00:30:00Z", 3, output_tokens=7, customer="acme", tags={"region": ""}),
    _call("s3", "2025-09-15T12:00:00Z", 1_000, customer="globex", status="error"),
    _call("s4", "2025-09-15T12:30:00Z", 1_000, attempt=2, retry_of="s3"),
    _call("s5", "2025-09-30T23:59:59Z", 2_000, provider="self-hosted", model="acme-x"),
    _call("s6", "2025-09-30T23:00:00Z", 5, unit="ticket", unit_id="T1", tags={"region": "us"}),
]


def report(ledger: str, *args: str) -> str:
    result = runner.invoke(app, ["report", "--ledger", ledger, *args])
    assert result.exit_code == 0, result.output
    return result.stdout


@pytest.fixture
def month(tmp_path: Path, book: PriceBook) -> str:
    path = tmp_path / "month.duckdb"
    with Ledger(path, book=book, config=Config()) as ledger:
        summary = ledger.ingest_records(EVENTS, source="test")
        assert (summary.accepted, summary.unpriced) == (len(EVENTS), 1)
    return str(path)


def _sql(ledger: str, query: str) -> list[dict[str, Any]]:
    with Ledger(ledger, config=Config(), read_only=True) as opened:
        rows: list[dict[str, Any]] = opened.store.fetch(query).to_pylist()
        return rows


def _september_by(ledger: str, expression: str) -> dict[str | None, tuple[int, Decimal | None, int]]:
    """calls, sum(cost) and unpriced calls per group, straight from the events table."""
    rows = _sql(
        ledger,
        f"SELECT {expression} AS k, count(*) AS n, sum(cost) AS c, count(*) - count(cost) AS u "
        "FROM events WHERE ts >= TIMESTAMPTZ '2025-09-01 00:00:00+00' "
        "AND ts < TIMESTAMPTZ '2025-10-01 00:00:00+00' GROUP BY ALL",
    )
    return {r["k"]: (r["n"], r["c"], r["u"]) for r in rows}


def _csv(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def _money(cell: str) -> Decimal | None:
    return D(cell) if cell else None


def test_the_csv_adds_up_to_the_ledger_one_row_per_customer(month: str) -> None:
    expected = _september_by(month, "customer")
    rows = _csv(report(month, *SEPTEMBER, "--by", "customer", "--format", "csv"))
    # one row per customer, the calls without one included, and nothing but plain numbers
    got = {
        r["customer"] or None: (int(r["calls"]), _money(r["spend"]), int(r["unpriced_calls"])) for r in rows
    }
    assert got == expected
    assert len(rows) == len(expected) == 3
    assert sum((_money(r["spend"]) or D(0) for r in rows), D(0)) == D("0.0050925")
    # the tokens and requests behind the money are columns too, and add up the same way
    tokens = _sql(month, "SELECT sum(input_tokens) AS i, sum(output_tokens) AS o, sum(requests) AS r FROM events "
                  "WHERE ts >= '2025-09-01' AND ts < '2025-10-01'")[0]  # fmt: skip
    assert sum(int(r["input_tokens"]) for r in rows) == tokens["i"]
    assert sum(int(r["output_tokens"]) for r in rows) == tokens["o"]
    assert sum(int(r["requests"]) for r in rows) == tokens["r"]
    assert {"cost_input", "cost_output", "billed_cost", "units", "wasted_share"} <= set(rows[0])


def test_json_spend_is_exact_decimal_text_and_rows_add_up(month: str) -> None:
    data = json.loads(report(month, *SEPTEMBER, "--by", "customer", "--format", "json"))
    spends = [D(r["spend"]) for r in data["rows"] if r["spend"] is not None]
    assert sum(spends, D(0)) == D(data["headline"]["spend"]) == D("0.0050925")
    # $0.0000025 of one input token is not rounded away
    acme = next(r for r in data["rows"] if r["customer"] == "acme")
    assert D(acme["spend"]) == D("0.0000025") + D("0.0000075") + D("0.00007")
    assert data["headline"]["unpriced_calls"] == 1
    assert data["unpriced"][0]["model"] == "acme-x"


def test_an_empty_tag_is_one_bucket_with_the_calls_without_the_tag(month: str) -> None:
    rows = _csv(report(month, *SEPTEMBER, "--by", "tag:region", "--format", "csv"))
    got = {r["tag:region"]: int(r["calls"]) for r in rows}
    # s2 says region "", s3 s4 s5 say nothing: one bucket, as a spreadsheet would group them
    assert got == {"eu": 1, "us": 1, "": 4}
    assert sum(got.values()) == 6


def test_the_table_names_the_bucket_without_a_value_and_shows_sub_cent_spend(month: str) -> None:
    out = report(month, *SEPTEMBER, "--by", "customer", "--format", "markdown")
    table = next(block for block in out.split("\n\n") if block.startswith("| customer |")).splitlines()
    cells = {line.split(" | ")[0][2:]: line.split(" | ")[2] for line in table[2:]}
    # the calls without a customer are a named group, and $0.0025 is not printed as $0.00
    assert cells == {"(none)": "$0.002512", "globex": "$0.0025", "acme": "$0.00008"}


def test_top_says_what_it_left_out_and_when_it_cut_a_tie(tmp_path: Path, book: PriceBook) -> None:
    path = tmp_path / "ties.duckdb"
    with Ledger(path, book=book, config=Config()) as ledger:
        ledger.ingest_records(
            [
                _call("t1", "2025-09-10T10:00:00Z", 4_000, team="search"),
                _call("t2", "2025-09-10T10:00:00Z", 1_000, team="ads"),
                _call("t3", "2025-09-10T10:00:00Z", 1_000, team="billing"),
                _call("t4", "2025-09-10T10:00:00Z", 1_000, team="ops"),
                _call("t5", "2025-09-10T10:00:00Z", 1_000, provider="self-hosted", model="acme-x"),
            ]
        )
    ledger_path = str(path)
    data = json.loads(report(ledger_path, *SEPTEMBER, "--by", "team", "--top", "2", "--format", "json"))
    assert [r["team"] for r in data["rows"]] == ["search", "ads"]  # ads, billing, ops tie: by name
    others = data["others"]
    assert (others["groups"], others["calls"], others["unpriced_calls"]) == (3, 3, 1)
    assert (others["tied"], D(others["tied_spend"])) == (2, D("0.0025"))
    shown = sum((D(r["spend"]) for r in data["rows"]), D(0))
    assert shown + D(others["spend"]) == D(data["headline"]["spend"]) == D("0.0175")
    out = " ".join(report(ledger_path, *SEPTEMBER, "--by", "team", "--top", "2", "-f", "markdown").split())
    assert (
        "and 3 other groups not shown (--top 2): 3 calls, $0.005 (28.6%), 1 unpriced; "
        "2 of them tie with the last shown at $0.0025 (ties are ranked by name)"
    ) in out
    # with a period the groups are ranked over the window, and the others still add up
    by_day = json.loads(
        report(ledger_path, *SEPTEMBER, "--by", "team", "--period", "day", "--top", "1", "-f", "json")
    )
    assert [r["team"] for r in by_day["rows"]] == ["search"]
    assert by_day["others"]["calls"] == 4
    # --top that keeps every group leaves nothing out
    assert (
        json.loads(report(ledger_path, *SEPTEMBER, "--by", "team", "--top", "9", "-f", "json"))["others"]
        is None
    )


def test_periods_and_units_carry_only_what_they_count(month: str) -> None:
    data = json.loads(report(month, *SEPTEMBER, "--format", "json"))
    first = data["periods"][0]
    # a period holds the units of no section: no "units": 0, no error rate of null
    assert "units" not in first and "error_rate" not in first and "failed_cost" not in first
    assert sum(p["calls"] for p in data["periods"]) == data["headline"]["calls"] == 6
    assert sum(p["unpriced_calls"] for p in data["periods"]) == 1
    (ticket,) = data["units"]
    assert (ticket["unit"], ticket["units"], D(ticket["spend"])) == ("ticket", 1, D("0.0000125"))
    assert "latency_p95_ms" not in ticket


@pytest.mark.parametrize(
    ("since", "until", "first", "last"),
    [
        ("2025-09", "2025-10", "2025-09-01T00:00:00+00:00", "2025-10-01T00:00:00+00:00"),
        ("2025-12", "2026-01", "2025-12-01T00:00:00+00:00", "2026-01-01T00:00:00+00:00"),
    ],
)
def test_a_month_is_a_window_in_utc(since: str, until: str, first: str, last: str) -> None:
    window = Window.parse(since, until)
    assert (window.since.isoformat(), window.until.isoformat()) == (first, last)


def test_a_month_on_the_command_line_is_that_month_exactly(month: str) -> None:
    data = json.loads(report(month, "--since", "2025-09", "--until", "2025-10", "--format", "json"))
    # the last instant of August and midnight of October 1st are out
    assert data["headline"]["calls"] == 6
    expected = _september_by(month, "'all'")["all"]
    assert (data["headline"]["calls"], D(data["headline"]["spend"])) == expected[:2]


def test_a_bad_month_says_what_a_window_may_be(month: str) -> None:
    result = runner.invoke(app, ["report", "--ledger", month, "--since", "2025-13"])
    assert result.exit_code != 0
    assert "a month (2025-09)" in " ".join(result.output.split())


def test_no_failed_call_costs_zero_and_unpriced_failures_stay_unknown(month: str) -> None:
    rows = {
        r["customer"]: r
        for r in json.loads(report(month, *SEPTEMBER, "--by", "customer", "-f", "json"))["rows"]
    }
    # acme had no failure and no retry: $0, not unknown
    assert (D(rows["acme"]["failed_cost"]), D(rows["acme"]["retry_cost"])) == (0, 0)
    assert rows["acme"]["wasted_share"] == 0.0
    # globex's error cost $0.0025; the retry is the unnamed customer's
    assert D(rows["globex"]["failed_cost"]) == D("0.0025")
    assert D(rows[None]["retry_cost"]) == D("0.0025")
    out = report(month, *SEPTEMBER, "--where", "customer=acme")
    assert "failed attempts $0.00 · retries $0.00" in out


def test_a_failed_call_without_a_price_has_an_unknown_failed_cost(tmp_path: Path, book: PriceBook) -> None:
    path = tmp_path / "unpriced.duckdb"
    with Ledger(path, book=book, config=Config()) as ledger:
        ledger.ingest_records(
            [_call("u1", "2025-09-10T10:00:00Z", 10, provider="self-hosted", model="acme-x", status="error")]
        )
        head = ledger.report_sections("2025-09-01", "2025-10-01").headline
    assert (head["calls"], head["failed_cost"], head["unpriced_calls"]) == (1, None, 1)


def test_price_sources_are_a_dimension(month: str) -> None:
    data = json.loads(report(month, *SEPTEMBER, "--by", "model,price_ref", "-f", "json"))
    sources = {r["model"]: r["price_ref"] for r in data["rows"]}
    assert sources == {"gpt-4o": "genai-prices:openai/gpt-4o", "acme-x": None}
    reasons = json.loads(report(month, *SEPTEMBER, "--by", "unpriced_reason", "-f", "json"))["rows"]
    assert sorted(r["calls"] for r in reasons) == [1, 5]


@pytest.mark.parametrize(("by", "expression"), [("team", "team"), ("customer", "customer")])
@pytest.mark.parametrize(
    ("since", "until"),
    [
        ("2025-09-01T00:15:00Z", "2025-09-30T23:30:00Z"),
        ("2025-08-31T23:59:59.999Z", "2025-09-15T12:00:00.001Z"),
    ],
)
def test_a_window_cutting_hours_matches_the_events_table(
    month: str, by: str, expression: str, since: str, until: str
) -> None:
    """`team` reads the hourly rollups, `customer` the events: both must be what SQL says."""
    with Ledger(month, config=Config(), read_only=True) as ledger:
        report_rows = ledger.report_sections(since, until, by).rows
        direct = ledger.store.fetch(
            f"SELECT {expression} AS k, count(*) AS n, sum(cost) AS c FROM events "
            f"WHERE ts >= TIMESTAMPTZ '{since}' AND ts < TIMESTAMPTZ '{until}' GROUP BY ALL"
        ).to_pylist()
    assert {r[by]: (r["calls"], r["spend"]) for r in report_rows} == {
        r["k"]: (r["n"], r["c"]) for r in direct
    }


def test_a_month_trends_against_the_whole_month_before(tmp_path: Path, book: PriceBook) -> None:
    path = tmp_path / "trend.duckdb"
    with Ledger(path, book=book, config=Config()) as ledger:
        ledger.ingest_records(
            [
                # August 1st is in August, though not in the 30 days before September
                _call("a1", "2025-08-01T10:00:00Z", 1_000),
                _call("a2", "2025-08-20T10:00:00Z", 1_000),
                _call("s1", "2025-09-10T10:00:00Z", 1_000),
                _call("h1", "2025-09-30T06:00:00Z", 1_000),
                _call("h2", "2025-09-30T18:00:00Z", 2_000),
            ]
        )
    data = json.loads(report(str(path), *SEPTEMBER, "--format", "json"))
    assert data["window"]["previous"] == {
        "since": "2025-08-01T00:00:00+00:00",
        "until": "2025-09-01T00:00:00+00:00",
    }
    assert D(data["headline"]["previous_spend"]) == D("0.005")
    assert D(data["headline"]["spend"]) == D("0.01")
    assert report(str(path), *SEPTEMBER).splitlines()[0].endswith("(+100.0% vs the previous month)")
    # half a day is compared with the half day before it, and says so
    half_day = report(str(path), "--since", "2025-09-30T12:00Z", "--until", "2025-10-01")
    assert half_day.splitlines()[0].endswith("(+100.0% vs the previous 12 hours)")


@pytest.mark.parametrize(
    ("where", "expression"),
    [
        ("customer=", "customer IS NULL"),
        ("customer!=", "customer IS NOT NULL"),
        ("customer=,acme", "customer IS NULL OR customer = 'acme'"),
        ("customer!=,acme", "customer IS NOT NULL AND customer <> 'acme'"),
        ("tag:region=", "coalesce(tags['region'], '') = ''"),
        ("tag:region!=", "coalesce(tags['region'], '') <> ''"),
    ],
)
def test_an_empty_filter_value_is_the_group_without_a_value(month: str, where: str, expression: str) -> None:
    """The `(none)` row of `--by customer` is what `--where customer=` keeps."""
    data = json.loads(report(month, *SEPTEMBER, "--where", where, "--format", "json"))
    (direct,) = _sql(
        month,
        "SELECT count(*) AS n, sum(cost) AS c FROM events WHERE ts >= TIMESTAMPTZ '2025-09-01 00:00:00+00' "
        f"AND ts < TIMESTAMPTZ '2025-10-01 00:00:00+00' AND ({expression})",
    )
    assert direct["n"] > 0
    assert (data["headline"]["calls"], D(data["headline"]["spend"])) == (direct["n"], direct["c"])


def test_the_business_units_table_counts_its_unpriced_calls(tmp_path: Path, book: PriceBook) -> None:
    path = tmp_path / "units.duckdb"
    with Ledger(path, book=book, config=Config()) as ledger:
        ledger.ingest_records(
            [
                _call("k1", "2025-09-10T10:00:00Z", 1_000, unit="ticket", unit_id="T1"),
                _call("k2", "2025-09-10T10:01:00Z", 1_000, unit="ticket", unit_id="T1", model="acme-x"),
            ]
        )
    out = report(str(path), *SEPTEMBER, "--format", "markdown")
    units = next(block for block in out.split("\n\n") if block.startswith("| unit |")).splitlines()
    assert units[0].endswith("| unpriced |")
    # $0.0025 is the priced call alone: the table says one call of the ticket has no price
    assert units[2] == "| ticket | 1 | $0.0025 | $0.002500 | — | — | — | 1 |"
