"""A DuckDB ledger has one writer process, and no reader can open it while that process has it.
The processes that keep it open for as long as they run (`unitcost serve`, the gateway's ledger
writer, an application's recorder) give it up between two writes to a command that asks for it,
so that `unitcost report`, `unitcost ingest` or `unitcost alerts ack` beside a running server
work instead of failing "busy" after the lock wait. Real processes on both sides."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from otlp_payloads import genai_attributes, json_request, json_span
from unitcost.api import Ledger
from unitcost.config import Config
from unitcost.ledger import duckdb_store
from unitcost.ledger.duckdb_store import DuckDBStore, wanted_path

UNITCOST = str(Path(sys.executable).parent / "unitcost")
# Long enough for a loaded machine (the gateway writer is niced: under load it looks for requests
# late); on the old code every command below waited this long, then failed.
WAIT_ENV = {"UNITCOST_LOCK_WAIT": "60"}


def _event(event_id: str, **fields: Any) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "ts": (datetime.now(UTC) - timedelta(minutes=5)).isoformat(),
        "provider": "openai",
        "model": "gpt-4o-mini",
        "input_tokens": 1000,
        "output_tokens": 100,
        **fields,
    }


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [UNITCOST, *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
        env={**os.environ, **WAIT_ENV, "COLUMNS": "200"},
    )


def _event_ids(ledger: Path) -> list[str]:
    with Ledger(ledger, config=Config(), read_only=True) as opened:
        rows = opened.store.fetch("SELECT event_id FROM events ORDER BY event_id").to_pylist()
    return [row["event_id"] for row in rows]


def _export_one_call(traces: str, start_ns: int) -> None:
    """One GenAI span to the server; it answers 200 once the call is committed to the ledger."""
    span = json_span(genai_attributes(model="gpt-4o"), start_ns=start_ns)
    answer = httpx.post(traces, json=json_request([span]), timeout=60)
    assert answer.status_code == 200, answer.text


def _touch_request(ledger: Path, ns: int) -> None:
    """A waiting command's request, at an explicit time: two touches within one clock tick of
    the file system would otherwise carry the same time."""
    path = wanted_path(ledger)
    path.touch()
    os.utime(path, ns=(ns, ns))


# ---------------------------------------------------------------------- the store


def test_a_store_gives_the_ledger_up_once_per_request_and_takes_it_back_to_write(tmp_path: Path) -> None:
    path = tmp_path / "l.duckdb"
    store = DuckDBStore(path)
    try:
        assert store.yield_to_waiters() is False  # nobody asked

        now = time.time_ns()
        _touch_request(path, now)
        assert store.yield_to_waiters() is True
        # Another process can now open it, even for writing.
        other = duckdb_store._connect(path, False, {})
        other.close()
        # The same request again (a command that has gone): not given up a second time.
        store.fetch("SELECT 1")
        assert store.yield_to_waiters() is False

        # Never in the middle of a read or a transaction.
        _touch_request(path, now + 1_000_000)
        with store.snapshot() as read:
            assert read("SELECT count(*) AS n FROM events") == [{"n": 0}]
            assert store.yield_to_waiters() is False
        with store.transaction():
            assert store.yield_to_waiters() is False
        assert store.yield_to_waiters() is True
    finally:
        store.close()


def test_a_waiting_command_asks_and_then_clears_its_request(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The asking side, against a holder in another process that gives way when asked."""
    path = tmp_path / "l.duckdb"
    DuckDBStore(path).close()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from unitcost.ledger.duckdb_store import DuckDBStore\n"
            f"store = DuckDBStore({str(path)!r})\n"
            "print('open', flush=True)\n"
            "while not store.yield_to_waiters():\n"
            "    time.sleep(0.05)\n"
            "print('given up', flush=True)\n"
            "sys.stdin.readline()\n"
            "store.close()\n",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdin is not None
        assert holder.stdout.readline().strip() == "open"
        monkeypatch.setattr(duckdb_store, "_LOCK_WAIT_S", 60.0)
        reader = DuckDBStore(path, read_only=True)
        assert holder.stdout.readline().strip() == "given up"
        assert not wanted_path(path).exists()  # answered: the request is gone
        reader.close()
        holder.stdin.write("\n")
        holder.stdin.flush()
        assert holder.wait(timeout=60) == 0
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()


