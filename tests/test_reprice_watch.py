"""After a reprice, the watch judges the corrected costs, as reports do.

Before, `Ledger.reprice` (`unitcost reprice`) rebuilt the report rollups of the hours it
changed but left the watch's (`watch_hourly`, `watch_traces`) at the old costs: a negotiated
discount applied to last week still showed the undiscounted spend in every spike baseline and
runaway norm, and a model priced after the fact stayed "unpriced" in the rollups, so `unitcost
watch` and `unitcost report` disagreed. Now a reprice recomputes the watch rollups of the hours
whose costs it changed, from their events, in its own transaction on DuckDB and as it ends on
ClickHouse, and leaves every other hour alone.

Everything goes through the real parts: events ingested hour by hour through `Ledger`, a watch
cycle (`Watcher.run_once`) after each hour, a user overrides file (a contract discount and the
price of a self-hosted model, as finance writes them) and `Ledger.reprice`, on a DuckDB ledger
and on ClickHouse (in-process, chDB).
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from unitcost.api import Ledger
from unitcost.config import Config
from unitcost.pricing.book import PriceBook
from unitcost.watch import rollup
from unitcost.watch.runner import Watcher
from unitcost.watch.settings import WatchSettings
from unitcost.watch.state import WatchState

UNITCOST = str(Path(sys.executable).parent / "unitcost")
DAY = datetime(2025, 9, 10, tzinfo=UTC)
HOUR = timedelta(hours=1)

# What finance writes after signing a contract and costing its own GPUs: both are the user's
# own numbers (an overrides file), not a provider's list price.
OVERRIDES = (
    '[[discount]]\nprovider = "openai"\npercent = 10\nfrom = 2025-09-01\nnote = "MSA 2025"\n\n'
    '[[price]]\nprovider = "acme"\nmodel = "acme-local-7b"\nfrom = 2025-01-01\n'
    'source = "GPU cost model"\ninput_mtok = "0.50"\noutput_mtok = "1.50"\n'
)


def _call(at: datetime, n: int, **more: Any) -> dict[str, Any]:
    """A priced call of an agent's trace within a user's session."""
    record = {
        "event_id": f"oa-{at:%d%H%M}-{n}",
        "ts": (at + timedelta(minutes=n)).isoformat(),
        "provider": "openai",
        "model": "gpt-4o-mini",
        "input_tokens": 2000 + 10 * n,
        "output_tokens": 150,
        "team": "search",
        "feature": "answer",
        "trace_id": f"tr-{at:%H}-{n % 2}",
        "session_id": f"s-{at:%H}",
    }
    return record | more


def _hour_of_traffic(at: datetime) -> list[dict[str, Any]]:
    return [
        _call(at, 0),
        _call(at, 1),
        # A failed attempt and its retry: waste the watch tracks.
        _call(at, 2, status="error", event_id=f"oa-{at:%d%H}-failed"),
        _call(at, 3, attempt=2, retry_of=f"oa-{at:%d%H}-failed"),
        # A provider-reported bill beside the computed cost.
        _call(at, 4, billed_cost="0.0003"),
        # A self-hosted model nobody priced yet: stored with no cost, counted unpriced.
        {
            "event_id": f"acme-{at:%d%H}",
            "ts": (at + timedelta(minutes=30)).isoformat(),
            "provider": "acme",
            "model": "acme-local-7b",
            "input_tokens": 800,
            "output_tokens": 60,
            "team": "ops",
            "feature": "log-classifier",
        },
    ]


def _targets(tmp_path: Path) -> dict[str, str]:
    # In-memory chdb ledgers open at once share one engine: one database each keeps them apart.
    return {
        "duckdb": str(tmp_path / "ledger.duckdb"),
        "clickhouse": f"chdb://?database=rw_{uuid.uuid4().hex}",
    }


@pytest.fixture(params=["duckdb", "clickhouse"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "clickhouse":
        pytest.importorskip("chdb", reason="the chdb package runs ClickHouse in-process")
    return _targets(tmp_path)[request.param]


@pytest.fixture
def overrides(tmp_path: Path) -> Path:
    path = tmp_path / "prices.toml"
    path.write_text(OVERRIDES)
    return path


@pytest.fixture
def ledger(target: str) -> Iterator[Ledger]:
    with Ledger(target, config=Config()) as opened:
        yield opened


def _watch_day(ledger: Ledger) -> Watcher:
    """Hours 08 to 11 of the day, each ingested as it happens and judged 5 minutes after it
    ends; a late call of hour 09 arrives with hour 11's, so hour 09 holds rows of two cycles."""
    watcher = Watcher(ledger.store, WatchSettings(), sinks=[])
    for h in range(8, 12):
        at = DAY + h * HOUR
        records = _hour_of_traffic(at)
        if h == 11:
            records.append(_call(DAY + 9 * HOUR, 7, event_id="oa-late-09"))
        assert ledger.ingest_records(records, source="app").accepted == len(records)
        watcher.run_once(now=at + HOUR + timedelta(minutes=5))
    return watcher


