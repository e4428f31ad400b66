"""The gateway ASGI app: OpenAI and Anthropic endpoints in front of configured upstreams.

The life of a request: read and check the body -> identify the virtual key -> resolve the
model (alias, route) -> response cache -> reserve the worst case on every budget line ->
forward (retries, fallbacks, cascade) -> price, settle, spool the events -> respond with
cost and overhead headers. Every attempt becomes one event in the spool before the
response is returned.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs, unquote

import orjson

from ..pricing.book import PriceBook
from ..prometheus_text import CONTENT_TYPE
from .budgets import (
    AlertLog,
    BudgetExceededError,
    BudgetState,
    BudgetUnavailableError,
    Reservation,
    UnpricedNotice,
    lines_for,
    pico_to_nano_ceil,
    unpriced_refusal,
    usd_text,
)
from .cache import OPT_OUT_HEADER, ResponseCache, cache_key, unfinished
from .config import GatewayConfig, ModelTarget, Route, Upstream, VirtualKey
from .errors import Api, GatewayError, ModelNotAllowedError, error_response
from .estimate import WorstCase, output_tokens, prompt_cache_writes
from .httpserver import Request, Response
from .keys import KeyRing
from .metrics import GatewayMetrics, Metrics, authorized, metrics_token, outcome_of
from .records import HELD_TAG, RESERVED_TAGS, TAGS_HEADER, Attempt, Priced, attribution, price, service_tier
from .routing import answer_passes, answer_text, apply_caps, escalation_reason
from .spool import Spool
from .sse import EventSplitter, event_data, json_data
from .tokens import count_prompt
from .upstream import (
    CONNECTION_ERRORS,
    TIMEOUT_ERRORS,
    Reply,
    UpstreamClient,
    should_retry,
    sleep_backoff,
    upstream_headers,
    upstream_url,
)
from .usage import (
    NO_FINAL_USAGE,
    NO_USAGE,
    Usage,
    anthropic_usage,
    merge_anthropic_stream_usage,
    openai_usage,
    responses_status,
)

log = logging.getLogger("unitcost.gateway")

_PASSED_RESPONSE_HEADERS = ("retry-after", "retry-after-ms", "x-should-retry", "x-request-id", "request-id")
"""The upstream's headers a client sees: its request ids, and what the SDKs' retries read."""
_MODEL_PREFIX = "/v1/models/"
_LISTED_SINCE = datetime(1970, 1, 1, tzinfo=UTC)
"""The `created` date of every listed model: the gateway knows its models' names, not their dates."""
_STREAM_END_TYPES = frozenset({"response.completed", "response.incomplete", "response.failed"})


class _Relay:
    """A relayed stream whose cleanup runs even when it is closed before being iterated.

    Closing an async generator that never started skips its body, `finally` included; the
    relay's first step (yielding an empty chunk, which the server skips) enters the `try`.
    """

    def __init__(self, gen: AsyncGenerator[bytes, None]) -> None:
        self._gen = gen
        self._started = False

    def __aiter__(self) -> AsyncGenerator[bytes, None]:
        self._started = True
        return self._gen

    async def aclose(self) -> None:
        if not self._started:
            self._started = True
            await self._gen.__anext__()
        await self._gen.aclose()


def _api_of(request: Request) -> Api:
    """Which API a request that names no model speaks: the Anthropic SDK always sends
    `anthropic-version`, the OpenAI SDK never does."""
    return "anthropic" if "anthropic-version" in request.headers else "openai"


def _not_found(request: Request) -> Response:
    return error_response(
        _api_of(request), GatewayError(404, f"no such endpoint: {request.method} {request.path}")
    )


def _anthropic_page(names: list[str], query: str) -> tuple[list[str], bool]:
    """One page of Anthropic's model list and whether more lie beyond it (past its end, or
    before its start when paging back with before_id): `limit` 1..1000 (20 by default),
    `after_id` and `before_id` as in Anthropic's own API, which the SDK's pager follows."""
    params = {name: values[-1] for name, values in parse_qs(query).items()}
    try:
        limit = int(params.get("limit", "20"))
    except ValueError:
        limit = 0
    if not 1 <= limit <= 1000:
        raise GatewayError(400, "limit: must be an integer from 1 to 1000", param="limit")
    for cursor in ("after_id", "before_id"):
        if cursor in params and params[cursor] not in names:
            raise GatewayError(400, f"{cursor}: no model `{params[cursor]}` on this gateway", param=cursor)
    if "before_id" in params:
        end = names.index(params["before_id"])
        start = max(end - limit, 0)
        return names[start:end], start > 0
    start = names.index(params["after_id"]) + 1 if "after_id" in params else 0
    return names[start : start + limit], start + limit < len(names)


