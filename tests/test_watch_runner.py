"""The watch loop can be hosted in an event loop (as `unitcost serve` does) and stopped cleanly."""

from __future__ import annotations

import asyncio
from typing import Any

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
