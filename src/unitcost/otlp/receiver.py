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
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..connectors.writer import BatchWriter
from .decode import MAX_BODY, RequestError
from .extract import JSON, PROTOBUF, Outcome, decode_request
from .mapping import AttributeMapping
from .rows import SpanMapper
from .workers import DecodePool, WorkerLostError

log = logging.getLogger("unitcost.otlp")


@dataclass
class ReceiverStats:
    requests: int = 0
    spans_accepted: int = 0
    spans_duplicate: int = 0
    spans_rejected: int = 0
    spans_ignored: int = 0


class TraceReceiver:
    """The `/v1/traces` endpoint, bound to a ledger writer and an attribute mapping.

    With `decode_workers`, requests are decoded and mapped in that many worker processes, so
    the server's own interpreter lock is left to the HTTP handling and the ledger writer.
    Call `close` when done (it stops the workers).
    """

    def __init__(
        self, writer: BatchWriter, mapping: AttributeMapping | None = None, *, decode_workers: int = 0
    ) -> None:
        self.writer = writer
        self.mapper = SpanMapper(mapping)
        self.stats = ReceiverStats()
        self.pool = DecodePool(self.mapper.mapping, decode_workers) if decode_workers > 0 else None

    @property
    def mapping(self) -> AttributeMapping:
        return self.mapper.mapping

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()

    def routes(self) -> list[Route]:
        return [
            Route("/v1/traces", self.export, methods=["POST"]),
            Route("/v1/traces/stats", self.stats_endpoint, methods=["GET"]),
        ]

    async def stats_endpoint(self, request: Request) -> Response:
        writer = {
            "commits": self.writer.commits,
            "events_written": self.writer.events_written,
            "write_seconds": round(self.writer.write_seconds, 6),
        }
        return Response(orjson.dumps({**self.stats.__dict__, "writer": writer}), media_type=JSON)

    async def export(self, request: Request) -> Response:
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type not in (PROTOBUF, JSON):
            return _error(
                f"Content-Type {content_type or '(none)'!r} is not supported: use {PROTOBUF} or {JSON}",
                415,
                JSON,
            )
        encoding = request.headers.get("content-encoding")
        try:
            body = await _body(request)
            if self.pool is None:
                decoded = decode_request(body, content_type, encoding, self.mapper)
            else:
                decoded = await self.pool.decode(body, content_type, encoding)
        except RequestError as exc:
            return _error(str(exc), exc.status, content_type)
        except WorkerLostError as exc:
            log.error("OTLP export not decoded: %s", exc)
            return _error(f"{exc}, retry later", 503, content_type)
        self.stats.requests += 1
        self.stats.spans_ignored += decoded.ignored
        if decoded.table.num_rows:
            try:
                future = self.writer.submit_table(decoded.table)
                result = await asyncio.wrap_future(future)
            except Exception as exc:
                log.error("OTLP export not written: %s", exc)
                return _error(f"the ledger could not be written, retry later: {exc}", 503, content_type)
            self.stats.spans_accepted += result.accepted
            self.stats.spans_duplicate += result.duplicates
            for rejection in result.rejections:
                decoded.reject(decoded.label(rejection.record - 1), f"{rejection.field}: {rejection.reason}")
        self.stats.spans_rejected += decoded.rejected
        return _success(decoded, content_type)


MAX_WIRE_BODY = MAX_BODY + MAX_BODY // 1000
"""Bytes read from the wire at most: a gzip body holding MAX_BODY is at most a little larger
(incompressible data costs gzip 5 bytes per 64 KiB block)."""


async def _body(request: Request) -> bytes:
    """The body as sent, refused with a 413 as soon as it is known to be too large: from its
    Content-Length before reading anything, else once the bytes read pass the limit (a request
    is never held whole in memory only to be refused)."""
    too_large = RequestError(f"the request is larger than {MAX_BODY // (1024 * 1024)} MiB", 413)
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_WIRE_BODY:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_WIRE_BODY:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


def _message(extracted: Outcome) -> str:
    shown = "; ".join(extracted.errors)
    more = extracted.rejected - len(extracted.errors)
    return f"{extracted.rejected} span(s) rejected: {shown}" + (f"; and {more} more" if more > 0 else "")


def _success(extracted: Outcome, content_type: str) -> Response:
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