MERGED_ROLLUP = """
SELECT hour, team, app, feature, provider, model,
    CAST(sum(calls) AS BIGINT) AS calls, CAST(sum(priced_calls) AS BIGINT) AS priced_calls,
    CAST(sum(unpriced_calls) AS BIGINT) AS unpriced_calls, CAST(sum(tokens) AS BIGINT) AS tokens,
    CAST(sum(cost) AS DECIMAL(38, 12)) AS cost, CAST(sum(waste_calls) AS BIGINT) AS waste_calls,
    CAST(sum(waste_cost) AS DECIMAL(38, 12)) AS waste_cost,
    CAST(sum(billed_calls) AS BIGINT) AS billed_calls,
    CAST(sum(billed_cost) AS DECIMAL(38, 12)) AS billed_cost,
    CAST(sum(billed_computed_cost) AS DECIMAL(38, 12)) AS billed_computed_cost,
    round(sum(cost_sq), 12) AS cost_sq
FROM ({rows}) GROUP BY ALL ORDER BY hour, provider, model, team
"""


def _rollup(ledger: Ledger) -> list[dict[str, Any]]:
    return ledger.store.fetch(MERGED_ROLLUP.format(rows="SELECT * FROM watch_hourly")).to_pylist()


EVER = (datetime(1970, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC))


def _held(ledger: Ledger) -> tuple[datetime, datetime]:
    """The events the watch rollups hold: those ingested up to its watermark."""
    watermark, _ = WatchState(ledger.store).get(rollup.ROLLUP_STATE)
    assert watermark is not None
    return EVER[0], watermark


def _from_events(ledger: Ledger, ingested: tuple[datetime, datetime] = EVER) -> list[dict[str, Any]]:
    """The hourly rollup a watch cycle would make of the events `ingested` in that span, now."""
    return ledger.store.fetch(MERGED_ROLLUP.format(rows=rollup.HOURLY_SQL), ingested).to_pylist()


TRACE_ROWS = """
SELECT hour, key_kind, key, CAST(sum(calls) AS BIGINT) AS calls, CAST(sum(cost) AS DECIMAL(38, 12)) AS cost
FROM ({rows}) GROUP BY hour, key_kind, key ORDER BY hour, key_kind, key
"""


def _traces(ledger: Ledger, ingested: tuple[datetime, datetime] | None = None) -> list[dict[str, Any]]:
    """The trace rollup as stored, or as a cycle would make it of the events `ingested` then."""
    if ingested is None:
        return ledger.store.fetch(TRACE_ROWS.format(rows="SELECT * FROM watch_traces")).to_pylist()
    return ledger.store.fetch(TRACE_ROWS.format(rows=rollup.TRACES_SQL), ingested * 2).to_pylist()


def _cost_per_hour(ledger: Ledger, table: str, provider: str | None = None) -> dict[datetime, Decimal]:
    hour = "hour" if table == "watch_hourly" else "date_trunc('hour', ts)"
    where = f"provider = '{provider}'" if provider else "TRUE"
    rows = ledger.store.fetch(
        f"SELECT {hour} AS hour, CAST(sum(cost) AS DECIMAL(38, 12)) AS cost FROM {table} WHERE {where} GROUP BY 1"
    ).to_pylist()
    return {_utc(row["hour"]): row["cost"] for row in rows}


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _rows_of_hour(ledger: Ledger, hour: datetime) -> list[dict[str, Any]]:
    """The stored rows of one hour, partial rows of each cycle as they are."""
    table = ledger.store.fetch("SELECT * FROM watch_hourly WHERE hour = ?", [hour])
    return sorted(table.to_pylist(), key=lambda r: (r["model"], r["calls"], str(r["cost"])))


