"""`unitcost ingest`, `report`, `outcomes`, `reprice`: the ledger from the command line."""

from __future__ import annotations

import contextlib
import dataclasses
import re
import shlex
import sys
from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ..analytics.report import KPI_COLUMNS, PERIOD_SPAN_COLUMNS, TREND_COLUMNS, bucket_end
from ..money import format_usd
from ..utc import as_utc
from .app import (
    ConfigOpt,
    FormatOpt,
    LedgerOpt,
    PricesOpt,
    app,
    friendly,
    open_ledger,
    require_ledger,
    where_the_events_are,
)
from .output import Col, Format, console, print_json, render, sparkline

if TYPE_CHECKING:
    from ..analytics.report import Report
    from ..analytics.window import Window
    from ..ingest.normalise import Rejection
    from ..ingest.pipeline import IngestSummary


@contextlib.contextmanager
def byte_progress(total: int | None, label: str, enabled: bool) -> Iterator[Any]:
    """A progress bar of bytes read; `total` None (standard input) shows the bytes alone."""
    if not enabled:
        yield lambda _n: None
        return
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TimeRemainingColumn(),
        console=console(),
        transient=True,
    ) as progress:
        task = progress.add_task(label, total=total)
        yield lambda n: progress.advance(task, n)


STDIN = "-"


@app.command("ingest")
@friendly
def ingest_cmd(
    files: Annotated[
        list[str],
        typer.Argument(
            help="JSONL, CSV or Parquet files in unitcost's event schema, gzipped or not; "
            "- reads JSON lines (or --input-format csv) from standard input.",
            show_default=False,
        ),
    ],
    file_format: Annotated[
        str | None,
        typer.Option("--input-format", help="jsonl, csv or parquet (default: from the file name)."),
    ] = None,
    rejects: Annotated[
        Path | None,
        typer.Option(
            "--rejects", help="Write every rejected record (line, field, reason) to this JSONL file."
        ),
    ] = None,
    allow_unknown: Annotated[
        bool,
        typer.Option(
            "--allow-unknown-fields",
            help="Ignore fields that are not in the event schema instead of rejecting the record.",
        ),
    ] = False,
    show: Annotated[int, typer.Option("--show", help="How many rejections to print.")] = 20,
    fmt: FormatOpt = Format.table,
    ledger: LedgerOpt = None,
    config: ConfigOpt = None,
    prices: PricesOpt = None,
) -> None:
    """Check, price and append events. Idempotent: re-ingesting a file changes nothing.

    A file that cannot be read is named with the reason and the others are still ingested;
    the exit status is 2 then, 1 when records were rejected, 0 when all went in."""
    from ..ingest.pipeline import IngestSummary

    if files.count(STDIN) > 1:
        raise typer.BadParameter("standard input (-) can be read only once", param_hint="files")
    out = console()
    with open_ledger(ledger, config, prices) as book_ledger:
        total = IngestSummary()
        unreadable: list[tuple[str, str]] = []
        shown: list[tuple[str, Rejection]] = []  # the rejections to print, with their file
        sink = open(rejects, "w", encoding="utf-8") if rejects else None  # noqa: SIM115 - closed below
        try:
            for name in files:
                summary, error = _ingest_one(book_ledger, name, file_format, allow_unknown, sink, fmt)
                if summary is not None:
                    total.merge(summary)
                    label = "stdin" if name == STDIN else name
                    shown.extend((label, r) for r in summary.rejections[: max(show - len(shown), 0)])
                if error is not None:
                    unreadable.append((name, error))
                if fmt == Format.table:
                    out.print(_file_line(name, summary, error), markup=False)
        finally:
            if sink:
                sink.close()
        _print_summary(total, fmt, shown, rejects, book_ledger.target, unreadable, several=len(files) > 1)
    if unreadable:
        raise typer.Exit(2)
    if total.rejected:
        raise typer.Exit(1)


