"""Incremental detection at scale: one new hour of 100k events on a 10M-event ledger.

Builds a DuckDB ledger of `--events` events spread over the past hours (100k per hour,
written with DuckDB's own generator, not Python), lets the watcher catch up once, then
appends one new hour of `--hour-events` events and times the next cycle: rolling up the
new events (found through `ingested_at`), running every detector on the hourly rollups,
and writing incidents and watermarks. The first catch-up is timed too, for reference.

    .venv/bin/python bench/watch_incremental.py --events 10000000 --hour-events 100000
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from unitcost.ledger.duckdb_store import DuckDBStore
from unitcost.watch.runner import Watcher
from unitcost.watch.settings import WatchSettings

FEATURES = [
    ("support", "triage", "openai", "gpt-4o-mini"),
    ("support", "reply", "anthropic", "claude-sonnet-4-5"),
    ("search", "answer", "google", "gemini-2.5-flash"),
    ("search", "rewrite", "openai", "gpt-4.1-nano"),
    ("eng", "agent", "anthropic", "claude-sonnet-4-5"),
    ("legal", "review", "openai", "gpt-4.1"),
]


def insert_events(
    store: DuckDBStore, first: int, n: int, start: datetime, per_hour: int, ingested: datetime
) -> None:
    """Events first..first+n, `per_hour` of them per hour from `start`, built inside DuckDB."""

    def pick(column: int) -> str:
        return (
            "CASE (i % 6) "
            + " ".join(f"WHEN {i} THEN '{f[column]}'" for i, f in enumerate(FEATURES))
            + " END"
        )

    con = store._con  # the bench writes in bulk with SQL; the product writes through Ledger.ingest
    con.execute(
        f"""
        INSERT INTO events BY NAME
        SELECT 'ev-' || i AS event_id,
               ?::TIMESTAMPTZ
                 + to_microseconds(CAST((i // {per_hour}) * 3600000000 + (hash(i) % 3600000000) AS BIGINT)) AS ts,
               'tr-' || (i // 4) AS trace_id,
               {pick(0)} AS team, {pick(0)} AS app, {pick(1)} AS feature, {pick(2)} AS provider, {pick(3)} AS model,
               CASE WHEN hash(i * 7) % 100 = 0 THEN 'error' ELSE 'ok' END AS status,
               1 AS attempt,
               CAST(500 + hash(i * 3) % 4000 AS BIGINT) AS input_tokens,
               CAST(20 + hash(i * 5) % 600 AS BIGINT) AS output_tokens,
               CAST((500 + hash(i * 3) % 4000) * 0.000002 + (20 + hash(i * 5) % 600) * 0.000008
                    AS DECIMAL(18, 12)) AS cost,
               ?::TIMESTAMPTZ AS ingested_at
        FROM range({first}, {first + n}) t(i)
        """,
        [start, ingested],
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--hour-events", type=int, default=100_000)
    parser.add_argument("--dir", type=Path, default=None)
    args = parser.parse_args()
    hours = args.events // args.hour_events
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    start = now - timedelta(hours=hours + 1)
    with tempfile.TemporaryDirectory(prefix="unitcost-watch-bench-", dir=args.dir) as tmp:
        store = DuckDBStore(Path(tmp) / "ledger.duckdb")
        t = time.perf_counter()
        insert_events(store, 0, hours * args.hour_events, start, args.hour_events, now - timedelta(hours=1))
        store.checkpoint()
        print(
            f"built {hours * args.hour_events:,} events over {hours} hours in {time.perf_counter() - t:.1f} s"
        )
        watcher = Watcher(store, WatchSettings(), sinks=[])
        t = time.perf_counter()
        report = watcher.run_once(now=now - timedelta(hours=1), backfill_hours=0)
        caught_up = time.perf_counter() - t
        print(f"first catch-up (roll up everything once): {caught_up:.2f} s, {report.rollup.events:,} events")
        # Two new hours, one cycle each: the first also refreshes the daily runaway-trace norms
        # (a week of trace rollups), the second is what the other 23 cycles of a day cost.
        for step, label in ((0, "first cycle of the day (norms refreshed)"), (1, "typical hourly cycle")):
            insert_events(
                store,
                (hours + step) * args.hour_events,
                args.hour_events,
                start,
                args.hour_events,
                now + timedelta(hours=step),
            )
            t, cpu = time.perf_counter(), time.process_time()
            report = watcher.run_once(now=now + timedelta(hours=step))
            wall, cpu = time.perf_counter() - t, time.process_time() - cpu
            print(
                f"{label}: {wall:.2f} s wall ({cpu:.2f} s CPU, all threads) for "
                f"{report.rollup.events:,} new events ({report.hours_judged} hour judged, "
                f"{len(report.findings)} findings)"
            )
        t = time.perf_counter()
        report = watcher.run_once(now=now + timedelta(hours=1))
        print(f"idle cycle (nothing new): {time.perf_counter() - t:.2f} s")
        watcher.close(0)
        store.close()


if __name__ == "__main__":
    main()
