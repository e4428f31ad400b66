"""OTLP/HTTP receiver: GenAI spans (old and new names, OpenInference) -> priced events, per the OTLP spec."""

from __future__ import annotations

import gzip
import json
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from google.rpc.status_pb2 import Status
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from fake_providers import CHAT_USAGE, fake_provider_app, serve_app
from otlp_payloads import genai_attributes, json_request, json_span, ledger_rows, protobuf_request
from unitcost.api import Ledger
from unitcost.config import Config
from unitcost.otlp.columns import storable_table
from unitcost.otlp.decode import RequestError
from unitcost.otlp.extract import decode_request, extract
from unitcost.otlp.mapping import AttributeMapping, Span, SpanError
from unitcost.otlp.rows import SpanMapper, span_to_event
from unitcost.otlp.server import otlp_app

PROTOBUF = {"Content-Type": "application/x-protobuf"}
JSON = {"Content-Type": "application/json"}


def span(attrs: dict[str, Any], **kw: Any) -> Span:
    defaults: dict[str, Any] = {
        "trace_id": "0af7651916cd43dd8448eb211c80319c",
        "span_id": "b7ad6b7169203331",
        "parent_span_id": "00f067aa0ba902b7",
        "name": "chat gpt-4o",
        "start_ns": 1_758_000_000_000_000_000,
        "end_ns": 1_758_000_001_500_000_000,
        "attributes": attrs,
        "error": False,
    }
    return Span(**{**defaults, **kw})


# --------------------------------------------------------------------------- mapping


def test_current_semantic_conventions() -> None:
    attrs = genai_attributes(
        "claude-sonnet-4-6",
        provider="anthropic",
        input_tokens=15000,
        output_tokens=900,
        **{
            "gen_ai.usage.cache_read.input_tokens": 12000,
            "gen_ai.usage.cache_creation.input_tokens": 2000,
            "gen_ai.usage.reasoning.output_tokens": 300,
            "gen_ai.response.model": "claude-sonnet-4-6-20260101",
        },
    )
    event = span_to_event(span(attrs), {"service.name": "support-bot"}, AttributeMapping())
    assert event is not None
    assert event["event_id"] == "otlp:0af7651916cd43dd8448eb211c80319c:b7ad6b7169203331"
    assert (event["trace_id"], event["parent_id"]) == ("0af7651916cd43dd8448eb211c80319c", "00f067aa0ba902b7")
    assert event["tags"]["span_id"] == "b7ad6b7169203331"
    assert (event["model"], event["served_model"], event["provider"]) == (
        "claude-sonnet-4-6",
        "claude-sonnet-4-6-20260101",
        "anthropic",
    )
    assert (event["input_tokens"], event["cache_read_tokens"], event["cache_write_5m_tokens"]) == (
        15000,
        12000,
        2000,
    )
    assert (event["output_tokens"], event["reasoning_tokens"]) == (900, 300)
    assert event["app"] == "support-bot"
    assert event["latency_ms"] == 1500.0


def test_older_names_and_openinference() -> None:
    old = {
        "gen_ai.system": "openai",
        "gen_ai.request.model": "gpt-4o",
        "gen_ai.usage.prompt_tokens": 100,
        "gen_ai.usage.completion_tokens": 20,
        "gen_ai.usage.cache_read_input_tokens": 60,
        "gen_ai.usage.cache_creation_input_tokens": 0,
    }
    event = span_to_event(span(old), {}, AttributeMapping())
    assert event is not None
    assert (event["provider"], event["input_tokens"], event["output_tokens"], event["cache_read_tokens"]) == (
        "openai",
        100,
        20,
        60,
    )
    openinference = {
        "openinference.span.kind": "LLM",
        "llm.model_name": "gpt-4.1-mini",
        "llm.provider": "openai",
        "llm.token_count.prompt": 500,
        "llm.token_count.completion": 40,
        "llm.token_count.prompt_details.cache_read": 256,
        "llm.token_count.completion_details.reasoning": 10,
    }
    event = span_to_event(span(openinference), {}, AttributeMapping())
    assert event is not None
    assert (event["model"], event["input_tokens"], event["cache_read_tokens"], event["reasoning_tokens"]) == (
        "gpt-4.1-mini",
        500,
        256,
        10,
    )
    vertex = genai_attributes("gemini-2.5-flash", provider="gcp.vertex_ai")
    assert span_to_event(span(vertex), {}, AttributeMapping())["provider"] == "google"  # type: ignore[index]
    write = genai_attributes(**{"gen_ai.usage.cache_write.input_tokens": 7})
    assert span_to_event(span(write), {}, AttributeMapping())["cache_write_5m_tokens"] == 7  # type: ignore[index]


