"""The watch loop can be hosted in an event loop (as `unitcost serve` does) and stopped cleanly."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from unitcost.watch.runner import Watcher, watch_task
from unitcost.watch.settings import WatchSettings
from unitcost.watch.state import WatchState


def test_watch_task_runs_cycles_until_stopped(ledger: Any) -> None:
    ledger.ingest_records(
        [{"event_id": "r1", "ts": "2025-09-01T10:00:00Z", "model": "gpt-4o-mini", "input_tokens": 10}],
        source="test",
    )
    watcher = Watcher(ledger.store, WatchSettings(interval_s=0.01), sinks=[])
    cycles = 0
    original = watcher.run_once

    def counted(*args: Any, **kwargs: Any) -> Any:
        nonlocal cycles
        cycles += 1
        return original(*args, **kwargs)

    watcher.run_once = counted  # type: ignore[method-assign]

    async def host() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(watch_task(watcher, stop))
        while cycles < 2:  # the event loop stays free while cycles run in a worker thread
            await asyncio.sleep(0.01)
        stop.set()
        await asyncio.wait_for(task, timeout=30)

    asyncio.run(host())
    watcher.close(0)
    watermark, _ = WatchState(ledger.store).get("rollup")
    assert cycles >= 2 and watermark is not None
    rolled = ledger.store.fetch("SELECT CAST(sum(calls) AS BIGINT) AS n FROM watch_hourly").to_pylist()[0][
        "n"
    ]
    assert rolled == 1  # rolled up once, not once per cycle


def _calls(n: int, prefix: str) -> list[dict[str, Any]]:
    return [
        {
            "event_id": f"{prefix}{i}",
            "ts": f"2025-09-01T{10 + i % 5:02d}:00:00Z",
            "model": "gpt-4o-mini",
            "input_tokens": 10 + i,
            "feature": "answer",
        }
        for i in range(n)
    ]


def test_a_server_hosts_the_watch_on_its_ledger_writer_thread(tmp_path: Path) -> None:
    """`unitcost serve` owns the ledger through one writer thread; its watch cycles run on that
    thread between commits, while requests keep being committed, and see every event."""
    from unitcost.api import Ledger
    from unitcost.config import Config
    from unitcost.connectors.writer import BatchWriter
    from unitcost.watch.runner import HostedWatch

    path = tmp_path / "served.duckdb"
    writer = BatchWriter(lambda: Ledger(path, config=Config()), source="otlp")
    writer.submit(_calls(30, "a")).result(timeout=60)
    hosted = HostedWatch(writer.call, WatchSettings(interval_s=0.01), sinks=[])

    async def serve() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(hosted.run(stop))
        while hosted.cycles < 1:
            await asyncio.sleep(0.01)
        # Requests arrive while the loop runs: committed by the same thread, between cycles.
        await asyncio.wrap_future(writer.submit(_calls(20, "b")))
        seen = hosted.cycles
        while hosted.cycles < seen + 2:
            await asyncio.sleep(0.01)
        stop.set()
        await asyncio.wait_for(task, timeout=30)

    asyncio.run(serve())
    assert hosted.close(0)
    writer.close()
    with Ledger(path, config=Config(), read_only=True) as ledger:
        rolled = ledger.store.fetch("SELECT CAST(sum(calls) AS BIGINT) AS n FROM watch_hourly").to_pylist()
    assert rolled == [{"n": 50}]


def test_work_handed_to_the_writer_thread_reports_its_error_and_the_thread_goes_on(tmp_path: Path) -> None:
    from unitcost.api import Ledger
    from unitcost.config import Config
    from unitcost.connectors.writer import BatchWriter

    writer = BatchWriter(lambda: Ledger(tmp_path / "l.duckdb", config=Config()), source="t")

    def broken(ledger: Any) -> None:
        raise ValueError("no such detector")

    failed = writer.call(broken)
    with pytest.raises(ValueError, match="no such detector"):
        failed.result(timeout=60)
    # Events queued behind a call are still written, also when the writer closes right after.
    writer.call(lambda ledger: ledger.store.fetch("SELECT 1"))
    writer.submit(_calls(5, "c"), wait=False)
    writer.close()
    with Ledger(tmp_path / "l.duckdb", config=Config(), read_only=True) as ledger:
        assert ledger.store.fetch("SELECT count(*) AS n FROM events").to_pylist() == [{"n": 5}]


def test_a_loop_that_reopens_the_ledger_leaves_it_free_between_cycles(ledger: Any) -> None:
    """`unitcost watch` opens the ledger for each cycle so an ingest or an `alerts ack` can write
    between cycles. With an interval of 0 it reopened the ledger at once, and a command waiting
    for it (it tries every half second) could wait its whole lock wait and fail."""
    import contextlib
    import threading
    from collections.abc import Iterator

    from unitcost.watch.runner import LEDGER_FREE_S

    pauses: list[float | None] = []

    class OneCycle(threading.Event):
        def wait(self, timeout: float | None = None) -> bool:
            pauses.append(timeout)
            self.set()
            return True

    @contextlib.contextmanager
    def reopen() -> Iterator[Any]:
        yield ledger.store

    watcher = Watcher(ledger.store, WatchSettings(interval_s=0), sinks=[])
    try:
        watcher.run_forever(OneCycle(), reopen=reopen)
    finally:
        watcher.close()
    assert pauses == [LEDGER_FREE_S]
