"""Build OTLP trace export requests (protobuf and JSON) the way OpenTelemetry SDK exporters do."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Status

from unitcost.api import Ledger
from unitcost.config import Config


def genai_attributes(
    model: str = "gpt-4o",
    input_tokens: int = 1200,
    output_tokens: int = 300,
    provider: str = "openai",
    **extra: Any,
) -> dict[str, Any]:
    return {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": provider,
        "gen_ai.request.model": model,
        "gen_ai.response.model": model,
        "gen_ai.usage.input_tokens": input_tokens,
        "gen_ai.usage.output_tokens": output_tokens,
        **extra,
    }


def _any(value: Any) -> AnyValue:
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    if isinstance(value, (list, tuple)):
        out = AnyValue()
        out.array_value.values.extend(_any(v) for v in value)
        return out
    return AnyValue(string_value=str(value))


def _kvs(attrs: Mapping[str, Any]) -> list[KeyValue]:
    return [KeyValue(key=k, value=_any(v)) for k, v in attrs.items()]


def new_ids() -> tuple[bytes, bytes]:
    return os.urandom(16), os.urandom(8)


def protobuf_request(
    spans: Sequence[Mapping[str, Any]],
    resource: Mapping[str, Any] | None = None,
    start_ns: int = 1_758_000_000_000_000_000,
) -> bytes:
    """spans: dicts with `attributes` and optional trace_id/span_id (bytes), error (bool)."""
    request = ExportTraceServiceRequest()
    rs = request.resource_spans.add()
    rs.resource.attributes.extend(_kvs(resource or {"service.name": "checkout"}))
    ss = rs.scope_spans.add()
    ss.scope.name = "test"
    for i, spec in enumerate(spans):
        trace_id, span_id = new_ids()
        span = ss.spans.add()
        span.trace_id = spec.get("trace_id", trace_id)
        span.span_id = spec.get("span_id", span_id)
        span.name = spec.get("name", "chat")
        span.kind = 3
        span.start_time_unix_nano = spec.get("start_ns", start_ns + i * 1_000_000)
        span.end_time_unix_nano = span.start_time_unix_nano + 250_000_000
        span.attributes.extend(_kvs(spec["attributes"]))
        if spec.get("error"):
            span.status.code = Status.STATUS_CODE_ERROR
    return request.SerializeToString()


def _json_any(value: Any) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)}
    if isinstance(value, float):
        return {"doubleValue": value}
    return {"stringValue": str(value)}


def json_span(
    attributes: Mapping[str, Any], start_ns: int = 1_758_000_000_000_000_000, **fields: Any
) -> dict[str, Any]:
    trace_id, span_id = new_ids()
    return {
        "traceId": trace_id.hex(),
        "spanId": span_id.hex(),
        "name": "chat",
        "kind": 3,
        "startTimeUnixNano": str(start_ns),
        "endTimeUnixNano": str(start_ns + 500_000_000),
        "attributes": [{"key": k, "value": _json_any(v)} for k, v in attributes.items()],
        "status": {},
        **fields,
    }


def json_request(spans: Sequence[Any], resource: Mapping[str, Any] | None = None) -> dict[str, Any]:
    return {
        "resourceSpans": [
            {
                "resource": {
                    "attributes": [
                        {"key": k, "value": _json_any(v)}
                        for k, v in (resource or {"service.name": "checkout"}).items()
                    ]
                },
                "scopeSpans": [{"scope": {"name": "test"}, "spans": list(spans)}],
            }
        ]
    }


def ledger_rows(path: Path) -> list[dict[str, Any]]:
    with Ledger(path, config=Config(), read_only=True) as ledger:
        return ledger.store.fetch("SELECT * FROM events ORDER BY event_id").to_pylist()
