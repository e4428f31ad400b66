"""OTLP/HTTP trace requests (protobuf or JSON, optionally gzip or deflate) -> resource attributes + spans.

Protobuf is decoded with the official `opentelemetry-proto` messages. JSON follows the
OTLP/JSON rules: camelCase field names, trace and span ids as hex strings, 64-bit
integers as decimal strings, enum values as integers. JSON spans become `Span`s; protobuf
spans stay messages, read in place by the mapping (`SpanMapper.protobuf_row`).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import orjson

from ..redact import quoted
from .mapping import Span
from .rows import STATUS_ERROR, any_value

MAX_BODY = 64 * 1024 * 1024


class RequestError(ValueError):
    """The request as a whole cannot be read (HTTP 400 / 413 / 415)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status

    def __reduce__(self) -> tuple[type[RequestError], tuple[str, int]]:
        return RequestError, (str(self), self.status)  # crosses from a decoding worker intact


_GZIP = 16 + zlib.MAX_WBITS
_ZLIB = zlib.MAX_WBITS
_RAW_DEFLATE = -zlib.MAX_WBITS
_ENCODINGS = {"gzip": _GZIP, "x-gzip": _GZIP, "deflate": _ZLIB}
"""Content-Encoding -> zlib window bits. `deflate` is what the OpenTelemetry Python exporter
sends with `OTEL_EXPORTER_OTLP_COMPRESSION=deflate` (zlib format, RFC 9110); `x-gzip` is gzip
(RFC 9110 asks recipients to treat them alike)."""


def decompress(body: bytes, encoding: str | None) -> bytes:
    encoding = (encoding or "").strip().lower()
    if encoding in ("", "identity"):
        data = body
    elif encoding in _ENCODINGS:
        data = _inflate(body, encoding, _ENCODINGS[encoding])
    else:
        raise RequestError(f"Content-Encoding {encoding!r} is not supported (use gzip, deflate or none)", 415)
    if len(data) > MAX_BODY:
        raise RequestError(
            f"the request is larger than {MAX_BODY // (1024 * 1024)} MiB once decompressed", 413
        )
    return data


def _inflate(body: bytes, encoding: str, wbits: int) -> bytes:
    """The body decompressed, at most MAX_BODY + 1 bytes of it (a bomb is not inflated whole)."""
    try:
        decompressor = zlib.decompressobj(wbits)
        data = decompressor.decompress(body, MAX_BODY + 1)
    except zlib.error as exc:
        if wbits != _ZLIB:
            raise RequestError(
                f"Content-Encoding {encoding}: the body is not valid {encoding} ({exc})"
            ) from exc
        # Some clients send raw deflate data (no zlib header) under `deflate`.
        return _inflate(body, encoding, _RAW_DEFLATE)
    if not decompressor.eof and len(data) <= MAX_BODY:
        raise RequestError(f"Content-Encoding {encoding}: the body is truncated")
    return data


ProtobufGroup = tuple[dict[str, Any], Sequence[Any]]
"""A resource's decoded attributes and the protobuf Span messages of one of its scopes."""


# --------------------------------------------------------------------------- protobuf


def decode_protobuf(data: bytes) -> Iterator[ProtobufGroup]:
    from google.protobuf.message import DecodeError
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    try:
        request = ExportTraceServiceRequest.FromString(data)
    except DecodeError as exc:
        raise RequestError(f"the body is not an OTLP ExportTraceServiceRequest in protobuf ({exc})") from exc
    for resource_spans in request.resource_spans:
        resource = {kv.key: any_value(kv.value) for kv in resource_spans.resource.attributes}
        for scope_spans in resource_spans.scope_spans:
            # The Span messages themselves: `SpanMapper.protobuf_row` reads them in place.
            yield resource, scope_spans.spans


# --------------------------------------------------------------------------- JSON


class JsonSpanError(ValueError):
    """One span of a JSON request is malformed."""


