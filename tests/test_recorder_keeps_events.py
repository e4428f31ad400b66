"""`unitcost.record` loses no event when the ledger cannot be written for a while.

Before, the recorder retried five times and then dropped the events with a line in the log;
at exit it gave the writer 30 s and dropped whatever was left. A DuckDB ledger held by a
long `unitcost ingest` (or a ClickHouse server down for a minute) was enough to lose calls.
Now they are kept on disk beside the ledger and the next write adds them.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest

from ledger_holder import ledger_held_by_another_process
from unitcost.api import Ledger
from unitcost.config import Config
from unitcost.connectors import writer
from unitcost.connectors.recorder import Recorder
from unitcost.connectors.unwritten import Unwritten, directory_for
from unitcost.ledger import duckdb_store

CHAT = {
    "object": "chat.completion",
    "model": "gpt-4o-mini",
    "usage": {"prompt_tokens": 1200, "completion_tokens": 80},
}


def ledger_rows(path: Path) -> list[tuple[str, str, int]]:
    with duckdb.connect(str(path), read_only=True) as con:
        return con.execute("SELECT event_id, source, input_tokens FROM events ORDER BY event_id").fetchall()


def kept_lines(directory: Path) -> list[str]:
    return [
        line for path in sorted(directory.glob("events-*.jsonl")) for line in path.read_text().splitlines()
    ]


def create_ledger(path: Path) -> None:
    recorder = Recorder(path, flush_interval=3600)
    recorder.record(CHAT, event_id="before")
    assert recorder.flush(timeout=60)
    recorder.close()


def test_events_outlasting_the_retries_are_kept_then_added_by_the_next_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "costs.duckdb"
    create_ledger(path)
    monkeypatch.setattr(writer, "RETRIES", 1)
    monkeypatch.setattr(duckdb_store, "_LOCK_WAIT_S", 0.2)
    recorder = Recorder(path, flush_interval=3600)
    try:
        with ledger_held_by_another_process(path), caplog.at_level(logging.ERROR, logger="unitcost.writer"):
            for i in range(3):
                recorder.record(CHAT, event_id=f"held-{i}", team="support")
            # Not in the ledger: flush says so, and the log says where they are.
            assert recorder.flush(timeout=60) is False
        directory = path.parent / "costs.duckdb.unwritten"
        assert len(kept_lines(directory)) == 3
        assert "kept in" in caplog.text and str(directory) in caplog.text
        assert recorder._writer.events_kept == 3

        # The ledger is free again: the next write adds the kept events, as the recorder's own.
        recorder.record(CHAT, event_id="after")
        assert recorder.flush(timeout=60) is True
    finally:
        recorder.close()
    assert ledger_rows(path) == [
        ("after", "sdk", 1200),
        ("before", "sdk", 1200),
        ("held-0", "sdk", 1200),
        ("held-1", "sdk", 1200),
        ("held-2", "sdk", 1200),
    ]
    assert not list(directory.iterdir())


def test_events_left_at_exit_are_kept_and_added_by_a_later_process(tmp_path: Path) -> None:
    """The application exits while another process holds the ledger: its last events survive it."""
    path = tmp_path / "costs.duckdb"
    create_ledger(path)
    script = textwrap.dedent(
        f"""
        import unitcost
        unitcost.configure({str(path)!r}, flush_interval=3600)
        for i in range(4):
            unitcost.record({CHAT!r}, event_id=f"exit-{{i}}", unit="ticket", unit_id=f"T-{{i}}")
        """
    )
    with ledger_held_by_another_process(path):
        done = subprocess.run(
            [sys.executable, "-c", script],
            capture_output=True,
            text=True,
            timeout=300,
            env={**os.environ, "UNITCOST_LOCK_WAIT": "0.5"},
            check=False,
        )
    assert done.returncode == 0, done.stderr
    assert "kept in" in done.stderr and "lost" not in done.stderr, done.stderr
    directory = path.parent / "costs.duckdb.unwritten"
    assert len(kept_lines(directory)) == 4

    # The next application's first write takes them in.
    recorder = Recorder(path, flush_interval=3600)
    recorder.record(CHAT, event_id="next-run")
    assert recorder.flush(timeout=60) is True
    recorder.close()
    assert [row[0] for row in ledger_rows(path)] == [
        "before",
        "exit-0",
        "exit-1",
        "exit-2",
        "exit-3",
        "next-run",
    ]
    assert not kept_lines(directory)


def test_a_kept_file_is_an_ingestible_event_file(tmp_path: Path) -> None:
    """What is kept is unitcost's event schema as JSON lines: `unitcost ingest FILE` takes it as is,
    exact amounts, timestamps and tags included."""
    kept = Unwritten(None, tmp_path / "kept")
    record = {
        "event_id": "k-1",
        "ts": datetime(2025, 9, 16, 10, 0, tzinfo=UTC),
        "provider": "openai",
        "model": "gpt-4o-mini",
        "input_tokens": 1000,
        "output_tokens": 10,
        "billed_cost": Decimal("0.000123456789"),
        "tags": {"region": "eu"},
    }
    path = kept.keep([record])
    assert path.stat().st_mode & 0o777 == 0o600
    with Ledger(tmp_path / "l.duckdb", config=Config()) as book:
        summary = book.ingest(path)
        assert (summary.accepted, summary.rejected) == (1, 0)
        row = book.store.fetch("SELECT ts, billed_cost, tags['region'] AS region FROM events").to_pylist()[0]
    assert row["ts"] == record["ts"]
    assert row["billed_cost"] == Decimal("0.000123456789")
    assert row["region"] == "eu"


def test_kept_events_of_a_clickhouse_ledger_go_to_a_directory_without_the_password() -> None:
    first = directory_for("clickhouse://user:secret@db.internal:8123/costs")
    assert first == directory_for("clickhouse://user:other@db.internal:8123/costs")
    assert "secret" not in str(first)
    assert first != directory_for("clickhouse://user:secret@db.internal:8123/other")