def test_anthropic_uncached_input_is_completed() -> None:
    attrs = genai_attributes(
        "claude-haiku-4-5",
        provider="anthropic",
        input_tokens=50,
        **{"gen_ai.usage.cache_read.input_tokens": 4000, "gen_ai.usage.cache_creation.input_tokens": 100},
    )
    event = span_to_event(span(attrs), {}, AttributeMapping())
    assert event is not None and event["input_tokens"] == 4150


def test_configurable_attribute_mapping() -> None:
    mapping = AttributeMapping.from_config(
        {"attributes": {"k8s.namespace.name": "team", "cloud.region": "tag:region", "app.feature": "feature"}}
    )
    resource = {"service.name": "search-api", "k8s.namespace.name": "search", "cloud.region": "eu-west-1"}
    attrs = genai_attributes(
        **{
            "app.feature": "autocomplete",
            "enduser.id": "u-42",
            "unitcost.unit": "query",
            "unitcost.tag.ab": "B",
        }
    )
    event = span_to_event(span(attrs), resource, mapping)
    assert event is not None
    assert (event["team"], event["app"], event["feature"], event["user"], event["unit"]) == (
        "search",
        "search-api",
        "autocomplete",
        "u-42",
        "query",
    )
    assert event["tags"]["region"] == "eu-west-1"
    assert event["tags"]["ab"] == "B"
    with pytest.raises(ValueError, match="target must be one of"):
        AttributeMapping.from_config({"attributes": {"x": "cost"}})


def test_non_model_spans_are_ignored_not_errors() -> None:
    mapping = AttributeMapping()
    assert span_to_event(span({"http.request.method": "GET"}), {}, mapping) is None
    agent = genai_attributes(**{"gen_ai.operation.name": "invoke_agent"})
    assert span_to_event(span(agent), {}, mapping) is None
    assert span_to_event(span({"gen_ai.tool.name": "search"}), {}, mapping) is None


@pytest.mark.parametrize(
    ("attrs", "message"),
    [
        ({"gen_ai.usage.input_tokens": 10}, "gen_ai.request.model: missing"),
        (genai_attributes(input_tokens=-5), "gen_ai.usage.input_tokens: negative"),
        (genai_attributes(**{"gen_ai.usage.output_tokens": "lots"}), "gen_ai.usage.output_tokens: expected"),
        (genai_attributes(**{"gen_ai.usage.output_tokens": 2.5}), "whole token count"),
    ],
)
def test_unusable_genai_spans_are_named(attrs: dict[str, Any], message: str) -> None:
    with pytest.raises(SpanError, match=message):
        span_to_event(span(attrs), {}, AttributeMapping())


def test_error_status_and_http_status() -> None:
    attrs = genai_attributes(**{"error.type": "RateLimitError", "http.response.status_code": 429})
    event = span_to_event(span(attrs, error=True), {}, AttributeMapping())
    assert event is not None and (event["status"], event["http_status"]) == ("error", 429)