def _ingest_one(
    book_ledger: Any,
    name: str,
    file_format: str | None,
    allow_unknown: bool,
    sink: Any,
    fmt: Format,
) -> tuple[IngestSummary | None, str | None]:
    """One file (or standard input) into the ledger: its summary, and why it could not be read
    (whole or in part) if it could not. A file's problem never stops the files after it."""
    from ..ingest.pipeline import PartlyIngestedError
    from ..ingest.readers import IngestFileError

    interactive = fmt == Format.table and sys.stderr.isatty()
    if name != STDIN and Path(name).is_dir():
        return None, f"{name}: is a directory (pass the files in it, e.g. {name}/*.jsonl)"
    try:
        size = None if name == STDIN else Path(name).stat().st_size
        with byte_progress(size, "stdin" if name == STDIN else Path(name).name, interactive) as advance:
            if name == STDIN:
                ingestor = book_ledger.ingestor(allow_unknown_fields=allow_unknown, rejects=sink)
                with book_ledger.store.bulk():
                    return ingestor.ingest_stream(sys.stdin.buffer, fmt=file_format, progress=advance), None
            return book_ledger.ingest(
                Path(name),
                fmt=file_format,
                progress=advance,
                allow_unknown_fields=allow_unknown,
                rejects=sink,
            ), None
    except PartlyIngestedError as exc:
        return exc.summary, str(exc)
    except IngestFileError as exc:
        return None, str(exc)
    except OSError as exc:
        return None, f"{name}: {exc.strerror or exc}"


def _file_line(name: str, summary: IngestSummary | None, error: str | None) -> str:
    label = "stdin" if name == STDIN else name
    if error is not None:
        error = error.removeprefix(f"{name}: ").removeprefix(f"{label}: ")
    if summary is None or (error is not None and not summary.seen):
        return f"{label}: not ingested: {error}"
    counts = (
        f"{summary.accepted:,} accepted, {summary.duplicates:,} duplicates, "
        f"{summary.rejected:,} rejected, {summary.unpriced:,} without a price"
    )
    return f"{label}: {counts}" if error is None else f"{label}: {counts}, then stopped: {error}"


def _print_summary(
    total: IngestSummary,
    fmt: Format,
    shown: list[tuple[str, Rejection]],
    rejects: Path | None,
    target: str,
    unreadable: list[tuple[str, str]],
    *,
    several: bool,
) -> None:
    out = console()
    # With several files, a line number alone does not say where the record is.
    rows = [
        {**({"file": name} if several else {}), "record": r.record, "field": r.field, "reason": r.reason}
        for name, r in shown
    ]
    data = {
        "accepted": total.accepted,
        "duplicates": total.duplicates,
        "rejected": total.rejected,
        "unpriced": total.unpriced,
        "ledger": target,
        "rejected_by_field": dict(total.rejected_by_field.most_common()),
        "rejections": rows,
        "unreadable_files": [{"file": name, "error": error} for name, error in unreadable],
    }
    if fmt == Format.json:
        print_json(data, out)
        return
    out.print(
        f"total: {total.accepted:,} accepted, {total.duplicates:,} duplicates (already in {target} "
        "or earlier in the input), "
        f"{total.rejected:,} rejected; "
        + (
            f"{total.unpriced:,} stored with no price (cost NULL and a reason)"
            if total.unpriced
            else "none stored without a price"
        ),
        markup=False,
        soft_wrap=True,  # one line whatever the ledger's name: a script reads it
    )
    if unreadable:
        out.print(
            f"{len(unreadable)} of the files could not be read (whole or in part): "
            + "; ".join(name for name, _ in unreadable),
            markup=False,
        )
    if total.rejected:
        columns = [Col("record", "line", "int"), Col("field", "field"), Col("reason", "reason")]
        render(
            rows,
            [Col("file", "file"), *columns] if several else columns,
            Format.markdown if fmt == Format.markdown else Format.table,
            title=f"Rejected records (first {len(rows)} of {total.rejected:,})",
        )
        by_field = ", ".join(f"{k}: {v:,}" for k, v in total.rejected_by_field.most_common(8))
        out.print(f"rejected by field: {by_field}", markup=False)
        if rejects:
            out.print(f"every rejection is in {rejects}", markup=False)
        else:
            out.print("use --rejects FILE to keep every rejection", markup=False)


