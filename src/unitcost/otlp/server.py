"""`unitcost serve`: one long-running process that owns the ledger's write connection.

The app is composed from parts so other long-running features (e.g. `watch`) can be
hosted beside the OTLP receiver:

    writer = ledger_writer("costs.duckdb")
    app = build_app([TraceReceiver(writer).routes(), other_feature.routes()], on_shutdown=[writer.close])
    uvicorn.run(app, host="127.0.0.1", port=4318)
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from ..config import Config
from ..connectors.writer import BatchWriter
from .mapping import AttributeMapping
from .receiver import TraceReceiver

if TYPE_CHECKING:
    from ..api import Ledger
    from ..watch.settings import WatchSettings

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 4318  # the OTLP/HTTP port exporters use by default


def ledger_writer(
    ledger: str | Path | Ledger | None, *, config: Config | None = None, prices: Path | None = None
) -> BatchWriter:
    """A writer that owns the ledger's write connection (DuckDB: one writer per file).

    Given a path (or None), the writer's thread opens the ledger on its first write. Given an
    open `Ledger`, the writer takes it over: a server opens it before it starts listening, so a
    ledger it cannot write (busy, not a ledger) stops it at once rather than failing every export.
    """
    path: str | Path | None = None
    opened: list[Ledger] = []
    if ledger is None or isinstance(ledger, (str, Path)):
        path = ledger
    else:
        opened.append(ledger)

    def open_ledger() -> Ledger:
        if opened:
            return opened.pop()
        from ..api import Ledger

        return Ledger(path, config=config, prices=prices)

    # While one commit runs, the exports arriving meanwhile queue up and share the next one.
    return BatchWriter(open_ledger, source="otlp", typed=True, name="unitcost-serve-writer")


async def _health(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


def build_app(
    parts: Iterable[Sequence[BaseRoute]],
    *,
    on_shutdown: Sequence[Callable[[], Any]] = (),
    background: Sequence[Callable[[asyncio.Event], Coroutine[Any, Any, None]]] = (),
) -> Starlette:
    """An ASGI app from route groups. `background` loops (e.g. the watch) run while the server
    does and are told to stop, and awaited, when it stops; then the `on_shutdown` callables run
    in order."""
    routes: list[BaseRoute] = [Route("/healthz", _health, methods=["GET"])]
    for part in parts:
        routes.extend(part)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        stop = asyncio.Event()
        tasks = [asyncio.create_task(loop(stop)) for loop in background]
        try:
            yield
        finally:
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
            for close in on_shutdown:
                close()

    return Starlette(routes=routes, lifespan=lifespan)


DASHBOARD_PREFIX = "/dashboard"


def otlp_app(
    ledger: str | Path | Ledger | None,
    *,
    config: Config | None = None,
    prices: Path | None = None,
    decode_workers: int = 0,
    watch: WatchSettings | None = None,
) -> tuple[Starlette, TraceReceiver]:
    """The default `unitcost serve` app: health check, OTLP/HTTP trace receiver, the JSON API
    (/api/v1, `web.api`) and /metrics over the ledger it writes, and the watch loop when
    `watch` settings are given.

    `ledger` is a path (opened on the first write) or an open `Ledger` the app takes over and
    closes when it stops. `decode_workers` > 0 decodes requests in that many worker processes
    (see `workers`). The watch cycles run on the ledger writer's thread, between commits: the
    server owns the ledger's one write connection, so no other process could watch it."""
    config = config or Config()
    mapping = AttributeMapping.from_config(config.section("otlp"))
    sinks = None
    if watch is not None:
        from ..watch.sinks import build_sinks

        sinks = build_sinks(watch.sinks)  # a sink without a URL is refused before anything starts
    from ..web.api import ApiSettings, JsonApi, LedgerSource
    from ..web.dashboard import dashboard_routes, ledger_caller
    from ..web.serve_metrics import ServeMetrics

    # A token variable not set, a budget misconfigured: refused before anything starts.
    api_settings = ApiSettings.from_config(config)
    budgets = watch.budgets if watch is not None else JsonApi.budgets_of(config)
    writer = ledger_writer(ledger, config=config, prices=prices)
    receiver = TraceReceiver(writer, mapping, decode_workers=decode_workers)
    # The API reads the ledger the writer owns, on cursors of its own (see `LedgerSource`).
    source = LedgerSource(None if ledger is None or isinstance(ledger, (str, Path)) else ledger, writer.call)
    api = JsonApi(source, settings=api_settings, budgets=budgets)
    metrics = ServeMetrics(receiver, writer, source, budgets=budgets, settings=api_settings)
    # The pages read as the API does: in threads of their own, on cursors of the served ledger,
    # beside the writer's commits rather than between them (the ledger stays open: no closing).
    reads = ledger_caller(lambda: contextlib.nullcontext(source.ledger()))
    dashboard = dashboard_routes(
        reads, config=config, prefix=DASHBOARD_PREFIX, guard=api_settings.browser_refusal
    )
    home = Route("/", lambda _: RedirectResponse(DASHBOARD_PREFIX), methods=["GET"])
    parts: list[Sequence[BaseRoute]] = [receiver.routes(), api.routes(), metrics.routes(), dashboard, [home]]
    if watch is None:
        return build_app(parts, on_shutdown=[receiver.close, writer.close]), receiver
    from ..watch.runner import HostedWatch

    hosted = HostedWatch(metrics.timed(writer.call), watch, sinks=sinks)
    # Deliveries still under way are given a few seconds to be logged in the ledger before it closes.
    shutdown = [receiver.close, lambda: hosted.close(5.0), writer.close]
    return build_app(parts, on_shutdown=shutdown, background=[hosted.run]), receiver
