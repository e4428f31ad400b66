"""The dashboard in the browser: server-rendered pages over the ledger, no internet needed.

Mounting it (in `unitcost serve`, beside the OTLP receiver):

    from unitcost.web.dashboard import dashboard_routes

    writer = ledger_writer(path, config=config)
    app = build_app([receiver.routes(), dashboard_routes(writer.call, config=config)], ...)

`dashboard_routes(call, *, config, prefix="/dashboard") -> list[BaseRoute]`:

- `call` runs a function with the open `Ledger` and returns a `concurrent.futures.Future` of its
  result: `BatchWriter.call` (the server's writer thread, which owns a DuckDB ledger's one
  connection; the same hook the hosted watch uses), or `ledger_caller(opener)` for a ledger the
  dashboard opens itself, e.g. read-only (`lambda: Ledger(path, config=config, read_only=True)`).
  Each page is one call: the page's reads run together, between two commits.
- `config` gives the budgets (`[[budget]]`); a budget that does not parse stops the routes from
  being built, with the config's message, as it stops `unitcost budgets`.
- `prefix` is where the pages live; every link and asset is under it.

The pages (docs/dashboard.md says what each shows):

    {prefix}                       overview of a window: ?since=30d&until=&where=team=search
    {prefix}/report                drill-down: ?by=team,model&since=&until=&where=&period=day&top=10
    {prefix}/budgets               spend against each budget, forecast, run-out day: ?now=
    {prefix}/alerts                open (and acknowledged) alerts, explained: ?status=&limit=
    {prefix}/alerts/{alert_id}     one alert and its history
    {prefix}/static/{name}         plotly.js from the installed `plotly` package, the page's
                                   script, style and icon

The figures are `unitcost report`'s, `budgets`' and `alerts`' (the same computations and the
same formatting), the report's from its hourly rollups. A parameter the page does not know or
cannot read is a 400 page that says which and why. Every value from the ledger is escaped.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import hashlib
import importlib.metadata
import importlib.resources
import logging
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Route

from ..config import Config
from . import dashboard_views as views

if TYPE_CHECKING:
    import jinja2

    from ..analytics.report import Report
    from ..api import Ledger
    from ..watch.budgets import Budget

log = logging.getLogger(__name__)

T = TypeVar("T")


class LedgerCall(Protocol):
    """Runs `fn` with the open ledger, somewhere that may use it, and gives its result as a future."""

    def __call__(self, fn: Callable[[Ledger], T], /) -> Future[T]: ...


DEFAULT_SINCE = "30d"
TOP_GROUPS = 5
"""How many teams, features and models the overview lists (the rest add up in one line)."""
OVERVIEW_DIMENSIONS = ("team", "feature", "model")
DEFAULT_BY = "model"  # as `unitcost report`
DEFAULT_ALERT_LIMIT = 50  # as `unitcost alerts`
PAGE_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


class BadParameterError(ValueError):
    """A parameter the page cannot use: the message says which, and why (a 400 page)."""


class NotFoundError(LookupError):
    pass


def ledger_caller(opener: Callable[[], AbstractContextManager[Ledger]]) -> LedgerCall:
    """A `LedgerCall` that opens the ledger for each page, on a thread of its own (not the
    server's event loop), and closes it after: for a dashboard over a ledger no writer of this
    process holds (a read-only DuckDB file, ClickHouse). An opener returning
    `contextlib.nullcontext(ledger)` reads an open ledger on its cursors and leaves it open
    (`unitcost serve`)."""
    pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="unitcost-dashboard")

    def call(fn: Callable[[Ledger], T], /) -> Future[T]:
        def run() -> T:
            with opener() as ledger:
                return fn(ledger)

        return pool.submit(run)

    return call


Guard = Callable[[Request], "Response | None"]
"""Answers a request the pages must not serve (no credentials: a 401), or None to serve it."""


def dashboard_routes(
    call: LedgerCall, *, config: Config, prefix: str = "/dashboard", guard: Guard | None = None
) -> list[BaseRoute]:
    """The dashboard's routes, to mount in a Starlette app (see the module's docstring).
    `guard` is asked first for every page (not for the static assets, which hold no data)."""
    from ..watch.settings import load_watch_settings

    prefix = "/" + prefix.strip("/") if prefix.strip("/") else ""
    pages = _Pages(call, load_watch_settings(config).budgets, prefix)

    def guarded(page: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
        if guard is None:
            return page

        async def checked(request: Request) -> Response:
            return guard(request) or await page(request)

        return checked

    return [
        Route(prefix or "/", guarded(pages.overview), methods=["GET"], name="dashboard"),
        Route(f"{prefix}/report", guarded(pages.report), methods=["GET"], name="dashboard_report"),
        Route(f"{prefix}/budgets", guarded(pages.budgets), methods=["GET"], name="dashboard_budgets"),
        Route(f"{prefix}/alerts", guarded(pages.alerts), methods=["GET"], name="dashboard_alerts"),
        Route(f"{prefix}/alerts/{{alert_id}}", guarded(pages.alert), methods=["GET"], name="dashboard_alert"),
        Route(f"{prefix}/static/{{name}}", pages.static, methods=["GET"], name="dashboard_static"),
    ]


# --------------------------------------------------------------------------- parameters


@dataclass(frozen=True)
class ReportParams:
    """A window and filters as `unitcost report` takes them (strings passed to it unchanged)."""

    since: str = DEFAULT_SINCE
    until: str | None = None
    where: tuple[str, ...] = ()
    by: tuple[str, ...] = ()
    period: str | None = None
    top: int | None = None

    def query(self, **changes: Any) -> str:
        """This page's parameters with `changes`, as a query string for a link."""
        values = {
            "since": self.since,
            "until": self.until or "",
            "where": list(self.where),
            "by": ",".join(self.by),
            "period": self.period or "",
            "top": "" if self.top is None else str(self.top),
        }
        values.update(changes)
        pairs: list[tuple[str, str]] = []
        for key in ("by", "since", "until", "period", "top", "where"):
            value = values[key]
            pairs.extend((key, str(v)) for v in (value if isinstance(value, list) else [value]))
        return views.query_string(pairs)


