"""The ledger writer: a separate process that moves spooled events into the ledger.

It owns the ledger's write connection (DuckDB allows one writer process), drains the spool
every `interval_s` through `Ledger.ingest_records`, and exits after a last drain when the
gateway asks it to stop or when the gateway process is gone (after a `kill -9`, whatever it
had not ingested is replayed by the next start).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger("unitcost.gateway.writer")


def ledger_sink(ledger: Any) -> Any:
    def sink(batch: Sequence[Mapping[str, Any]]) -> None:
        summary = ledger.ingest_records(batch, source="gateway")
        for rejection in summary.rejections[:10]:
            log.error("gateway event rejected by the ledger: %s", rejection)

    return sink


def _run(
    spool_dir: str, ledger_target: str, config_path: str | None, interval_s: float, stop: Any, parent: int
) -> None:
    from ..api import Ledger
    from ..config import load_config
    from .spool import drain

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    ledger = Ledger(ledger_target, config=load_config(config_path))
    sink = ledger_sink(ledger)
    try:
        while True:
            finishing = stop.is_set() or os.getppid() != parent
            try:
                drain(spool_dir, sink, live=not finishing)
            except Exception:
                log.exception("ledger write failed; the events stay in the spool and are retried")
            if finishing:
                return
            stop.wait(interval_s)
    finally:
        ledger.close()


class LedgerWriter:
    def __init__(
        self,
        spool_dir: str | Path,
        ledger_target: str,
        config_path: str | Path | None,
        interval_s: float = 0.5,
    ) -> None:
        context = multiprocessing.get_context("spawn")
        self._stop = context.Event()
        self._process = context.Process(
            target=_run,
            args=(
                str(spool_dir),
                ledger_target,
                str(config_path) if config_path else None,
                interval_s,
                self._stop,
                os.getpid(),
            ),
            name="unitcost-ledger-writer",
            daemon=False,
        )

    def start(self) -> None:
        self._process.start()

    def stop(self, timeout: float = 120.0) -> None:
        """Ask for a last drain and wait for it."""
        self._stop.set()
        deadline = time.monotonic() + timeout
        self._process.join(timeout=max(deadline - time.monotonic(), 0))
        if self._process.is_alive():
            log.error("ledger writer did not finish in %.0f s; the spool keeps the rest", timeout)
            self._process.terminate()
