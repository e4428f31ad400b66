"""`unitcost export`: the ledger in the formats other tools read (FinOps FOCUS)."""

from __future__ import annotations

import csv
import enum
import sys
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TextIO

import typer
from rich.console import Console

from .app import ConfigOpt, LedgerOpt, PricesOpt, UserError, app, friendly, open_ledger

if TYPE_CHECKING:
    from ..analytics.focus import FocusExport

export_app = typer.Typer(help="Export the ledger for other tools: FinOps FOCUS for finance teams.")
app.add_typer(export_app, name="export")


class UnpricedPolicy(enum.StrEnum):
    fail = "fail"
    exclude = "exclude"


@export_app.command("focus")
@friendly
def focus_cmd(
    out: Annotated[str, typer.Argument(help="File to write: .csv or .parquet; - writes CSV to stdout.")],
    since: Annotated[
        str, typer.Option("--since", help="Start: an age (30d), a month (2025-09) or a date.")
    ] = "30d",
    until: Annotated[str | None, typer.Option("--until", help="End, excluded (default: now).")] = None,
    where: Annotated[
        list[str] | None,
        typer.Option("--where", "-w", help="Keep only these calls: team=search, tag:region=eu."),
    ] = None,
    tags: Annotated[
        str,
        typer.Option(
            "--tags", help="Attribution written into each charge's Tags (comma-separated; tag:<name> too)."
        ),
    ] = "team,app,feature,environment",
    billing_account: Annotated[
        str | None,
        typer.Option("--billing-account", help="BillingAccountId of every row (default: the provider's id)."),
    ] = None,
    unpriced: Annotated[
        UnpricedPolicy,
        typer.Option(
            "--unpriced",
            help="Calls with no price: fail (the default: a FOCUS file cannot carry an unknown cost) "
            "or exclude them from the file (counted in the summary).",
        ),
    ] = UnpricedPolicy.fail,
    ledger: LedgerOpt = None,
    config: ConfigOpt = None,
    prices: PricesOpt = None,
) -> None:
    """Write a FinOps FOCUS 1.2 cost and usage file: one row per day, model, price, attribution
    and cost component, the money exact and equal to `unitcost report`'s spend."""
    from ..analytics.focus import FocusError, export_focus

    target = _output(out)
    dims = [d.strip() for d in tags.split(",") if d.strip()]
    with open_ledger(ledger, config, prices, read_only=True) as book_ledger:
        try:
            result = export_focus(
                book_ledger,
                since=since,
                until=until,
                where=where or [],
                tags=dims,
                billing_account=billing_account,
                include_unpriced=unpriced is UnpricedPolicy.exclude,
            )
        except FocusError as exc:
            raise UserError(str(exc)) from None
    _write(result, target)
    _summary(result, out)


def _output(out: str) -> Path | None:
    if out == "-":
        return None
    path = Path(out)
    if path.suffix.lower() not in (".csv", ".parquet"):
        raise UserError(f"{out}: write a .csv or a .parquet file (or - for CSV on stdout)")
    if path.is_dir():
        raise UserError(f"{out} is a directory")
    return path


def _write(result: FocusExport, target: Path | None) -> None:
    if target is not None and target.suffix.lower() == ".parquet":
        import pyarrow.parquet as pq

        pq.write_table(result.table(), target)
        return
    if target is None:
        write_csv(result, sys.stdout)
        return
    with target.open("w", newline="", encoding="utf-8") as handle:
        write_csv(result, handle)


def write_csv(result: FocusExport, handle: TextIO) -> None:
    """FOCUS rows as CSV: money as plain exact decimals, times as ISO 8601 UTC, empty for null."""
    from ..analytics.focus import FOCUS_COLUMNS

    writer = csv.writer(handle, lineterminator="\n")
    writer.writerow(FOCUS_COLUMNS)
    for row in result.rows:
        writer.writerow([_cell(row[c]) for c in FOCUS_COLUMNS])


def _cell(value: Any) -> str:
    from ..analytics.focus import money_text

    if value is None:
        return ""
    if isinstance(value, Decimal):
        return money_text(value)
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%dT%H:%M:%SZ")
    return str(value)


def _summary(result: FocusExport, out: str) -> None:
    where = "stdout" if out == "-" else out
    lines = [
        f"Wrote {len(result.rows):,} FOCUS charges for {result.calls:,} calls to {where} "
        f"({result.window.since:%Y-%m-%d %H:%M} → {result.window.until:%Y-%m-%d %H:%M} UTC).",
        f"BilledCost ${money(result.billed)} · ListCost ${money(result.listed)} "
        f"(negotiated savings ${money(result.listed - result.billed)})",
    ]
    if result.unpriced.calls:
        lines.append(
            f"Left out: {result.unpriced.calls:,} calls with no price, {result.unpriced.tokens:,} tokens "
            "(cost unknown, not zero): "
            + ", ".join(f"{m} {n:,}" for m, n in result.unpriced.by_model.items())
        )
    if result.cache_hits:
        lines.append(f"Not a provider charge: {result.cache_hits:,} responses served from unitcost's cache.")
    # The file may be stdout: the summary goes to stderr.
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    for line in lines:
        err.print(line, markup=False, highlight=False)


def money(value: Decimal) -> str:
    return f"{value.quantize(Decimal('0.01')):,}"