def _params(request: Request, allowed: Sequence[str], repeatable: Sequence[str] = ()) -> dict[str, list[str]]:
    """The query's parameters, each known to the page and given once unless it may repeat."""
    found: dict[str, list[str]] = {}
    for key, value in request.query_params.multi_items():
        if key not in allowed:
            raise BadParameterError(f"unknown parameter {key!r}: this page takes {', '.join(allowed)}")
        found.setdefault(key, []).append(value)
    for key, values in found.items():
        if len(values) > 1 and key not in repeatable:
            raise BadParameterError(
                f"{key} is given {len(values)} times ({', '.join(map(repr, values))}): give it once"
            )
    return found


def _one(found: Mapping[str, list[str]], key: str) -> str | None:
    """A parameter's value; an empty one (a form's blank field) is no value."""
    values = found.get(key)
    return (values[0].strip() or None) if values else None


def _report_params(found: Mapping[str, list[str]], *, drill: bool) -> ReportParams:
    from ..analytics.window import Window, parse_instant

    since = _one(found, "since") or DEFAULT_SINCE
    until = _one(found, "until")
    for key, text in (("since", since), ("until", until)):
        if text is not None:
            try:
                parse_instant(text)
            except ValueError as exc:
                raise BadParameterError(f"{key}: {exc}") from None
    try:
        Window.parse(since, until)
    except ValueError as exc:
        raise BadParameterError(str(exc)) from None
    where = tuple(w for w in found.get("where", []) if w.strip())
    if not drill:
        return ReportParams(since, until, where)
    by_text = _one(found, "by")
    by = tuple(b.strip() for b in (by_text if by_text is not None else DEFAULT_BY).split(",") if b.strip())
    top_text = _one(found, "top")
    top = None
    if top_text is not None:
        try:
            top = int(top_text)
        except ValueError:
            raise BadParameterError(
                f"top: expected a whole number of groups to show (1 or more), got {top_text!r}"
            ) from None
        if top < 1:
            raise BadParameterError(
                f"top: is how many groups to show, at least 1 (got {top}); leave it out for all"
            )
    return ReportParams(since, until, where, by, _one(found, "period"), top)


