"""The ClickHouse ledger (chDB, in-process) against the DuckDB ledger, in the same run.

Both get the same priced events (the demo month tiled to --events, priced once) through
`Store.append` (idempotency check included), then answer the default `unitcost report`
view and a `--by team,model --period day` view. The two reports must be equal; timings are
the best of --repeat runs.

    python bench/clickhouse_report.py --events 1000000
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from datagen import tiled_events
from unitcost.api import Ledger
from unitcost.config import Config
from unitcost.pricing.book import PriceBook

VIEWS: dict[str, dict[str, Any]] = {
    "report (default view)": {"since": "2025-09-01", "until": "2025-10-01"},
    "report --by team,model --period day": {
        "since": "2025-09-01",
        "until": "2025-10-01",
        "by": "team,model",
        "period": "day",
    },
}


def best_of(repeat: int, run: Callable[[], Any]) -> tuple[float, Any]:
    best, result = float("inf"), None
    for _ in range(repeat):
        started = time.perf_counter()
        result = run()
        best = min(best, time.perf_counter() - started)
    return best, result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--chunk", type=int, default=200_000, help="events per append")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    book = PriceBook()
    started = time.perf_counter()
    events = tiled_events(args.events)
    print(f"generated {events.num_rows:,} events in {time.perf_counter() - started:.1f} s")

    with tempfile.TemporaryDirectory(prefix="unitcost-bench-") as tmp:
        targets = {"duckdb": f"{tmp}/ledger.duckdb", "chdb": f"chdb://{tmp}/ledger.chdb"}
        ledgers = {name: Ledger(target, book=book, config=Config()) for name, target in targets.items()}
        pricer = ledgers["duckdb"].ingestor()
        now = datetime.now(UTC)
        chunks = [
            pricer.price(events.slice(start, args.chunk), "bench", now)[0]
            for start in range(0, events.num_rows, args.chunk)
        ]
        reports: dict[str, dict[str, Any]] = {}
        for name, ledger in ledgers.items():
            started = time.perf_counter()
            inserted = sum(ledger.store.append(chunk).inserted for chunk in chunks)
            elapsed = time.perf_counter() - started
            print(
                f"{name:6} append {inserted:,} events: {elapsed:.2f} s ({inserted / elapsed:,.0f} events/s)"
            )
            started = time.perf_counter()
            again = sum(ledger.store.append(chunk).duplicates for chunk in chunks)
            print(f"{name:6} re-append (all duplicates, {again:,}): {time.perf_counter() - started:.2f} s")
            for view, query in VIEWS.items():
                seconds, report = best_of(
                    args.repeat, lambda ledger=ledger, q=query: ledger.report_sections(**q)
                )
                reports.setdefault(view, {})[name] = report
                print(f"{name:6} {view}: {seconds:.3f} s (best of {args.repeat})")
        for view, pair in reports.items():
            a, b = pair["duckdb"], pair["chdb"]
            same = all(
                getattr(a, s) == getattr(b, s) for s in ("headline", "rows", "periods", "units", "unpriced")
            )
            print(f"{view}: identical on both engines: {same}; spend {a.headline['spend']}")
            if not same:
                raise SystemExit("the engines disagree")
        for ledger in ledgers.values():
            ledger.close()


if __name__ == "__main__":
    main()
