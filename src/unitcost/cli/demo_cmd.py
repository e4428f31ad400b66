"""`unitcost demo`: a seeded synthetic month, ingested through the real path, then reported."""

from __future__ import annotations

import math
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Annotated

import typer

from ..config import load_config
from .app import UserError, app, friendly
from .ledger_cmds import byte_progress, print_report
from .output import Format, console

DEMO_LEDGER = "unitcost-demo.duckdb"

_BROKEN_RECORDS = [
    '{"event_id": "demo-broken-1", "ts": "2025-09-12T10:00:00Z", "model": "gpt-4o", "input_tokens": -40}',
    '{"event_id": "demo-broken-2", "ts": "2035-09-12T10:00:00Z", "model": "gpt-4o", "input_tokens": 10}',
    '{"event_id": "demo-broken-3", "ts": "2025-09-12T10:00:00Z", "model": "gpt-4o", "input_tokens": 100, '
    '"cache_read_tokens": 400}',
    '{"event_id": "demo-broken-4", "ts": "2025-09-12T10:00:00Z", "model": "gpt-4o", "output_tokens": 12.5}',
]


@app.command("demo")
@friendly
def demo_cmd(
    ledger_text: Annotated[
        str,
        typer.Option(
            "--ledger",
            "-l",
            help="The DuckDB file to write the demo ledger to (replaced if it is a previous demo ledger).",
        ),
    ] = DEMO_LEDGER,
    seed: Annotated[int, typer.Option("--seed", min=0, help="Same seed, same month, to the event.")] = 7,
    scale: Annotated[
        float, typer.Option("--scale", help="Multiply the volume (1.0 is about 370k events).")
    ] = 1.0,
    by: Annotated[str, typer.Option("--by", help="Dimensions of the report table.")] = "team,feature",
) -> None:
    """Generate a realistic month (Sept 2025) into a fresh ledger and print the report."""
    from ..api import Ledger
    from ..demo.generator import generate

    if "://" in ledger_text:  # as a Path, `chdb://demo` would become a DuckDB file `chdb:/demo`
        raise UserError(
            f"--ledger {ledger_text}: the demo writes a DuckDB file (it replaces only a ledger it "
            "wrote itself); a ClickHouse ledger takes events with `unitcost ingest FILE --ledger "
            f"{ledger_text}` (docs/scale-out.md)"
        )
    ledger = Path(ledger_text)
    out = console()
    if not (math.isfinite(scale) and scale > 0):
        raise UserError(f"--scale must be a positive number (0.1 is a tenth of the volume), not {scale}")
    _check_dimensions(by)  # a typo in --by must not cost the whole month's generation first
    replace = _previous_demo(ledger)  # refuses any other file before anything is done
    started = time.perf_counter()
    month = generate(seed=seed, scale=scale)
    if replace:  # only once the new month exists: a failure above leaves the old ledger as it was
        _remove(ledger)
    out.print(
        f"Generated {month.events.num_rows:,} calls for September 2025 (seed {seed}) in "
        f"{time.perf_counter() - started:.1f} s. Planted: " + "; ".join(month.notes) + ".",
        markup=False,
    )

    with tempfile.TemporaryDirectory(prefix="unitcost-demo-") as tmp:
        events_file = Path(tmp) / "events.jsonl"
        outcomes_file = Path(tmp) / "outcomes.csv"
        import duckdb

        con = duckdb.connect()
        con.execute("SET TimeZone = 'UTC'")
        con.register("events", month.events)
        con.register("outcomes", month.outcomes)
        con.execute(f"COPY events TO '{events_file}' (FORMAT JSON)")
        con.execute(f"COPY outcomes TO '{outcomes_file}' (FORMAT CSV, HEADER)")
        con.close()
        with open(events_file, "a", encoding="utf-8") as handle:
            handle.write("\n".join(_BROKEN_RECORDS) + "\n")

        with Ledger(ledger, config=load_config()) as book_ledger:
            book_ledger.store.insert_meta("demo", "true")  # lets the next demo run replace this file
            started = time.perf_counter()
            with byte_progress(events_file.stat().st_size, "ingest", True) as advance:
                summary = book_ledger.ingest(events_file, progress=advance)
            elapsed = time.perf_counter() - started
            rate = (summary.seen / elapsed) if elapsed else 0
            out.print(
                f"Ingested {events_file.name}: {summary.accepted:,} accepted, {summary.rejected} rejected, "
                f"{summary.unpriced:,} without a price, in {elapsed:.1f} s ({rate:,.0f} records/s).",
                markup=False,
            )
            for rejection in summary.rejections[:10]:
                out.print(
                    f"  rejected line {rejection.record}: {rejection.field}: {rejection.reason}", markup=False
                )
            again = book_ledger.ingest(events_file)
            out.print(
                f"Ingested it again: {again.accepted} accepted, {again.duplicates:,} duplicates "
                "(idempotent on event_id).",
                markup=False,
            )
            outcomes = book_ledger.import_outcomes(outcomes_file)
            out.print(
                f"Imported {outcomes.recorded:,} outcomes (ticket solved, document reviewed, task done).",
                markup=False,
            )
            out.print("", markup=False)
            report = book_ledger.report_sections("2025-09-01", "2025-10-01", by=by)
            print_report(report, Format.table)
            from ..demo.generator import MONTH_DAYS, MONTH_START
            from ..watch.demo import print_demo_alerts

            out.print("", markup=False)
            print_demo_alerts(book_ledger.store, out, MONTH_START + timedelta(days=MONTH_DAYS), MONTH_DAYS)
    out.print("", markup=False)
    out.print(f"The ledger is {ledger}. Explore it, for example:", markup=False)
    for example in (
        f"unitcost report -l {ledger} --since 2025-09-01 --until 2025-10-01 --by model",
        f"unitcost report -l {ledger} --since 2025-09-01 --until 2025-10-01 --by feature --period week",
        f"unitcost report -l {ledger} --since 2025-09-17 --until 2025-09-18 --by trace_id --top 5",
        f"unitcost alerts -l {ledger} --status open",
        "unitcost prices show deepseek-chat",
        "unitcost price claude-sonnet-4-5 --input 30000 --cache-write-1h 25000 --output 800 --at 2025-09-10",
    ):
        out.print(f"  {example}", markup=False)