# --------------------------------------------------------------------------- pages


class _Pages:
    def __init__(self, call: LedgerCall, budgets: Sequence[Budget], prefix: str) -> None:
        self.call = call
        self.budget_list = list(budgets)
        self.prefix = prefix

    async def _read(self, fn: Callable[[Ledger], T]) -> T:
        return await asyncio.wrap_future(self.call(fn))

    def _page(self, template: str, code: int = 200, **context: Any) -> HTMLResponse:
        html = (
            _templates()
            .get_template(template)
            .render(base=self.prefix or "", plotly=_plotly_name(), **context)
        )
        headers = {"Content-Security-Policy": content_security_policy(), **PAGE_HEADERS}
        return HTMLResponse(html, status_code=code, headers=headers)

    def _error(self, code: int, title: str, message: str) -> HTMLResponse:
        return self._page("error.html", code, page="", title=title, message=message)

    async def _guarded(self, render: Callable[[], Any]) -> Response:
        """A page, or the 400 page for a parameter it cannot use (the report's own checks of
        dimensions, filters and periods included), or a 500 page that hides the details."""
        from ..analytics.report import ReportError

        try:
            response: Response = await render()
            return response
        except (BadParameterError, ReportError) as exc:
            return self._error(400, "Bad request", str(exc))
        except NotFoundError as exc:
            return self._error(404, "Not found", str(exc))
        except Exception:
            # The details (a ClickHouse URL among them) go to the log, not to the browser.
            log.exception("dashboard: a page could not be read from the ledger")
            return self._error(500, "Server error", "the ledger could not be read; see the server's log")

    # ------------------------------------------------------------------ overview

    async def overview(self, request: Request) -> Response:
        async def render() -> Response:
            params = _report_params(_params(request, ("since", "until", "where"), ("where",)), drill=False)

            def read(ledger: Ledger) -> tuple[dict[str, Report], int, str | None]:
                from ..watch.incidents import open_alerts

                reports = {
                    dim: ledger.report_sections(
                        params.since, params.until, dim, None, list(params.where), TOP_GROUPS
                    )
                    for dim in OVERVIEW_DIMENSIONS
                }
                first = reports[OVERVIEW_DIMENSIONS[0]]
                return reports, len(open_alerts(ledger.store)), _empty_hint(ledger, first)

            reports, alerts, hint = await self._read(read)
            report = reports[OVERVIEW_DIMENSIONS[0]]
            tops = [
                self._report_table(
                    reports[dim], params, _top_columns(dim), title=f"Top {TOP_GROUPS} {_plural(dim)}"
                )
                for dim in OVERVIEW_DIMENSIONS
            ]
            return self._page(
                "overview.html",
                page="overview",
                title="Overview",
                params=params,
                report=report,
                headline=_headline(report),
                tiles=_tiles(report),
                hint=hint,
                chart=views.spend_chart(report) if report.headline.get("calls") else None,
                tops=tops,
                units=self._units_table(report),
                unpriced=self._unpriced_table(report),
                open_alerts=alerts,
            )

        return await self._guarded(render)

    # ------------------------------------------------------------------ drill-down

    async def report(self, request: Request) -> Response:
        async def render() -> Response:
            found = _params(request, ("by", "since", "until", "where", "period", "top"), ("where",))
            params = _report_params(found, drill=True)

            def read(ledger: Ledger) -> tuple[Report, str | None]:
                report = ledger.report_sections(
                    params.since, params.until, list(params.by), params.period, list(params.where), params.top
                )
                return report, _empty_hint(ledger, report)

            report, hint = await self._read(read)
            from ..cli.ledger_cmds import TABLE_COLUMNS, table_caption
            from ..cli.output import Col

            dims = [Col(d, d, "ts" if d == "period" else "dim") for d in report.dimensions]
            main = self._report_table(
                report,
                params,
                [*dims, *TABLE_COLUMNS],
                title=f"By {', '.join(report.dimensions) or 'total'}",
                caption=table_caption(report),
            )
            return self._page(
                "report.html",
                page="report",
                title=f"By {', '.join(report.dimensions) or 'total'}",
                params=params,
                report=report,
                headline=_headline(report),
                hint=hint,
                chart=views.spend_chart(report) if report.headline.get("calls") else None,
                groups_chart=views.groups_chart(report),
                table=main,
                units=self._units_table(report),
                unpriced=self._unpriced_table(report),
            )

        return await self._guarded(render)

    def _report_table(
        self,
        report: Report,
        params: ReportParams,
        columns: Sequence[Any],
        *,
        title: str,
        caption: str | None = None,
    ) -> views.Table:
        """A table of the report's rows whose dimension values link to the drill-down narrowed
        to that value (split by the next dimension when every shown one is chosen)."""
        from ..cli.ledger_cmds import table_caption, table_rows

        labels = [d for d in report.dimensions if d != "period"]

        def link(col: Any, row: Mapping[str, Any]) -> str | None:
            if col.key not in labels:
                return None
            where = [*params.where, f"{col.key}={views.filter_value(row.get(col.key))}"]
            rest = [d for d in labels if d != col.key] or [views.next_dimension(labels)]
            query = params.query(by=",".join(rest), where=where, top="")
            return f"{self.prefix}/report{query}"

        return views.table(
            table_rows(report), columns, title=title, caption=caption or table_caption(report), link=link
        )

    def _units_table(self, report: Report) -> views.Table | None:
        from ..cli.ledger_cmds import UNIT_COLUMNS

        return views.table(report.units, UNIT_COLUMNS, title="Business units") if report.units else None

    def _unpriced_table(self, report: Report) -> views.Table | None:
        from ..cli.ledger_cmds import UNPRICED_COLUMNS

        if not report.unpriced:
            return None
        return views.table(report.unpriced, UNPRICED_COLUMNS, title="Unpriced calls (counted, never $0)")

    # ------------------------------------------------------------------ budgets

    async def budgets(self, request: Request) -> Response:
        async def render() -> Response:
            from ..analytics.window import parse_instant

            text = _one(_params(request, ("now",)), "now")
            try:
                at = parse_instant(text) if text else datetime.now(UTC)
            except ValueError as exc:
                raise BadParameterError(f"now: {exc}") from None
            budgets = self.budget_list

            def read(ledger: Ledger) -> list[dict[str, Any]]:
                from ..watch.budgets import budget_row

                rows = []
                for budget in budgets:
                    status, row = budget_row(ledger.store, budget, at)
                    row["runs_out_text"] = status.runs_out_text()
                    rows.append(row)
                return rows

            rows = await self._read(read) if budgets else []
            from ..cli.output import Col
            from ..cli.watch_cmds import BUDGET_COLUMNS

            shown = [{**row, "runs_out": row["runs_out_text"]} for row in rows]
            columns = [*BUDGET_COLUMNS, Col("forecast_basis", "forecast basis")]
            return self._page(
                "budgets.html",
                page="budgets",
                title="Budgets",
                at=at,
                rows=shown,
                bars=[(row, views.used_percent(row)) for row in shown],
                table=views.table(shown, columns, title=f"Budgets at {at:%Y-%m-%d %H:%M} UTC"),
                notes=[row["note"] for row in shown if row["note"]],
                chart=views.budgets_chart(shown),
            )

        return await self._guarded(render)

    # ------------------------------------------------------------------ alerts

    async def alerts(self, request: Request) -> Response:
        async def render() -> Response:
            from ..watch.incidents import STATUSES

            found = _params(request, ("status", "limit"))
            status = _one(found, "status")
            if status is not None and status not in (*STATUSES, "all"):
                raise BadParameterError(
                    f"status: unknown alert status {status!r}; use one of {', '.join(STATUSES)} or all"
                )
            limit_text = _one(found, "limit")
            limit = DEFAULT_ALERT_LIMIT
            if limit_text is not None:
                try:
                    limit = int(limit_text)
                except ValueError:
                    limit = 0
                if limit < 1:
                    raise BadParameterError(
                        f"limit: expected a whole number of alerts (1 or more), got {limit_text!r}"
                    )

            def read(ledger: Ledger) -> list[dict[str, Any]]:
                from ..watch.incidents import list_alerts, open_alerts

                if status is None:
                    # Open and acknowledged ones: what still holds, most recently seen first.
                    rows = sorted(open_alerts(ledger.store), key=lambda r: r["last_seen"], reverse=True)
                    return rows[:limit]
                return list_alerts(ledger.store, status=None if status == "all" else status, limit=limit)

            rows = await self._read(read)
            from ..cli.watch_cmds import ALERT_COLUMNS, alerts_title

            def link(col: Any, row: Mapping[str, Any]) -> str | None:
                return f"{self.prefix}/alerts/{row['alert_id']}" if col.key == "alert_id" else None

            return self._page(
                "alerts.html",
                page="alerts",
                title="Alerts" if status is None else f"Alerts: {status}",
                shown_status=status,
                alerts=rows,
                table=views.table(rows, ALERT_COLUMNS, title=alerts_title(len(rows)), link=link),
            )

        return await self._guarded(render)

    async def alert(self, request: Request) -> Response:
        async def render() -> Response:
            _params(request, ())
            alert_id = request.path_params["alert_id"]

            def read(ledger: Ledger) -> tuple[dict[str, Any], list[dict[str, Any]]]:
                from ..watch.incidents import alert_history, find_alert

                try:
                    row = find_alert(ledger.store, alert_id)
                except ValueError as exc:
                    raise NotFoundError(str(exc)) from None
                return row, alert_history(ledger.store, row["alert_id"])

            row, history = await self._read(read)
            from ..cli.output import Col

            columns = [
                Col("at", "at (UTC)", "ts"),
                Col("kind", "event"),
                Col("sink", "sink"),
                Col("message", "detail"),
            ]
            return self._page(
                "alert.html",
                page="alerts",
                title=f"Alert {row['alert_id']}",
                alert=row,
                history=views.table(history, columns, title="History"),
            )

        return await self._guarded(render)

    # ------------------------------------------------------------------ static

    async def static(self, request: Request) -> Response:
        name = request.path_params["name"]
        # Only the known names reach the cache: a scan of made-up names must not fill it.
        asset = _asset(name) if name == _plotly_name() or name in _ASSETS else None
        if asset is None:
            return self._error(404, "Not found", f"no asset {name!r}")
        body, media_type, immutable = asset
        headers = {
            "Cache-Control": "public, max-age=31536000, immutable" if immutable else "public, max-age=300",
            "X-Content-Type-Options": "nosniff",
            "Vary": "Accept-Encoding",
        }
        if "gzip" in request.headers.get("accept-encoding", "") and len(body) > 4096:
            headers["Content-Encoding"] = "gzip"
            return Response(_gzipped(name), media_type=media_type, headers=headers)
        return Response(body, media_type=media_type, headers=headers)