def _json_value(value: Any, where: str) -> Any:
    if not isinstance(value, Mapping):
        raise JsonSpanError(f"{where}: expected an AnyValue object, got {type(value).__name__}")
    if not value:
        return None
    if len(value) != 1:
        raise JsonSpanError(f"{where}: an AnyValue has exactly one of stringValue, intValue, ...")
    (kind, inner), *_ = value.items()
    if kind == "stringValue":
        if not isinstance(inner, str):
            raise JsonSpanError(f"{where}: stringValue must be a string")
        return inner
    if kind == "intValue":
        # int64 travels as a decimal string in OTLP/JSON; numbers are accepted too.
        if isinstance(inner, bool) or not isinstance(inner, (int, str)):
            raise JsonSpanError(f"{where}: intValue must be an integer or a decimal string")
        try:
            return int(inner)
        except ValueError as exc:
            raise JsonSpanError(f"{where}: intValue {quoted(where, inner)} is not an integer") from exc
    if kind == "doubleValue":
        if isinstance(inner, bool) or not isinstance(inner, (int, float, str)):
            raise JsonSpanError(f"{where}: doubleValue must be a number")
        try:
            return float(inner)
        except ValueError as exc:
            raise JsonSpanError(f"{where}: doubleValue {quoted(where, inner)} is not a number") from exc
    if kind == "boolValue":
        if not isinstance(inner, bool):
            raise JsonSpanError(f"{where}: boolValue must be true or false")
        return inner
    if kind == "arrayValue":
        values = inner.get("values", []) if isinstance(inner, Mapping) else None
        if not isinstance(values, list):
            raise JsonSpanError(f"{where}: arrayValue.values must be a list")
        return [_json_value(v, f"{where}[{i}]") for i, v in enumerate(values)]
    if kind == "kvlistValue":
        values = inner.get("values", []) if isinstance(inner, Mapping) else None
        if not isinstance(values, list):
            raise JsonSpanError(f"{where}: kvlistValue.values must be a list")
        return json_attributes(values, where)
    if kind == "bytesValue":
        return str(inner)
    raise JsonSpanError(f"{where}: unknown AnyValue kind {kind!r}")


def json_attributes(items: Any, where: str) -> dict[str, Any]:
    if items is None:
        return {}
    if not isinstance(items, list):
        raise JsonSpanError(f"{where}: attributes must be a list of {{key, value}}")
    out: dict[str, Any] = {}
    for i, kv in enumerate(items):
        if not isinstance(kv, Mapping) or not isinstance(kv.get("key"), str):
            raise JsonSpanError(f"{where}[{i}]: an attribute needs a string key")
        out[kv["key"]] = _json_value(kv.get("value", {}), f"{where}.{kv['key']}")
    return out


def _hex_id(value: Any, size: int, where: str, required: bool) -> str:
    if value in (None, ""):
        if required:
            raise JsonSpanError(f"{where}: missing")
        return ""
    if not isinstance(value, str):
        raise JsonSpanError(f"{where}: expected a hex string")
    try:
        raw = bytes.fromhex(value)
    except ValueError as exc:
        raise JsonSpanError(f"{where}: not hex: {quoted(where, value, 40)}") from exc
    if len(raw) != size:
        raise JsonSpanError(f"{where}: expected {size} bytes ({2 * size} hex digits), got {len(raw)}")
    return raw.hex()


def _nanos(value: Any, where: str) -> int:
    if value in (None, ""):
        return 0
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise JsonSpanError(f"{where}: expected nanoseconds as an integer or a decimal string")
    try:
        number = int(value)
    except ValueError as exc:
        raise JsonSpanError(f"{where}: {quoted(where, value)} is not an integer") from exc
    if number < 0 or number >= 2**64:
        raise JsonSpanError(f"{where}: {number} is out of range for fixed64")
    return number


def json_span(raw: Any, where: str) -> Span:
    if not isinstance(raw, Mapping):
        raise JsonSpanError(f"{where}: a span must be an object")
    status = raw.get("status") or {}
    if not isinstance(status, Mapping):
        raise JsonSpanError(f"{where}.status: must be an object")
    code = status.get("code", 0)
    return Span(
        trace_id=_hex_id(raw.get("traceId"), 16, f"{where}.traceId", True),
        span_id=_hex_id(raw.get("spanId"), 8, f"{where}.spanId", True),
        parent_span_id=_hex_id(raw.get("parentSpanId"), 8, f"{where}.parentSpanId", False),
        name=str(raw.get("name", "")),
        start_ns=_nanos(raw.get("startTimeUnixNano"), f"{where}.startTimeUnixNano"),
        end_ns=_nanos(raw.get("endTimeUnixNano"), f"{where}.endTimeUnixNano"),
        attributes=json_attributes(raw.get("attributes"), f"{where}.attributes"),
        error=code in (STATUS_ERROR, "STATUS_CODE_ERROR"),
    )


def decode_json(data: bytes) -> tuple[dict[str, Any], list[Any]]:
    """The top-level structure: raises RequestError when the body is not an OTLP/JSON trace request.

    Returns (document, resourceSpans); spans are read one by one with `json_span` so one bad
    span is rejected alone.
    """
    try:
        document = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise RequestError(f"the body is not valid JSON ({exc})") from exc
    if not isinstance(document, dict):
        raise RequestError("an OTLP/JSON trace request is an object with resourceSpans")
    groups = document.get("resourceSpans", document.get("resource_spans", []))
    if not isinstance(groups, list):
        raise RequestError("resourceSpans must be a list")
    return document, groups
