"""The JSON API over a served ledger: `/api/v1/...` routes for programs (a FinOps notebook, a
chargeback job, an internal portal) that need the numbers the CLI shows, to the last digit.

Every answer is made by the functions the CLI calls (`Ledger.report_sections`, `budget_row`,
`list_alerts`, `acknowledge_many`, `price_history`, `quote_document`), encoded the way `--format
json` encodes it: money as exact decimal strings, an unknown cost as null.

Reads run in worker threads on cursors of the server's own store (`LedgerSource`): on DuckDB a
cursor reads beside the writer's commits without waiting for them, and the store is not given
up to a waiting command while a read is under way. An acknowledgement is a write, handed to the
writer's thread between two commits, as the watch loop's writes are. Request bodies are read,
checked and dropped: nothing of them is kept but what an acknowledgement records.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import json
import logging
import os
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from ..config import Config, ConfigError
from ..exact_json import json_default
from .openapi import SERVER_OPERATIONS, Operation, Param, docs_page, document

if TYPE_CHECKING:
    from ..api import Ledger
    from ..watch.budgets import Budget

log = logging.getLogger("unitcost.api")

T = TypeVar("T")

API_KEYS = ("token_env",)
"""The keys of the config's [api] section."""


@dataclass(frozen=True)
class ApiSettings:
    """The [api] section: `token_env` names the environment variable holding the bearer token
    that /api/v1 and /metrics then require (cost data is sensitive; the token is never in the file)."""

    token: str | None = None

    @classmethod
    def from_config(cls, config: Config) -> ApiSettings:
        where = f"{config.path or 'config'}: [api]"
        section = config.section("api")
        unknown = sorted(set(section) - set(API_KEYS))
        if unknown:
            raise ConfigError(
                f"{where}: unknown key(s) {', '.join(unknown)}; the keys are {', '.join(API_KEYS)}"
            )
        variable = section.get("token_env")
        if variable is None:
            return cls()
        if not isinstance(variable, str) or not variable:
            raise ConfigError(f"{where} token_env: expected the name of an environment variable")
        token = os.environ.get(variable)
        if not token:
            # Serving cost data open because a variable was not exported would be the worst default.
            raise ConfigError(
                f"{where} token_env names the environment variable {variable}, which is not set (or empty)"
            )
        return cls(token=token)

    def refusal(self, request: Request) -> Response | None:
        """A 401 when a token is required and the request does not carry it, else None."""
        if self.token is None:
            return None
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), self.token.encode()):
            return None
        return error_response(
            401,
            "this API needs the bearer token of the server's [api] token_env: send Authorization: Bearer TOKEN",
            headers={"WWW-Authenticate": 'Bearer realm="unitcost"'},
        )

    def browser_refusal(self, request: Request) -> Response | None:
        """As `refusal`, for pages a person opens in a browser, which cannot send a bearer token
        but asks for a user name and password when told to (HTTP Basic): the password is the
        token, the user name anything. A bearer token is accepted too (a script fetching a page)."""
        if self.token is None:
            return None
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "basic":
            try:
                password = base64.b64decode(given.strip(), validate=True).decode().partition(":")[2]
            except (ValueError, UnicodeDecodeError):
                password = ""
            if hmac.compare_digest(password.encode(), self.token.encode()):
                return None
        elif self.refusal(request) is None:
            return None
        return PlainTextResponse(
            "This dashboard needs the server's [api] token: give it as the password (any user name).",
            status_code=401,
            headers={"WWW-Authenticate": 'Basic realm="unitcost", charset="UTF-8"'},
        )


class LedgerSource:
    """How the HTTP parts of a server reach the ledger its writer thread owns.

    `ledger` is the open `Ledger` the writer took over, or None when the writer opens it itself
    on its first write (it is then fetched from the writer's thread once). `call` runs a
    function on the writer's thread between two commits (`BatchWriter.call`)."""

    def __init__(self, ledger: Ledger | None, call: Callable[[Callable[[Ledger], Any]], Future[Any]]) -> None:
        self._ledger = ledger
        self._call = call

    def ledger(self) -> Ledger:
        """The served ledger (blocking: call it from a worker thread)."""
        if self._ledger is None:
            self._ledger = self._call(lambda opened: opened).result()
        return self._ledger

    async def read(self, fn: Callable[[Ledger], T]) -> T:
        """`fn(ledger)` in a worker thread: its reads use cursors of their own."""
        return await run_in_threadpool(lambda: fn(self.ledger()))

    async def write(self, fn: Callable[[Ledger], T]) -> T:
        """`fn(ledger)` on the writer's thread, between two commits."""
        result: T = await asyncio.wrap_future(self._call(fn))
        return result


