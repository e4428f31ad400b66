"""The OTLP/HTTP trace receiver: `POST /v1/traces` -> priced events, acknowledged once committed.

Per the OTLP/HTTP specification:
- the response uses the request's encoding (protobuf or JSON);
- spans that cannot become events are reported in `partial_success` (a count and a message
  naming the first few, by span id, attribute and reason) while the others are kept;
- an undecodable request is a 400 with a `google.rpc.Status` body, an unsupported encoding
  a 415, an oversized one a 413;
- when the ledger cannot be written the answer is 503 (retryable): since each event's id
  is derived from its trace and span ids, the exporter's retry cannot create duplicates.
The 200 is sent only after the writer has committed the request's events.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..connectors.writer import BatchWriter
from .decode import (
    JsonSpanError,
    RequestError,
    decode_json,
    decode_protobuf,
    decompress,
    json_attributes,
    json_span,
)
from .mapping import AttributeMapping, ResourceFields, Span, SpanError, resource_fields, span_to_event

log = logging.getLogger("unitcost.otlp")

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
SHOWN_ERRORS = 5


@dataclass
class Extracted:
    """What one request holds: events to write, and the spans that could not be read."""

    records: list[dict[str, Any]] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    """Span label (trace/span id) of each record, to name it if the ledger rejects it."""
    rejected: int = 0
    errors: list[str] = field(default_factory=list)
    ignored: int = 0

    def reject(self, label: str, reason: str, count: int = 1) -> None:
        self.rejected += count
        if len(self.errors) < SHOWN_ERRORS:
            self.errors.append(f"{label}: {reason}")

    def take(self, span: Span, resource: ResourceFields, mapping: AttributeMapping, now: datetime) -> None:
        label = f"span {span.span_id or '?'} (trace {span.trace_id or '?'})"
        try:
            event = span_to_event(span, resource, mapping, now)
        except SpanError as exc:
            self.reject(label, str(exc))
            return
        if event is None:
            self.ignored += 1
            return
        self.records.append(event)
        self.labels.append(label)


def extract(data: bytes, content_type: str, mapping: AttributeMapping) -> Extracted:
    """Decoded request -> events. Raises RequestError when the request as a whole is unreadable."""
    out = Extracted()
    now = datetime.now(UTC)
    if content_type == PROTOBUF:
        for resource, spans in decode_protobuf(data):
            fields = resource_fields(resource, mapping)
            for span in spans:
                out.take(span, fields, mapping, now)
        return out
    _, groups = decode_json(data)
    for g, group in enumerate(groups):
        where = f"resourceSpans[{g}]"
        scopes = group.get("scopeSpans", []) if isinstance(group, Mapping) else None
        if not isinstance(scopes, list):
            out.reject(where, "expected an object with a scopeSpans list")
            continue
        spans_here = [
            s
            for scope in scopes
            if isinstance(scope, Mapping) and isinstance(scope.get("spans"), list)
            for s in scope["spans"]
        ]
        try:
            resource_obj = group.get("resource") or {}
            if not isinstance(resource_obj, Mapping):
                raise JsonSpanError(f"{where}.resource: must be an object")
            resource = json_attributes(resource_obj.get("attributes"), f"{where}.resource.attributes")
        except JsonSpanError as exc:
            out.reject(where, str(exc), max(len(spans_here), 1))
            continue
        fields = resource_fields(resource, mapping)
        for s, scope in enumerate(scopes):
            raw_spans = scope.get("spans", []) if isinstance(scope, Mapping) else None
            if not isinstance(raw_spans, list):
                out.reject(f"{where}.scopeSpans[{s}]", "expected an object with a spans list")
                continue
            for i, raw in enumerate(raw_spans):
                try:
                    span = json_span(raw, f"{where}.scopeSpans[{s}].spans[{i}]")
                except JsonSpanError as exc:
                    out.reject("span", str(exc))
                    continue
                out.take(span, fields, mapping, now)
    return out


@dataclass
class ReceiverStats:
    requests: int = 0
    spans_accepted: int = 0
    spans_duplicate: int = 0
    spans_rejected: int = 0
    spans_ignored: int = 0


class TraceReceiver:
    """The `/v1/traces` endpoint, bound to a ledger writer and an attribute mapping."""

    def __init__(self, writer: BatchWriter, mapping: AttributeMapping | None = None) -> None:
        self.writer = writer
        self.mapping = mapping or AttributeMapping()
        self.stats = ReceiverStats()

    def routes(self) -> list[Route]:
        return [
            Route("/v1/traces", self.export, methods=["POST"]),
            Route("/v1/traces/stats", self.stats_endpoint, methods=["GET"]),
        ]

    async def stats_endpoint(self, request: Request) -> Response:
        writer = {"commits": self.writer.commits, "events_written": self.writer.events_written}
        return Response(orjson.dumps({**self.stats.__dict__, "writer": writer}), media_type=JSON)

    async def export(self, request: Request) -> Response:
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type not in (PROTOBUF, JSON):
            return _error(
                f"Content-Type {content_type or '(none)'!r} is not supported: use {PROTOBUF} or {JSON}",
                415,
                JSON,
            )
        try:
            body = await request.body()
            data = decompress(body, request.headers.get("content-encoding"))
            extracted = extract(data, content_type, self.mapping)
        except RequestError as exc:
            return _error(str(exc), exc.status, content_type)
        self.stats.requests += 1
        self.stats.spans_ignored += extracted.ignored
        if extracted.records:
            try:
                future = self.writer.submit(extracted.records)
                result = await asyncio.wrap_future(future)
            except Exception as exc:
                log.error("OTLP export not written: %s", exc)
                return _error(f"the ledger could not be written, retry later: {exc}", 503, content_type)
            self.stats.spans_accepted += result.accepted
            self.stats.spans_duplicate += result.duplicates
            for rejection in result.rejections:
                extracted.reject(
                    extracted.labels[rejection.record - 1], f"{rejection.field}: {rejection.reason}"
                )
        self.stats.spans_rejected += extracted.rejected
        return _success(extracted, content_type)


def _message(extracted: Extracted) -> str:
    shown = "; ".join(extracted.errors)
    more = extracted.rejected - len(extracted.errors)
    return f"{extracted.rejected} span(s) rejected: {shown}" + (f"; and {more} more" if more > 0 else "")


def _success(extracted: Extracted, content_type: str) -> Response:
    if content_type == PROTOBUF:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

        response = ExportTraceServiceResponse()
        if extracted.rejected:
            response.partial_success.rejected_spans = extracted.rejected
            response.partial_success.error_message = _message(extracted)
        return Response(response.SerializeToString(), media_type=PROTOBUF)
    body: dict[str, Any] = {}
    if extracted.rejected:
        body["partialSuccess"] = {
            "rejectedSpans": str(extracted.rejected),
            "errorMessage": _message(extracted),
        }
    return Response(orjson.dumps(body), media_type=JSON)


_GRPC_CODES = {400: 3, 413: 8, 415: 3, 503: 14}  # INVALID_ARGUMENT, RESOURCE_EXHAUSTED, UNAVAILABLE


def _error(message: str, status: int, content_type: str) -> Response:
    headers = {"Retry-After": "1"} if status == 503 else None
    code = _GRPC_CODES.get(status, 2)
    if content_type == PROTOBUF:
        from google.rpc.status_pb2 import Status

        payload = Status(code=code, message=message).SerializeToString()
        return Response(payload, status_code=status, media_type=PROTOBUF, headers=headers)
    return Response(
        orjson.dumps({"code": code, "message": message}), status_code=status, media_type=JSON, headers=headers
    )