def test_billed_cost_is_kept_as_an_exact_amount() -> None:
    attrs = genai_attributes(**{"gen_ai.usage.cost": "0.000123456789"})
    event = span_to_event(span(attrs), {}, AttributeMapping())
    assert event is not None and event["billed_cost"] == Decimal("0.000123456789")
    with pytest.raises(SpanError, match=r"gen_ai\.usage\.cost: not an amount"):
        span_to_event(span(genai_attributes(**{"gen_ai.usage.cost": "NaN"})), {}, AttributeMapping())


def test_a_value_that_cannot_be_stored_rejects_only_its_span() -> None:
    mapper = SpanMapper()
    resource = mapper.resource({})
    good = mapper.span_row(span(genai_attributes()), resource, 0)
    bad = mapper.span_row(span(genai_attributes(**{"enduser.id": "\ud800"})), resource, 0)
    assert good is not None and bad is not None
    table, unstorable = storable_table([good, bad, good])
    assert table.num_rows == 2
    assert [index for index, _ in unstorable] == [1]
    assert "cannot be stored" in unstorable[0][1]


# Attribute values as both encodings carry them: protobuf int64, double, bool, string, arrays.
pb_values = st.one_of(
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False),
    st.booleans(),
    st.text(max_size=6),
    st.lists(st.integers(0, 9) | st.text(max_size=3), max_size=2),
)
pb_keys = st.sampled_from(
    [
        "gen_ai.request.model", "gen_ai.response.model", "llm.model_name", "gen_ai.system",
        "gen_ai.provider.name", "gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens",
        "gen_ai.usage.output_tokens", "gen_ai.usage.cache_read.input_tokens",
        "gen_ai.usage.cache_creation.input_tokens", "gen_ai.operation.name", "gen_ai.usage.cost",
        "error.type", "http.response.status_code", "openai.response.service_tier", "gen_ai.tool.name",
        "service.name", "enduser.id", "unitcost.team", "unitcost.tag.ab", "http.route",
    ]
)  # fmt: skip