@dataclass
class Call:
    """What the gateway knows about one client request while it handles it."""

    api: Api
    endpoint: str
    operation: str
    body: dict[str, Any]
    headers: Mapping[str, str]
    attrs: dict[str, Any]
    public: str
    target: ModelTarget
    route: Route | None
    started: float
    stream: bool
    wants_usage: bool
    escalated_from: str | None = None
    escalation_reason: str | None = None
    upstream_s: float = 0.0
    waited_s: float = 0.0
    attempts: list[tuple[Attempt, Decimal | None, int]] = field(default_factory=list)
    """(attempt, exact cost or None when unpriced, the same cost in pico-USD or 0)."""
    extra_tags: dict[str, str] = field(default_factory=dict)
    reserved_nano: int = 0
    """What the call's budget lines reserved for it (0: no budget applies)."""
    key: VirtualKey | None = None
    """The virtual key that authenticated the call (None on a gateway that requires none)."""
    cut_short: str | None = None
    """Why the answer returned is not whole (cache.unfinished): it is not cached."""

    def overhead_ms(self) -> float:
        return (time.perf_counter() - self.started - self.upstream_s - self.waited_s) * 1000

    def cost(self) -> Decimal | None:
        total = Decimal(0)
        for attempt, cost, _ in self.attempts:
            if attempt.usage_unknown is not None:
                return None
            if cost is None:
                if attempt.usage.get("input_tokens") or attempt.usage.get("output_tokens"):
                    return None
                continue
            total += cost
        return total

    def pico(self) -> int:
        return sum(pico for _, _, pico in self.attempts)

    def usage_unknown(self) -> bool:
        return any(attempt.usage_unknown is not None for attempt, _, _ in self.attempts)


