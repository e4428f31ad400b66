"""The JSON API's OpenAPI 3.1 document, built from the same declarations the routes are made of
(`Operation`), so it lists every endpoint the app serves with the parameters it reads.

The response schemas say what a program can rely on: money is a decimal string (exact, never a
float), a cost that is not known is null (never "0"), and the report's measures are derived
from the report's own column lists, so a measure added there is described here too.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .._version import __version__
from ..pricing.quote import USAGE_FIELDS

Schema = dict[str, Any]

MONEY_PATTERN = r"^-?[0-9]+(\.[0-9]+)?$"


def money(nullable: bool = False, description: str | None = None) -> Schema:
    """An exact amount in USD as a decimal string; null (when allowed) is unknown, never $0."""
    schema: Schema = {"type": ["string", "null"] if nullable else "string", "pattern": MONEY_PATTERN}
    if description:
        schema["description"] = description
    return schema


def _nullable(kind: str | Sequence[str], **extra: Any) -> Schema:
    kinds = [kind] if isinstance(kind, str) else list(kind)
    return {"type": [*kinds, "null"], **extra}


INSTANT: Schema = {"type": "string", "format": "date-time"}
NULL_INSTANT: Schema = _nullable("string", format="date-time")
NULL_TEXT: Schema = _nullable("string")
NULL_INT: Schema = _nullable("integer")
NULL_NUMBER: Schema = _nullable("number")


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _object(properties: Mapping[str, Schema], required: Iterable[str] = (), **extra: Any) -> Schema:
    return {"type": "object", "properties": dict(properties), "required": list(required), **extra}


@dataclass(frozen=True)
class Param:
    """One parameter of an operation, as the handler reads it and the document describes it."""

    name: str
    description: str
    schema: Schema
    where: str = "query"
    required: bool = False
    repeated: bool = False

    def document(self) -> Schema:
        schema = {"type": "array", "items": self.schema} if self.repeated else self.schema
        doc: Schema = {
            "name": self.name,
            "in": self.where,
            "description": self.description,
            "required": self.required or self.where == "path",
            "schema": schema,
        }
        if self.repeated:
            doc.update(style="form", explode=True)
        return doc


@dataclass(frozen=True)
class Operation:
    """One endpoint: its method and OpenAPI path, what it reads, and what it answers."""

    method: str
    path: str
    operation_id: str
    summary: str
    description: str
    response: str
    """The component schema of the 200 answer."""
    params: tuple[Param, ...] = ()
    body: str | None = None
    """The component schema of the JSON request body, if it takes one."""
    errors: Mapping[int, str] = field(default_factory=dict)
    """The 4xx answers it gives, each with when."""
    protected: bool = True
    media_type: str = "application/json"

    def document(self) -> Schema:
        responses: Schema = {
            "200": {
                "description": "OK",
                "content": {self.media_type: {"schema": _ref(self.response)}},
            }
        }
        errors = dict(self.errors)
        if self.protected:
            errors.setdefault(401, "no token or a wrong one, when the API is protected ([api] token_env)")
        for status, when in sorted(errors.items()):
            responses[str(status)] = {
                "description": when,
                "content": {"application/json": {"schema": _ref("Error")}},
            }
        doc: Schema = {
            "operationId": self.operation_id,
            "summary": self.summary,
            "description": self.description,
            "parameters": [p.document() for p in self.params],
            "responses": responses,
        }
        if self.body is not None:
            doc["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": _ref(self.body)}},
            }
        if not self.protected:
            doc["security"] = []
        return doc


def document(operations: Sequence[Operation]) -> Schema:
    """The OpenAPI 3.1 document of `operations`."""
    paths: dict[str, Schema] = {}
    for op in operations:
        paths.setdefault(op.path, {})[op.method.lower()] = op.document()
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "unitcost JSON API",
            "version": __version__,
            "summary": "What each unit of LLM work costs: the ledger's report, budgets, alerts and prices.",
            "description": (
                "Served by `unitcost serve` beside the OTLP receiver. The numbers are those of the "
                "CLI (`unitcost report`, `budgets`, `alerts`, `prices show`, `price`) to the last "
                "digit. Money is an exact decimal string in USD; an unknown cost is null, never 0, "
                "and the calls without a price are always counted."
            ),
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
        },
        "servers": [{"url": "/", "description": "the `unitcost serve` that serves this document"}],
        "paths": paths,
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "The token in the environment variable that [api] token_env names; "
                    "required only when that is set.",
                }
            },
        },
        "security": [{"bearer": []}],
    }


# --------------------------------------------------------------------------- schemas


def _kpis() -> Schema:
    """A report row: the measures (money as decimal strings, counts, ratios), plus the values of
    the dimensions it is grouped by (strings, null for the calls without a value)."""
    from ..analytics.report import (
        FLOAT_COLUMNS,
        KPI_COLUMNS,
        MONEY_COLUMNS,
        PERIOD_SPAN_COLUMNS,
        TREND_COLUMNS,
    )

    properties: dict[str, Schema] = {}
    for name in (*KPI_COLUMNS, *TREND_COLUMNS):
        if name in MONEY_COLUMNS:
            properties[name] = money(nullable=True)
        elif name in FLOAT_COLUMNS:
            properties[name] = NULL_NUMBER
        else:
            properties[name] = NULL_INT
    properties["period"] = {
        **NULL_INSTANT,
        "description": "The start of the row's period (with `period`)",
    }
    for name in PERIOD_SPAN_COLUMNS:
        properties[name] = NULL_INSTANT
    properties["partial"] = {
        "type": ["boolean", "null"],
        "description": "Whether the window covers the row's period only in part (with `period`; "
        "`covered_since` to `covered_until` is the part; the trend compares `previous_since` to "
        "`previous_until`, the same span of the period before)",
    }
    properties["calls"] = {"type": "integer", "minimum": 0}
    properties["unpriced_calls"] = {
        "type": "integer",
        "minimum": 0,
        "description": "Calls with no price: counted, not in the spend (cost unknown, not zero)",
    }
    properties["unpriced_tokens"] = {"type": "integer", "minimum": 0}
    return {
        **_object(properties, ["calls", "unpriced_calls", "unpriced_tokens"]),
        "description": "Measures of one group (or of the whole window, for the headline); "
        "the dimension values of the group are the other keys",
        "additionalProperties": NULL_TEXT,
    }


def _alert() -> Schema:
    """An alert as the ledger keeps it (`alerts` table), its details as an object."""
    import pyarrow as pa

    from ..watch.tables import ALERT_SCHEMA

    properties: dict[str, Schema] = {}
    for column in ALERT_SCHEMA:
        if column.name == "details":
            properties[column.name] = {
                "type": ["object", "null"],
                "description": "What was observed and expected, the change, the contributors",
            }
        elif pa.types.is_timestamp(column.type):
            properties[column.name] = INSTANT if not column.nullable else NULL_INSTANT
        elif pa.types.is_integer(column.type):
            properties[column.name] = {"type": "integer"} if not column.nullable else NULL_INT
        else:
            properties[column.name] = {"type": "string"} if not column.nullable else NULL_TEXT
    properties["status"] = {"type": "string", "enum": ["open", "acknowledged", "resolved"]}
    return _object(properties, [c.name for c in ALERT_SCHEMA], additionalProperties=False)


_ERROR = _object(
    {
        "error": {"type": "string", "description": "What was wrong, precisely"},
        "status": {"type": "integer"},
        "suggestions": {
            "type": "array",
            "items": {"type": "string"},
            "description": "Close matches of an unknown model name",
        },
    },
    ["error", "status"],
)

_WINDOW = _object(
    {"since": INSTANT, "until": INSTANT},
    ["since", "until"],
    description="From `since` (included) to `until` (excluded), UTC",
)

_REPORT = _object(
    {
        "window": _object(
            {"since": INSTANT, "until": INSTANT, "previous": _ref("Window")},
            ["since", "until", "previous"],
        ),
        "by": {"type": "array", "items": {"type": "string"}},
        "headline": _ref("Kpis"),
        "rows": {"type": "array", "items": _ref("Kpis")},
        "others": {
            "description": "What `top` left out, so the rows and the others add up to the headline",
            "oneOf": [
                {"type": "null"},
                _object(
                    {
                        "groups": {"type": "integer"},
                        "calls": {"type": "integer"},
                        "spend": money(nullable=True),
                        "share": NULL_NUMBER,
                        "unpriced_calls": {"type": "integer"},
                        "tied": {"type": "integer"},
                        "tied_spend": money(nullable=True),
                    },
                    ["groups", "calls", "spend", "unpriced_calls"],
                ),
            ],
        },
        "periods": {"type": "array", "items": _ref("Kpis")},
        "units": {"type": "array", "items": _ref("Kpis"), "description": "Per business unit kind"},
        "unpriced": {"type": "array", "items": _ref("UnpricedGroup")},
    },
    ["window", "by", "headline", "rows", "others", "periods", "units", "unpriced"],
    additionalProperties=False,
)

_UNPRICED_GROUP = _object(
    {
        "provider": NULL_TEXT,
        "model": NULL_TEXT,
        "reason": NULL_TEXT,
        "calls": {"type": "integer"},
        "tokens": {"type": "integer"},
        "first_seen": NULL_INSTANT,
        "last_seen": NULL_INSTANT,
    },
    ["provider", "model", "reason", "calls", "tokens"],
    description="Calls of one model with no price: their cost is unknown, not zero",
)

_BUDGET = _object(
    {
        "budget": {"type": "string"},
        "scope": {"type": "string"},
        "period": {"type": "string", "description": "The period and its first local day, as words"},
        "period_start": INSTANT,
        "period_end": INSTANT,
        "timezone": {"type": "string"},
        "amount": money(),
        "spent": money(description="Priced spend to date in the period (unpriced calls are not in it)"),
        "used": {"type": "number", "description": "spent / amount"},
        "burn_per_day": money(),
        "forecast": money(nullable=True, description="Spend at period end at the current pace"),
        "forecast_low": money(nullable=True, description="The 90 % interval's low end"),
        "forecast_high": money(nullable=True, description="The 90 % interval's high end"),
        "forecast_90": {"type": "string"},
        "forecast_basis": {"type": "string"},
        "runs_out": _nullable("string", format="date", description="The local day the amount is reached"),
        "threshold_crossed": money(nullable=True, description="The highest threshold (%) reached"),
        "daily_change": NULL_NUMBER,
        "daily_change_pct": NULL_NUMBER,
        "variation": {"type": "string"},
        "variation_over_limit": {"type": "boolean"},
        "spend_started": {"type": "boolean"},
        "over_budget": {"type": "boolean"},
        "unpriced_calls": {"type": "integer", "minimum": 0},
        "note": NULL_TEXT,
        "status": {"type": "string"},
    },
    ["budget", "amount", "spent", "used", "burn_per_day", "forecast", "runs_out", "unpriced_calls", "status"],
    additionalProperties=False,
)

_PRICE_ROW = _object(
    {
        "tier": {"type": "string"},
        "from": {**NULL_INSTANT, "description": "Effective from (null: the start of the data)"},
        "to": {**NULL_INSTANT, "description": "Until, excluded (null: further notice)"},
        "window": NULL_TEXT,
        **{
            name: money(nullable=True, description="USD per million tokens")
            for name in ("input", "cache_read", "cache_write_5m", "cache_write_1h", "output", "reasoning")
        },
        "tiers": NULL_TEXT,
        "layer": NULL_TEXT,
        "ref": NULL_TEXT,
        "source": NULL_TEXT,
        "note": NULL_TEXT,
        "adjustments": {"type": ["array", "null"], "items": {"type": "object"}},
        "components": {"type": ["object", "null"], "additionalProperties": {"type": "string"}},
    },
    ["tier", "from", "to", "layer", "ref", "source"],
    description="One dated price of one tier; layer and ref are null for a period with no price",
    additionalProperties=False,
)

_USAGE = _object(
    {name: {"type": "integer", "minimum": 0} for name in USAGE_FIELDS},
    description="Totals with subsets: input_tokens counts every prompt token, cached or not; "
    "output_tokens every generated token, reasoning included. requests is 1 when left out.",
    additionalProperties=False,
)

_LINE = _object(
    {
        "quantity": {"type": "string"},
        "count": {"type": "integer"},
        "rate_usd": money(),
        "per": {"type": "integer"},
        "cost": money(),
    },
    ["quantity", "count", "rate_usd", "per", "cost"],
)

_QUOTE = _object(
    {
        "model": {"type": "string"},
        "provider": {"type": "string"},
        "tier": {"type": "string"},
        "at": INSTANT,
        "price_ref": {"type": "string"},
        "layer": {"type": "string"},
        "source": {"type": "string"},
        "adjustments": {"type": "array", "items": {"type": "object"}},
        "effective_from": NULL_INSTANT,
        "effective_to": NULL_INSTANT,
        "window": NULL_TEXT,
        "window_utc": NULL_TEXT,
        "context_tier_above": NULL_INT,
        "note": NULL_TEXT,
        "also_listed_for": {"type": "array", "items": {"type": "string"}},
        "cost": money(),
        "breakdown": {"type": "object", "additionalProperties": money()},
        "lines": {"type": "array", "items": _ref("QuoteLine")},
        "rates_usd_per_mtok": {"type": "object", "additionalProperties": money()},
        "rates_usd_per_thousand": {"type": "object", "additionalProperties": money()},
    },
    ["model", "provider", "tier", "at", "price_ref", "source", "cost", "breakdown", "lines"],
    description="A priced call: the breakdown's parts and the lines' costs add up to `cost` exactly",
    additionalProperties=False,
)

_UNPRICED_CALL = _object(
    {
        "model": {"type": "string"},
        "provider": NULL_TEXT,
        "tier": {"type": "string"},
        "at": INSTANT,
        "cost": {"type": "null", "description": "Unknown, never 0"},
        "unpriced_reason": {"type": "string"},
        "suggestions": {"type": "array", "items": {"type": "string"}},
    },
    ["model", "cost", "unpriced_reason", "suggestions"],
    description="A call no price applies to (at that date, for that tier)",
    additionalProperties=False,
)

SCHEMAS: dict[str, Schema] = {
    "Error": _ERROR,
    "Window": _WINDOW,
    "Kpis": _kpis(),
    "UnpricedGroup": _UNPRICED_GROUP,
    "Report": _REPORT,
    "Budget": _BUDGET,
    "Budgets": _object(
        {
            "at": INSTANT,
            "budgets": {"type": "array", "items": _ref("Budget")},
            "note": NULL_TEXT,
        },
        ["at", "budgets"],
        additionalProperties=False,
    ),
    "Alert": _alert(),
    "Alerts": _object(
        {"alerts": {"type": "array", "items": _ref("Alert")}, "count": {"type": "integer"}},
        ["alerts", "count"],
        additionalProperties=False,
    ),
    "AckRequest": _object(
        {
            "by": {"type": "string", "minLength": 1, "description": "Who acknowledges (a name, an address)"},
            "note": {**NULL_TEXT, "description": "Why, or what is being done: kept in the alert's history"},
        },
        ["by"],
        additionalProperties=False,
    ),
    "AckResult": _object(
        {
            "alert": _ref("Alert"),
            "acknowledged": {
                "type": "boolean",
                "description": "false when it was already acknowledged (it keeps who did and when)",
            },
        },
        ["alert", "acknowledged"],
        additionalProperties=False,
    ),
    "PriceRow": _PRICE_ROW,
    "PriceHistory": _object(
        {
            "provider": {"type": "string"},
            "model": {"type": "string"},
            "prices": {"type": "array", "items": _ref("PriceRow")},
        },
        ["provider", "model", "prices"],
        additionalProperties=False,
    ),
    "Usage": _USAGE,
    "PriceRequest": _object(
        {
            "model": {"type": "string", "minLength": 1, "description": "As your code names it"},
            "provider": {**NULL_TEXT, "description": "When the model name is ambiguous"},
            "at": {
                **NULL_TEXT,
                "description": "When the call happened (date or datetime, UTC); now by default",
            },
            "tier": {"type": "string", "enum": ["standard", "batch", "flex", "priority"]},
            "usage": _ref("Usage"),
        },
        ["model", "usage"],
        additionalProperties=False,
    ),
    "QuoteLine": _LINE,
    "PriceQuote": _QUOTE,
    "UnpricedCall": _UNPRICED_CALL,
    "PriceAnswer": {"oneOf": [_ref("PriceQuote"), _ref("UnpricedCall")]},
    "OpenAPI": {"type": "object", "description": "This document"},
    "Html": {"type": "string"},
}


def docs_page(doc: Schema) -> str:
    """A page for people, made from the document itself: no script, nothing from the internet."""
    esc = html.escape
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{esc(doc['info']['title'])}</title>",
        "<style>body{font:15px/1.5 system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem}"
        "code,pre{background:#f4f4f4;padding:0 .2rem}h2{margin-top:2rem;border-top:1px solid #ddd;"
        "padding-top:1rem}table{border-collapse:collapse}td,th{border:1px solid #ddd;padding:.2rem .5rem;"
        "text-align:left;vertical-align:top}</style></head><body>",
        f"<h1>{esc(doc['info']['title'])} <small>{esc(doc['info']['version'])}</small></h1>",
        f"<p>{esc(doc['info']['description'])}</p>",
        "<p>The machine-readable document: <a href='/api/v1/openapi.json'>/api/v1/openapi.json</a>. "
        "When the API is protected, send <code>Authorization: Bearer TOKEN</code>.</p>",
    ]
    for path, methods in doc["paths"].items():
        for method, op in methods.items():
            parts.append(f"<h2><code>{esc(method.upper())} {esc(path)}</code></h2>")
            parts.append(f"<p><b>{esc(op['summary'])}</b> {esc(op['description'])}</p>")
            if op["parameters"]:
                parts.append("<table><tr><th>parameter</th><th>in</th><th>description</th></tr>")
                for p in op["parameters"]:
                    parts.append(
                        f"<tr><td><code>{esc(p['name'])}</code></td><td>{esc(p['in'])}</td>"
                        f"<td>{esc(p['description'])}</td></tr>"
                    )
                parts.append("</table>")
            if "requestBody" in op:
                body = op["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
                parts.append(f"<p>Body: JSON, schema <code>{esc(body)}</code>.</p>")
            answers = ", ".join(
                f"{esc(code)} ({esc(r['description'])})" for code, r in op["responses"].items()
            )
            parts.append(f"<p>Answers: {answers}.</p>")
    parts.append("</body></html>")
    return "".join(parts)


SERVER_OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "GET",
        "/healthz",
        "health",
        "Whether the server is up",
        "Always open: a load balancer's or a supervisor's check.",
        "Health",
        protected=False,
    ),
    Operation(
        "POST",
        "/v1/traces",
        "exportTraces",
        "The OTLP/HTTP trace receiver: GenAI spans become priced events",
        "An OpenTelemetry exporter's ExportTraceServiceRequest, as protobuf (application/x-protobuf) "
        "or JSON, gzip or not; answered once the events are committed. Spans that cannot become "
        "events are counted in partial_success with the reason; the others are kept. Follows the "
        "OTLP specification (not this API's token or error shape).",
        "OtlpResponse",
        errors={400: "an undecodable request", 413: "a body over the size limit", 415: "another encoding"},
        protected=False,
    ),
    Operation(
        "GET",
        "/v1/traces/stats",
        "traceStats",
        "What the OTLP receiver has taken since the server started",
        "Requests, spans accepted, duplicate, rejected and ignored; the writer's commits.",
        "TraceStats",
        protected=False,
    ),
    Operation(
        "GET",
        "/metrics",
        "metrics",
        "Prometheus metrics of the server",
        "Spans received by outcome, events unpriced, the writer's commits, watch cycles and their "
        "duration, open alerts by detector and severity, each budget's spend, amount and share used "
        "(Prometheus text format). Requires the API's token when one is set.",
        "Metrics",
        media_type="text/plain",
    ),
)

SCHEMAS.update(
    {
        "Health": _object({"status": {"type": "string", "const": "ok"}}, ["status"]),
        "OtlpResponse": _object(
            {
                "partialSuccess": _object(
                    {"rejectedSpans": {"type": "string"}, "errorMessage": {"type": "string"}}
                )
            },
            description="ExportTraceServiceResponse (JSON form; protobuf for a protobuf request)",
        ),
        "TraceStats": _object(
            {
                name: {"type": "integer"}
                for name in (
                    "requests",
                    "spans_accepted",
                    "spans_duplicate",
                    "spans_rejected",
                    "spans_ignored",
                )
            }
            | {"writer": {"type": "object"}},
            ["requests", "spans_accepted", "spans_duplicate", "spans_rejected", "spans_ignored", "writer"],
        ),
        "Metrics": {"type": "string", "description": "Prometheus text exposition format"},
    }
)