@settings(max_examples=200, deadline=None)
@given(
    attrs=st.dictionaries(pb_keys, pb_values, max_size=8),
    resource=st.dictionaries(
        st.sampled_from(["service.name", "unitcost.tag.region", "enduser.id"]), st.text(max_size=4)
    ),
    error=st.booleans(),
)
def test_protobuf_and_decoded_spans_map_alike(
    attrs: dict[str, Any], resource: dict[str, Any], error: bool
) -> None:
    """The protobuf path reads wire messages in place; it must give what the decoded path gives."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    ids = {"trace_id": bytes(range(16)), "span_id": bytes(range(8))}
    body = protobuf_request([{"attributes": attrs, "error": error, **ids}], resource=resource)
    message = ExportTraceServiceRequest.FromString(body).resource_spans[0].scope_spans[0].spans[0]
    decoded = Span(
        trace_id=ids["trace_id"].hex(),
        span_id=ids["span_id"].hex(),
        parent_span_id="",
        name="chat",
        start_ns=message.start_time_unix_nano,
        end_ns=message.end_time_unix_nano,
        attributes=attrs,
        error=error,
    )
    mapper = SpanMapper()
    fields = mapper.resource(resource)

    def outcome(read: Any) -> Any:
        try:
            return read()
        except SpanError as exc:
            return f"SpanError: {exc}"

    assert outcome(lambda: mapper.protobuf_row(message, fields, 7)) == outcome(
        lambda: mapper.span_row(decoded, fields, 7)
    )


# --------------------------------------------------------------------------- the receiver over HTTP


def test_protobuf_gzip_export_is_priced_and_acknowledged(
    otlp_receiver: tuple[str, Any, Path], book: Any
) -> None:
    url, rec, path = otlp_receiver
    body = protobuf_request(
        [
            {
                "attributes": genai_attributes(
                    "gpt-4o", 1200, 300, **{"gen_ai.usage.cache_read.input_tokens": 1024}
                )
            },
            {"attributes": genai_attributes("gpt-4o-mini", 10, 5)},
            {"attributes": {"http.route": "/health"}},
        ],
        resource={"service.name": "checkout", "deployment.environment.name": "prod"},
    )
    response = httpx.post(
        url + "/v1/traces", content=gzip.compress(body), headers={**PROTOBUF, "Content-Encoding": "gzip"}
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/x-protobuf"
    parsed = ExportTraceServiceResponse.FromString(response.content)
    assert not parsed.HasField("partial_success")
    # The same export again (an exporter retry): nothing new.
    again = httpx.post(url + "/v1/traces", content=body, headers=PROTOBUF)
    assert again.status_code == 200
    assert (rec.stats.spans_accepted, rec.stats.spans_duplicate, rec.stats.spans_ignored) == (2, 2, 2)
    rec.writer.close()
    rows = ledger_rows(path)
    assert len(rows) == 2
    big = next(r for r in rows if r["model"] == "gpt-4o")
    assert (big["input_tokens"], big["cache_read_tokens"], big["output_tokens"]) == (1200, 1024, 300)
    assert (big["app"], big["environment"], big["source"]) == ("checkout", "prod", "otlp")
    # Fields no span set (their columns are left out of the commit) take their defaults.
    assert (big["status"], big["service_tier"], big["requests"], big["team"]) == ("ok", "standard", 1, None)
    expected = book.price(
        "gpt-4o",
        provider="openai",
        at=big["ts"],
        input_tokens=1200,
        cache_read_tokens=1024,
        output_tokens=300,
    )
    assert big["cost"] == expected.cost


def test_json_partial_success_names_each_rejected_span(otlp_receiver: tuple[str, Any, Path]) -> None:
    url, rec, path = otlp_receiver
    bad_count = json_span(genai_attributes(input_tokens=-1))
    bad_subset = json_span(genai_attributes(input_tokens=10, **{"gen_ai.usage.cache_read.input_tokens": 50}))
    bad_id = json_span(genai_attributes(), spanId="xyz")
    good = json_span(genai_attributes("gpt-4o-mini", 42, 7))
    body = orjson.dumps(json_request([bad_count, good, bad_subset, bad_id]))
    response = httpx.post(url + "/v1/traces", content=body, headers=JSON)
    assert response.status_code == 200
    partial = response.json()["partialSuccess"]
    assert partial["rejectedSpans"] == "3"
    message = partial["errorMessage"]
    assert f"span {bad_count['spanId']}" in message and "gen_ai.usage.input_tokens: negative" in message
    assert (
        f"span {bad_subset['spanId']}" in message
        and "cache_read_tokens (50) exceeds input_tokens (10)" in message
    )
    assert "spanId: not hex" in message
    rec.writer.close()
    (row,) = ledger_rows(path)
    assert (row["model"], row["input_tokens"], row["output_tokens"]) == ("gpt-4o-mini", 42, 7)
    assert row["event_id"] == f"otlp:{good['traceId']}:{good['spanId']}"


def test_requests_that_cannot_be_read(otlp_receiver: tuple[str, Any, Path]) -> None:
    url, rec, _ = otlp_receiver
    assert (
        httpx.post(url + "/v1/traces", content=b"x", headers={"Content-Type": "text/plain"}).status_code
        == 415
    )
    bad = httpx.post(url + "/v1/traces", content=b"\xff\xff\xff", headers=PROTOBUF)
    assert bad.status_code == 400
    assert "protobuf" in Status.FromString(bad.content).message
    not_gzip = httpx.post(url + "/v1/traces", content=b"{}", headers={**JSON, "Content-Encoding": "gzip"})
    assert not_gzip.status_code == 400 and "gzip" in not_gzip.json()["message"]
    assert httpx.post(url + "/v1/traces", content=b"[1, 2", headers=JSON).status_code == 400
    odd = {"resourceSpans": [{"scopeSpans": [{"spans": 5}]}, {"resource": 3, "scopeSpans": []}, 7]}
    partial = httpx.post(url + "/v1/traces", content=orjson.dumps(odd), headers=JSON)
    assert partial.status_code == 200 and partial.json()["partialSuccess"]["rejectedSpans"] == "3"
    assert (
        httpx.post(url + "/v1/traces", content=b"{}", headers={**JSON, "Content-Encoding": "br"}).status_code
        == 415
    )
    assert rec.stats.spans_accepted == 0


def test_never_acknowledges_what_it_could_not_write(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-ledger"
    blocker.mkdir()  # a directory where the DuckDB file should be: every write fails
    app, _ = otlp_app(blocker, config=Config())
    with serve_app(app) as url:
        body = protobuf_request([{"attributes": genai_attributes()}])
        response = httpx.post(url + "/v1/traces", content=body, headers=PROTOBUF)
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert "retry later" in Status.FromString(response.content).message


@pytest.mark.slow
def test_decode_workers_answer_like_the_server_and_survive_a_lost_worker(tmp_path: Path) -> None:
    path = tmp_path / "pool.duckdb"
    before = set(multiprocessing.active_children())
    app, rec = otlp_app(path, config=Config(), decode_workers=1)
    (worker,) = set(multiprocessing.active_children()) - before
    with serve_app(app) as url:
        good = {"attributes": genai_attributes("gpt-4o-mini", 42, 7)}
        bad = {"attributes": genai_attributes(input_tokens=-1)}
        body = protobuf_request([good, bad])
        response = httpx.post(
            url + "/v1/traces", content=gzip.compress(body), headers={**PROTOBUF, "Content-Encoding": "gzip"}
        )
        assert response.status_code == 200
        partial = ExportTraceServiceResponse.FromString(response.content).partial_success
        assert partial.rejected_spans == 1 and "gen_ai.usage.input_tokens: negative" in partial.error_message
        # A request refused in the worker keeps its status (415, not a generic 400).
        refused = httpx.post(url + "/v1/traces", content=body, headers={**PROTOBUF, "Content-Encoding": "br"})
        assert refused.status_code == 415
        worker.kill()
        worker.join(10)
        lost = httpx.post(url + "/v1/traces", content=protobuf_request([good]), headers=PROTOBUF, timeout=60)
        assert lost.status_code == 503 and lost.headers["retry-after"] == "1"
        # The next request waits for the new worker to start (a new interpreter: allow for a busy machine).
        again = httpx.post(url + "/v1/traces", content=protobuf_request([good]), headers=PROTOBUF, timeout=60)
        assert again.status_code == 200
    assert rec.stats.spans_accepted == 2
    assert len(ledger_rows(path)) == 2
    assert not set(multiprocessing.active_children()) - before  # the workers stop with the server


# --------------------------------------------------------------------------- end to end


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_official_openai_instrumentation_exports_to_unitcost_serve(tmp_path: Path) -> None:
    """openai SDK -> fake OpenAI server; OpenTelemetry's OpenAI instrumentation -> OTLP/HTTP -> `unitcost serve`."""
    from openai import OpenAI
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    ledger_path = tmp_path / "served.duckdb"
    port = _free_port()
    server = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "unitcost"),
            "serve",
            "--port",
            str(port),
            "--ledger",
            str(ledger_path),
        ],
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert server.poll() is None, server.stdout.read().decode()  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "unitcost serve did not start"
            time.sleep(0.1)
        provider = TracerProvider(
            resource=Resource.create({"service.name": "helpdesk", "unitcost.team": "support"})
        )
        provider.add_span_processor(
            SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"http://127.0.0.1:{port}/v1/traces"))
        )
        instrumentor = OpenAIInstrumentor()
        instrumentor.instrument(tracer_provider=provider)
        try:
            with serve_app(fake_provider_app()) as upstream:
                client = OpenAI(base_url=upstream + "/v1", api_key="sk-test", max_retries=0)
                client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
                stream = client.chat.completions.create(
                    model="gpt-4o-mini",
                    messages=[{"role": "user", "content": "hi"}],
                    stream=True,
                    stream_options={"include_usage": True},
                )
                for _ in stream:
                    pass
            provider.force_flush()
        finally:
            instrumentor.uninstrument()
            provider.shutdown()
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(60)
    rows = ledger_rows(ledger_path)
    assert len(rows) == 2
    for row in rows:
        assert row["input_tokens"] == CHAT_USAGE["prompt_tokens"]
        assert row["output_tokens"] == CHAT_USAGE["completion_tokens"]
        assert (row["provider"], row["app"], row["team"], row["source"]) == (
            "openai",
            "helpdesk",
            "support",
            "otlp",
        )
        assert row["cost"] > 0
        assert row["event_id"] == f"otlp:{row['trace_id']}:{dict(row['tags'])['span_id']}"
    assert {r["model"] for r in rows} == {"gpt-4o", "gpt-4o-mini"}
    assert next(r for r in rows if r["model"] == "gpt-4o")["served_model"] == "gpt-4o-2024-08-06"


