"""What a ledger target names, and what a command does when it names nothing there."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from typer.testing import CliRunner

from unitcost.api import Ledger, open_store
from unitcost.cli import app
from unitcost.config import Config
from unitcost.watch.incidents import list_alerts, open_alerts
from unitcost.watch.tables import ALERT_SCHEMA

runner = CliRunner()


def test_a_misspelt_scheme_is_named_not_taken_for_a_file(tmp_path: Path) -> None:
    """Before: `clickhous://host/db` was a DuckDB path, "no ledger at clickhous:/host/db"."""
    done = runner.invoke(app, ["report", "--ledger", "clickhous://localhost/costs"])
    assert done.exit_code == 2, done.output
    assert "unknown ledger scheme 'clickhous://'" in done.output
    assert not list(tmp_path.iterdir())  # no file made of it


def test_reading_or_repricing_a_misspelt_chdb_database_creates_nothing(tmp_path: Path) -> None:
    """Before: `report` showed "no events yet" from a database it had just created, and `reprice`
    repriced nothing in it; now both say there is no ledger."""
    path = tmp_path / "ledger.chdb"
    with Ledger(f"chdb://{path}?database=costs", config=Config()) as ledger:
        ledger.record({"event_id": "e1", "ts": "2025-09-10T10:00:00Z", "model": "gpt-4o", "input_tokens": 10})
    typo = f"chdb://{path}?database=cost"
    for args in (["report", "--since", "2025-09-01"], ["reprice", "--since", "2025-09-01"]):
        done = runner.invoke(app, [*args, "--ledger", typo])
        assert done.exit_code == 2, done.output
        assert "no ledger at" in done.output and "'cost' does not exist" in done.output
    store = open_store(f"chdb://{path}?database=costs")
    try:
        databases = store.fetch("SELECT name FROM system.databases").column("name").to_pylist()
    finally:
        store.close()
    assert "costs" in databases and "cost" not in databases


def _alert(key: str, alert_id: str, at: datetime) -> dict[str, Any]:
    return {
        "alert_id": alert_id,
        "key": key,
        "detector": "unpriced_model",
        "scope": key,
        "status": "open",
        "first_seen": at,
        "last_seen": at,
    }


@pytest.mark.parametrize("engine", ["duckdb", "chdb"])
def test_alerts_opened_in_one_cycle_are_listed_in_one_order(engine: str, tmp_path: Path) -> None:
    """They share their instants: the order was each engine's (and each ClickHouse run's) own."""
    target = str(tmp_path / "l.duckdb") if engine == "duckdb" else f"chdb://?database=t_{uuid.uuid4().hex}"
    store = open_store(target)
    try:
        at = datetime(2025, 9, 10, 11, tzinfo=UTC)
        # Written in one order, with ids in another (a ClickHouse table is sorted by its id).
        for key, alert_id in (("model=m-c", "a-1"), ("model=m-a", "a-3"), ("model=m-b", "a-2")):
            store.upsert("alerts", pa.Table.from_pylist([_alert(key, alert_id, at)], schema=ALERT_SCHEMA))
        expected = ["model=m-a", "model=m-b", "model=m-c"]
        assert [a["key"] for a in list_alerts(store)] == expected
        assert [a["key"] for a in list_alerts(store, limit=2)] == expected[:2]
        assert [a["key"] for a in open_alerts(store)] == expected
    finally:
        store.close()
