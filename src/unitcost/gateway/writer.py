"""The ledger writer: a separate process that moves spooled events into the ledger.

It owns the ledger's write connection (DuckDB allows one writer process), drains the spool
into the ledger (`ledger_sink`), and exits after a last drain when the gateway asks it to
stop. When the gateway process dies (`kill -9`, a crash), the kernel kills the writer with it
(Linux: `PR_SET_PDEATHSIG`), as a container's end would: the writer is niced, so under load an
orphan could need many seconds, even minutes, to finish a drain, and all that time it would
hold the ledger's lock and make the restarted gateway fail to open the ledger. Nothing is lost
by killing it: the checkpoint moves only after the ledger committed a batch, DuckDB rolls back
what was not committed, and the next start replays the spool after the checkpoint (ingestion
is idempotent on event_id). Elsewhere the writer notices its parent is gone within `POLL_S`,
drains once more and exits.

It must not take the CPU the request path needs. A drain costs a fixed tens of milliseconds
(the ingest pipeline's checks and the DuckDB transaction) whether it carries ten events or
thousands; when that was a few hundred, draining every half second under steady traffic kept
about half a core busy. Drains are therefore spaced by at least `interval_s` and by `BACKOFF` times the
CPU the last drain took (up to `MAX_WAIT_S`), which caps the writer near a tenth of a core
and makes batches larger as traffic grows. And it gives way to the request path:

- DuckDB runs each query on one thread (`THREADS`): a drain never holds more than one core,
  so the request path always has the others. (A drain of a few hundred events takes the same
  CPU either way, measured; its SQL is planned and run as one pipeline.)
- The process runs at a lower CPU priority (`NICE`), so when it competes with the gateway
  for a core, the gateway wins. (Not SCHED_IDLE: on a busy host it would starve, and the
  ledger would fall minutes behind the spool.)
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import sys
import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

log = logging.getLogger("unitcost.gateway.writer")

NICE = 10
THREADS = 1
INTERVAL_S = 1.0
"""Drains are at least this far apart: each costs a fixed tens of milliseconds of CPU, so the
writer's share of a core is about that cost per interval (a second keeps it to a few per cent
under steady traffic; the ledger is then a second or so behind the spool)."""
BACKOFF = 9.0
"""The writer waits at least this many times its last drain's CPU time before the next."""
MAX_WAIT_S = 10.0
"""However costly a drain was, the next one starts within this."""
POLL_S = 0.5

# What the writer has done, in memory it shares with the gateway (a multiprocessing array of
# doubles, exact for counts up to 2**53), so the gateway's /metrics can report it.
ACCEPTED, DUPLICATES, REJECTED, FAILED_DRAINS, LAST_DRAIN = range(5)
STAT_SLOTS = 5


def pause_after(interval_s: float, drain_cpu_s: float) -> float:
    """Seconds to wait after a drain that took `drain_cpu_s` of CPU."""
    return max(interval_s, min(BACKOFF * drain_cpu_s, MAX_WAIT_S))


def typed_records(batch: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]] | None:
    """The spooled records with their timestamps parsed, ready for the typed ingest path; None
    when a record has a field the ledger does not know or a timestamp that is missing or does
    not parse (the general path then names the record and the problem)."""
    from ..events import FIELD_BY_NAME

    out = []
    for record in batch:
        if not record.keys() <= FIELD_BY_NAME.keys():
            return None
        ts = record.get("ts")
        if not isinstance(ts, str):
            return None
        try:
            typed = {**record, "ts": datetime.fromisoformat(ts)}
            billed = record.get("billed_cost")
            if billed is not None:
                # Spooled as decimal text (JSON has no decimal type); the money column takes a Decimal.
                typed["billed_cost"] = Decimal(billed) if isinstance(billed, str) else billed
        except (ValueError, ArithmeticError):
            return None
        out.append(typed)
    return out


def ledger_sink(ledger: Any, stats: Any = None) -> Any:
    """Spooled events -> the ledger, through the same checks and pricing as every source.

    The spool holds the gateway's own records, already of the right types once their timestamps
    are parsed, so they go in as typed columns (`ingest_typed`, as the OTLP receiver does)
    rather than as JSON that the checks parse again: a drain of 250 events took about a
    quarter of the CPU (measured 45 against 180 ms). A batch with anything unexpected takes
    the general path. `stats` (the writer's shared counters) counts what each batch became.
    """
    from ..connectors.typed import ingest_typed

    def sink(batch: Sequence[Mapping[str, Any]]) -> None:
        typed = typed_records(batch)
        if typed is None:
            summary = ledger.ingest_records(batch, source="gateway")
        else:
            summary = ingest_typed(ledger.ingestor(), typed, source="gateway")
        for rejection in summary.rejections[:10]:
            log.error("gateway event rejected by the ledger: %s", rejection)
        if stats is not None:
            stats[ACCEPTED] += summary.accepted
            stats[DUPLICATES] += summary.duplicates
            stats[REJECTED] += summary.rejected

    return sink


def die_with_parent() -> bool:
    """Have the kernel SIGKILL this process when its parent dies; False where that is not offered.

    The signal follows the parent *thread* that started this process: the gateway starts the
    writer from its main thread, which lives as long as the gateway does.
    """
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    pr_set_pdeathsig = 1
    libc = ctypes.CDLL(None, use_errno=True)
    return int(libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)) == 0