TABLE_COLUMNS = [
    Col("calls", "calls", "int"),
    Col("spend", "spend", "money"),
    Col("share", "share", "ratio"),
    Col("trend_pct", "trend", "pct"),
    Col("cost_per_request", "$/request", "unit_money"),
    Col("cost_per_1k_input", "$/1k in", "unit_money"),
    Col("cost_per_1k_output", "$/1k out", "unit_money"),
    Col("cache_hit_ratio", "cache hit", "ratio"),
    Col("cache_savings", "cache saved", "money"),
    Col("reasoning_share", "reasoning", "ratio"),
    Col("failed_cost", "failed $", "money"),
    Col("retry_cost", "retries $", "money"),
    Col("latency_p50_ms", "p50 ms", "float"),
    Col("latency_p95_ms", "p95 ms", "float"),
    Col("error_rate", "errors", "ratio"),
    Col("timeout_rate", "timeouts", "ratio"),
    Col("unpriced_calls", "unpriced", "int"),
]

# What fits a terminal: spend, trend, unit cost, caching, reasoning, waste, tail latency, unpriced.
# `--wide` (and csv/json/markdown) show every column.
_COMPACT = (
    "calls",
    "spend",
    "share",
    "trend_pct",
    "cost_per_request",
    "cache_hit_ratio",
    "cache_savings",
    "reasoning_share",
    "retry_cost",
    "latency_p95_ms",
    "error_rate",
    "unpriced_calls",
)


# CSV: every column of `Ledger.report()`'s table, the table view's first and in its order (so
# the header of earlier versions is still how it begins), then the rest.
_CSV_COLUMNS = [
    *TABLE_COLUMNS,
    Col("cost_per_unit", "cost_per_unit", "unit_money"),
    Col("cost_per_success", "cost_per_success", "unit_money"),
    Col("unpriced_tokens", "unpriced_tokens", "int"),
]
_CSV_COLUMNS += [
    Col(name, name) for name in (*KPI_COLUMNS, *TREND_COLUMNS) if name not in {c.key for c in _CSV_COLUMNS}
]
# With --period, last: whether the window covers the row's period only in part, the part it
# covers, and the span its trend compares with.
_CSV_PERIOD_COLUMNS = [Col(name, name) for name in PERIOD_SPAN_COLUMNS]


