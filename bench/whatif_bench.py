"""What-if over a large selection against 5 alternatives: one SQL aggregation, exact pricing of groups.

Build the ledger once (a few minutes for 10M events):

    python bench/datagen.py --events 10000000 --out bench/out/events-10m.parquet
    unitcost ingest bench/out/events-10m.parquet --ledger bench/out/whatif-10m.duckdb

then:

    python bench/whatif_bench.py --ledger bench/out/whatif-10m.duckdb
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from unitcost.analytics.window import Window
from unitcost.api import Ledger
from unitcost.compare.levers import Settings, run_levers
from unitcost.compare.whatif import (
    Alternative,
    CacheAssumption,
    needed_cuts,
    needs_recorded_models,
    run_whatif,
)
from unitcost.compare.workload import load_workload
from unitcost.config import Config
from unitcost.money import pico_to_usd

ALTERNATIVES = [
    "anthropic:claude-sonnet-4-5",
    "deepseek:deepseek-chat@2025-10-05",
    "openai:gpt-5-mini",
    "google:gemini-2.5-flash",
    "openai:gpt-4o-mini/batch",
]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--ledger", required=True)
    parser.add_argument("--since", default="2025-09-01")
    parser.add_argument("--until", default="2025-10-01")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    window = Window.parse(args.since, args.until)
    with Ledger(args.ledger, config=Config(), read_only=True) as ledger:
        alts = [Alternative.parse(a) for a in ALTERNATIVES]
        alts.append(Alternative.parse("anthropic:claude-haiku-4-5", cache=CacheAssumption.parse("prefix")))
        alts = alts[:5]
        cuts = needed_cuts(ledger.book, alts, window)
        n_events = int(ledger.sql("SELECT count(*) AS n FROM events")["n"].iloc[0])
        print(f"ledger: {n_events:,} events; alternatives: {', '.join(a.label for a in alts)}")
        print(f"load average before the run: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")
        floor = []
        for _ in range(args.repeat):
            started = time.perf_counter()
            since, until = window.since.isoformat(), window.until.isoformat()
            ledger.store.fetch(
                "SELECT count(*) AS n, sum(cost) AS c FROM events "
                f"WHERE ts >= TIMESTAMPTZ '{since}' AND ts < TIMESTAMPTZ '{until}'"
            )
            floor.append(time.perf_counter() - started)
        print(
            f"reference scan (count and sum(cost) of the selection): median {statistics.median(floor):.2f} s"
        )
        for with_units in (False, True):
            timings = []
            for _ in range(args.repeat):
                started = time.perf_counter()
                cpu_started = time.process_time()
                workload = load_workload(
                    ledger.store,
                    window,
                    [],
                    cuts,
                    with_units=with_units,
                    with_recorded_models=needs_recorded_models(alts),
                )
                loaded = time.perf_counter()
                result = run_whatif(ledger.book, workload, alts)
                done = time.perf_counter()
                timings.append(
                    (done - started, loaded - started, done - loaded, time.process_time() - cpu_started)
                )
            total, sql, pricing, cpu = (statistics.median(t[i] for t in timings) for i in range(4))
            what = "with units and successes" if with_units else "totals and components"
            print(
                f"whatif ({what}): {workload.calls:,} priced calls in {len(workload.groups)} groups, "
                f"median of {args.repeat}: {total:.2f} s wall (SQL aggregation {sql:.2f} s, pricing {pricing:.3f} s), "
                f"{cpu:.2f} s CPU over all threads"
            )
        for row in result.rows():
            print(f"  {row['scenario']:<40} {row.get('total')}")
        started = time.perf_counter()
        settings = Settings.build()
        light = [Alternative(provider=p, model=m) for p, m in settings.light.items()]
        workload = load_workload(
            ledger.store, window, [], needed_cuts(ledger.book, light, window), with_units=False
        )
        baseline, levers = run_levers(ledger.book, workload, settings)
        print(
            f"levers: {len(levers)} rows on {pico_to_usd(baseline.total):,.2f} USD in "
            f"{time.perf_counter() - started:.2f} s"
        )


if __name__ == "__main__":
    main()
