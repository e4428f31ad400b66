"""The benchmark ledger in about a minute, without ingesting gigabytes of JSONL.

    .venv/bin/python bench/build_ledger.py --events 10000000    # -> bench/out/bench.duckdb

It holds the same events as the ledger `bench/ledger_bench.py` builds with `unitcost ingest`
of the tiled JSONL file: the demo month (`bench/datagen.py`'s tile) goes through the real
ingest path once (checked, priced, appended), then DuckDB copies it tile after tile with
the fresh event ids datagen gives each tile (`<id>-x<tile>`) and the source label the file
ingest writes. Prices do not depend on event ids, so every copy carries the costs the
ingest computes. Last, the ledger is opened for writing once, which rolls up the copied
events for reports (they were written behind the ledger's back); that step is timed.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import duckdb
import pyarrow.parquet as pq

from unitcost.api import Ledger
from unitcost.config import Config
from unitcost.demo.generator import generate
from unitcost.ledger.duckdb_store import DuckDBStore

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--out", type=Path, default=HERE / "out" / "bench.duckdb")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    n, out = args.events, args.out
    label = f"file:events-{n // 1_000_000}m.jsonl" if n % 1_000_000 == 0 else f"file:events-{n}.jsonl"
    out.parent.mkdir(parents=True, exist_ok=True)
    for stale in (out, out.with_name(out.name + ".wal")):
        stale.unlink(missing_ok=True)

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        month = Path(tmp) / "month.parquet"
        pq.write_table(generate(seed=args.seed).events, month)
        base = Path(tmp) / "month.duckdb"
        with Ledger(base, config=Config()) as ledger:
            summary = ledger.ingest(month)
        print(f"demo month: {summary.accepted:,} events ingested in {time.perf_counter() - started:.1f} s")

        DuckDBStore(out).close()  # an empty ledger at the current schema
        con = duckdb.connect(str(out))
        con.execute("SET TimeZone = 'UTC'")
        con.execute(f"ATTACH '{base}' AS month (READ_ONLY)")
        tile, left = 0, n
        while left > 0:
            con.execute(
                "INSERT INTO events BY NAME SELECT * REPLACE "
                f"(event_id || '-x{tile}' AS event_id, '{label}' AS source) "
                f"FROM month.events LIMIT {left}"
            )
            left -= summary.accepted
            tile += 1
        con.execute("DETACH month")
        con.close()
    print(f"{n:,} events copied into {out} ({tile} tiles) in {time.perf_counter() - started:.1f} s")

    started = time.perf_counter()
    DuckDBStore(out).close()
    print(f"opened for writing once (report rollups built): {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