# ---------------------------------------------------------------------- the processes that keep it open


@pytest.mark.slow
def test_report_and_ingest_run_beside_a_running_serve(tmp_path: Path) -> None:
    ledger = tmp_path / "served.duckdb"
    server = subprocess.Popen(
        [UNITCOST, "serve", "--port", "0", "--decode-workers", "0", "--no-watch", "-l", str(ledger)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=tmp_path,
    )
    try:
        assert server.stdout is not None
        banner = server.stdout.readline()
        match = re.search(r"http://127\.0\.0\.1:(\d+)/v1/traces", banner)
        assert match, banner
        traces = match.group(0)
        start = int((datetime.now(UTC) - timedelta(minutes=10)).timestamp() * 1e9)
        _export_one_call(traces, start)

        report = _cli("report", "--since", "1d", "--format", "json", "-l", str(ledger), cwd=tmp_path)
        assert report.returncode == 0, report.stdout + report.stderr
        assert json.loads(report.stdout)["headline"]["calls"] == 1

        # A second writer: a cron ingest of a file, beside the server.
        events = tmp_path / "batch.jsonl"
        events.write_text(json.dumps(_event("from-file-1")) + "\n")
        ingest = _cli("ingest", str(events), "-l", str(ledger), cwd=tmp_path)
        assert ingest.returncode == 0, ingest.stdout + ingest.stderr

        # The server takes the ledger back for its next write, and acknowledges it as before.
        _export_one_call(traces, start)
        report = _cli("report", "--since", "1d", "--format", "json", "-l", str(ledger), cwd=tmp_path)
        assert report.returncode == 0, report.stdout + report.stderr
        assert json.loads(report.stdout)["headline"]["calls"] == 3
    finally:
        server.send_signal(signal.SIGINT)
        output, _ = server.communicate(timeout=60)
    assert server.returncode in (0, 130), output
    assert len(_event_ids(ledger)) == 3


@pytest.mark.slow
def test_a_reader_gets_the_ledger_from_the_gateway_writer_which_then_drains_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from unitcost.gateway.spool import Spool
    from unitcost.gateway.writer import LedgerWriter

    monkeypatch.setattr(duckdb_store, "_LOCK_WAIT_S", 60.0)
    ledger = tmp_path / "ledger.duckdb"
    spool = Spool(tmp_path / "spool")
    spool.append(_event("gw-1"))
    spool.close()
    writer = LedgerWriter(tmp_path / "spool", str(ledger), None, interval_s=0.2)
    writer.start()
    try:
        assert _read_when_there(ledger, "gw-1") == ["gw-1"]
        spool = Spool(tmp_path / "spool")
        spool.append(_event("gw-2"))
        spool.close()
        assert _read_when_there(ledger, "gw-2") == ["gw-1", "gw-2"]
    finally:
        writer.stop(timeout=60)
    assert _event_ids(ledger) == ["gw-1", "gw-2"]


def _read_when_there(ledger: Path, event_id: str) -> list[str]:
    """The ledger's events once `event_id` is among them: each look opens the ledger while the
    writer process holds it (on the old code: LedgerBusyError)."""
    deadline = time.monotonic() + 60
    while True:
        ids = _event_ids(ledger) if ledger.exists() else []
        if event_id in ids or time.monotonic() > deadline:
            return ids
        time.sleep(0.2)


def test_a_report_runs_beside_an_application_recording_calls(tmp_path: Path) -> None:
    """An application's in-process writer (what `unitcost.record` uses) holds the ledger between
    its batches; a `unitcost report` beside it gets in, and the next batch is written after it."""
    from unitcost.connectors.writer import BatchWriter

    ledger = tmp_path / "app.duckdb"
    writer = BatchWriter(lambda: Ledger(ledger, config=Config()), source="sdk", name="test-recorder")
    try:
        assert writer.submit([_event("app-1")]).result(timeout=60).accepted == 1
        report = _cli("report", "--since", "1d", "--format", "json", "-l", str(ledger), cwd=tmp_path)
        assert report.returncode == 0, report.stdout + report.stderr
        assert json.loads(report.stdout)["headline"]["calls"] == 1
        assert writer.submit([_event("app-2")]).result(timeout=60).accepted == 1
    finally:
        writer.close()
    assert _event_ids(ledger) == ["app-1", "app-2"]


def test_a_reader_left_open_gives_the_ledger_to_a_writer_between_its_reads(tmp_path: Path) -> None:
    """A notebook's read-only Ledger, left open: before, a server's or an ingest's write waited
    for it to close, and failed "busy" after the lock wait."""
    ledger = tmp_path / "l.duckdb"
    with Ledger(ledger, config=Config()) as opened:
        opened.record(_event("before"))
    with Ledger(ledger, config=Config(), read_only=True) as notebook:
        assert notebook.count() == 1
        events = tmp_path / "batch.jsonl"
        events.write_text(json.dumps(_event("while-open")) + "\n")
        ingest = _cli("ingest", str(events), "-l", str(ledger), cwd=tmp_path)
        assert ingest.returncode == 0, ingest.stdout + ingest.stderr
        assert notebook.count() == 2  # the next read opens the ledger again, and sees the write


def test_a_long_ingest_gives_the_ledger_up_between_two_appends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cron `unitcost ingest` of millions of events kept every report out until it was done
    (a minute for 10M events): the report failed "busy" after the lock wait. Now the ingest
    lets it in between two appends, and the report sees the events appended so far."""
    from unitcost.ingest import readers
    from unitcost.ingest.pipeline import Ingestor

    path = tmp_path / "l.duckdb"
    events = tmp_path / "events.jsonl"
    events.write_text("".join(json.dumps(_event(f"e-{i:05d}")) + "\n" for i in range(3000)))
    monkeypatch.setattr(duckdb_store, "_LOCK_WAIT_S", 120.0)  # the ingest waits for the reader to finish
    monkeypatch.setattr(readers, "CHUNK_BYTES", 64 << 10)  # several appends from a small file
    reader: list[subprocess.Popen[str]] = []
    with Ledger(path, config=Config()) as ledger:
        store = ledger.store
        append = store.append

        def append_then_ask(table: Any, **options: Any) -> Any:
            result = append(table, **options)
            if not reader:
                # A reader starts after the first append and asks for the ledger, as a report would.
                reader.append(
                    subprocess.Popen(
                        [
                            sys.executable,
                            "-c",
                            "from unitcost.api import Ledger\n"
                            "from unitcost.config import Config\n"
                            f"with Ledger({str(path)!r}, config=Config(), read_only=True) as opened:\n"
                            "    print(opened.store.fetch('SELECT count(*) AS n FROM events').column(0)[0])\n",
                        ],
                        stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE,
                        text=True,
                        env={**os.environ, **WAIT_ENV},
                    )
                )
                deadline = time.monotonic() + 120
                while not wanted_path(path).exists() and reader[0].poll() is None:
                    assert time.monotonic() < deadline, "the reader never asked for the ledger"
                    time.sleep(0.02)
            return result

        monkeypatch.setattr(store, "append", append_then_ask)
        ingestor = Ingestor(store, ledger.book, append_rows=1000)
        try:
            with store.bulk():
                summary = ingestor.ingest_path(events)
        finally:
            ingestor.close()
    out, err = reader[0].communicate(timeout=120)
    assert reader[0].returncode == 0, err
    assert summary.accepted == 3000
    # It read between two appends: the first append's events, not none and not all.
    assert 1000 <= int(out) < 3000, out
    assert len(_event_ids(path)) == 3000


def test_a_reader_left_open_ends_quietly_with_the_script(tmp_path: Path) -> None:
    """`Ledger(path, read_only=True).sql(...)` in a script or a notebook, never closed: at exit
    DuckDB's bindings printed a screen of "nanobind: leaked instance ..." lines."""
    path = tmp_path / "l.duckdb"
    with Ledger(path, config=Config()) as ledger:
        ledger.ingest_records([_event("e-1")])
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "from unitcost.api import Ledger\n"
            "from unitcost.config import Config\n"
            f"print(len(Ledger({str(path)!r}, config=Config(), read_only=True).sql('SELECT * FROM events')))\n",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0 and done.stdout.strip() == "1", done.stderr
    assert "leaked" not in done.stderr, done.stderr[:500]
