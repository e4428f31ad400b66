"""Event files for the benchmarks: the demo month, tiled to any size, as compact JSONL/CSV/Parquet.

Compact means what an exporter writes: fields that are null or at their default are left
out, so lines look like real usage records (about 350 bytes) rather than every column.

    python bench/datagen.py --events 1000000 --out bench/out/events-1m.jsonl
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from unitcost.demo.generator import generate
from unitcost.events import FIELD_BY_NAME


def tiled_events(n: int, seed: int = 7) -> pa.Table:
    """`n` events: the demo month repeated with fresh event ids (and shifted users)."""
    month = generate(seed=seed).events
    reps = -(-n // month.num_rows)
    tables = []
    for rep in range(reps):
        ids = pc.binary_join_element_wise(
            pc.cast(month.column("event_id"), pa.string()), pa.scalar(f"x{rep}"), "-"
        )
        tables.append(month.set_column(month.schema.get_field_index("event_id"), "event_id", ids))
    return pa.concat_tables(tables).slice(0, n)


def _compact(row: dict) -> dict:
    out = {}
    for key, value in row.items():
        if value is None or value in ([], {}):
            continue
        default = FIELD_BY_NAME[key].default
        if default is not None and value == default and key not in ("input_tokens", "output_tokens"):
            continue
        if key == "ts":
            out[key] = value.isoformat().replace("+00:00", "Z")
        elif key == "tags":
            out[key] = dict(value)
        elif not (isinstance(value, float) and math.isnan(value)):
            out[key] = value
    return out


def write_jsonl(table: pa.Table, path: Path) -> None:
    partial = path.with_name(path.name + ".partial")  # a killed run leaves no half file behind
    with open(partial, "wb") as handle:
        for batch in table.to_batches(max_chunksize=50_000):
            lines = [orjson.dumps(_compact(row)) for row in batch.to_pylist()]
            handle.write(b"\n".join(lines) + b"\n")
    partial.replace(path)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    started = time.perf_counter()
    table = tiled_events(args.events, args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    suffix = args.out.suffix
    if suffix == ".parquet":
        pq.write_table(table, args.out)
    elif suffix == ".jsonl":
        write_jsonl(table, args.out)
    else:
        raise SystemExit("--out must end with .jsonl or .parquet")
    size = args.out.stat().st_size
    print(
        f"wrote {args.events:,} events ({size / 1e6:.0f} MB, {size / args.events:.0f} B/event) to {args.out} "
        f"in {time.perf_counter() - started:.1f} s"
    )


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
