"""One OTLP trace request -> event rows and typed columns, with every span accounted for.

Each span becomes an event row, is ignored (not a model call) or is rejected with a reason
naming it; a request that cannot be read as a whole raises RequestError. `decode_request`
is the whole step from the body as received, run in the server or in a worker process.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pyarrow as pa

from .columns import storable_table
from .decode import (
    JsonSpanError,
    decode_json,
    decode_protobuf,
    decompress,
    json_attributes,
    json_span,
)
from .mapping import SpanError
from .rows import Row, SpanMapper

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
SHOWN_ERRORS = 5
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass
class Outcome:
    """Spans of one request that will not be written, and why."""

    rejected: int = 0
    errors: list[str] = field(default_factory=list)
    ignored: int = 0
    """Spans that are not model calls (not errors)."""

    def reject(self, label: str, reason: str, count: int = 1) -> None:
        self.rejected += count
        if len(self.errors) < SHOWN_ERRORS:
            self.errors.append(f"{label}: {reason}")


@dataclass
class Extracted(Outcome):
    """What one request holds: event rows to write, and the spans that could not be read."""

    rows: list[Row] = field(default_factory=list)


@dataclass
class Decoded(Outcome):
    """A request ready to write: its events as typed columns (picklable, to cross processes)."""

    table: pa.Table = field(default_factory=lambda: storable_table([])[0])

    def label(self, index: int) -> str:
        return row_label(self.table.column("event_id")[index].as_py())


def decode_request(body: bytes, content_type: str, encoding: str | None, mapper: SpanMapper) -> Decoded:
    """Body as received -> a request ready to write. Raises RequestError when it is unreadable as a whole."""
    extracted = extract(decompress(body, encoding), content_type, mapper)
    table, unstorable = storable_table(extracted.rows)
    for index, reason in unstorable:
        extracted.reject(row_label(extracted.rows[index]), reason)
    return Decoded(extracted.rejected, extracted.errors, extracted.ignored, table)


def _label(span_id: str, trace_id: str) -> str:
    return f"span {span_id or '?'} (trace {trace_id or '?'})"


def row_label(row_or_event_id: Row | str) -> str:
    """How an error names the span of a row (its ids are in the event id, `otlp:<trace>:<span>`)."""
    event_id = row_or_event_id if isinstance(row_or_event_id, str) else row_or_event_id[0]
    _, trace_id, span_id = event_id.split(":")
    return _label(span_id, trace_id)


def extract(data: bytes, content_type: str, mapper: SpanMapper) -> Extracted:
    """Decoded request -> event rows. Raises RequestError when the request as a whole is unreadable."""
    out = Extracted()
    rows = out.rows
    now = datetime.now(UTC)
    now_us = (now - _EPOCH) // timedelta(microseconds=1)
    if content_type == PROTOBUF:
        for resource, spans in decode_protobuf(data):
            fields = mapper.resource(resource)
            for span in spans:
                try:
                    row = mapper.protobuf_row(span, fields, now_us)
                except SpanError as exc:
                    out.reject(_label(span.span_id.hex(), span.trace_id.hex()), str(exc))
                    continue
                if row is None:
                    out.ignored += 1
                else:
                    rows.append(row)
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
        fields = mapper.resource(resource)
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
                try:
                    row = mapper.span_row(span, fields, now_us)
                except SpanError as exc:
                    out.reject(_label(span.span_id, span.trace_id), str(exc))
                    continue
                if row is None:
                    out.ignored += 1
                else:
                    rows.append(row)
    return out