@app.command("report")
@friendly
def report_cmd(
    since: Annotated[
        str,
        typer.Option(
            "--since",
            help="Start: an age, a month (2025-09) or a date, in UTC. An age counts whole units "
            "back from the current one: 30d is the 30 whole days before today (from midnight UTC) "
            "and today so far, 12h from the start of the hour 12 hours ago, 2w from the Monday "
            "two weeks before this week's.",
        ),
    ] = "30d",
    until: Annotated[
        str | None,
        typer.Option(
            "--until",
            help="End, excluded (default: now): --since 2025-09 --until 2025-10 is September; "
            "an age is aligned as in --since (--since 7d --until 0d: the 7 whole days before today).",
        ),
    ] = None,
    by: Annotated[
        str,
        typer.Option(
            "--by",
            help="Comma-separated dimensions: team, app, feature, model, "
            "provider, user, customer, unit, status, price_ref (the price source), ... or tag:<name>.",
        ),
    ] = "model",
    period: Annotated[str | None, typer.Option("--period", help="Split by hour, day, week or month.")] = None,
    where: Annotated[
        list[str] | None,
        typer.Option(
            "--where",
            "-w",
            help="Filter, e.g. team=search, model!=gpt-4o or tag:region=eu,us (repeatable; all must "
            "hold). A comma separates values, any of which matches; write \\, for a comma inside a "
            "value; an empty value is no value (customer= keeps the calls without a customer). "
            "The first = or != ends the dimension: tag:note=a!=b is note equal to a!=b.",
        ),
    ] = None,
    top: Annotated[
        int | None,
        typer.Option(
            "--top", help="Only the N (1 or more) biggest groups; with --period, by spend over the window."
        ),
    ] = None,
    fmt: FormatOpt = Format.table,
    wide: Annotated[bool, typer.Option("--wide", help="Every column in the table view.")] = False,
    reconcile: Annotated[
        bool,
        typer.Option(
            "--reconcile",
            help="Instead: computed vs billed cost per model, differences over 5 % (`unitcost reconcile` "
            "chooses the threshold and a USD tolerance).",
        ),
    ] = False,
    ledger: LedgerOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Where the money goes: spend, trend, unit costs, caching, reasoning, waste, latency, unpriced calls."""
    if reconcile:
        from .connector_cmds import print_reconcile

        print_reconcile(ledger, config, since, until, 5.0, False, fmt)
        return
    with open_ledger(ledger, config, read_only=True) as book_ledger:
        report = book_ledger.report_sections(since, until, by, period, where or [], top)
        if report.headline.get("calls", 0) == 0:
            _hint_empty(book_ledger, report)
        print_report(report, fmt, wide=wide)


def _hint_empty(book_ledger: Any, report: Report) -> None:
    from rich.console import Console

    from ..analytics.dialect import dialect_for

    window = report.query.window
    hint = f"No events in {window.describe()}. {where_the_events_are(book_ledger)}"
    if report.query.where:
        # Widening the window cannot help when the filter is what left nothing.
        d = dialect_for(book_ledger.store.dialect)
        in_window = book_ledger.sql(
            f"SELECT count(*) AS n FROM events WHERE ts >= {d.ts_literal(window.since.isoformat())} "
            f"AND ts < {d.ts_literal(window.until.isoformat())}"
        )
        n = int(in_window["n"].iloc[0])
        if n:
            filters = " ".join(f"--where {shlex.quote(f)}" for f in report.query.where)
            hint = (
                f"No event in {window.describe()} matches {filters}: the window holds {n:,} "
                f"event{'s' if n != 1 else ''}, none of them matching. Check the dimension and the values."
            )
    # On stderr: stdout may be JSON or CSV that a program reads.
    Console(stderr=True, highlight=False).print(hint, markup=False, style="yellow")


def print_report(report: Report, fmt: Format, *, wide: bool = False) -> None:
    out = console()
    if fmt == Format.json:
        from ..analytics.report import report_document

        print_json(report_document(report), out)
        return
    dims = [Col(d, d, "ts" if d == "period" else "dim") for d in report.dimensions]
    if fmt == Format.csv:
        periodic = "period" in report.dimensions
        render(report.rows, [*dims, *_CSV_COLUMNS, *(_CSV_PERIOD_COLUMNS if periodic else [])], fmt)
        return
    if fmt == Format.markdown:
        report = _one_line_cells(report)
    lines = headline_lines(report)
    if fmt == Format.markdown:
        out.file.write("\n".join(f"- {line}" for line in lines) + "\n\n")
    else:
        for line in lines:
            out.print(line, markup=False)
    columns = (
        TABLE_COLUMNS if wide or fmt != Format.table else [c for c in TABLE_COLUMNS if c.key in _COMPACT]
    )
    render(
        table_rows(report),
        [*dims, *columns],
        fmt,
        title=f"By {', '.join(report.dimensions) or 'total'}",
        # a line each in a terminal; one paragraph in markdown, as on the dashboard
        caption=table_caption(report, "\n" if fmt == Format.table else " · "),
    )
    if report.units:
        render(report.units, UNIT_COLUMNS, fmt, title="Business units")
    if report.unpriced:
        render(report.unpriced, UNPRICED_COLUMNS, fmt, title="Unpriced calls (counted, never $0)")


UNIT_COLUMNS = [
    Col("unit", "unit"),
    Col("units", "units", "int"),
    Col("spend", "spend", "money"),
    Col("cost_per_unit", "cost per unit", "unit_money"),
    Col("successes", "successes", "int"),
    Col("success_rate", "success rate", "ratio"),
    Col("cost_per_success", "cost per success", "unit_money"),
    # their spend leaves these calls out: say how many, as every other table does
    Col("unpriced_calls", "unpriced", "int"),
]
"""The business units section of a report (`Report.units`)."""
UNPRICED_COLUMNS = [
    Col("provider", "provider"),
    Col("model", "model"),
    Col("calls", "calls", "int"),
    Col("tokens", "tokens", "int"),
    Col("first_seen", "first seen", "ts"),
    Col("reason", "why there is no price"),
]
"""The unpriced calls section of a report (`Report.unpriced`)."""


def headline_lines(report: Report) -> list[str]:
    """The report's headline as `unitcost report` prints it (and the dashboard shows it): spend
    and trend, unit cost, caching, reasoning, waste, latency, unpriced calls, the sparkline."""
    h = report.headline
    window = report.query.window
    trend = h.get("trend_pct")
    lines = [
        f"Spend {_usd(h.get('spend'))} over {window.describe()}"
        + (f" ({trend:+.1f}% vs {_previous(window)})" if trend is not None else ""),
        f"{h.get('calls', 0):,} calls · {format_usd(h.get('cost_per_request'), 6)} per request · "
        f"cache hit {_pct(h.get('cache_hit_ratio'))} saved {_usd(h.get('cache_savings'))} · "
        f"reasoning {_pct(h.get('reasoning_share'))} of output cost",
        f"failed attempts {_usd(h.get('failed_cost'))}{_unknown_part(h.get('failed_unpriced_calls'))} · "
        f"retries {_usd(h.get('retry_cost'))}{_unknown_part(h.get('retry_unpriced_calls'))} · "
        f"p50 {_num(h.get('latency_p50_ms'))} ms · p95 {_num(h.get('latency_p95_ms'))} ms · "
        f"errors {_pct(h.get('error_rate'))} · timeouts {_pct(h.get('timeout_rate'))}",
        f"unpriced: {h.get('unpriced_calls', 0):,} calls, {h.get('unpriced_tokens', 0):,} tokens "
        "(cost unknown, not zero)",
    ]
    if h.get("calls"):
        # One bar per bucket of the window: an empty one is the lowest bar, not left out.
        lines.append(
            f"spend per {report.bucket}: {sparkline(report.spend_per_bucket())}{_partial_bars(report)}"
        )
    return lines


def _partial_bars(report: Report) -> str:
    """What the sparkline's buckets covered only in part cover: their bars are low for fewer
    days, not for less spend. ` (partial: first day, 9.6 of 24 hours; last day, 14 of 24 hours)`."""
    bucket, last = report.bucket, len(report.periods) - 1
    parts = []
    for k, row in enumerate(report.periods):
        if not row.get("partial"):
            continue
        name = (
            ""
            if last == 0
            else f"first {bucket}, "
            if k == 0
            else f"last {bucket}, "
            if k == last
            else f"{bucket} of {row['period']:%Y-%m-%d %H:%M}, "
        )
        parts.append(name + coverage(row, bucket))
    if not parts:
        return ""
    more = f"; and {len(parts) - 3} more" if len(parts) > 3 else ""
    return f" (partial: {'; '.join(parts[:3])}{more})"


_COVERAGE_UNITS = {
    "hour": (60, "minutes"),
    "day": (3600, "hours"),
    "week": (86400, "days"),
    "month": (86400, "days"),
}
"""How the coverage of a partial period is counted: minutes of an hour, hours of a day, days."""


def coverage(row: dict[str, Any], period: str) -> str:
    """How much of its period a row of a report by period covers: `2 of 7 days`, `14.5 of 24
    hours`, `10 of 30 days` (of September)."""
    seconds, unit = _COVERAGE_UNITS[period]
    covered = (row["covered_until"] - row["covered_since"]).total_seconds() / seconds
    start = as_utc(row["period"])
    whole = (bucket_end(start, period) - start).total_seconds() / seconds
    return f"{_amount(covered)} of {_amount(whole)} {unit}"


def _amount(value: float) -> str:
    text = f"{value:.1f}".removesuffix(".0")
    return "<0.1" if text == "0" and value > 0 else text


def table_caption(report: Report, separator: str = " · ") -> str | None:
    """The notes under the report's table (as `unitcost report` and the dashboard show it): the
    partial periods (`partial_notes`), then what `--top` left out (`others_caption`)."""
    notes = [note for note in (*partial_notes(report), others_caption(report)) if note]
    return separator.join(notes) or None


def table_rows(report: Report) -> list[dict[str, Any]]:
    """The rows of the report's table as text views show them (`unitcost report` and the
    dashboard): a period the window covers only in part marked in its cell, `2025-09-29 00:00
    (partial: 2 of 7 days)`."""
    period = report.query.period
    if not period:
        return report.rows
    return [
        {**row, "period": f"{row['period']:%Y-%m-%d %H:%M} (partial: {coverage(row, period)})"}
        if row.get("partial")
        else row
        for row in report.rows
    ]


def partial_notes(report: Report) -> list[str]:
    """Footnotes of the table by period for the periods the window covers only in part: what
    it covers of them and what their trend, and that of the period after a partial first one,
    compare with (like with like: see `analytics.report._likes`)."""
    period = report.query.period
    if not period:
        return []
    notes: list[str] = []
    seen: set[datetime] = set()
    for row in report.rows:
        start = as_utc(row["period"])
        if not row.get("partial") or start in seen:
            continue
        seen.add(start)
        note = (
            f"partial: {start:%Y-%m-%d %H:%M} covers {_span(row['covered_since'], row['covered_until'])}"
            f" ({coverage(row, period)})"
        )
        if row.get("previous_since") is not None:
            note += (
                f"; its trend is against the same span of the {period} before "
                f"({_span(row['previous_since'], row['previous_until'])})"
            )
        elif row["covered_since"] > start:
            note += (
                f"; no trend (the {period} before is outside the window); the next {period}'s trend "
                f"counts the {period} before from its start, calls before --since included"
            )
        notes.append(note)
    if len(notes) > 3:
        notes = [*notes[:3], f"and {len(notes) - 3} more partial {period}s (not over yet)"]
    return notes


def _span(since: datetime, until: datetime) -> str:
    return f"{since:%Y-%m-%d %H:%M} → {until:%Y-%m-%d %H:%M} UTC"


def _previous(window: Window) -> str:
    """What the trend compares with, named as a reader would: the previous month, the previous
    12 hours (not "the previous 0 days" of a window shorter than a day)."""
    if window.months:
        return "the previous month" if window.months == 1 else f"the previous {window.months} months"
    seconds = window.length.total_seconds()
    for size, name in ((86400, "day"), (3600, "hour"), (60, "minute")):
        # 36 hours reads well, 708 hours does not: past two days, whole days or the dates
        if seconds % size == 0 and (size == 86400 or seconds <= 2 * 86400):
            count = int(seconds // size)
            return f"the previous {name}" if count == 1 else f"the previous {count:,} {name}s"
    return window.previous.describe()


def others_caption(report: Report) -> str | None:
    """What `--top` left out, so the rows shown and this line add up to the headline."""
    others = report.others
    if not others:
        return None
    groups = others["groups"]
    share = f" ({_pct(others['share'])})" if others["share"] is not None else ""
    caption = (
        f"and {groups:,} other group{'s' if groups != 1 else ''} not shown (--top {report.query.top}): "
        f"{others['calls']:,} calls, {_usd(others['spend'])}{share}, {others['unpriced_calls']:,} unpriced"
    )
    if others["tied"]:
        # A cut through a tie is made by name: say so, lest the one shown look the bigger.
        caption += (
            f"; {others['tied']:,} of them tie with the last shown at {_usd(others['tied_spend'])} "
            "(ties are ranked by name)"
        )
    return caption


def _usd(value: Decimal | None) -> str:
    """Cents from a dollar up; below, up to the six places of a cost per request, so that
    $0.0035 does not read `$0.00` next to it (trailing zeros past the cents are dropped)."""
    if value is None or abs(value) >= 1:
        return format_usd(value)
    text = format_usd(value, 6)
    return text[: max(len(text.rstrip("0")), len(text) - 4)]


def _one_line_cells(report: Report) -> Report:
    """The report with every line break of its text cells turned into `<br>`: a break inside a
    cell would end the markdown table's row."""

    def clean(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [
            {k: _BREAK.sub("<br>", v) if isinstance(v, str) else v for k, v in row.items()} for row in rows
        ]

    return dataclasses.replace(
        report, rows=clean(report.rows), units=clean(report.units), unpriced=clean(report.unpriced)
    )


_BREAK = re.compile(r"\r\n|\r|\n")


def _unknown_part(unpriced: int | None) -> str:
    """What a cost leaves out: `$0.20` of failed attempts is not the whole when another failed
    call has no price."""
    return f" + {unpriced:,} unpriced" if unpriced else ""


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.1f}%"