class Gateway:
    def __init__(
        self,
        config: GatewayConfig,
        book: PriceBook,
        spool: Spool,
        budgets: BudgetState,
        cache: ResponseCache | None = None,
    ) -> None:
        self.config = config
        self.book = book
        self.spool = spool
        self.budgets = budgets
        self.cache = cache
        self.keys = KeyRing(config.keys)
        self.estimator = WorstCase(book)
        self.alerts = AlertLog()
        self.unpriced = UnpricedNotice()
        self.upstream = UpstreamClient(config)
        self._background: set[asyncio.Future[None]] = set()
        self._routes: dict[str, tuple[str, Callable[[Request], Awaitable[Response]]]] = {
            "/v1/chat/completions": ("POST", self.chat),
            "/v1/responses": ("POST", self.responses),
            "/v1/embeddings": ("POST", self.embeddings),
            "/v1/messages": ("POST", self.messages),
            "/v1/messages/count_tokens": ("POST", self.count_tokens),
            "/v1/models": ("GET", self.models),
            "/health": ("GET", self.health),
        }
        self.metrics: Metrics = Metrics()
        self._metrics_token = metrics_token(config)
        if config.metrics_enabled:
            self.metrics = GatewayMetrics(config, book, spool, budgets)
            self._routes["/metrics"] = ("GET", self.prometheus)

    async def handle(self, request: Request) -> Response:
        """The HTTP server's handler: one dictionary lookup routes a request."""
        route = self._routes.get(request.path)
        if route is None:
            if not request.path.startswith(_MODEL_PREFIX):
                return _not_found(request)
            route = ("GET", self.model)  # /v1/models/{id}
        method, endpoint = route
        if request.method != method and not (method == "GET" and request.method == "HEAD"):
            body = orjson.dumps(
                {"error": {"message": f"use {method} {request.path}", "type": "invalid_request_error"}}
            )
            return Response(body, 405, {"allow": method})
        return await endpoint(request)

    def warm(self) -> None:
        """Load the tokenizer and compile each model's prices now, not on the first request."""
        count_prompt({"messages": [{"role": "user", "content": "warm up"}]})
        for name in self.config.public_models():
            target = self.config.target(name)
            if target is None:
                continue
            provider = self.config.upstreams[target.upstream].provider
            self.estimator.worst_case_pico(provider, target.model, 10, 10)
            price(
                self.book, provider, target.model, {"input_tokens": 1, "output_tokens": 1}, "standard", None
            )

    async def aclose(self) -> None:
        if self._background:  # settlements of streams cut by their clients: write them first
            await asyncio.gather(*self._background, return_exceptions=True)
        await self.upstream.aclose()
        await self.budgets.close()
        if self.cache is not None:
            await self.cache.close()

    # ------------------------------------------------------------------ endpoints

    async def chat(self, request: Request) -> Response:
        return await self.proxy(request, "openai", "/chat/completions", "chat")

    async def responses(self, request: Request) -> Response:
        return await self.proxy(request, "openai", "/responses", "responses")

    async def embeddings(self, request: Request) -> Response:
        return await self.proxy(request, "openai", "/embeddings", "embeddings")

    async def messages(self, request: Request) -> Response:
        return await self.proxy(request, "anthropic", "/messages", "messages")

    async def health(self, request: Request) -> Response:
        stats = {"status": "ok", "spooled": self.spool.appended}
        return Response(orjson.dumps(stats))

    async def prometheus(self, request: Request) -> Response:
        """Prometheus' text exposition ([gateway.metrics]); not an LLM request, not counted as one."""
        token = self._metrics_token
        if token is not None and not authorized(request.headers.get("authorization"), token):
            headers = {"www-authenticate": 'Bearer realm="unitcost gateway metrics"'}
            return Response(b"a bearer token is required\n", 401, headers, "text/plain; charset=utf-8")
        assert isinstance(self.metrics, GatewayMetrics)
        return Response(await self.metrics.exposition(), content_type=CONTENT_TYPE)

    async def count_tokens(self, request: Request) -> Response:
        """Anthropic's token count (POST /v1/messages/count_tokens): free at Anthropic, so it is
        forwarded as it came, under the rules of /v1/messages (key, alias, route), and nothing is
        recorded: no event, no budget, no cache."""
        try:
            key = self._authenticate(request.headers)
            body = self._read_body(request)
            target, _, _ = self._resolve("anthropic", body.get("model"), body, key)
        except ModelNotAllowedError as exc:
            self.metrics.model_refusal("count_tokens", exc.model, exc.team)
            return error_response("anthropic", exc)
        except GatewayError as exc:
            return error_response("anthropic", exc)
        upstream = self.config.upstreams[target.upstream]
        content = request.body
        if body["model"] != target.model:  # an alias or a route: the upstream knows the model's own name
            content = orjson.dumps({**body, "model": target.model})
        url = upstream_url(upstream, "/messages/count_tokens")
        headers = upstream_headers(upstream, request.headers)
        try:
            reply = await self.upstream.post(upstream, url, content, headers, stream=False)
        except TIMEOUT_ERRORS:
            return error_response("anthropic", GatewayError(504, f"upstream {upstream.name} timed out"))
        except CONNECTION_ERRORS as exc:
            message = f"upstream {upstream.name} unreachable: {type(exc).__name__}"
            return error_response("anthropic", GatewayError(502, message))
        passed = {n: reply.headers[n] for n in _PASSED_RESPONSE_HEADERS if n in reply.headers}
        passed["x-unitcost-model"] = target.model
        return Response(reply.body or b"", reply.status, passed)

    def _listed(self, api: Api, key: VirtualKey | None) -> dict[str, str]:
        """The names a caller can use through `api`'s endpoints (models, aliases, routes) with
        its key (only those of the key's `models` list when it has one), each with who owns it:
        the provider of its upstream, or unitcost for a route."""
        listed: dict[str, str] = {}
        for name in self.config.public_models():
            if key is not None and not key.allows(name):
                continue
            route = self.config.routes.get(name)
            target = self.config.target(route.light if route is not None else name)
            if target is None:
                continue
            upstream = self.config.upstreams[target.upstream]
            if upstream.kind == api:
                listed[name] = "unitcost" if route is not None else upstream.provider
        return listed

    @staticmethod
    def _model_entry(api: Api, name: str, owner: str) -> dict[str, Any]:
        if api == "anthropic":
            created_at = _LISTED_SINCE.strftime("%Y-%m-%dT%H:%M:%SZ")
            return {"type": "model", "id": name, "display_name": name, "created_at": created_at}
        created = int(_LISTED_SINCE.timestamp())
        return {"id": name, "object": "model", "created": created, "owned_by": owner}

    async def models(self, request: Request) -> Response:
        """GET /v1/models, from the configuration (no upstream call, nothing recorded): what the
        caller's key can call through its API's endpoints, in that API's list shape."""
        api = _api_of(request)
        try:
            listed = self._listed(api, self._authenticate(request.headers))
            if api == "openai":
                data = [self._model_entry(api, name, owner) for name, owner in listed.items()]
                return Response(orjson.dumps({"object": "list", "data": data}))
            page, more = _anthropic_page(list(listed), request.query)
        except GatewayError as exc:
            return error_response(api, exc)
        data = [self._model_entry(api, name, listed[name]) for name in page]
        first, last = (page[0], page[-1]) if page else (None, None)
        body = {"data": data, "has_more": more, "first_id": first, "last_id": last}
        return Response(orjson.dumps(body))

    async def model(self, request: Request) -> Response:
        """GET /v1/models/{id}: one entry of the list above, or a 404 in the caller's format."""
        api = _api_of(request)
        name = unquote(request.path[len(_MODEL_PREFIX) :])
        try:
            key = self._authenticate(request.headers)
        except GatewayError as exc:
            return error_response(api, exc)
        owner = self._listed(api, key).get(name)  # a model the key may not call is not listed
        if owner is None:
            endpoints = "/v1/messages" if api == "anthropic" else "the OpenAI endpoints"
            message = f"The model `{name}` is not served through {endpoints} of this gateway"
            return error_response(api, GatewayError(404, message, code="model_not_found", param="model"))
        return Response(orjson.dumps(self._model_entry(api, name, owner)))

    # ------------------------------------------------------------------ request checks

    def _authenticate(self, headers: Mapping[str, str]) -> Any:
        presented = headers.get("x-api-key")
        auth = headers.get("authorization", "")
        if not presented and auth[:7].lower() == "bearer ":
            presented = auth[7:].strip()
        key = self.keys.lookup(presented)
        if key is None and self.config.require_key:
            raise GatewayError(401, "invalid or missing unitcost virtual key", code="invalid_api_key")
        return key

    def _read_body(self, request: Request) -> dict[str, Any]:
        if request.too_large:  # the server dropped it unread past the limit
            limit = self.config.max_body_bytes
            raise GatewayError(413, f"request body is over the gateway limit of {limit} bytes")
        try:
            body = orjson.loads(request.body)
        except orjson.JSONDecodeError as exc:
            raise GatewayError(400, f"request body is not valid JSON: {exc}") from None
        if not isinstance(body, dict):
            raise GatewayError(400, "request body must be a JSON object")
        return body

    def _resolve(
        self, api: Api, public: Any, body: dict[str, Any], key: VirtualKey | None
    ) -> tuple[ModelTarget, Route | None, str | None]:
        if not isinstance(public, str) or not public:
            raise GatewayError(400, "'model' is required and must be a string", param="model")
        refused_by = key.refused_by(public) if key is not None else None
        if key is not None and refused_by is not None:
            # The name asked for, before alias and route resolution: what is behind an allowed
            # name (its model, fallbacks, a route's strong model) is the operator's choice.
            allowed = key.models if refused_by == "key" else key.team_models
            raise ModelNotAllowedError(key.name, key.team, public, allowed or (), refused_by)
        route = self.config.routes.get(public)
        reason = None
        name = public
        if route is not None:
            reason = escalation_reason(route, body) if route.mode == "rules" or body.get("stream") else None
            if route.mode == "rules" or body.get("stream"):
                name = route.strong if reason else route.light
            else:
                name = route.light
        target = self.config.target(name)
        if target is None:
            raise GatewayError(
                404,
                f"The model `{public}` is not configured on this gateway. Configured models: "
                + ", ".join([n for n in self.config.public_models() if key is None or key.allows(n)][:20]),
                code="model_not_found",
                param="model",
            )
        kind = self.config.upstreams[target.upstream].kind
        if kind != api:
            raise GatewayError(
                400,
                f"model `{public}` is served by an {kind}-format upstream; call it through the "
                + ("/v1/messages" if kind == "anthropic" else "/v1/chat/completions")
                + " endpoint",
                param="model",
            )
        return target, route, reason

    def _labels_of(self, public: str) -> tuple[str, str]:
        """The provider and upstream model a public name goes to (a route: its light model),
        for the metrics of a request refused before it was resolved; "none" when it goes nowhere."""
        route = self.config.routes.get(public)
        target = self.config.target(route.light if route is not None else public)
        if target is None:
            return "none", "none"
        return self.config.upstreams[target.upstream].provider, target.model

    def _prepare(self, request: Request, api: Api, endpoint: str, operation: str, started: float) -> Call:
        headers = request.headers
        key = self._authenticate(headers)
        body = self._read_body(request)
        target, route, reason = self._resolve(api, body.get("model"), body, key)
        apply_caps(route, body, api)
        attrs = attribution(headers, key, self.config.environment)
        reserved = sorted(RESERVED_TAGS.intersection(attrs["tags"]))
        if reserved:
            raise GatewayError(
                400,
                f"{TAGS_HEADER}: {', '.join(reserved)} is reserved for the gateway's own markers "
                f"(reserved tag names: {', '.join(sorted(RESERVED_TAGS))}); use another name",
            )
        stream = bool(body.get("stream"))
        options = body.get("stream_options")
        wants_usage = isinstance(options, dict) and bool(options.get("include_usage"))
        call = Call(
            api=api,
            endpoint=endpoint,
            operation=operation,
            body=body,
            headers=headers,
            attrs=attrs,
            public=body["model"],
            target=target,
            route=route,
            started=started,
            stream=stream,
            wants_usage=wants_usage,
            key=key,
        )
        if reason is not None and route is not None:
            call.escalated_from = self.config.target(route.light).model  # type: ignore[union-attr]
            call.escalation_reason = reason
        return call

    # ------------------------------------------------------------------ the proxy

    async def proxy(self, request: Request, api: Api, endpoint: str, operation: str) -> Response:
        started = time.perf_counter()
        try:
            call = self._prepare(request, api, endpoint, operation, started)
        except ModelNotAllowedError as exc:  # nothing sent, nothing reserved, no event
            provider, model = self._labels_of(exc.model)
            self.metrics.request(operation, provider, model, exc.team, "model_refused")
            self.metrics.model_refusal(operation, exc.model, exc.team)
            return error_response(api, exc)
        except GatewayError as exc:
            self.metrics.request(operation, "none", "none", None, "client_error")
            return error_response(api, exc)

        cache_id = self._cache_id(call)
        if cache_id is not None and self.cache is not None:
            hit = await self.cache.get(cache_id)
            response = self._cache_hit(call, hit) if hit is not None else None
            if response is not None:
                return response

        reservation: Reservation | None = None
        lines = (
            lines_for(self.config.budgets, call.attrs, self.config.redis_prefix, datetime.now(UTC))
            if self.config.budgets
            else []
        )
        if lines:
            try:
                reservation = await self._reserve(call, lines)
            except BudgetExceededError as exc:
                return self._blocked(call, exc)
            except GatewayError as exc:  # a model without a price under a money limit
                self._count(call, "budget_refused")
                return error_response(call.api, exc)
            except BudgetUnavailableError as exc:  # fail closed: never spend unguarded
                self._count(call, "budget_unavailable")
                return error_response(call.api, GatewayError(503, str(exc), code="budget_unavailable"))
            except Exception:  # anything else in the budget state: fail closed as well
                log.exception("budget reservation failed")
                self._count(call, "budget_unavailable")
                return error_response(
                    call.api,
                    GatewayError(503, "budget state unavailable; try again", code="budget_unavailable"),
                )

        if call.stream:
            return await self._stream(call, reservation)
        try:
            status, content, headers = await self._complete(call)
        except BaseException as exc:
            self._count(call, "cancelled" if isinstance(exc, asyncio.CancelledError) else "gateway_error")
            await self._settle(call, reservation)
            raise
        self._count(call, outcome_of(status, call.attempts[-1][0] if call.attempts else None))
        await self._settle(call, reservation)
        if cache_id is not None and self.cache is not None and self._cacheable(call, status):
            await self.cache.put(cache_id, self._cache_entry(call, content))
        out = self._headers(call, reservation, headers)
        return Response(content, status, out)

    # ------------------------------------------------------------------ budgets

    def _reservation_amount(self, call: Call) -> tuple[int, list[str]]:
        """The most the request can cost, and the models it may reach that have no price. A
        request is answered by its model or by one of that model's fallbacks, whichever comes
        first, so the most expensive of them bounds it; a cascade may pay for the light answer
        and then for the strong one."""
        prompt = count_prompt(call.body)
        output = output_tokens(call.body, call.operation, self.config.default_max_tokens)
        writes = prompt_cache_writes(call.body)
        unpriced: list[str] = []

        def worst(first: ModelTarget) -> int:
            bounds = []
            for target in self._targets(call, first):
                provider = self.config.upstreams[target.upstream].provider
                bound = self.estimator.bound_pico(provider, target.model, prompt, output, writes)
                if bound is None:
                    unpriced.append(target.model)
                bounds.append(bound or 0)
            return max(bounds)

        pico = worst(call.target)
        if call.route is not None and call.route.mode == "cascade" and call.escalated_from is None:
            strong = self.config.target(call.route.strong)
            if strong is not None:
                pico += worst(strong)
        return pico_to_nano_ceil(pico), unpriced

    def _admissible(self, lines: list[Any], amount: int, unpriced: list[str]) -> int:
        """`amount`, unless a model without a price meets a money limit that refuses it."""
        if unpriced:
            refusal = unpriced_refusal(lines, unpriced)
            if refusal is not None:
                refusing = (
                    line.budget.name
                    for line in lines
                    if line.limit_nano >= 0
                    and line.budget.action != "alert"
                    and line.budget.unpriced == "block"
                )
                self.metrics.refusal(next(refusing, ""), "unpriced_model")  # the budget the message names
                raise GatewayError(403, refusal, code="budget_unpriced_model")
            self.unpriced.note(lines, unpriced)
        return amount

    async def _reserve(self, call: Call, lines: list[Any]) -> Reservation:
        amount = self._admissible(lines, *self._reservation_amount(call))
        reservation = await self.budgets.hold(lines, amount)
        call.reserved_nano = amount
        downgrades = reservation.over("downgrade")
        if downgrades:
            cheaper = self.config.target(downgrades[0].budget.downgrade_to or "")
            if cheaper is not None and cheaper.model != call.target.model:
                await self.budgets.release(reservation)
                call.extra_tags["downgraded_from"] = call.target.model
                call.extra_tags["downgraded_by"] = downgrades[0].budget.name
                self.metrics.downgrade(downgrades[0].budget.name)
                call.target, call.route, call.escalated_from = cheaper, None, None
                amount = self._admissible(lines, *self._reservation_amount(call))
                reservation = await self.budgets.hold(lines, amount)
                call.reserved_nano = amount
        fired = self.alerts.check(reservation)
        for name in fired:
            self.metrics.alert(name)
        over_alert = reservation.over("alert")
        if fired or over_alert:
            call.extra_tags["budget_alert"] = ",".join(
                dict.fromkeys([*fired, *(x.budget.name for x in over_alert)])
            )
        return reservation

    async def _settle(self, call: Call, reservation: Reservation | None) -> None:
        if reservation is None:
            return
        if reservation.settled:
            return
        spent = pico_to_nano_ceil(call.pico())
        if call.usage_unknown() or call.cost() is None:
            # The provider did not say what it billed, or what it billed has no price: the worst
            # case reserved is the only bound there is, and settling lower would let the next
            # requests spend the difference.
            spent = max(spent, reservation.amount_nano)
        delta = spent - reservation.amount_nano
        await self.budgets.settle(reservation, spent)
        reservation.spends = [(spend + delta, calls) for spend, calls in reservation.spends]
        reservation.amount_nano += delta

    def _blocked(self, call: Call, exc: BudgetExceededError) -> Response:
        upstream = self.config.upstreams[call.target.upstream]
        attempt = Attempt(
            upstream.provider, call.target.model, call.operation, status="error", http_status=429
        )
        attempt.extra_tags["blocked_by_budget"] = exc.line.budget.name
        self._emit(call, attempt, Decimal(0))
        budget = exc.line.budget
        by_calls = budget.max_calls is not None and exc.calls + 1 > budget.max_calls
        self.metrics.refusal(budget.name, "max_calls" if by_calls else "limit_usd")
        self._count(call, "budget_refused")
        headers = {"x-unitcost-budget": exc.line.budget.name, "x-unitcost-event-id": attempt.event_id}
        wait = exc.retry_after_s(datetime.now(UTC))
        if wait is not None:  # when the period resets; x-should-retry: false keeps SDKs from waiting
            headers["retry-after"] = str(wait)
        error = GatewayError(
            429, exc.message(), code="budget_exceeded", extra={"budget": exc.detail()}, headers=headers
        )
        return error_response(call.api, error)

    # ------------------------------------------------------------------ events

    def _emit(self, call: Call, attempt: Attempt, cost: Decimal | None, pico: int = 0) -> None:
        attempt.extra_tags.update(call.extra_tags)
        if call.escalation_reason and attempt.escalated_from:
            attempt.extra_tags["escalation"] = call.escalation_reason
        try:
            self.spool.append(attempt.record(call.attrs, call.public))
        except OSError:
            self.metrics.spool_failure()
            raise
        call.attempts.append((attempt, cost, pico))

    def _count(self, call: Call, outcome: str) -> None:
        """The request's one line in /metrics, under the model that answered or was tried last."""
        if call.attempts:
            last = call.attempts[-1][0]
            provider, model = last.provider, last.model
        else:
            provider, model = self.config.upstreams[call.target.upstream].provider, call.target.model
        self.metrics.request(call.operation, provider, model, call.attrs.get("team"), outcome)

    def _finish(self, call: Call, attempt: Attempt, upstream: Upstream) -> Decimal | None:
        if attempt.usage_unknown is not None:
            if call.reserved_nano:
                # Settling keeps the whole reservation (see _settle); the event says how much, so
                # that the budget lines rebuilt from the ledger after a restart keep it too.
                attempt.extra_tags[HELD_TAG] = usd_text(Decimal(call.reserved_nano).scaleb(-9))
            self._emit(call, attempt, None)
            self.metrics.attempt(attempt, call.attrs.get("team"), Priced(None, 0))
            return None
        priced = price(
            self.book, upstream.provider, attempt.model, attempt.usage, attempt.tier, attempt.served_model
        )
        if priced.cost is None and call.reserved_nano and any(attempt.usage.values()):
            # Unpriced usage keeps the reservation too (see _settle), and says so for a restart.
            attempt.extra_tags[HELD_TAG] = usd_text(Decimal(call.reserved_nano).scaleb(-9))
        self._emit(call, attempt, priced.cost, priced.pico)
        self.metrics.attempt(attempt, call.attrs.get("team"), priced)
        return priced.cost

    def _headers(
        self, call: Call, reservation: Reservation | None, upstream: Mapping[str, str]
    ) -> dict[str, str]:
        out = {name: upstream[name] for name in _PASSED_RESPONSE_HEADERS if name in upstream}
        cost = call.cost()
        out["x-unitcost-cost"] = "unpriced" if cost is None else usd_text(cost)
        if call.attempts:
            out["x-unitcost-event-id"] = call.attempts[-1][0].event_id
            out["x-unitcost-model"] = call.attempts[-1][0].model
        if reservation is not None:
            tightest = reservation.remaining()
            if tightest is not None:
                out["x-unitcost-budget"] = tightest[0].budget.name
                out["x-unitcost-budget-remaining"] = usd_text(tightest[1])
        overhead_ms = call.overhead_ms()
        self.metrics.overhead(overhead_ms / 1000)
        out["x-unitcost-overhead-ms"] = f"{overhead_ms:.3f}"
        return out

    # ------------------------------------------------------------------ response cache

    def _cache_id(self, call: Call) -> str | None:
        """The call's cache key, or None when the cache does not apply (off, a stream, opted out)."""
        if self.cache is None or call.stream:
            return None
        if call.headers.get(OPT_OUT_HEADER, "").lower() in ("no", "off", "bypass"):
            return None
        upstream = self.config.upstreams[call.target.upstream]
        context = {"upstream": upstream.name, "tenant": self._cache_tenant(call.key)}
        if call.route is not None:  # a route's answer may come from its strong model (cascade)
            context["route"] = call.route.name
        if upstream.kind == "anthropic":  # headers the gateway forwards that change the answer
            sent = upstream_headers(upstream, call.headers)
            context.update({n: v for n, v in sent.items() if n.startswith("anthropic-")})
        return cache_key(call.endpoint, call.body, call.target.model, context)

    def _cache_tenant(self, key: VirtualKey | None) -> str:
        """Whose cached answers a call may get ([gateway.cache] scope). Only the virtual key
        says who calls: headers could name any team, so they never widen the partition."""
        scope = self.config.cache_scope
        if scope == "global":
            return "*"
        if key is None:
            return "anonymous"  # no key required: the callers cannot be told apart
        if scope == "team" and key.team:
            return "team:" + key.team
        return "key:" + key.sha256

    @staticmethod
    def _cacheable(call: Call, status: int) -> bool:
        """Only a whole, successful answer of the model asked for is stored: not an error, not
        an answer cut short (see cache.unfinished), not a reply whose usage is unknown, not the
        answer of a fallback or of a budget downgrade (a degraded answer would be served for
        the whole TTL after the cause went away)."""
        if not 200 <= status < 300 or not call.attempts or call.cut_short is not None:
            return False
        last = call.attempts[-1][0]
        return (
            last.status == "ok"
            and last.usage_unknown is None
            and last.fallback_from is None
            and "downgraded_from" not in call.extra_tags
        )

    def _cache_entry(self, call: Call, content: bytes) -> bytes:
        last = call.attempts[-1][0]
        entry = {
            "body": content.decode(),
            "provider": last.provider,
            "model": last.model,
            "usage": last.usage,
            "served": last.served_model,
            "tier": last.tier,
        }
        return orjson.dumps(entry)

    def _cache_hit(self, call: Call, raw: bytes) -> Response | None:
        """The cached answer, recorded at cost 0 with what it avoided; None (a miss) when the
        entry cannot be read, e.g. one written by another version of the gateway."""
        try:
            entry = orjson.loads(raw)
            body = entry["body"].encode()
            usage = {str(k): int(v) for k, v in entry["usage"].items()}
        except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError, ValueError):
            log.warning("response cache: an unreadable entry was ignored (answered by the upstream)")
            return None
        upstream = self.config.upstreams[call.target.upstream]
        attempt = Attempt(
            str(entry.get("provider") or upstream.provider),
            str(entry.get("model") or call.target.model),
            call.operation,
            http_status=200,
            usage=usage,
            served_model=entry.get("served"),
            tier=entry.get("tier", "standard"),
            cache_hit=True,
            latency_ms=(time.perf_counter() - call.started) * 1000,
        )
        saved = price(
            self.book, attempt.provider, attempt.model, attempt.usage, attempt.tier, attempt.served_model
        )
        self._emit(call, attempt, Decimal(0))
        self.metrics.cache_hit(attempt, call.attrs.get("team"), saved.cost)
        self._count(call, "cache_hit")
        headers = self._headers(call, None, {})
        headers["x-unitcost-cache"] = "hit"
        if saved.cost is not None:
            headers["x-unitcost-saved"] = usd_text(saved.cost)
        return Response(body, headers=headers)

    # ------------------------------------------------------------------ upstream calls

    def _upstream_body(self, call: Call, target: ModelTarget) -> bytes:
        body = dict(call.body)
        body["model"] = target.model
        if call.stream and call.operation == "chat" and not call.wants_usage:
            # Ask for the final usage chunk; it is taken out of what the client sees.
            options = body.get("stream_options")
            body["stream_options"] = {**(options if isinstance(options, dict) else {}), "include_usage": True}
        return orjson.dumps(body)

    def _targets(self, call: Call, first: ModelTarget | None = None) -> list[ModelTarget]:
        """`first` (by default the call's model) and then its fallbacks that speak the call's API."""
        first = first or call.target
        targets = [first]
        for name in first.fallbacks:
            fallback = self.config.target(name)
            if fallback is not None and self.config.upstreams[fallback.upstream].kind == call.api:
                targets.append(fallback)
        return targets

    async def _dispatch(
        self, call: Call, targets: list[ModelTarget]
    ) -> tuple[Reply, Attempt, ModelTarget, float] | Response:
        """Send with retries then fallbacks. A 2xx comes back open (streams) or read; a failure
        that cannot be retried comes back as the response to give the client."""
        previous: str | None = None
        fallback_from: str | None = None
        last_error: Response | None = None
        for target in targets:
            upstream = self.config.upstreams[target.upstream]
            url = upstream_url(upstream, call.endpoint)
            headers = upstream_headers(upstream, call.headers)
            content = self._upstream_body(call, target)
            for number in range(1, self.config.retries + 2):
                attempt = Attempt(
                    upstream.provider,
                    target.model,
                    call.operation,
                    attempt=number,
                    retry_of=previous,
                    fallback_from=fallback_from,
                    escalated_from=call.escalated_from if target is call.target else None,
                )
                sent = time.perf_counter()
                response: Reply | None = None
                try:
                    response = await self.upstream.post(upstream, url, content, headers, stream=call.stream)
                except TIMEOUT_ERRORS:
                    attempt.status = "timeout"
                    last_error = error_response(
                        call.api, GatewayError(504, f"upstream {upstream.name} timed out")
                    )
                except CONNECTION_ERRORS as exc:
                    attempt.status = "error"
                    last_error = error_response(
                        call.api,
                        GatewayError(502, f"upstream {upstream.name} unreachable: {type(exc).__name__}"),
                    )
                if response is not None and response.status < 400:
                    return response, attempt, target, sent
                retry_after = retry_after_ms = None
                if response is not None:
                    attempt.status = "error"
                    attempt.http_status = response.status
                    retry_after = response.headers.get("retry-after")
                    retry_after_ms = response.headers.get("retry-after-ms")
                    passed = {
                        n: response.headers[n] for n in _PASSED_RESPONSE_HEADERS if n in response.headers
                    }
                    last_error = Response(response.body or b"", response.status, passed)
                elapsed = time.perf_counter() - sent
                call.upstream_s += elapsed
                attempt.latency_ms = elapsed * 1000
                self._finish(call, attempt, upstream)
                previous = attempt.event_id
                if response is not None and not should_retry(response.status, response.headers):
                    return last_error  # type: ignore[return-value]
                if number <= self.config.retries:
                    waited = time.perf_counter()
                    await sleep_backoff(
                        number,
                        self.config.backoff_base_s,
                        self.config.backoff_max_s,
                        retry_after,
                        retry_after_ms,
                    )
                    call.waited_s += time.perf_counter() - waited
            fallback_from = target.model
        assert last_error is not None
        return last_error

    @staticmethod
    def _take_usage(attempt: Attempt, usage: Usage) -> None:
        attempt.usage = usage.tokens
        attempt.billed_cost = usage.billed_cost
        attempt.usage_unknown = usage.unknown

    def _read_usage(self, call: Call, attempt: Attempt, payload: Mapping[str, Any]) -> None:
        if call.api == "anthropic":
            usage = payload.get("usage")
            self._take_usage(attempt, anthropic_usage(usage))
            attempt.tier = service_tier(usage.get("service_tier") if isinstance(usage, dict) else None)
        else:
            self._take_usage(attempt, openai_usage(payload.get("usage"), call.operation))
            attempt.tier = service_tier(payload.get("service_tier"))
            if call.operation == "responses":
                attempt.status = responses_status(payload)
        served = payload.get("model")
        attempt.served_model = served if isinstance(served, str) else None

    async def _complete(self, call: Call) -> tuple[int, bytes, Mapping[str, str]]:
        outcome = await self._dispatch(call, self._targets(call))
        if isinstance(outcome, Response):
            return outcome.status, outcome.body, outcome.headers
        response, attempt, target, sent = outcome
        content = response.body or b""
        elapsed = time.perf_counter() - sent
        call.upstream_s += elapsed
        upstream = self.config.upstreams[target.upstream]
        attempt.http_status = response.status
        attempt.latency_ms = elapsed * 1000
        try:
            payload = orjson.loads(content)
        except orjson.JSONDecodeError:
            payload = None
        if isinstance(payload, dict):
            self._read_usage(call, attempt, payload)
            call.cut_short = unfinished(call.api, call.operation, payload)
        else:
            attempt.usage_unknown = "the provider's reply is not a JSON object"
        self._finish(call, attempt, upstream)
        route = call.route
        if (
            route is not None
            and route.mode == "cascade"
            and call.escalated_from is None
            and isinstance(payload, dict)
            and not answer_passes(route, answer_text(call.api, payload))
        ):
            strong = self.config.target(route.strong)
            if strong is not None:
                call.escalated_from, call.escalation_reason = target.model, "cascade_check_failed"
                call.target = strong
                return await self._complete(call)
        return response.status, content, response.headers

    # ------------------------------------------------------------------ streams

    async def _stream(self, call: Call, reservation: Reservation | None) -> Response:
        try:
            outcome = await self._dispatch(call, self._targets(call))
        except BaseException as exc:
            self._count(call, "cancelled" if isinstance(exc, asyncio.CancelledError) else "gateway_error")
            await self._settle(call, reservation)
            raise
        if isinstance(outcome, Response):
            self._count(call, outcome_of(outcome.status, call.attempts[-1][0] if call.attempts else None))
            await self._settle(call, reservation)
            outcome.headers.update(self._headers(call, reservation, {}))
            return outcome
        response, attempt, target, sent = outcome
        call.upstream_s += time.perf_counter() - sent
        attempt.http_status = response.status
        headers = self._headers(call, reservation, response.headers)
        del headers["x-unitcost-cost"]  # known only at the end: it is in the ledger event
        headers["x-unitcost-event-id"] = attempt.event_id
        headers["cache-control"] = "no-cache"
        relay = _Relay(self._relay(call, response, attempt, target, sent, reservation))
        return Response(b"", response.status, headers, "text/event-stream", relay)

    async def _relay(
        self,
        call: Call,
        response: Reply,
        attempt: Attempt,
        target: ModelTarget,
        sent: float,
        reservation: Reservation | None,
    ) -> AsyncGenerator[bytes, None]:
        """Pass events through as they complete; capture usage; write the event before the last one."""
        upstream = self.config.upstreams[target.upstream]
        splitter = EventSplitter()
        start_usage: dict[str, Any] | None = None
        end_usage: Any = None
        outcome = "ok"
        finished = False
        first: float | None = None

        def finish(status: str) -> None:
            nonlocal finished
            finished = True
            attempt.status = status
            attempt.latency_ms = (time.perf_counter() - sent) * 1000
            if first is not None:
                attempt.ttft_ms = (first - sent) * 1000
            if call.api == "anthropic":
                if start_usage is None:
                    self._take_usage(attempt, Usage(unknown=NO_USAGE))
                else:
                    usage = anthropic_usage(merge_anthropic_stream_usage(start_usage, end_usage or {}))
                    if end_usage is None and usage.unknown is None:
                        # message_start's output count is a placeholder (1 token): the answer's
                        # length comes in message_delta, and Anthropic bills what it generated.
                        usage.unknown = NO_FINAL_USAGE
                    self._take_usage(attempt, usage)
                    attempt.tier = service_tier(start_usage.get("service_tier"))
            else:
                self._take_usage(attempt, openai_usage(end_usage, call.operation))
            self._finish(call, attempt, upstream)
            self._count(call, outcome_of(response.status, attempt))

        try:
            yield b""  # see _Relay: from here on, closing the relay runs the cleanup below
            try:
                async for chunk in response.chunks():
                    if first is None:
                        first = time.perf_counter()
                    for raw in splitter.feed(chunk):
                        name, data = event_data(raw)
                        payload = json_data(data)
                        terminal = False
                        if call.api == "anthropic":
                            kind = name or (payload or {}).get("type")
                            if kind == "message_start" and payload:
                                message = payload.get("message") or {}
                                start_usage = dict(message.get("usage") or {})
                                attempt.served_model = message.get("model")
                            elif kind == "message_delta" and payload:
                                end_usage = dict(payload.get("usage") or {})
                            terminal = kind == "message_stop"
                        elif call.operation == "responses":
                            kind = (payload or {}).get("type")
                            if payload and kind in _STREAM_END_TYPES:
                                body = payload.get("response")
                                body = body if isinstance(body, dict) else {}
                                end_usage = body.get("usage")
                                attempt.served_model = body.get("model")
                                outcome = "error" if kind == "response.failed" else responses_status(body)
                                terminal = True
                        elif data == "[DONE]":
                            terminal = True
                        elif payload is not None:
                            attempt.served_model = attempt.served_model or payload.get("model")
                            if payload.get("usage"):
                                end_usage = payload["usage"]
                                if not call.wants_usage and not payload.get("choices"):
                                    continue  # the usage chunk the gateway asked for, not the client
                        if terminal and not finished:
                            finish(outcome)
                            await self._settle(call, reservation)
                        yield raw
            except TIMEOUT_ERRORS + CONNECTION_ERRORS as exc:
                if not finished:
                    # The upstream broke, or stalled past its timeout, before the answer's end:
                    # record which, and let the server cut the client's connection, since a
                    # stream ended cleanly here would pass for a whole answer.
                    finish("timeout" if isinstance(exc, TIMEOUT_ERRORS) else "error")
                    await self._settle(call, reservation)
                    raise
                # Otherwise the answer's last event was relayed already: only the upstream's
                # end of the body went missing, and the client's stream can end normally.
            rest = splitter.rest()
            if rest:
                yield rest
            if not finished:
                finish("ok" if end_usage is not None else "error")
                await self._settle(call, reservation)
        finally:
            response.close(reuse=finished)
            if not finished:
                # The client went away mid-stream: record what was used so far.
                finish("cancelled")
                task = asyncio.ensure_future(self._settle(call, reservation))
                self._background.add(task)
                task.add_done_callback(self._background.discard)