def test_a_reprice_corrects_the_watch_rollups_of_the_hours_it_changed(
    ledger: Ledger, overrides: Path
) -> None:
    watcher = _watch_day(ledger)
    try:
        # A call of hour 10 that no watch cycle has rolled up yet.
        assert ledger.ingest_records([_call(DAY + 10 * HOUR, 9, event_id="oa-unrolled-10")]).accepted == 1
        old = _cost_per_hour(ledger, "watch_hourly")
        old_openai = _cost_per_hour(ledger, "watch_hourly", "openai")
        hour_08 = _rows_of_hour(ledger, DAY + 8 * HOUR)
        assert len(_rows_of_hour(ledger, DAY + 9 * HOUR)) == 3  # two cycles' rows: partial sums

        # Finance signs the discount and costs its GPUs; it reprices from 09:00 on.
        book = PriceBook.load(overrides)
        result = ledger.reprice(DAY + 9 * HOUR, DAY + 12 * HOUR, book=book, reason="MSA 2025")
        assert result.events_changed == 3 * 6 + 1 + 1  # the unrolled and the late call too
        assert result.new_unpriced == 0 and result.old_unpriced == 3

        # The watch rollups hold the events they held, at their new costs, hour by hour and
        # in every measure: cost, waste, the billed comparison, priced and unpriced calls.
        rolled = _rollup(ledger)
        assert rolled == _from_events(ledger, _held(ledger))
        assert _traces(ledger) == _traces(ledger, _held(ledger))
        new = _cost_per_hour(ledger, "watch_hourly")
        new_openai = _cost_per_hour(ledger, "watch_hourly", "openai")
        acme = _cost_per_hour(ledger, "watch_hourly", "acme")
        for h in (9, 10, 11):
            assert new_openai[DAY + h * HOUR] < old_openai[DAY + h * HOUR] * Decimal("0.95")  # the discount
            assert acme[DAY + h * HOUR] > 0  # priced now
        assert sum(r["unpriced_calls"] for r in rolled if r["hour"] > DAY + 8 * HOUR) == 0
        # Only the hours it changed were rebuilt: hour 08 keeps its rows as they were.
        assert _rows_of_hour(ledger, DAY + 8 * HOUR) == hour_08
        assert new[DAY + 8 * HOUR] == old[DAY + 8 * HOUR]

        # The next cycle adds the call it had not rolled up, once: every hour's cost in the
        # watch is its events' cost, and the watch's day is the report's.
        watcher.run_once(now=DAY + 12 * HOUR + timedelta(minutes=10))
        assert _cost_per_hour(ledger, "watch_hourly") == _cost_per_hour(ledger, "events")
        assert _rollup(ledger) == _from_events(ledger)
        assert _traces(ledger) == _traces(ledger, EVER)
        spend = ledger.report_sections(since="2025-09-10", until="2025-09-11").headline["spend"]
        assert sum(_cost_per_hour(ledger, "watch_hourly").values()) == spend
    finally:
        watcher.close(flush_timeout=0)


def test_a_reprice_of_a_ledger_the_watch_never_rolled_up_leaves_the_watch_empty(
    ledger: Ledger, overrides: Path
) -> None:
    assert ledger.ingest_records(_hour_of_traffic(DAY + 9 * HOUR)).accepted == 6
    assert ledger.reprice(DAY, DAY + timedelta(days=1), book=PriceBook.load(overrides)).events_changed == 6
    assert ledger.store.fetch("SELECT count(*) AS n FROM watch_hourly").to_pylist() == [{"n": 0}]
    assert ledger.store.fetch("SELECT count(*) AS n FROM watch_traces").to_pylist() == [{"n": 0}]
    # The first cycle rolls the repriced costs up.
    watcher = Watcher(ledger.store, WatchSettings(), sinks=[])
    try:
        watcher.run_once(now=DAY + 10 * HOUR + timedelta(minutes=5))
    finally:
        watcher.close(flush_timeout=0)
    assert _cost_per_hour(ledger, "watch_hourly") == _cost_per_hour(ledger, "events")


def test_a_reprice_that_changes_nothing_rewrites_no_watch_rows(ledger: Ledger) -> None:
    watcher = _watch_day(ledger)
    watcher.close(flush_timeout=0)
    before = ledger.store.fetch("SELECT count(*) AS n FROM watch_hourly").to_pylist()
    assert ledger.reprice(DAY, DAY + timedelta(days=1)).events_changed == 0
    assert ledger.store.fetch("SELECT count(*) AS n FROM watch_hourly").to_pylist() == before


def _in_batches_of(ledger: Ledger, size: int) -> None:
    scan = ledger.store.scan

    def small(sql: str, params: Any = None, batch_size: int = 0) -> Iterator[pa.RecordBatch]:
        yield from scan(sql, params, batch_size=size)

    ledger.store.scan = small  # type: ignore[method-assign]


def test_an_interrupted_clickhouse_reprice_leaves_the_watch_in_line_with_what_it_changed(
    tmp_path: Path, overrides: Path
) -> None:
    """ClickHouse keeps the updates a failed reprice made: the watch must see those too."""
    pytest.importorskip("chdb", reason="the chdb package runs ClickHouse in-process")
    url = _targets(tmp_path)["clickhouse"]
    with Ledger(url, config=Config()) as ledger:
        watcher = _watch_day(ledger)
        watcher.close(flush_timeout=0)
        old = _cost_per_hour(ledger, "watch_hourly")
        _in_batches_of(ledger, 6)
        update, calls = ledger.store.update_costs, []

        def fails_second(table: pa.Table) -> int:
            calls.append(table.num_rows)
            if len(calls) == 2:
                raise RuntimeError("connection reset")
            return update(table)

        ledger.store.update_costs = fails_second  # type: ignore[method-assign]
        with pytest.raises(RuntimeError, match="connection reset"):
            ledger.reprice(DAY, DAY + timedelta(days=1), book=PriceBook.load(overrides))
        assert _cost_per_hour(ledger, "watch_hourly") == _cost_per_hour(ledger, "events")
        assert _cost_per_hour(ledger, "watch_hourly") != old  # the first batch was repriced
        assert _rollup(ledger) == _from_events(ledger)