def _empty_hint(ledger: Ledger, report: Report) -> str | None:
    """What `unitcost report` says when the window holds no call: where the events are."""
    if report.headline.get("calls", 0):
        return None
    from ..cli.app import where_the_events_are

    window = report.query.window
    if report.query.where:
        return f"No event in {window.describe()} matches the filters; check the dimensions and values."
    return f"No events in {window.describe()}. {where_the_events_are(ledger)}"


def _headline(report: Report) -> list[str]:
    from ..cli.ledger_cmds import headline_lines

    # The sparkline line is drawn as a chart on the page.
    return [line for line in headline_lines(report) if not line.startswith("spend per ")]


def _tiles(report: Report) -> list[tuple[str, str]]:
    """The unit costs the headline does not carry: per business unit and per success."""
    from ..cli.output import fmt_value

    h = report.headline
    return [
        ("cost per unit", fmt_value(h.get("cost_per_unit"), "unit_money")),
        ("cost per success", fmt_value(h.get("cost_per_success"), "unit_money")),
        ("success rate", fmt_value(h.get("success_rate"), "ratio")),
        ("units", fmt_value(h.get("units"), "int")),
    ]


def _top_columns(dim: str) -> list[Any]:
    from ..cli.ledger_cmds import TABLE_COLUMNS
    from ..cli.output import Col

    keep = ("calls", "spend", "share", "trend_pct", "cost_per_request", "unpriced_calls")
    return [Col(dim, dim, "dim"), *(c for c in TABLE_COLUMNS if c.key in keep)]


