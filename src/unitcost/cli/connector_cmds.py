"""`unitcost serve`, `unitcost import <tool> FILE` and `unitcost reconcile`."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Annotated

import typer

from ..config import load_config
from .app import ConfigOpt, FormatOpt, LedgerOpt, PricesOpt, app, friendly, open_ledger
from .output import Col, Format, console, render

import_app = typer.Typer(
    help="Bring history from other tools (LiteLLM, Langfuse, OpenAI usage export) into the ledger.",
    no_args_is_help=True,
)
app.add_typer(import_app, name="import")


@app.command("serve")
@friendly
def serve_cmd(
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port (4318 is the OTLP/HTTP default).")] = 4318,
    log_level: Annotated[str, typer.Option("--log-level", help="uvicorn log level.")] = "warning",
    decode_workers: Annotated[
        int,
        typer.Option(
            "--decode-workers",
            min=0,
            help="Processes that decode requests beside the ledger writer (0: decode in the server process).",
        ),
    ] = 1,
    watch: Annotated[
        bool,
        typer.Option(
            "--watch/--no-watch",
            help=r"Run the watch loop (budgets, detectors, alerts; \[watch] in the config) in the server.",
        ),
    ] = True,
    ledger: LedgerOpt = None,
    config: ConfigOpt = None,
    prices: PricesOpt = None,
) -> None:
    """Run the OTLP/HTTP receiver: point any OTLP exporter at http://HOST:PORT and GenAI spans
    become priced events. The server owns the ledger's write connection, so it also runs the
    watch loop (unless --no-watch), and serves the dashboard (/dashboard, docs/dashboard.md), the
    JSON API (/api/v1, docs/api.md) and /metrics."""
    import uvicorn

    from ..otlp.mapping import AttributeMapping
    from ..otlp.server import otlp_app
    from ..web.api import ApiSettings
    from .app import listening_socket

    cfg = load_config(config)
    # Everything a user can get wrong is checked before the server says it is listening: the
    # [otlp] section, a ledger another process writes (or that is no ledger), a port already taken.
    AttributeMapping.from_config(cfg.section("otlp"))
    ApiSettings.from_config(cfg)  # [api] token_env naming a variable that is not set
    settings = None
    if watch:
        from ..watch.settings import load_watch_settings

        settings = load_watch_settings(cfg)
    book = open_ledger(ledger, config, prices)
    try:
        sock = listening_socket(
            host,
            port,
            "another `unitcost serve` or an OpenTelemetry collector may be using it: stop it or "
            "choose another --port",
        )
        application, _ = otlp_app(
            book, config=cfg, prices=prices, decode_workers=decode_workers, watch=settings
        )
    except BaseException:
        book.close()
        raise
    base = f"http://{host}:{sock.getsockname()[1]}"
    console().print(
        f"unitcost serve: OTLP/HTTP on {base}/v1/traces -> "
        f"{book.target}" + (f"; watching it every {settings.interval_s:g} s" if settings is not None else ""),
        markup=False,
    )
    # One line each: a script reads the first line for the OTLP address.
    console().print(
        f"Dashboard on {base}/dashboard; JSON API on {base}/api/v1 (OpenAPI: {base}/api/v1/openapi.json, "
        f"docs: {base}/api/docs); Prometheus metrics on {base}/metrics"
        + ("" if cfg.section("api").get("token_env") else "; no [api] token_env: open to whoever reaches it"),
        markup=False,
        soft_wrap=True,
    )
    server = uvicorn.Server(uvicorn.Config(application, log_level=log_level, access_log=False))
    server.run(sockets=[sock])


def _import(
    kind: str, file: Path, ledger: str | None, config: Path | None, prices: Path | None, show: int
) -> None:
    from ..connectors.importers import import_file

    out = console()
    with open_ledger(ledger, config, prices) as book_ledger:
        result = import_file(book_ledger, kind, file)
    out.print(
        f"{file}: {result.read:,} items read, {result.accepted:,} events accepted, "
        f"{result.duplicates:,} duplicates, {result.skipped:,} skipped (not model calls), "
        f"{result.rejected:,} rejected, {result.unpriced:,} without a price",
        markup=False,
    )
    for rejection in result.rejections[:show]:
        out.print(f"  {result.where(rejection)}: {rejection.field}: {rejection.reason}", markup=False)
    if result.rejected:
        raise typer.Exit(1)


FileArg = Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True)]
ShowOpt = Annotated[int, typer.Option("--show", help="How many rejections to print.")]


@import_app.command("litellm")
@friendly
def import_litellm(
    file: FileArg,
    show: ShowOpt = 20,
    ledger: LedgerOpt = None,
    config: ConfigOpt = None,
    prices: PricesOpt = None,
) -> None:
    """LiteLLM SpendLogs rows (CSV, JSON array or JSON lines). Its `spend` is kept as billed_cost."""
    _import("litellm", file, ledger, config, prices, show)


@import_app.command("langfuse")
@friendly
def import_langfuse(
    file: FileArg,
    show: ShowOpt = 20,
    ledger: LedgerOpt = None,
    config: ConfigOpt = None,
    prices: PricesOpt = None,
) -> None:
    """Langfuse observations export (JSON array or lines, CSV): generations with usage_details and
    cost_details. Its total cost is kept as billed_cost."""
    _import("langfuse", file, ledger, config, prices, show)


@import_app.command("openai-usage")
@friendly
def import_openai_usage(
    file: FileArg,
    show: ShowOpt = 20,
    ledger: LedgerOpt = None,
    config: ConfigOpt = None,
    prices: PricesOpt = None,
) -> None:
    """OpenAI organisation usage export (completions buckets, grouped by model): one event per bucket
    and group, `requests` set to num_model_requests."""
    _import("openai-usage", file, ledger, config, prices, show)


@app.command("reconcile")
@friendly
def reconcile_cmd(
    since: Annotated[str, typer.Option("--since", help="Start: an age (30d) or a date.")] = "30d",
    until: Annotated[str | None, typer.Option("--until", help="End (default: now).")] = None,
    threshold: Annotated[
        float, typer.Option("--threshold", help="Show models whose costs differ by more than this percent.")
    ] = 5.0,
    tolerance: Annotated[
        str,
        typer.Option(
            "--tolerance",
            help="...and by more than this many USD (e.g. 0.01 for a bill in cents; default 0).",
        ),
    ] = "0",
    show_all: Annotated[bool, typer.Option("--all", help="Show every model, agreeing or not.")] = False,
    fmt: FormatOpt = Format.table,
    ledger: LedgerOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Where unitcost's computed cost and the cost the source reported (billed_cost) disagree, per model."""
    print_reconcile(ledger, config, since, until, threshold, show_all, fmt, tolerance=tolerance)