def _check_dimensions(by: str) -> None:
    from ..analytics.dialect import dialect_for
    from ..analytics.report import dimension_sql

    for name in by.split(","):
        if name.strip():
            dimension_sql(name, dialect_for("duckdb"))


def _previous_demo(path: Path) -> bool:
    """True for a previous demo ledger (to replace), False for no file; any other file is refused."""
    if not path.exists():
        return False
    import duckdb

    try:
        con = duckdb.connect(str(path), read_only=True)
        try:
            rows = con.execute("SELECT value FROM meta WHERE key = 'demo'").fetchall()
            row = rows[0] if rows else None
        finally:
            con.close()
    except duckdb.IOException as exc:
        if "lock" not in str(exc).lower():
            raise UserError(f"{path} exists and is not a demo ledger; choose another --ledger") from exc
        # Another process (`unitcost serve`, a notebook, a `watch` loop) has it open: it may well
        # be a demo ledger, and it cannot be replaced while it is open.
        raise UserError(
            f"{path} is open in another process, so the demo can neither check nor replace it: "
            "close it (or stop that process) and run the demo again, or choose another --ledger"
        ) from exc
    except duckdb.Error:
        row = None
    if not row or row[0] != "true":
        raise UserError(f"{path} exists and is not a demo ledger; choose another --ledger")
    return True


def _remove(path: Path) -> None:
    path.unlink()
    wal = path.with_name(path.name + ".wal")
    if wal.exists():
        wal.unlink()