def _run(
    spool_dir: str,
    ledger_target: str,
    config_path: str | None,
    interval_s: float,
    stop: Any,
    parent: int,
    watch: bool = False,
    stats: Any = None,
) -> None:
    if die_with_parent() and os.getppid() != parent:
        return  # the gateway died before the kernel was told: its next start replays the spool
    # A terminal's Ctrl-C and systemd's SIGTERM reach the whole process group, this process too:
    # it must end as when the gateway asks (a last drain, a last watch cycle, deliveries logged),
    # not die in the middle of a wait. SIGINT is the gateway's to act on: it then sets `stop`.
    terminated: list[int] = []
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda signum, frame: terminated.append(signum))
    from ..api import Ledger
    from ..config import load_config
    from .spool import drain

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # One line per webhook delivery of the watch is noise (the sinks log what failed themselves).
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)
    with contextlib.suppress(OSError):
        os.nice(NICE)  # before DuckDB starts its threads: they inherit it
    config = load_config(config_path)
    ledger = Ledger(ledger_target, config=config, threads=THREADS)
    sink = ledger_sink(ledger, stats)
    watcher = None
    if watch:
        try:
            watcher = _watcher(ledger, config)
        except Exception:  # the gateway checked it (LedgerWriter); the drains must go on regardless
            log.exception("the watch cannot run in the ledger writer; the spool is still drained")
    next_watch = time.monotonic()

    def gateway_gone() -> bool:
        return stop.is_set() or bool(terminated) or os.getppid() != parent

    try:
        while True:
            finishing = gateway_gone()
            started = time.process_time()  # all threads: DuckDB's too
            try:
                drain(spool_dir, sink, live=not finishing)
            except Exception:
                log.exception("ledger write failed; the events stay in the spool and are retried")
                if stats is not None:
                    stats[FAILED_DRAINS] += 1
            else:
                if stats is not None:
                    stats[LAST_DRAIN] = time.time()
            if watcher is not None and (finishing or time.monotonic() >= next_watch):
                # Between two drains, on the one connection; its CPU counts in the pause below.
                try:
                    watcher.run_once()
                except Exception:  # the next cycle starts from the same watermarks
                    log.exception("watch cycle failed")
                next_watch = time.monotonic() + watcher.settings.interval_s
            if finishing:  # after a last drain, and a last watch cycle over it
                return
            resume = time.monotonic() + pause_after(interval_s, time.process_time() - started)
            # Wait in short slices: a gateway killed meanwhile is noticed within POLL_S, and a
            # command waiting for the ledger (`unitcost report`) gets it; the next drain takes it back.
            while not gateway_gone() and time.monotonic() < resume:
                _yield(ledger)
                stop.wait(min(POLL_S, max(resume - time.monotonic(), 0)))
    finally:
        if watcher is not None:
            watcher.close(5.0)  # deliveries under way get a few seconds to be logged
        ledger.close()


def _yield(ledger: Any) -> None:
    try:
        ledger.yield_to_waiters()
    except Exception:  # closing a connection should not fail; if it does, keep draining
        log.exception("could not give the ledger up to a waiting command")


def _watcher(ledger: Any, config: Any) -> Any:
    from ..watch.runner import Watcher
    from ..watch.settings import load_watch_settings

    return Watcher(ledger.store, load_watch_settings(config))


def check_watch(config_path: str | Path | None) -> None:
    """Raise what would stop the writer process's watch (a [watch] mistake, a sink without a
    URL), so the gateway refuses to start rather than run without it."""
    from ..config import load_config
    from ..watch.settings import load_watch_settings
    from ..watch.sinks import build_sinks

    build_sinks(load_watch_settings(load_config(config_path)).sinks)


class LedgerWriter:
    def __init__(
        self,
        spool_dir: str | Path,
        ledger_target: str,
        config_path: str | Path | None,
        interval_s: float = INTERVAL_S,
        *,
        watch: bool = False,
    ) -> None:
        if watch:
            check_watch(config_path)
        context = multiprocessing.get_context("spawn")
        self._stop = context.Event()
        self.stats: Any = context.Array("d", STAT_SLOTS, lock=False)
        """The writer's counters (indexes ACCEPTED ... LAST_DRAIN), written by its process only."""
        self._process = context.Process(
            target=_run,
            args=(
                str(spool_dir),
                ledger_target,
                str(config_path) if config_path else None,
                interval_s,
                self._stop,
                os.getpid(),
                watch,
                self.stats,
            ),
            name="unitcost-ledger-writer",
            daemon=False,
        )

    def start(self) -> None:
        self._process.start()

    def alive(self) -> bool:
        return self._process.is_alive()

    def stop(self, timeout: float = 120.0) -> None:
        """Ask for a last drain and wait for it."""
        self._stop.set()
        deadline = time.monotonic() + timeout
        self._process.join(timeout=max(deadline - time.monotonic(), 0))
        if self._process.is_alive():
            log.error("ledger writer did not finish in %.0f s; the spool keeps the rest", timeout)
            self._process.terminate()