def print_reconcile(
    ledger: str | None,
    config: Path | None,
    since: str,
    until: str | None,
    threshold: float,
    show_all: bool,
    fmt: Format,
    *,
    tolerance: str = "0",
) -> None:
    from ..connectors.reconcile import reconcile
    from .app import UserError

    with open_ledger(ledger, config, read_only=True) as book_ledger:
        try:
            rows = reconcile(
                book_ledger,
                since=since,
                until=until,
                threshold_pct=threshold,
                show_all=show_all,
                tolerance=tolerance,
            )
        except ValueError as exc:
            if str(exc).startswith("tolerance:"):
                raise UserError(f"--{exc}") from None
            raise
    limit = f"{threshold:g}%" + (f" and ${tolerance}" if Decimal(tolerance) else "")
    render(
        [r.as_row() for r in rows],
        [
            Col("provider", "provider"),
            Col("model", "model"),
            Col("calls", "calls", "int"),
            Col("computed", "unitcost $", "unit_money"),
            Col("billed", "source $", "unit_money"),
            Col("difference", "difference", "unit_money"),
            Col("difference_pct", "diff", "pct"),
            Col("unpriced", "unpriced", "int"),
            Col("billed_unpriced", "source $ unpriced", "unit_money"),
            Col("unbilled", "not billed", "int"),
        ],
        fmt,
        title=f"Computed vs billed cost, models differing by more than {limit}"
        if not show_all
        else "Computed vs billed cost",
    )
    if fmt != Format.table:
        return
    if not rows:
        console().print(
            f"nothing to show: no model with billed_cost differs by more than {limit}", markup=False
        )
    unbilled = sum(r.unbilled for r in rows)
    if unbilled:
        # Those calls are in neither sum: a bill with rows missing would otherwise read as agreement.
        console().print(
            f"{unbilled:,} calls of these models carry no billed cost (not billed): they are in neither sum.",
            markup=False,
        )