def _num(value: float | None) -> str:
    return "—" if value is None else f"{value:,.0f}"


@app.command("outcomes")
@friendly
def outcomes_cmd(
    file: Annotated[
        Path,
        typer.Argument(
            help="JSONL or CSV: unit + unit_id (or trace_id, or event_id), "
            "success and/or score, optional feedback and ts.",
            exists=True,
        ),
    ],
    ledger: LedgerOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Import outcomes (success, score, feedback) so reports can show cost per success."""
    with open_ledger(ledger, config) as book_ledger:
        summary = book_ledger.import_outcomes(file)
    out = console()
    line = f"{summary.recorded:,} outcomes recorded, {summary.rejected:,} rejected"
    if summary.superseded:
        line += f", {summary.superseded:,} superseded (a later judgement of the same key was kept)"
    out.print(line, markup=False)
    for rejection in summary.rejections[:20]:
        out.print(f"  line {rejection.record}: {rejection.field}: {rejection.reason}", markup=False)
    if summary.rejected > 20:
        out.print(f"  ... and {summary.rejected - 20:,} more", markup=False)
    if summary.unmatched:
        # Kept (the calls may come later), but a misspelt unit kind would count in no report.
        examples = ", ".join(summary.unmatched_keys)
        more = ", ..." if summary.unmatched > len(summary.unmatched_keys) else ""
        out.print(
            f"{summary.unmatched:,} of them {'matches' if summary.unmatched == 1 else 'match'} "
            f"no call in the ledger yet ({examples}{more}): "
            "kept, they count once their calls are in; check the unit kind and ids if none are coming",
            markup=False,
        )
    if summary.rejected:
        raise typer.Exit(1)


@app.command("reprice")
@friendly
def reprice_cmd(
    since: Annotated[str, typer.Option("--since", help="Reprice events from this date (or age, e.g. 90d).")],
    until: Annotated[str | None, typer.Option("--until", help="Up to this date (default: now).")] = None,
    where: Annotated[list[str] | None, typer.Option("--where", "-w", help="Only matching events.")] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show what would change; write nothing.")
    ] = False,
    reason: Annotated[
        str | None,
        typer.Option("--reason", help="Why (kept in the audit), e.g. 'negotiated discount from 2025-09-01'."),
    ] = None,
    by: Annotated[
        str | None, typer.Option("--by", help="Who, for the audit (default: the system user running it).")
    ] = None,
    fmt: FormatOpt = Format.table,
    ledger: LedgerOpt = None,
    config: ConfigOpt = None,
    prices: PricesOpt = None,
) -> None:
    """Recompute stored costs with the current price book, with an audit of old → new totals
    (per run, per model and per event)."""
    from ..api import _known_total

    require_ledger(ledger, config)
    with open_ledger(ledger, config, prices) as book_ledger:
        result = book_ledger.reprice(since, until, where or [], dry_run=dry_run, reason=reason, actor=by)
    # With no priced event on a side, that side's total is unknown: null, never $0.
    old_total = _known_total(result.old_total, result.old_unpriced, result.events_seen)
    new_total = _known_total(result.new_total, result.new_unpriced, result.events_seen)
    rows = []
    for c in result.changes:
        # A side where none of the model's calls had a price has no total: unknown, never $0.
        old = c.old_total if c.old_unpriced < c.events else None
        new = c.new_total if c.new_unpriced < c.events else None
        rows.append(
            {
                "model": f"{c.provider}/{c.model}" if c.provider else c.model,
                "events": c.events,
                "old_total": old,
                "new_total": new,
                "delta": new - old if old is not None and new is not None else None,
                "old_unpriced": c.old_unpriced,
                "new_unpriced": c.new_unpriced,
            }
        )
    if fmt == Format.json:
        print_json(
            {
                "run_id": result.run_id,
                "dry_run": dry_run,
                "reason": result.reason,
                "actor": result.actor,
                "events_seen": result.events_seen,
                "events_changed": result.events_changed,
                "old_total": old_total,
                "new_total": new_total,
                "old_unpriced": result.old_unpriced,
                "new_unpriced": result.new_unpriced,
                "newly_priced": result.newly_priced,
                "newly_unpriced": result.newly_unpriced,
                "price_files": [
                    {"layer": f.layer, "path": f.path, "sha256": f.sha256} for f in result.price_files
                ],
                "models": rows,
            }
        )
        return
    out = console()
    verb = "would change" if dry_run else "changed"
    out.print(
        f"{result.events_seen:,} events between {result.window.describe()}; {result.events_changed:,} "
        f"{verb}. Total {_known_usd(old_total)} → {_known_usd(new_total)}; unpriced "
        f"{result.old_unpriced:,} → {result.new_unpriced:,}"
        f"{_price_moves(result.newly_priced, result.newly_unpriced)}.",
        markup=False,
    )
    # The full hash, so an auditor can check it against `sha256sum` of the file they hold.
    for f in result.price_files:
        out.print(f"{f.layer} prices: {f.path} (sha256 {f.sha256})", markup=False)
    # Most often the overrides file was left out (--prices, $UNITCOST_PRICES, the config): the
    # calls priced with it then lose their cost. Counted per model, so one model's newly priced
    # calls do not hide another's losses.
    lost = sum(max(c.new_unpriced - c.old_unpriced, 0) for c in result.changes)
    if lost:
        out.print(
            f"warning: {lost:,} more event{'s' if lost != 1 else ''} without a price than before: "
            "the price book in use lacks a price they were priced with. Is the overrides file "
            "the one they were priced with (--prices)?",
            markup=False,
        )
    moved = [r for r in rows if r["old_total"] != r["new_total"] or r["old_unpriced"] != r["new_unpriced"]]
    if not moved and fmt == Format.table:
        # An empty table reads like a failure; say what it means, and which audit run it is.
        audit = "dry run: nothing written" if dry_run else f"audit run {result.run_id}{_who(result)}"
        out.print(f"No model's total or count of unpriced calls changed ({audit}).", markup=False)
        return
    render(
        moved,
        [
            Col("model", "model"),
            Col("events", "events", "int"),
            Col("old_total", "old total", "unit_money"),
            Col("new_total", "new total", "unit_money"),
            Col("delta", "delta", "unit_money"),
            Col("old_unpriced", "unpriced before", "int"),
            Col("new_unpriced", "unpriced after", "int"),
        ],
        fmt,
        title="Changes by model"
        + (" (dry run: nothing written)" if dry_run else f" (audit run {result.run_id}{_who(result)})"),
    )


def _price_moves(priced: int, unpriced: int) -> str:
    """The events that gained or lost a price, which the net change of the count can hide."""
    moves = [f"{priced:,} newly priced"] if priced else []
    if unpriced:
        moves.append(f"{unpriced:,} newly unpriced")
    return f" ({', '.join(moves)})" if moves else ""


def _who(result: Any) -> str:
    parts = [f"by {result.actor}"] if result.actor else []
    if result.reason:
        parts.append(f"because: {result.reason}")
    return ", " + ", ".join(parts) if parts else ""


def _known_usd(total: Decimal | None) -> str:
    return "unknown" if total is None else format_usd(total, 6)