# --------------------------------------------------------------------------- fuzzing

any_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**65), 2**65)
    | st.floats(allow_nan=False)
    | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=10), children, max_size=3)
    ),
    max_leaves=8,
)
attribute_values = st.one_of(
    st.integers(-10, 10**7).map(lambda n: {"intValue": str(n)}),
    st.integers(0, 10**7).map(lambda n: {"intValue": n}),
    st.text(max_size=8).map(lambda s: {"stringValue": s}),
    st.floats(allow_nan=False, allow_infinity=False).map(lambda f: {"doubleValue": f}),
    st.booleans().map(lambda b: {"boolValue": b}),
    any_json,
)
attribute_keys = st.sampled_from(
    [
        "gen_ai.request.model", "gen_ai.response.model", "gen_ai.system", "gen_ai.provider.name",
        "gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens", "gen_ai.usage.cache_read.input_tokens",
        "gen_ai.usage.reasoning.output_tokens", "llm.token_count.prompt", "gen_ai.operation.name",
        "service.name", "enduser.id", "http.response.status_code",
    ]
)  # fmt: skip
fuzzed_span = st.builds(
    lambda attrs, extra, base: {
        **base,
        "attributes": [{"key": k, "value": v} for k, v in attrs.items()],
        **extra,
    },
    st.dictionaries(attribute_keys, attribute_values, max_size=7),
    st.dictionaries(
        st.sampled_from(["traceId", "spanId", "startTimeUnixNano", "status", "parentSpanId"]),
        any_json,
        max_size=2,
    ),
    st.just(None).map(lambda _: json_span({})),
)


