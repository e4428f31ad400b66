"""`unitcost watch`, `unitcost alerts` and `unitcost budgets`."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import signal
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from ..config import load_config
from .app import ConfigOpt, FormatOpt, LedgerOpt, UserError, app, friendly, open_ledger
from .output import Col, Format, console, print_json, render

alerts_app = typer.Typer(
    help="List, show and acknowledge alerts (incidents) from the ledger.", no_args_is_help=False
)
app.add_typer(alerts_app, name="alerts")

ONCE_DELIVERY_WAIT = 30.0
"""Seconds `watch --once` waits for deliveries in all, retries included, before it exits."""

NowOpt = Annotated[
    str | None,
    typer.Option(
        "--now",
        help="Pretend it is this instant (ISO 8601), e.g. to replay a past month.",
        show_default=False,
    ),
]


def _instant(value: str | None) -> datetime | None:
    if not value:
        return None
    from ..analytics.window import parse_instant

    return parse_instant(value)


def _settings(config: Path | None) -> Any:
    from ..watch.settings import load_watch_settings

    return load_watch_settings(load_config(config))


@app.command("watch")
@friendly
def watch_cmd(
    ledger: LedgerOpt = None,
    config: ConfigOpt = None,
    once: Annotated[
        bool, typer.Option("--once", help="Run one cycle, deliver its alerts, and exit.")
    ] = False,
    interval: Annotated[
        float | None,
        typer.Option("--interval", help=r"Seconds between cycles (default: \[watch] interval_seconds)."),
    ] = None,
    backfill_hours: Annotated[
        float | None,
        typer.Option(
            "--backfill-hours",
            help=r"On a ledger never watched, how many past hours to judge first (default: \[watch] backfill_hours).",
        ),
    ] = None,
    now: NowOpt = None,
) -> None:
    """Watch the ledger: roll up new events, run the detectors and budgets, deliver alerts."""
    from ..watch.runner import LEDGER_FREE_S, Watcher

    if now is not None and not once:
        # Every cycle of the loop would judge the same instant: nothing new would ever be seen.
        raise UserError("--now replays one instant: use it with --once")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # One line per delivery is noise, and it would print each webhook URL: the URL is the secret.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)
    if interval is not None and not 0 <= interval < math.inf:  # nan fails both
        raise UserError(f"--interval: expected a number of seconds >= 0, got {interval}")
    settings = _settings(config)
    if interval is not None:
        settings.interval_s = interval
    if backfill_hours is not None:
        settings.backfill_hours = backfill_hours  # the loop's first cycle reads it from the settings
    out = console()
    with open_ledger(ledger, config) as opened:
        watcher = Watcher(opened.store, settings)
        target = opened.target
        if once:
            try:
                report = watcher.run_once(now=_instant(now), backfill_hours=backfill_hours)
                _print_cycle(report)
                # One bound for the whole wait: closing must not wait again once it is spent.
                if not watcher.close(ONCE_DELIVERY_WAIT):
                    out.print(
                        f"{watcher.dispatcher.pending} deliveries still failing after "
                        f"{ONCE_DELIVERY_WAIT:g} s; see alert_log."
                    )
            finally:
                watcher.close()
            return

    @contextlib.contextmanager
    def reopen() -> Iterator[Any]:
        with open_ledger(ledger, config) as again:
            yield again.store

    # The ledger is open only while a cycle runs, so `unitcost ingest` and `alerts ack` can write
    # to it between cycles (a DuckDB file has one writer process at a time).
    out.print(
        f"Watching {target} every {max(settings.interval_s, LEDGER_FREE_S):g} s (Ctrl-C to stop); "
        "the ledger is held only while a cycle runs.",
        markup=False,
    )
    stop = threading.Event()
    # A service manager stops the loop with SIGTERM (systemd, Docker, Kubernetes): it ends the
    # loop as Ctrl-C does, so the delivery results kept in memory since the last cycle reach
    # the alert log rather than dying with the process.
    restore = _stop_on_sigterm()
    try:
        watcher.run_forever(stop, reopen=reopen)
    except KeyboardInterrupt:
        stop.set()
    finally:
        try:
            _stop_watching(watcher, reopen)
        finally:
            restore()


def _stop_on_sigterm() -> Callable[[], None]:
    """Have SIGTERM raise KeyboardInterrupt (as SIGINT does) until the returned function is called."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)

    def restore() -> None:
        signal.signal(signal.SIGTERM, previous)

    return restore


