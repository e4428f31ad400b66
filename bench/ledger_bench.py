"""`unitcost ingest` and `unitcost report` at scale, as a user runs them (the CLI, in a subprocess).

    .venv/bin/python bench/ledger_bench.py                  # 1M-event ingest, 10M ingest + report
    .venv/bin/python bench/ledger_bench.py --sizes 1000000  # only the 1M ingest

For each size it writes a compact JSONL file of the demo month tiled to that many events
(once; kept in bench/out/), ingests it into a fresh DuckDB ledger with `unitcost ingest`,
and records wall time and the peak RSS of the ingesting process. On the largest ledger it
then times `unitcost report` (the default table view, by model, over the month): the
whole command, Python start-up included, and the query alone from Python, wall and CPU
time (the CPU figures are what to compare on a busy machine).

`--report-only` times the report on the ledger already in bench/out/bench.duckdb;
`bench/build_ledger.py` builds the same 10M-event ledger in two minutes instead of the
ingest's several.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"
BIN = Path(sys.executable).parent / "unitcost"
WINDOW = ["--since", "2025-09-01", "--until", "2025-10-01"]


def run(args: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of one command."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    started = time.perf_counter()
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL, env={**os.environ, "NO_COLOR": "1"})
    elapsed = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return elapsed, max(peak, before) / 1024


def peak_rss_of(args: list[str]) -> tuple[float, float, float]:
    """Like run(), but measures the child alone (RUSAGE_CHILDREN keeps the max of all children):
    wall seconds, peak RSS (MiB) and CPU seconds (user + system, all of its threads)."""
    code = (
        "import resource, subprocess, sys, time;"
        "t = time.perf_counter();"
        "subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL);"
        "u = resource.getrusage(resource.RUSAGE_CHILDREN);"
        "print(time.perf_counter() - t, u.ru_maxrss / 1024, u.ru_utime + u.ru_stime)"
    )
    out = subprocess.run([sys.executable, "-c", code, *args], check=True, capture_output=True, text=True)
    elapsed, rss, cpu = out.stdout.split()
    return float(elapsed), float(rss), float(cpu)


def ensure_file(n: int) -> Path:
    path = OUT / f"events-{n // 1_000_000}m.jsonl" if n % 1_000_000 == 0 else OUT / f"events-{n}.jsonl"
    if not path.exists():
        subprocess.run(
            [sys.executable, str(HERE / "datagen.py"), "--events", str(n), "--out", str(path)], check=True
        )
    return path


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="1000000,10000000", help="comma-separated event counts")
    parser.add_argument("--repeat", type=int, default=5, help="report runs")
    parser.add_argument("--report-only", action="store_true", help="time the report on the existing ledger")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    print(
        f"machine: {platform.machine()}, {len(os.sched_getaffinity(0))} cores, Python {platform.python_version()}"
    )
    ledger = OUT / "bench.duckdb"
    for n in [] if args.report_only else sizes:
        path = ensure_file(n)
        for stale in (ledger, ledger.with_name(ledger.name + ".wal")):
            stale.unlink(missing_ok=True)
        load = os.getloadavg()[0]
        elapsed, rss, cpu = peak_rss_of([str(BIN), "ingest", str(path), "--ledger", str(ledger)])
        size = path.stat().st_size / 1e6
        print(
            f"ingest {n:,} events ({size:,.0f} MB JSONL): {elapsed:.1f} s, {n / elapsed:,.0f} events/s, "
            f"CPU {cpu:.1f} s, peak RSS {rss:,.0f} MiB (load average {load:.1f} before, "
            f"{os.getloadavg()[0]:.1f} after)"
        )

    report = [str(BIN), "report", "--ledger", str(ledger), *WINDOW]
    subprocess.run(report, check=True, stdout=subprocess.DEVNULL)  # warm the OS file cache
    print(f"load average before the report runs: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    walls, cpus = [], []
    for _ in range(args.repeat):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        walls.append(run(report)[0])
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
    median, best = statistics.median(walls), min(walls)
    print(
        f"unitcost report (whole command, {sizes[-1]:,} events): median {median:.2f} s, best {best:.2f} s; "
        f"CPU median {statistics.median(cpus):.2f} s"
    )

    from unitcost import Ledger

    with Ledger(str(ledger), read_only=True) as book_ledger:
        times, cpus = [], []
        for _ in range(args.repeat):
            started, cpu = time.perf_counter(), time.process_time()
            book_ledger.report_sections("2025-09-01", "2025-10-01", by="model")
            times.append(time.perf_counter() - started)
            cpus.append(time.process_time() - cpu)
    print(
        f"report query from Python: median {statistics.median(times):.2f} s, best {min(times):.2f} s; "
        f"CPU median {statistics.median(cpus):.2f} s"
    )


if __name__ == "__main__":
    main()