def _plural(dim: str) -> str:
    return {"team": "teams", "feature": "features", "model": "models"}.get(dim, dim)


# --------------------------------------------------------------------------- templates, assets


@cache
def _templates() -> jinja2.Environment:
    import jinja2

    return jinja2.Environment(
        loader=jinja2.PackageLoader("unitcost.web", "templates"),
        # Every value is escaped unless a template says otherwise (none does).
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


@cache
def _plotly_name() -> str:
    # Versioned, so a browser may keep it for a year and still load a new one after an upgrade.
    return f"plotly-{importlib.metadata.version('plotly')}.min.js"


_ASSETS: dict[str, tuple[str, tuple[str, ...], str, bool]] = {
    # name -> (package, path in it, media type, immutable)
    "dashboard.js": ("unitcost.web", ("static", "dashboard.js"), "text/javascript", False),
    "dashboard.css": ("unitcost.web", ("static", "dashboard.css"), "text/css", False),
    "favicon.svg": ("unitcost.web", ("static", "favicon.svg"), "image/svg+xml", False),
}

# A <style> plotly.js writes with its text in the bundle: `createElement("style");e.id="...",
# e.textContent='...'` (maplibre's sheet). One whose text has an escape is not matched: the
# browser then refuses that sheet (a console message) and the charts, which do not use it,
# still draw.
_BUNDLED_STYLE = re.compile(r"""createElement\("style"\);(\w+)\.id="[^"]*",\1\.textContent='([^'\\]*)'""")


@cache
def content_security_policy() -> str:
    """Nothing but this server's own scripts and style sheet, and no inline style but what
    plotly.js writes: the empty <style> it fills through the CSSOM (hover labels, the mode
    bar; a browser checks the text a <style> is created with, not the rules added to it
    after) and the sheets whose text its bundle carries, each by its hash. The data in a page
    is never code, and no value from the ledger can style it."""
    styles = [""]
    plotly_js = _asset(_plotly_name())
    if plotly_js is not None:
        styles += [m.group(2) for m in _BUNDLED_STYLE.finditer(plotly_js[0].decode("utf-8", "replace"))]
    hashes = " ".join(f"'sha256-{_sha256_base64(text)}'" for text in styles)
    return (
        f"default-src 'self'; script-src 'self'; style-src 'self' {hashes}; "
        "img-src 'self' data: blob:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
        "form-action 'self'"
    )


def _sha256_base64(text: str) -> str:
    return base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()


@cache
def _asset(name: str) -> tuple[bytes, str, bool] | None:
    """(body, media type, immutable) of a static asset, read once. plotly.js comes from the
    installed `plotly` package: no CDN, nothing fetched from the internet."""
    if name == _plotly_name():
        source: tuple[str, tuple[str, ...], str, bool] | None = (
            "plotly",
            ("package_data", "plotly.min.js"),
            "text/javascript",
            True,
        )
    else:
        source = _ASSETS.get(name)
    if source is None:
        return None
    package, parts, media_type, immutable = source
    return importlib.resources.files(package).joinpath(*parts).read_bytes(), media_type, immutable


@cache
def _gzipped(name: str) -> bytes:
    asset = _asset(name)
    assert asset is not None
    return gzip.compress(asset[0], compresslevel=6, mtime=0)