def _stop_watching(watcher: Any, reopen: Callable[[], contextlib.AbstractContextManager[Any]]) -> None:
    """Log the deliveries that ended since the last cycle, and give those under way a few seconds,
    with the ledger open so each result is written as it ends: a supervisor that kills the
    process when its grace period is over (Docker: 10 s) loses none of those already ended."""
    closed = False
    if not watcher.dispatcher.pending and not watcher.unrecorded:
        watcher.close()
        closed = True
        if not watcher.unrecorded:  # one may have ended meanwhile
            return
    try:
        with reopen() as store:
            watcher.attach(store)
            try:
                if not closed:
                    watcher.close()
            finally:
                watcher.detach()
    except Exception as exc:  # e.g. an ingest holds the ledger: say what is not in the alert log
        watcher.close(0)
        console().print(
            f"{watcher.unrecorded} delivery results not written to alert_log: {exc}", markup=False
        )


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def _print_cycle(report: Any) -> None:
    out = console()
    r = report.rollup
    out.print(
        f"Rolled up {_count(r.events, 'new event')}; judged {_count(report.hours_judged, 'hour')} "
        f"in {report.seconds:.2f} s; {_count(len(report.findings), 'finding')}, "
        f"{_count(len(report.notifications), 'notification')}.",
        markup=False,
    )
    for n in report.notifications:
        out.print(f"\n[{n.kind}] {n.alert_id} ({n.severity})\n{n.message}", markup=False)


ALERT_COLUMNS = [
    Col("alert_id", "id"),
    Col("status", "status"),
    Col("severity", "severity"),
    Col("detector", "detector"),
    Col("scope", "scope"),
    Col("title", "what"),
    Col("since", "since", "ts"),
    Col("last_seen", "last seen", "ts"),
    Col("updates", "updates", "int"),
]


def alerts_title(count: int) -> str:
    """The title of a table of alerts, in the CLI and the dashboard alike."""
    return _count(count, "alert")


ALERT_DATA_COLUMNS = [
    Col("key", "key"),
    Col("first_seen", "first seen"),
    Col("last_notified", "last notified"),
    Col("acked_by", "acknowledged by"),
    Col("acked_at", "acknowledged at"),
    Col("resolved_at", "resolved at"),
    Col("message", "message"),
]
"""What JSON and CSV carry besides the table's columns: who acknowledged and when, when it
resolved, and the whole explanation, for a program (a ticket, a dashboard) to read."""


_GROUP_LEDGER = "unitcost.alerts.ledger"


def _group_ledger(ctx: typer.Context, ledger: str | None, config: Path | None) -> tuple[Any, Any]:
    """A subcommand's own --ledger and --config, else those given to `unitcost alerts` before it."""
    group = ctx.meta.get(_GROUP_LEDGER, (None, None))
    return (ledger if ledger is not None else group[0], config if config is not None else group[1])


@alerts_app.callback(invoke_without_command=True)
@friendly
def alerts_list(
    ctx: typer.Context,
    ledger: LedgerOpt = None,
    config: ConfigOpt = None,
    status: Annotated[
        str | None, typer.Option("--status", help="open | acknowledged | resolved (default: all).")
    ] = None,
    detector: Annotated[
        str | None,
        typer.Option("--detector", help="Only this detector's alerts (budget, cost_per_hour, ...)."),
    ] = None,
    limit: Annotated[int, typer.Option("--limit", help="Most recent first.", min=1)] = 50,
    fmt: FormatOpt = Format.table,
) -> None:
    """List alerts, most recent first."""
    if ctx.invoked_subcommand is not None:
        # `unitcost alerts -l L show ID`: the ledger named before the subcommand is its ledger.
        ctx.meta[_GROUP_LEDGER] = (ledger, config)
        return
    from ..watch.incidents import list_alerts

    with open_ledger(ledger, config, read_only=True) as opened:
        rows = list_alerts(opened.store, status=status, detector=detector, limit=limit)
    if fmt in (Format.json, Format.csv):
        render(rows, [*ALERT_COLUMNS, *ALERT_DATA_COLUMNS], fmt)
        return
    render(rows, ALERT_COLUMNS, fmt, title=alerts_title(len(rows)))


