"""A finance analyst checks every figure of `unitcost report` by hand, on a small day of
calls, on the DuckDB ledger (from the rollups and from the events) and on ClickHouse.

Prices (an overrides file, so every cost is a round number): `acme/probe-1` costs $1 per
million input tokens, $0.10 cached, $1.25 for 5-minute cache writes, $4 output (reasoning at
the output price), $10 audio input ($1 cached), $20 audio output, and $1 per thousand requests.
`acme/nobody` has no price.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pytest

from unitcost.analytics.latency import RELATIVE_ERROR
from unitcost.analytics.report import Report, ReportQuery, run_report
from unitcost.analytics.window import Window
from unitcost.api import Ledger
from unitcost.config import Config
from unitcost.gateway.records import Attempt
from unitcost.ledger import report_rollups
from unitcost.pricing.book import PriceBook

D = Decimal

PRICES = """
[[price]]
provider = "acme"
model = "probe-1"
from = 2025-01-01
source = "probe sheet"
input_mtok = "1"
cache_read_mtok = "0.1"
cache_write_mtok = "1.25"
output_mtok = "4"
input_audio_mtok = "10"
cache_audio_read_mtok = "1"
output_audio_mtok = "20"
requests_kcount = "1"
"""


def _call(n: int, minute: int, **kw: Any) -> dict[str, Any]:
    return {"event_id": f"p{n}", "ts": f"2025-06-10T10:{minute:02d}:00Z", "provider": "acme",
            "model": "probe-1", "team": "a", **kw}  # fmt: skip


def _gateway_cache_hit(n: int, minute: int) -> dict[str, Any]:
    """The record the gateway writes when it answers from its response cache: the usage of the
    call it repeats (cache reads included), `cache_hit`, and no cost of its own."""
    attempt = Attempt(
        "acme",
        "probe-1",
        "chat",
        http_status=200,
        usage={"input_tokens": 1_000_000, "cache_read_tokens": 400_000, "output_tokens": 200_000},
        cache_hit=True,
        latency_ms=2.0,
        event_id=f"p{n}",
    )
    record = attempt.record({"team": "b"}, "probe-1")
    return {**record, "ts": f"2025-06-10T10:{minute:02d}:00Z"}


DAY = [
    # 500k uncached $0.50 + 400k cached $0.04 + 100k 5m writes $0.125 + 150k output $0.60
    # + 50k reasoning $0.20 + a request $0.001 = $1.466; caching saved $0.36 - $0.025 = $0.335
    _call(1, 0, input_tokens=1_000_000, cache_read_tokens=400_000, cache_write_5m_tokens=100_000,
          output_tokens=200_000, reasoning_tokens=50_000, latency_ms=100.0),
    # 40k text $0.04 + 60k audio $0.60 in; 5k text $0.02 + 5k audio $0.10 out; $0.001 = $0.761
    _call(2, 1, input_tokens=100_000, input_audio_tokens=60_000, output_tokens=10_000,
          output_audio_tokens=5_000, latency_ms=200.0),
    # answered from the gateway's response cache: $0, avoided $0.60 + $0.04 + $0.80 + $0.001
    _gateway_cache_hit(3, 2),
    # a timeout the provider billed: $0.20 + $0.001, and its retry: $0.20 + $0.20 + $0.001
    _call(4, 3, input_tokens=200_000, status="timeout", latency_ms=30_000.0, team="b", unit="ticket",
          unit_id="T1"),
    _call(5, 4, input_tokens=200_000, output_tokens=50_000, attempt=2, retry_of="p4", latency_ms=300.0,
          team="b", unit="ticket", unit_id="T1"),
    # an error with no tokens: the request fee, $0.001
    _call(6, 5, status="error", http_status=500, latency_ms=10.0, team="b"),
    # no price: unknown, never $0
    _call(7, 6, model="nobody", input_tokens=5_000, output_tokens=500, latency_ms=50.0, team="b"),
    # the day before: $1.00 + $0.001
    {**_call(0, 0, input_tokens=1_000_000), "ts": "2025-06-09T10:00:00Z"},
]  # fmt: skip

WINDOW = Window.parse("2025-06-10", "2025-06-11")


@pytest.fixture
def prices(tmp_path: Path) -> PriceBook:
    (tmp_path / "prices.toml").write_text(PRICES)
    return PriceBook.load(tmp_path / "prices.toml")


def _fill(ledger: Ledger, events: list[dict[str, Any]] = DAY) -> Ledger:
    summary = ledger.ingest_records(events)
    assert summary.accepted == len(events)
    ledger.record_outcome(unit="ticket", unit_id="T1", success=True)
    return ledger


@pytest.fixture
def day(tmp_path: Path, prices: PriceBook) -> Iterator[Ledger]:
    with Ledger(tmp_path / "l.duckdb", book=prices, config=Config()) as ledger:
        yield _fill(ledger)


def both_roads(ledger: Ledger, **kw: Any) -> Report:
    """The report from the rollups and from the events: the same to the last digit."""
    query = ReportQuery(WINDOW, **kw)
    fast, slow = run_report(ledger.store, query), run_report(ledger.store, query, use_rollups=False)
    assert fast.from_rollups
    assert (fast.headline, fast.rows, fast.periods, fast.units) == (
        slow.headline,
        slow.rows,
        slow.periods,
        slow.units,
    )
    return fast


def test_cost_per_1k_tokens_divides_by_the_tokens_its_costs_pay_for(
    tmp_path: Path, prices: PriceBook
) -> None:
    """An audio call's text tokens cost $1 and $4 per million, its audio $10 and $20, in
    `cost_other`. Dividing the text cost by every token said $0.40 and $2 per million:
    cheaper than the price list, for a call that cost more than its text."""
    with Ledger(tmp_path / "l.duckdb", book=prices, config=Config()) as ledger:
        ledger.ingest_records([DAY[1]])
        h = both_roads(ledger).headline
    assert h["spend"] == D("0.761") and h["cost_other"] == D("0.701")
    assert h["cost_per_1k_input"] == D("0.001")  # $0.04 over the 40k text tokens
    assert h["cost_per_1k_output"] == D("0.004")  # $0.02 over the 5k text tokens


def test_a_response_cache_hit_is_neither_prompt_caching_nor_billed_tokens(
    tmp_path: Path, prices: PriceBook
) -> None:
    """The gateway's cache hit repeats a call that read 400k tokens from the prompt cache; the
    provider saw none of it. Alone with a call that read nothing from the prompt cache, the
    prompt cache hit ratio is 0 % and the input rate is the list price."""
    with Ledger(tmp_path / "l.duckdb", book=prices, config=Config()) as ledger:
        ledger.ingest_records([_gateway_cache_hit(3, 2), DAY[3]])
        h = both_roads(ledger).headline
    assert (h["response_cache_hits"], h["avoided_cost"]) == (1, D("1.441"))
    assert h["cache_hit_ratio"] == 0.0 and h["cache_savings"] == D(0)
    assert h["cost_per_1k_input"] == D("0.001")  # $0.20 over 200k: the cache hit billed no token
    assert h["cost_per_request"] == D("0.1005")  # $0.201 over both requests: the hit cost $0


def test_every_figure_of_the_day_by_hand(day: Ledger) -> None:
    h = both_roads(day, by=["team"]).headline
    assert (h["calls"], h["requests"], h["spend"]) == (7, 7, D("2.83"))
    assert h["cost_per_request"] == D("0.471666666667")  # $2.83 over 6 priced requests
    # $0.665 + $0.04 + $0.20 + $0.20 over 1M + 40k + 200k + 200k tokens
    assert h["cost_per_1k_input"] == D("0.000767361111")
    # $0.80 + $0.02 + $0.20 over 200k + 5k + 50k tokens: the list price
    assert h["cost_per_1k_output"] == D("0.004")
    assert h["cost_other"] == D("0.705")  # audio $0.70 and five request fees
    # prompt cache: p1's 400k reads over the 1.505M input tokens the provider saw
    assert h["cache_hit_ratio"] == pytest.approx(400_000 / 1_505_000)
    assert (h["cache_savings"], h["avoided_cost"], h["response_cache_hits"]) == (D("0.335"), D("1.441"), 1)
    assert h["reasoning_share"] == pytest.approx(0.20 / 1.02)
    assert (h["failed_cost"], h["retry_cost"], h["retries"]) == (D("0.202"), D("0.401"), 1)
    assert h["wasted_share"] == pytest.approx(0.603 / 2.83)
    assert (h["error_rate"], h["timeout_rate"]) == (pytest.approx(1 / 7), pytest.approx(1 / 7))
    # latencies 2, 10, 50, 100, 200, 300, 30000: P50 the 4th, P95 at rank 5.7
    assert h["latency_p50_ms"] == pytest.approx(100, rel=RELATIVE_ERROR)
    assert h["latency_p95_ms"] == pytest.approx(300 + 0.7 * 29_700, rel=RELATIVE_ERROR)
    assert (h["units"], h["cost_per_unit"], h["cost_per_success"]) == (1, D("0.602"), D("0.602"))
    assert (h["unpriced_calls"], h["unpriced_tokens"]) == (1, 5_500)
    assert h["previous_spend"] == D("1.001")
    assert h["trend_pct"] == pytest.approx((2.83 - 1.001) / 1.001 * 100)


def test_each_team_by_hand(day: Ledger) -> None:
    rows = {r["team"]: r for r in both_roads(day, by=["team"]).rows}
    a, b = rows["a"], rows["b"]
    assert (a["spend"], b["spend"]) == (D("2.227"), D("0.603"))
    assert a["cost_per_1k_input"] == D("0.000677884615")  # $0.705 over 1.04M tokens
    assert a["cost_per_1k_output"] == D("0.004")
    assert a["cache_hit_ratio"] == pytest.approx(400_000 / 1_100_000)
    # team b: the cache hit's 400k reads are not prompt caching; 0 of the 405k tokens sent
    assert b["cache_hit_ratio"] == 0.0
    assert b["cost_per_1k_input"] == D("0.001") and b["cost_per_1k_output"] == D("0.004")
    assert b["cost_per_request"] == D("0.15075")  # $0.603 over 4 priced requests, the hit's $0 included


def test_the_periods_and_units_count_the_prompt_cache_alone(day: Ledger) -> None:
    report = both_roads(day, period="hour")
    [busy] = [p for p in report.periods if p["calls"]]
    assert busy["cache_hit_ratio"] == pytest.approx(400_000 / 1_505_000)
    [ticket] = report.units
    assert ticket["cache_hit_ratio"] == 0.0 and ticket["spend"] == D("0.602")


def test_clickhouse_gives_the_same_figures_to_the_nano_dollar(day: Ledger, prices: PriceBook) -> None:
    pytest.importorskip("chdb", reason="the chdb package runs ClickHouse in-process")
    with Ledger(f"chdb://?database=t_{uuid.uuid4().hex}", book=prices, config=Config()) as house:
        _fill(house)
        for kw in ({"by": ["team"]}, {"by": ["team"], "period": "hour"}, {}):
            duck = both_roads(day, **kw)
            click = run_report(house.store, ReportQuery(WINDOW, **kw))
            assert (duck.headline, duck.rows, duck.periods, duck.units, duck.unpriced) == (
                click.headline,
                click.rows,
                click.periods,
                click.units,
                click.unpriced,
            )
        assert click.headline["cost_per_1k_input"] == D("0.000767361111")
        assert click.headline["cache_hit_ratio"] == pytest.approx(400_000 / 1_505_000)


def test_rollups_built_without_the_rated_tokens_are_read_around_then_rebuilt(
    tmp_path: Path, prices: PriceBook
) -> None:
    path = tmp_path / "l.duckdb"
    with Ledger(path, book=prices, config=Config()) as ledger:
        _fill(ledger)
    # As the previous version left them: without the tokens the costs per 1k divide by.
    con = duckdb.connect(str(path))
    con.execute("UPDATE meta SET value = '2' WHERE key = 'report_rollup_version'")
    con.execute("ALTER TABLE report_hourly DROP COLUMN rated_input_tokens")
    con.execute("ALTER TABLE report_hourly DROP COLUMN rated_output_tokens")
    con.close()
    with Ledger(path, book=prices, config=Config(), read_only=True) as reader:
        report = run_report(reader.store, ReportQuery(WINDOW))
        assert not report.from_rollups and report.headline["cost_per_1k_output"] == D("0.004")
    with Ledger(path, book=prices, config=Config()):
        pass  # the next writer rebuilds them
    with Ledger(path, book=prices, config=Config(), read_only=True) as reader:
        report = run_report(reader.store, ReportQuery(WINDOW))
        version = reader.store.fetch("SELECT value FROM meta WHERE key = 'report_rollup_version'")
        assert version.to_pylist() == [{"value": report_rollups.ROLLUP_VERSION}]
        assert report.from_rollups and report.headline["cost_per_1k_input"] == D("0.000767361111")
