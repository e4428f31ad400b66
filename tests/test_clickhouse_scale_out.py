"""What docs/scale-out.md tells a platform engineer to do, done on the real engine (chDB)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

pytest.importorskip("chdb", reason="the chdb package (pip install -e '.[dev]') runs ClickHouse in-process")

from unitcost.analytics.dialect import CLICKHOUSE, DUCKDB
from unitcost.api import Ledger
from unitcost.config import Config
from unitcost.ledger.clickhouse_store import ClickHouseStore
from unitcost.pricing.book import PriceBook
from unitcost.watch.budgets import parse_budgets
from unitcost.watch.runner import Watcher
from unitcost.watch.settings import WatchSettings


def chdb_url() -> str:
    return f"chdb://?database=t_{uuid.uuid4().hex}"


def test_starts_with_is_spelt_for_each_engine() -> None:
    """DuckDB's `starts_with` does not exist on ClickHouse (`alerts show PREFIX` failed there)."""
    ids = ["1d75dbd9c90a", "1d7%x", "1d7_x", "bf11b673968d"]
    store = ClickHouseStore.from_url(chdb_url())
    try:
        for prefix, expected in (("1d7", 3), ("1d75", 1), ("1d7%", 1), ("1d7_", 1), ("", 4), ("zz", 0)):
            duck_sql = "SELECT count(*) AS n FROM (SELECT unnest(?) AS alert_id) WHERE " + DUCKDB.starts_with(
                "alert_id", "?"
            )
            house_sql = (
                "SELECT count() AS n FROM (SELECT arrayJoin(?) AS alert_id) WHERE "
                + CLICKHOUSE.starts_with("alert_id", "?")
            )
            in_duck = duckdb.execute(duck_sql, [ids, prefix]).fetchone()
            in_house = store.fetch(house_sql, [ids, prefix]).to_pylist()[0]["n"]
            assert in_duck is not None and in_duck[0] == in_house == expected, prefix
    finally:
        store.close()


EVENTS = [
    {"event_id": f"e{i}", "ts": f"2025-09-{1 + i % 20:02d}T{i % 24:02d}:15:00.123456Z", "provider": "openai",
     "model": "gpt-4o" if i % 3 else "gpt-4o-mini", "input_tokens": 1000 + 37 * i, "output_tokens": 50 + i,
     "cache_read_tokens": 100 * (i % 4), "team": ["search", "support", "eng"][i % 3], "unit": "ticket",
     "unit_id": f"T-{i % 7}", "trace_id": f"tr-{i % 11}", "tags": {"region": "eu" if i % 2 else "us"}}
    for i in range(200)
] + [
    {"event_id": "x-unpriced", "ts": "2025-09-10T10:00:00Z", "provider": "acme", "model": "acme-9000",
     "input_tokens": 1200, "output_tokens": 300, "team": "lab"},
]  # fmt: skip


def copy_ledger(old: Ledger, new: Ledger) -> None:
    """The copy in docs/scale-out.md ("Moving a DuckDB ledger to ClickHouse"), line for line."""
    for batch in old.store.scan("SELECT * FROM events"):
        new.store.append(pa.Table.from_batches([batch]))
    for name in ("outcomes", "alerts", "watch_state"):
        new.store.upsert(name, old.store.fetch(f"SELECT * FROM {name}"))
    for name in (
        "alert_log",
        "reprice_runs",
        "reprice_changes",
        "reprice_events",
        "ingest_runs",
        "watch_hourly",
        "watch_traces",
    ):
        new.store.insert(name, old.store.fetch(f"SELECT * FROM {name}"))


def test_a_duckdb_ledger_copied_to_clickhouse_as_documented_answers_the_same(
    tmp_path: Path, book: PriceBook
) -> None:
    path = tmp_path / "costs.duckdb"
    budgets = parse_budgets(
        [{"name": "eu", "scope": {"tags": {"region": "eu"}}, "amount": 0.05, "period": "month"}]
    )
    settings = WatchSettings(backfill_hours=48, budgets=budgets, sinks=[])
    with Ledger(path, book=book, config=Config()) as old:
        old.ingest_records(EVENTS)
        old.record_outcome(unit="ticket", unit_id="T-1", success=True)
        old.reprice("2025-09-01", "2025-10-01")
        watcher = Watcher(old.store, settings, sinks=[])
        watcher.run_once(now=datetime(2025, 9, 15, tzinfo=UTC))
        watcher.close()
    with Ledger(path, read_only=True, config=Config()) as old, Ledger(chdb_url(), config=Config()) as new:
        copy_ledger(old, new)
        copy_ledger(old, new)  # events and keyed tables: a second run changes nothing there
        for by in ("team", "unit", "tag:region,model"):
            a = old.report_sections(since="2025-09-01", until="2025-10-01", by=by)
            b = new.report_sections(since="2025-09-01", until="2025-10-01", by=by)
            for section in ("headline", "rows", "periods", "units", "unpriced"):
                assert getattr(a, section) == getattr(b, section), (by, section)
        assert b.headline["successes"] == 1 and b.headline["unpriced_calls"] == 1
        for table in ("events", "outcomes", "alerts"):
            assert (
                old.sql(f"SELECT count(*) AS n FROM {table}")["n"][0]
                == (new.sql(f"SELECT count() AS n FROM {table}")["n"][0])
            ), table
        assert old.sql("SELECT count(*) AS n FROM alerts")["n"][0] > 0