class ApiError(Exception):
    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.extra = extra


def json_response(data: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    """JSON as `unitcost ... --format json` writes it: exact decimals as strings, ISO instants."""
    return Response(
        orjson.dumps(data, default=json_default),
        status_code=status,
        media_type="application/json",
        headers=dict(headers) if headers else None,
    )


def error_response(
    status: int, message: str, *, headers: Mapping[str, str] | None = None, **extra: Any
) -> Response:
    return json_response({"error": message, "status": status, **extra}, status, headers)


# --------------------------------------------------------------------------- parameters

_TEXT = {"type": "string"}

SINCE = Param(
    "since",
    "Start: an age (30d, 12h, 2w; from the start of its unit: 30d is 30 whole days and today), "
    "a month (2025-09) or a date, UTC",
    _TEXT,
)
UNTIL = Param("until", "End, excluded (default: now): since=2025-09&until=2025-10 is September", _TEXT)


def _query(request: Request, op: Operation) -> dict[str, Any]:
    """The query parameters `op` declares: a name it does not know is refused rather than ignored
    (a misspelt `sinec=2025-09` would otherwise answer for the default window)."""
    known = {p.name: p for p in op.params if p.where == "query"}
    unknown = sorted(set(request.query_params) - set(known))
    if unknown:
        raise ApiError(
            400,
            f"unknown query parameter(s) {', '.join(unknown)}; {op.method} {op.path} takes "
            + (", ".join(known) or "none"),
        )
    values: dict[str, Any] = {}
    for name, param in known.items():
        given = request.query_params.getlist(name)
        if param.repeated:
            values[name] = given
        elif len(given) > 1:
            raise ApiError(400, f"{name}: given {len(given)} times; it takes one value")
        else:
            values[name] = given[0] if given else None
    return values


def _integer(name: str, value: str | None, default: int | None, minimum: int) -> int | None:
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except ValueError:
        raise ApiError(400, f"{name}: expected a whole number, got {value!r}") from None
    if number < minimum:
        raise ApiError(400, f"{name}: expected {minimum} or more, got {number}")
    return number


def _instant(name: str, value: str | None) -> datetime | None:
    if not value:
        return None
    from ..analytics.window import parse_instant

    try:
        return parse_instant(value)
    except ValueError as exc:
        raise ApiError(400, f"{name}: {exc}") from None


async def _json_body(request: Request, schema: str) -> dict[str, Any]:
    """The request's JSON object (read, parsed and dropped: nothing of it is stored or logged)."""
    raw = await request.body()
    if len(raw) > MAX_BODY:
        raise ApiError(413, f"the body is larger than {MAX_BODY:,} bytes")
    try:
        body = json.loads(raw) if raw else None
    except ValueError as exc:
        raise ApiError(400, f"the body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ApiError(400, f"the body must be a JSON object ({schema})")
    return body


MAX_BODY = 64 * 1024
"""A price request or an acknowledgement is a few hundred bytes."""


def _string(body: Mapping[str, Any], key: str, *, required: bool = False) -> str | None:
    value = body.get(key)
    if value is None:
        if required:
            raise ApiError(400, f"{key}: required")
        return None
    if not isinstance(value, str):
        raise ApiError(400, f"{key}: expected a string, got {json.dumps(value)}")
    if required and not value.strip():
        raise ApiError(400, f"{key}: must not be empty")
    return value


def _only(body: Mapping[str, Any], keys: Sequence[str], what: str) -> None:
    unknown = sorted(set(body) - set(keys))
    if unknown:
        raise ApiError(
            400, f"{what}: unknown field(s) {', '.join(unknown)}; the fields are {', '.join(keys)}"
        )


# --------------------------------------------------------------------------- operations


def _periods() -> tuple[str, ...]:
    from ..analytics.report import PERIODS

    return PERIODS


REPORT = Operation(
    "GET",
    "/api/v1/report",
    "getReport",
    "Spend, unit costs, caching, waste, latency and unpriced calls, by dimensions",
    "What `unitcost report --format json` prints for the same parameters. The headline and every "
    "row carry unpriced_calls and unpriced_tokens; `unpriced` lists those calls by model, with why.",
    "Report",
    (
        replace(SINCE, description=SINCE.description + " (default: 30d)"),
        UNTIL,
        Param(
            "by",
            "Comma-separated dimensions: team, app, feature, model, provider, user, customer, unit, "
            "status, price_ref, ... or tag:<name> (default: model; empty for the total alone)",
            _TEXT,
        ),
        Param("period", "Split by hour, day, week or month", {"type": "string", "enum": list(_periods())}),
        Param(
            "where",
            "A filter such as team=search, model!=gpt-4o or tag:region=eu,us; all must hold",
            _TEXT,
            repeated=True,
        ),
        Param(
            "top",
            "Only the N biggest groups (what is left out is in `others`)",
            {"type": "integer", "minimum": 1},
        ),
    ),
    errors={400: "a bad date, an unknown dimension, period or filter"},
)

BUDGETS = Operation(
    "GET",
    "/api/v1/budgets",
    "getBudgets",
    "Each budget of the config: spend to date, burn rate, forecast with its 90 % interval, run-out day",
    "What `unitcost budgets --format json` prints: one row per [[budget]] of the server's config, "
    "thresholds crossed, the day-over-week variation, and the calls in scope that have no price.",
    "Budgets",
    (Param("now", "Judge as of this instant (ISO 8601), e.g. to replay a past month", _TEXT),),
    errors={400: "a bad instant"},
)

ALERTS = Operation(
    "GET",
    "/api/v1/alerts",
    "listAlerts",
    "Alerts (incidents) from the ledger, most recently seen first",
    "What `unitcost alerts --format json` lists, with each alert's details as an object.",
    "Alerts",
    (
        Param(
            "state",
            "open, acknowledged or resolved (default: all)",
            {"type": "string", "enum": ["open", "acknowledged", "resolved"]},
        ),
        Param("detector", "Only this detector's alerts (budget, cost_per_hour, ...)", _TEXT),
        Param("since", "Only alerts seen since: an age (24h, 7d) or a date/datetime, UTC", _TEXT),
        Param("limit", "At most this many (default 50)", {"type": "integer", "minimum": 1, "maximum": 10000}),
    ),
    errors={400: "an unknown state or detector, a bad date"},
)

ACK = Operation(
    "POST",
    "/api/v1/alerts/{alert_id}/ack",
    "ackAlert",
    "Acknowledge an alert: it keeps its history but notifies nobody until it resolves",
    "What `unitcost alerts ack ID --by WHO` does; the note goes into the alert's history.",
    "AckResult",
    (Param("alert_id", "The alert's id, or a unique prefix of it", _TEXT, where="path"),),
    body="AckRequest",
    errors={
        400: "no `by`, an ambiguous id prefix, a body that is not the AckRequest object",
        404: "no alert has this id",
        409: "the alert is already resolved",
    },
)

PRICES = Operation(
    "GET",
    "/api/v1/prices/{model}",
    "getPriceHistory",
    "The dated price history of a model: every tier and layer, with source and effective dates",
    "What `unitcost prices show MODEL --format json` lists (USD per million tokens). The model may "
    "be written provider/model.",
    "PriceHistory",
    (
        Param("model", "Model name or id (gpt-4o, openai/gpt-4o, claude-sonnet-4-5)", _TEXT, where="path"),
        Param("provider", "Provider id, when the name is ambiguous (azure, openrouter, ...)", _TEXT),
        Param(
            "tier",
            "Only these tiers",
            {"type": "string", "enum": ["standard", "batch", "flex", "priority"]},
            repeated=True,
        ),
    ),
    errors={400: "an unknown tier", 404: "no price layer knows the model (the answer lists close names)"},
)

PRICE = Operation(
    "POST",
    "/api/v1/price",
    "priceCall",
    "Price one call exactly: its breakdown, every quantity with its rate, the price's source and dates",
    "What `unitcost price MODEL --input N ... --format json` prints. A known model with no price at "
    "that date or tier answers an UnpricedCall (cost null, with the reason), never $0.",
    "PriceAnswer",
    body="PriceRequest",
    errors={
        400: "a usage whose parts exceed its totals, an unknown field or tier, a bad date",
        404: "no price layer knows the model (the answer lists close names)",
    },
)

OPENAPI = Operation(
    "GET",
    "/api/v1/openapi.json",
    "getOpenApi",
    "This document (OpenAPI 3.1)",
    "Open without a token: it holds no cost data.",
    "OpenAPI",
    protected=False,
)

DOCS = Operation(
    "GET",
    "/api/docs",
    "getDocs",
    "The API's documentation as a page for people (nothing loaded from the internet)",
    "Made from this document. Open without a token: it holds no cost data.",
    "Html",
    protected=False,
    media_type="text/html",
)

OPERATIONS: tuple[Operation, ...] = (REPORT, BUDGETS, ALERTS, ACK, PRICES, PRICE, OPENAPI, DOCS)


# --------------------------------------------------------------------------- the routes


Handler = Callable[[Request], Awaitable[Response]]


class JsonApi:
    """The /api routes of a server, over the ledger `source` reaches."""

    def __init__(
        self,
        source: LedgerSource,
        *,
        settings: ApiSettings | None = None,
        budgets: Sequence[Budget] = (),
    ) -> None:
        self.source = source
        self.settings = settings or ApiSettings()
        self.budgets = list(budgets)
        self._document = document([*OPERATIONS, *SERVER_OPERATIONS])
        self._page = docs_page(self._document)

    @classmethod
    def from_config(cls, source: LedgerSource, config: Config) -> JsonApi:
        """The API as the config sets it up: its token ([api]) and budgets ([[budget]]), both
        checked now, before the server listens."""
        return cls(source, settings=ApiSettings.from_config(config), budgets=cls.budgets_of(config))

    @staticmethod
    def budgets_of(config: Config) -> list[Budget]:
        """The config's [[budget]] tables (as the watch reads them), checked."""
        from ..watch.budgets import parse_budgets

        try:
            return parse_budgets(config.raw.get("budget", []))
        except ValueError as exc:
            raise ConfigError(f"{config.path or 'config'}: {exc}") from exc

    @property
    def document(self) -> dict[str, Any]:
        return self._document

    def routes(self) -> list[BaseRoute]:
        handlers: list[tuple[Operation, Handler]] = [
            (REPORT, self.report),
            (BUDGETS, self.budgets_endpoint),
            (ALERTS, self.alerts),
            (ACK, self.ack),
            (PRICES, self.prices),
            (PRICE, self.price),
            (OPENAPI, self.openapi),
            (DOCS, self.docs),
        ]
        routes: list[BaseRoute] = []
        for op, handler in handlers:
            # Starlette's `{model:path}` lets a model id hold a slash (openai/gpt-4o).
            path = op.path.replace("{model}", "{model:path}")
            routes.append(Route(path, self._guarded(op, handler), methods=[op.method]))
        return routes

    def _guarded(self, op: Operation, handler: Handler) -> Handler:
        async def endpoint(request: Request) -> Response:
            if op.protected:
                refusal = self.settings.refusal(request)
                if refusal is not None:
                    return refusal
            try:
                return await handler(request)
            except Exception as exc:
                return _error_for(exc, op)

        return endpoint

    # ------------------------------------------------------------------ handlers

    async def report(self, request: Request) -> Response:
        from ..analytics.report import report_document

        q = _query(request, REPORT)
        top = _integer("top", q["top"], None, 1)
        by = "model" if q["by"] is None else q["by"]
        since = q["since"] or "30d"

        def run(ledger: Ledger) -> dict[str, Any]:
            report = ledger.report_sections(
                since, q["until"] or None, by, q["period"] or None, q["where"], top
            )
            return report_document(report)

        return json_response(await self.source.read(run))

    async def budgets_endpoint(self, request: Request) -> Response:
        from ..watch.budgets import budget_row

        q = _query(request, BUDGETS)
        at = _instant("now", q["now"]) or datetime.now(UTC)

        def run(ledger: Ledger) -> list[dict[str, Any]]:
            return [budget_row(ledger.store, budget, at)[1] for budget in self.budgets]

        rows = await self.source.read(run) if self.budgets else []
        note = (
            None
            if self.budgets
            else "No budgets: add [[budget]] tables to the server's config (docs/watch.md)."
        )
        return json_response({"at": at, "budgets": rows, "note": note})

    async def alerts(self, request: Request) -> Response:
        from ..watch.incidents import list_alerts

        q = _query(request, ALERTS)
        since = _instant("since", q["since"])
        limit = _integer("limit", q["limit"], 50, 1)

        def run(ledger: Ledger) -> list[dict[str, Any]]:
            rows = list_alerts(
                ledger.store,
                status=q["state"] or None,
                detector=q["detector"] or None,
                limit=limit or 50,
                since=since,
            )
            return [_alert_json(row) for row in rows]

        rows = await self.source.read(run)
        return json_response({"alerts": rows, "count": len(rows)})

    async def ack(self, request: Request) -> Response:
        from ..watch.incidents import acknowledge_many

        _query(request, ACK)
        alert_id = request.path_params["alert_id"]
        body = await _json_body(request, "AckRequest")
        _only(body, ("by", "note"), "AckRequest")
        by = _string(body, "by", required=True)
        note = _string(body, "note")
        assert by is not None

        def run(ledger: Ledger) -> tuple[dict[str, Any], bool]:
            ((row, fresh),) = acknowledge_many(ledger.store, [alert_id], by.strip(), note=note or None)
            return row, fresh

        row, fresh = await self.source.write(run)
        return json_response({"alert": _alert_json(row), "acknowledged": fresh})

    async def prices(self, request: Request) -> Response:
        from ..pricing.history import checked_tiers, price_history
        from ..pricing.quote import require_model

        q = _query(request, PRICES)
        model = request.path_params["model"]
        tiers = checked_tiers(q["tier"]) if q["tier"] else None

        def run(ledger: Ledger) -> dict[str, Any]:
            book = ledger.book
            ref = _known_model(book, q["provider"] or None, model, require_model)
            return {"provider": ref.provider, "model": ref.model, "prices": price_history(book, ref, tiers)}

        return json_response(await self.source.read(run))

    async def price(self, request: Request) -> Response:
        from ..pricing.history import checked_tiers
        from ..pricing.quote import USAGE_FIELDS, quote_document, subset_problem, unpriced_document

        _query(request, PRICE)
        body = await _json_body(request, "PriceRequest")
        _only(body, ("model", "provider", "at", "tier", "usage"), "PriceRequest")
        model = _string(body, "model", required=True)
        provider = _string(body, "provider") or None
        tier = _string(body, "tier") or "standard"
        checked_tiers([tier])
        at = _instant("at", _string(body, "at")) or datetime.now(UTC)
        raw_usage = body.get("usage")
        if not isinstance(raw_usage, dict):
            raise ApiError(
                400, "usage: required, an object of token counts (input_tokens, output_tokens, ...)"
            )
        _only(raw_usage, USAGE_FIELDS, "usage")
        usage = {"requests": 1}
        for key, value in raw_usage.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ApiError(400, f"usage.{key}: expected a whole number >= 0, got {json.dumps(value)}")
            usage[key] = value
        problem = subset_problem(usage)
        if problem:
            raise ApiError(400, f"usage: {problem}")
        assert model is not None

        def run(ledger: Ledger) -> tuple[int, dict[str, Any]]:
            book = ledger.book
            call = book.price(model, usage, provider=provider, at=at, tier=tier)
            if call.breakdown is not None:
                return 200, quote_document(book, model, provider, call)
            unpriced = unpriced_document(book, model, provider, tier, at, call.unpriced_reason or "")
            if book.resolve(provider, model).ref is None:
                # No layer knows the name: most often a typo, which the close names answer.
                hint = (
                    f"; did you mean {', '.join(unpriced['suggestions'])}?" if unpriced["suggestions"] else ""
                )
                return 404, {
                    "error": f"{unpriced['unpriced_reason']}{hint}",
                    "status": 404,
                    "suggestions": unpriced["suggestions"],
                }
            return 200, unpriced

        status, answer = await self.source.read(run)
        return json_response(answer, status)

    async def openapi(self, request: Request) -> Response:
        _query(request, OPENAPI)
        return json_response(self._document)

    async def docs(self, request: Request) -> Response:
        _query(request, DOCS)
        return HTMLResponse(self._page)


def _known_model(book: Any, provider: str | None, model: str, require: Callable[..., Any]) -> Any:
    """The book's key for a model; an unknown one is a 404 naming the close matches."""
    from ..pricing.book import UnknownModelError

    try:
        return require(book, provider, model)
    except UnknownModelError as exc:
        raise ApiError(404, str(exc), suggestions=book.suggestions(provider, model)) from None


def _alert_json(row: Mapping[str, Any]) -> dict[str, Any]:
    """An alert row with its details as an object (they are kept as JSON text)."""
    details = row.get("details")
    return {**row, "details": json.loads(details) if details else None}


def _error_for(exc: Exception, op: Operation) -> Response:
    """A precise message and a 4xx status for what the caller can fix; a 503 for a ledger busy
    or out of reach (retry); a 500 that says no more than that for the rest (logged)."""
    from ..ledger.base import LedgerBusyError, LedgerUnreachableError
    from ..watch.incidents import AlertResolvedError, UnknownAlertError

    if isinstance(exc, ApiError):
        return error_response(exc.status, str(exc), **exc.extra)
    if isinstance(exc, UnknownAlertError):
        return error_response(404, str(exc))
    if isinstance(exc, AlertResolvedError):
        return error_response(409, str(exc))
    if isinstance(exc, LedgerBusyError | LedgerUnreachableError):
        return error_response(
            503, f"the ledger cannot be read now, retry later: {exc}", headers={"Retry-After": "1"}
        )
    if isinstance(exc, ValueError):
        return error_response(400, str(exc))
    log.exception("%s %s failed", op.method, op.path)
    return error_response(500, f"{op.method} {op.path} failed on the server; its log says why")