@alerts_app.command("ack")
@friendly
def alerts_ack(
    ctx: typer.Context,
    alert_ids: Annotated[
        list[str], typer.Argument(help="Alert ids (a unique prefix of each is enough).", show_default=False)
    ],
    by: Annotated[
        str | None, typer.Option("--by", help="Who acknowledges (default: your user name).")
    ] = None,
    note: Annotated[
        str | None,
        typer.Option(
            "--note", help="Why, or what is being done: kept in each alert's history.", show_default=False
        ),
    ] = None,
    ledger: LedgerOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Acknowledge alerts: each keeps its history but notifies nobody until it resolves. All or
    none: an unknown, ambiguous or resolved id acknowledges nothing."""
    from ..watch.incidents import acknowledge_many

    who = by if by is not None else _user()
    if not who.strip():
        raise UserError("--by: say who acknowledges (a name or an address)")
    with open_ledger(*_group_ledger(ctx, ledger, config)) as opened:
        acked = acknowledge_many(opened.store, alert_ids, who, note=note.strip() if note else None)
    out = console()
    for row, fresh in acked:
        if fresh:
            out.print(f"acknowledged {row['alert_id']}: {row['title']}", markup=False)
        else:
            at = row["acked_at"]
            when = f" at {at:%Y-%m-%d %H:%M} UTC" if at else ""
            out.print(
                f"{row['alert_id']} was already acknowledged by {row['acked_by']}{when}: {row['title']}",
                markup=False,
            )


def _user() -> str:
    """Who runs the command, for the history: "cli" says nothing to the next person on call."""
    import getpass

    try:
        return getpass.getuser()
    except (OSError, KeyError):  # a container running under a numeric uid with no name
        return "cli"


@alerts_app.command("show")
@friendly
def alerts_show(
    ctx: typer.Context,
    alert_id: Annotated[str, typer.Argument(help="Alert id (a unique prefix is enough).")],
    ledger: LedgerOpt = None,
    config: ConfigOpt = None,
    fmt: FormatOpt = Format.table,
) -> None:
    """One alert's explanation and its history (opened, updates, deliveries, acknowledgement)."""
    from ..watch.incidents import alert_history, find_alert

    with open_ledger(*_group_ledger(ctx, ledger, config), read_only=True) as opened:
        row = find_alert(opened.store, alert_id)
        history = alert_history(opened.store, row["alert_id"])
    history_columns = [
        Col("at", "at", "ts"),
        Col("kind", "event"),
        Col("sink", "sink"),
        Col("message", "detail"),
    ]
    if fmt == Format.json:
        # One JSON document: the alert, its details as an object, and its history.
        details = json.loads(row["details"]) if row["details"] else {}
        print_json({**row, "details": details, "history": history})
        return
    if fmt == Format.csv:
        render(history, history_columns, fmt)  # the history's rows; the alert is `alerts --format csv`
        return
    out = console()
    out.print(f"{row['alert_id']} · {row['status']} · {row['severity']}\n{row['message']}\n", markup=False)
    render(history, history_columns, fmt)


BUDGET_COLUMNS = [
    Col("budget", "budget"),
    Col("scope", "scope"),
    Col("period", "period"),
    Col("amount", "amount", "money"),
    Col("spent", "spent", "money"),
    Col("used", "used", "ratio"),
    Col("status", "status"),
    Col("burn_per_day", "burn/day", "money"),
    Col("forecast", "forecast", "money"),
    Col("forecast_90", "forecast 90 %"),
    Col("runs_out", "runs out"),
    Col("daily_change_pct", "day vs week ago", "pct"),
    Col("variation", "daily variation alarm"),
    Col("unpriced_calls", "unpriced", "int"),
]


@app.command("budgets")
@friendly
def budgets_cmd(
    ledger: LedgerOpt = None, config: ConfigOpt = None, now: NowOpt = None, fmt: FormatOpt = Format.table
) -> None:
    r"""Each [\[budget]]: spend to date, burn rate, forecast at period end, run-out day, daily variation."""
    from ..watch.budgets import budget_row

    settings = _settings(config)
    if not settings.budgets:
        # On stderr: stdout may be read as JSON or CSV by a program.
        typer.echo("No budgets: add [[budget]] tables to the config file (see docs/watch.md).", err=True)
        raise typer.Exit(1)
    try:
        at = _instant(now) or datetime.now(UTC)
    except ValueError as exc:
        raise UserError(f"--now: {exc}") from None
    machine = fmt in (Format.json, Format.csv)
    rows = []
    notes = []
    with open_ledger(ledger, config, read_only=True) as opened:
        for budget in settings.budgets:
            status, row = budget_row(opened.store, budget, at)
            if not machine:
                row["runs_out"] = status.runs_out_text()
            if row["note"]:
                notes.append(row["note"])
            rows.append(row)
    if machine:
        render(rows, [*BUDGET_COLUMNS, *BUDGET_DATA_COLUMNS], fmt)
        return
    caption = "\n".join(f"Note: {n}" for n in notes) or None
    render(rows, BUDGET_COLUMNS, fmt, title=f"Budgets at {at:%Y-%m-%d %H:%M} UTC", caption=caption)


BUDGET_DATA_COLUMNS = [
    Col("note", "note"),
    Col("period_start", "period start"),
    Col("period_end", "period end"),
    Col("timezone", "time zone"),
    Col("forecast_low", "forecast low"),
    Col("forecast_high", "forecast high"),
    Col("forecast_basis", "forecast basis"),
    Col("threshold_crossed", "threshold crossed"),
    Col("variation_over_limit", "variation over limit"),
]
"""What JSON and CSV carry besides the table's columns: the instants, the interval's ends as
numbers (not the text "a – b") and the flags as booleans, for a program to read."""