@settings(max_examples=150, deadline=None)
@given(spans=st.lists(fuzzed_span | any_json, max_size=6))
def test_fuzzed_otlp_json_never_crashes_and_accounts_for_every_span(spans: list[Any]) -> None:
    try:
        extracted = extract(_body(spans), "application/json", SpanMapper())
    except RequestError:
        return  # infinities are not JSON: the whole request is refused, nothing is written
    assert len(extracted.rows) + extracted.ignored + extracted.rejected == len(spans)
    assert all(": " in e for e in extracted.errors)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(spans=st.lists(fuzzed_span, min_size=1, max_size=5))
def test_fuzzed_spans_written_or_rejected_by_name(spans: list[Any], ledger: Ledger) -> None:
    try:
        decoded = decode_request(_body(spans), "application/json", None, SpanMapper())
    except RequestError:
        return
    assert decoded.table.num_rows + decoded.ignored + decoded.rejected == len(spans)
    before = ledger.count()
    summary = ledger.ingestor().ingest_table(decoded.table, source="otlp")
    assert summary.accepted + summary.duplicates + summary.rejected == decoded.table.num_rows
    assert ledger.count() == before + summary.accepted
    assert all(r.field and r.reason for r in summary.rejections)


def _body(spans: list[Any]) -> bytes:
    # The standard library writes integers of any size (as a hostile client may); infinities become
    # the non-JSON `Infinity`, which the receiver must refuse as a whole.
    return json.dumps(json_request(spans)).encode()