def test_a_watch_cycle_under_way_when_a_reprice_starts_does_not_bring_old_costs_back(
    ledger: Ledger, overrides: Path
) -> None:
    """A cycle reads the new events, then writes their rollup rows: a reprice in between (the
    ledger handed over between two writes of a server, or another thread) saw them as not
    rolled up yet, and the cycle then wrote their old costs. The cycle now reads and writes
    as one, and the reprice waits for it."""
    watcher = _watch_day(ledger)
    watcher.close(flush_timeout=0)
    assert ledger.ingest_records(_hour_of_traffic(DAY + 12 * HOUR)).accepted == 6
    fetch = ledger.store.fetch
    repricer: list[threading.Thread] = []

    def fetch_then_reprice(sql: str, params: Any = None) -> pa.Table:
        table = fetch(sql, params)
        if sql == rollup.HOURLY_SQL and not repricer:
            book = PriceBook.load(overrides)
            thread = threading.Thread(
                target=ledger.reprice, args=(DAY, DAY + timedelta(days=1)), kwargs={"book": book}
            )
            repricer.append(thread)
            thread.start()
            thread.join(timeout=2)  # done by now, unless it waits for the cycle
        return table

    ledger.store.fetch = fetch_then_reprice  # type: ignore[method-assign]
    try:
        rollup.roll_up(ledger.store)
    finally:
        ledger.store.fetch = fetch  # type: ignore[method-assign]
    repricer[0].join(timeout=60)
    assert _cost_per_hour(ledger, "watch_hourly") == _cost_per_hour(ledger, "events")
    assert _rollup(ledger) == _from_events(ledger)


def test_unitcost_reprice_corrects_what_unitcost_watch_judges(tmp_path: Path, overrides: Path) -> None:
    """The command FinOps runs, on a ledger a watch has been judging."""
    path = tmp_path / "costs.duckdb"
    with Ledger(path, config=Config()) as ledger:
        _watch_day(ledger).close(flush_timeout=0)
        old = _cost_per_hour(ledger, "watch_hourly", "openai")
    done = subprocess.run(
        [UNITCOST, "reprice", "--since", "2025-09-10", "--until", "2025-09-11", "--ledger", str(path),
         "--prices", str(overrides), "--reason", "MSA 2025", "--format", "json"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["events_changed"] == 25
    with Ledger(path, config=Config(), read_only=True) as ledger:
        assert _cost_per_hour(ledger, "watch_hourly") == _cost_per_hour(ledger, "events")
        new = _cost_per_hour(ledger, "watch_hourly", "openai")
        assert new.keys() == old.keys() and all(new[hour] < old[hour] for hour in old)
        assert _rollup(ledger) == _from_events(ledger)


def test_a_reprice_of_thousands_of_scattered_hours_corrects_each_of_them(
    ledger: Ledger, tmp_path: Path
) -> None:
    """Calls every other hour for most of a year: 3,000 separate hours to rebuild, too many to
    list as literals in one ClickHouse statement (its query size is 256 KiB by default)."""
    start = datetime(2024, 1, 1, tzinfo=UTC)
    records = [
        {"event_id": f"cron-{i}", "ts": (start + 2 * i * HOUR).isoformat(), "provider": "openai",
         "model": "gpt-4o-mini", "input_tokens": 1000 + i, "output_tokens": 10, "team": "batch",
         "trace_id": f"job-{i}"}
        for i in range(3000)
    ]  # fmt: skip
    assert ledger.ingest_records(records, source="cron").accepted == 3000
    rollup.roll_up(ledger.store)
    old = _cost_per_hour(ledger, "watch_hourly")
    msa_2024 = tmp_path / "msa-2024.toml"
    msa_2024.write_text(
        '[[discount]]\nprovider = "openai"\npercent = 10\nfrom = 2024-01-01\nnote = "MSA 2024"\n'
    )
    result = ledger.reprice(start, start + timedelta(days=366), book=PriceBook.load(msa_2024))
    assert result.events_changed == 3000
    new = _cost_per_hour(ledger, "watch_hourly")
    assert new == _cost_per_hour(ledger, "events")
    assert len(new) == 3000 and all(new[hour] < old[hour] for hour in old)
    assert _traces(ledger) == _traces(ledger, EVER)
