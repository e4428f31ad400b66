"""`unitcost serve` as a platform engineer points OpenTelemetry-instrumented LLM apps at it:
OpenLLMetry (Traceloop), OpenInference (Arize), Logfire/pydantic-ai and the GenAI semantic
conventions old and new, sent by the real OpenTelemetry SDK and its OTLP/HTTP exporter.

Each instrumentation's spelling of a fact must land in the same field; spans that are not
calls to a model (agents, chains, tools, workflows, retrievals) must not become calls; a
batch with one bad span keeps the others and says which, in either encoding; a retry changes
nothing; what is acknowledged survives a SIGKILL; and no credential a span carries is stored.
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from google.protobuf.json_format import MessageToDict
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otlp_payloads import genai_attributes, ledger_rows
from unitcost.otlp.receiver import TraceReceiver

UNITCOST = str(Path(sys.executable).parent / "unitcost")
PROTOBUF = "application/x-protobuf"
JSON = "application/json"
Receiver = tuple[str, TraceReceiver, Path]


def _spans(*specs: tuple[str, dict[str, Any]], error: bool = False) -> list[ReadableSpan]:
    """Finished SDK spans, each a child of the one before (one trace, as an agent run makes)."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "support-bot"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("probe")
    with contextlib.ExitStack() as stack:
        for name, attributes in specs:
            span = stack.enter_context(tracer.start_as_current_span(name, attributes=attributes))
            if error:
                span.set_status(trace.Status(trace.StatusCode.ERROR, "rate limited"))
    provider.shutdown()
    return list(memory.get_finished_spans())


def _export(url: str, spans: Sequence[ReadableSpan]) -> SpanExportResult:
    exporter = OTLPSpanExporter(endpoint=f"{url}/v1/traces", compression=Compression.Gzip, timeout=10)
    try:
        return exporter.export(spans)
    finally:
        exporter.shutdown()


def _stored(rec: TraceReceiver, path: Path) -> list[dict[str, Any]]:
    rec.writer.close()
    return ledger_rows(path)


def _otlp_json(request: ExportTraceServiceRequest) -> bytes:
    """OTLP/JSON as the specification defines it: the protobuf JSON mapping, but trace and span
    ids as hex (not base64) and enums as integers."""
    document = MessageToDict(request, use_integers_for_enums=True)
    for group in document["resourceSpans"]:
        for scope in group["scopeSpans"]:
            for span in scope["spans"]:
                for key in ("traceId", "spanId", "parentSpanId"):
                    if key in span:
                        span[key] = _b64_to_hex(span[key])
    return orjson.dumps(document)


def _b64_to_hex(value: str) -> str:
    return base64.b64decode(value).hex()


# --------------------------------------------------------------------------- every spelling

INSTRUMENTATIONS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    # GenAI semantic conventions >= 1.37, with the cache and reasoning counts added since
    "semconv-current": (
        {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "anthropic",
            "gen_ai.request.model": "claude-sonnet-4-5",
            "gen_ai.response.model": "claude-sonnet-4-5-20250929",
            "gen_ai.usage.input_tokens": 15000,
            "gen_ai.usage.output_tokens": 900,
            "gen_ai.usage.cache_read.input_tokens": 12000,
            "gen_ai.usage.cache_creation.input_tokens": 2000,
            "gen_ai.usage.reasoning.output_tokens": 300,
            "gen_ai.conversation.id": "conv-7",
        },
        {
            "provider": "anthropic",
            "model": "claude-sonnet-4-5",
            "served_model": "claude-sonnet-4-5-20250929",
            "operation": "chat",
            "input_tokens": 15000,
            "output_tokens": 900,
            "cache_read_tokens": 12000,
            "cache_write_5m_tokens": 2000,
            "reasoning_tokens": 300,
            "session_id": "conv-7",
        },
    ),
    # GenAI semantic conventions <= 1.26
    "semconv-old": (
        {
            "gen_ai.system": "openai",
            "gen_ai.request.model": "gpt-4o",
            "gen_ai.usage.prompt_tokens": 1000,
            "gen_ai.usage.completion_tokens": 200,
        },
        {"provider": "openai", "model": "gpt-4o", "operation": "chat", "input_tokens": 1000},
    ),
    # OpenLLMetry's OpenAI instrumentation (`_set_request_attributes`, `_set_response_attributes`)
    "openllmetry-openai": (
        {
            "gen_ai.system": "openai",
            "llm.request.type": "chat",
            "gen_ai.request.model": "gpt-4o-mini",
            "gen_ai.response.model": "gpt-4o-mini-2024-07-18",
            "gen_ai.usage.input_tokens": 1200,
            "gen_ai.usage.output_tokens": 100,
            "llm.usage.total_tokens": 1300,
            "gen_ai.usage.cache_read_input_tokens": 1024,
            "llm.is_streaming": False,
        },
        {
            "provider": "openai",
            "model": "gpt-4o-mini",
            "served_model": "gpt-4o-mini-2024-07-18",
            "operation": "chat",
            "input_tokens": 1200,
            "cache_read_tokens": 1024,
        },
    ),
    # OpenLLMetry's reasoning count (`llm.usage.reasoning_tokens`)
    "openllmetry-reasoning": (
        {
            "gen_ai.system": "openai",
            "llm.request.type": "chat",
            "gen_ai.request.model": "o3-mini",
            "gen_ai.usage.input_tokens": 500,
            "gen_ai.usage.output_tokens": 400,
            "llm.usage.reasoning_tokens": 256,
        },
        {"model": "o3-mini", "output_tokens": 400, "reasoning_tokens": 256},
    ),
    "openllmetry-embeddings": (
        {
            "gen_ai.system": "openai",
            "llm.request.type": "embedding",
            "gen_ai.request.model": "text-embedding-3-small",
            "gen_ai.response.model": "text-embedding-3-small",
            "gen_ai.usage.input_tokens": 8,
            "llm.usage.total_tokens": 8,
        },
        {"model": "text-embedding-3-small", "operation": "embeddings", "input_tokens": 8, "output_tokens": 0},
    ),
    "openllmetry-completion": (
        {
            "gen_ai.system": "openai",
            "llm.request.type": "completion",
            "gen_ai.request.model": "gpt-3.5-turbo-instruct",
            "gen_ai.usage.prompt_tokens": 30,
            "gen_ai.usage.completion_tokens": 16,
        },
        {"operation": "text_completion", "input_tokens": 30, "output_tokens": 16},
    ),
    # OpenLLMetry's Anthropic instrumentation: the prompt count includes the cache parts
    "openllmetry-anthropic": (
        {
            "gen_ai.system": "Anthropic",
            "llm.request.type": "chat",
            "gen_ai.request.model": "claude-sonnet-4-5",
            "gen_ai.usage.prompt_tokens": 5000,
            "gen_ai.usage.completion_tokens": 100,
            "gen_ai.usage.cache_read_input_tokens": 4000,
            "gen_ai.usage.cache_creation_input_tokens": 500,
        },
        {
            "provider": "anthropic",
            "input_tokens": 5000,
            "cache_read_tokens": 4000,
            "cache_write_5m_tokens": 500,
        },
    ),
    # OpenLLMetry's Together AI instrumentation names the system "TogetherAI"
    "openllmetry-together": (
        {
            "gen_ai.system": "TogetherAI",
            "llm.request.type": "chat",
            "gen_ai.request.model": "meta-llama/Llama-3.3-70B-Instruct-Turbo",
            "gen_ai.usage.prompt_tokens": 700,
            "gen_ai.usage.completion_tokens": 80,
            "llm.usage.total_tokens": 780,
        },
        {"provider": "together", "model": "meta-llama/Llama-3.3-70B-Instruct-Turbo", "input_tokens": 700},
    ),
    "openinference-llm": (
        {
            "openinference.span.kind": "LLM",
            "llm.model_name": "gpt-4o-2024-08-06",
            "llm.provider": "openai",
            "llm.system": "openai",
            "llm.token_count.prompt": 900,
            "llm.token_count.completion": 50,
            "llm.token_count.total": 950,
            "llm.token_count.prompt_details.cache_read": 512,
            "session.id": "sess-9",
            "user.id": "u-1",
        },
        {
            "provider": "openai",
            "model": "gpt-4o-2024-08-06",
            "operation": "chat",
            "input_tokens": 900,
            "cache_read_tokens": 512,
            "session_id": "sess-9",
            "user": "u-1",
        },
    ),
    # OpenInference's embedding spans name the model in `embedding.model_name`
    "openinference-embedding": (
        {
            "openinference.span.kind": "EMBEDDING",
            "embedding.model_name": "text-embedding-3-small",
            "llm.provider": "openai",
            "llm.system": "openai",
            "llm.token_count.prompt": 12,
            "llm.token_count.total": 12,
        },
        {"model": "text-embedding-3-small", "operation": "embeddings", "input_tokens": 12},
    ),
    # OpenInference's request and response model names, and its `cache_input` detail
    "openinference-request-response": (
        {
            "openinference.span.kind": "LLM",
            "llm.request.model_name": "gpt-4o",
            "llm.response.model_name": "gpt-4o-2024-08-06",
            "llm.provider": "openai",
            "llm.token_count.prompt": 900,
            "llm.token_count.completion": 50,
            "llm.token_count.prompt_details.cache_input": 512,
        },
        {"model": "gpt-4o", "served_model": "gpt-4o-2024-08-06", "cache_read_tokens": 512},
    ),
    # pydantic-ai's InstrumentedModel (its test snapshot of a chat span, minus the bodies)
    "pydantic-ai": (
        {
            "gen_ai.operation.name": "chat",
            "gen_ai.system": "openai",
            "gen_ai.request.model": "gpt-4o",
            "gen_ai.response.model": "gpt-4o-2024-11-20",
            "gen_ai.usage.details.reasoning_tokens": 30,
            "gen_ai.usage.details.cache_write_tokens": 10,
            "gen_ai.usage.details.cache_read_tokens": 20,
            "gen_ai.usage.input_tokens": 100,
            "gen_ai.usage.output_tokens": 200,
            "operation.cost": 0.00188125,
            "logfire.msg": "chat gpt-4o",
        },
        {
            "model": "gpt-4o",
            "served_model": "gpt-4o-2024-11-20",
            "input_tokens": 100,
            "cache_read_tokens": 20,
            "cache_write_5m_tokens": 10,
            "output_tokens": 200,
            "reasoning_tokens": 30,
        },
    ),
}

_USAGE = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_5m_tokens", "reasoning_tokens")


@pytest.mark.parametrize("case", list(INSTRUMENTATIONS))
def test_each_instrumentation_s_spelling_lands_in_the_same_field_and_is_priced(
    case: str, otlp_receiver: Receiver, book: Any
) -> None:
    url, rec, path = otlp_receiver
    attributes, expected = INSTRUMENTATIONS[case]
    assert _export(url, _spans((f"{case} call", attributes))) == SpanExportResult.SUCCESS
    assert rec.stats.spans_rejected == 0
    (row,) = _stored(rec, path)
    assert {field: row[field] for field in expected} == expected
    # The served model prices the call when the book knows it, as a fresh quote would.
    quote = book.price(
        row["model"],
        provider=row["provider"],
        at=row["ts"],
        served_model=row["served_model"],
        **{field: row[field] for field in _USAGE},
    )
    assert row["cost"] is not None and row["cost"] == quote.cost


# --------------------------------------------------------------------------- spans that are no calls


def test_agents_chains_workflows_retrievals_and_tools_are_not_calls(otlp_receiver: Receiver) -> None:
    """One agent run, as each framework traces it: only the chat span at the bottom is a call.
    The others are ignored and counted, neither priced (their token counts total the calls
    under them) nor rejected (nothing is wrong with them)."""
    url, rec, path = otlp_receiver
    spans = _spans(
        # pydantic-ai before `gen_ai.operation.name` on agent spans: the run's total usage
        (
            "agent run",
            {
                "model_name": "gpt-4o",
                "agent_name": "agent",
                "gen_ai.agent.name": "agent",
                "logfire.msg": "agent run",
                "gen_ai.usage.input_tokens": 1300,
                "gen_ai.usage.output_tokens": 400,
            },
        ),
        # OpenInference smolagents: the AGENT span carries the run's token totals, no model
        (
            "CodeAgent.run",
            {
                "openinference.span.kind": "AGENT",
                "llm.token_count.prompt": 1300,
                "llm.token_count.completion": 400,
                "llm.token_count.total": 1700,
            },
        ),
        # An OpenInference CHAIN that repeats its LLM's model and counts
        (
            "RetrievalQA",
            {
                "openinference.span.kind": "CHAIN",
                "llm.model_name": "gpt-4o",
                "llm.token_count.prompt": 1300,
                "llm.token_count.completion": 400,
            },
        ),
        # GenAI semantic conventions: a workflow with its total, a retrieval, a tool call
        (
            "invoke_workflow triage",
            genai_attributes("gpt-4o", 1300, 400, **{"gen_ai.operation.name": "invoke_workflow"}),
        ),
        (
            "retrieval kb",
            {
                "gen_ai.operation.name": "retrieval",
                "gen_ai.provider.name": "openai",
                "gen_ai.request.model": "text-embedding-3-small",
                "gen_ai.data_source.id": "kb-1",
            },
        ),
        ("execute_tool search", {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "search"}),
        ("chat gpt-4o", genai_attributes("gpt-4o", 1300, 400)),
    )
    request = encode_spans(spans).SerializeToString()
    response = httpx.post(f"{url}/v1/traces", content=request, headers={"Content-Type": PROTOBUF})
    assert response.status_code == 200
    assert not ExportTraceServiceResponse.FromString(response.content).HasField("partial_success")
    assert (rec.stats.spans_accepted, rec.stats.spans_rejected, rec.stats.spans_ignored) == (1, 0, 6)
    (row,) = _stored(rec, path)
    assert (row["model"], row["operation"], row["input_tokens"]) == ("gpt-4o", "chat", 1300)


# --------------------------------------------------------------------------- one request, both encodings


@pytest.mark.parametrize("encoding", [PROTOBUF, JSON])
@pytest.mark.parametrize("compressed", [True, False])
def test_a_bad_span_is_rejected_by_name_the_others_kept_and_a_retry_changes_nothing(
    encoding: str, compressed: bool, otlp_receiver: Receiver
) -> None:
    url, rec, path = otlp_receiver
    good = _spans(("chat gpt-4o", genai_attributes("gpt-4o", 1200, 300)))
    bad = _spans(("chat gpt-4o", genai_attributes("gpt-4o", -5, 300)))
    embeddings = _spans(
        (
            "embeddings",
            genai_attributes("text-embedding-3-small", 40, 0, **{"gen_ai.operation.name": "embeddings"}),
        )
    )
    request = encode_spans([*good, *bad, *embeddings])
    body = request.SerializeToString() if encoding == PROTOBUF else _otlp_json(request)
    headers = {"Content-Type": encoding}
    if compressed:
        body = gzip.compress(body)
        headers["Content-Encoding"] = "gzip"
    bad_id = format(bad[0].context.span_id, "016x")
    for _ in range(2):  # the second time as an exporter's retry sends it
        response = httpx.post(f"{url}/v1/traces", content=body, headers=headers)
        assert response.status_code == 200
        assert response.headers["content-type"] == encoding
        if encoding == PROTOBUF:
            partial = ExportTraceServiceResponse.FromString(response.content).partial_success
            rejected, message = partial.rejected_spans, partial.error_message
        else:
            partial_json = response.json()["partialSuccess"]
            rejected, message = int(partial_json["rejectedSpans"]), partial_json["errorMessage"]
        assert rejected == 1
        assert f"span {bad_id}" in message and "gen_ai.usage.input_tokens: negative" in message
    assert (rec.stats.spans_accepted, rec.stats.spans_duplicate) == (2, 2)
    rows = _stored(rec, path)
    assert sorted(row["operation"] for row in rows) == ["chat", "embeddings"]


def test_the_exporter_sending_the_same_spans_again_records_them_once(otlp_receiver: Receiver) -> None:
    url, rec, path = otlp_receiver
    spans = _spans(
        ("chat", genai_attributes("gpt-4o", 100, 10)), ("chat", genai_attributes("gpt-4o-mini", 5, 1))
    )
    assert _export(url, spans) == SpanExportResult.SUCCESS
    assert _export(url, spans) == SpanExportResult.SUCCESS
    rows = _stored(rec, path)
    assert sorted(row["event_id"] for row in rows) == sorted(
        f"otlp:{span.context.trace_id:032x}:{span.context.span_id:016x}" for span in spans
    )


def test_an_error_span_is_a_failed_call_with_its_trace(otlp_receiver: Receiver) -> None:
    url, rec, path = otlp_receiver
    attributes = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o",
        "error.type": "openai.RateLimitError",
        "http.response.status_code": 429,
    }
    (span,) = _spans(("chat gpt-4o", attributes), error=True)
    assert _export(url, [span]) == SpanExportResult.SUCCESS
    (row,) = _stored(rec, path)
    assert (row["status"], row["http_status"], row["trace_id"]) == (
        "error",
        429,
        f"{span.context.trace_id:032x}",
    )


# --------------------------------------------------------------------------- secrets

API_KEY = "sk-proj-" + "Zq9xW2vB7nM4kL1pR8tY" * 2
AZURE_KEY = "0123456789abcdef" * 2


def test_credentials_a_span_records_never_reach_the_ledger(otlp_receiver: Receiver) -> None:
    url, rec, path = otlp_receiver
    attributes = genai_attributes(
        "gpt-4o",
        100,
        10,
        **{
            # The HTTP semantic conventions' recorded header, OpenLLMetry's `llm.headers`,
            # an API base with a key, and attribution and tags that hold one by mistake.
            "http.request.header.authorization": [f"Bearer {API_KEY}"],
            "llm.headers": f"{{'api-key': '{AZURE_KEY}', 'Authorization': 'Bearer {API_KEY}'}}",
            "gen_ai.openai.api_base": f"https://res.openai.azure.com/openai?api-key={AZURE_KEY}",
            "enduser.id": f"Bearer {API_KEY}",
            "unitcost.tag.headers": f"x-api-key: {API_KEY}",
            "unitcost.tag.api_key": AZURE_KEY,
        },
    )
    assert _export(url, _spans(("chat gpt-4o", attributes))) == SpanExportResult.SUCCESS
    (row,) = _stored(rec, path)
    stored = repr(row)
    assert API_KEY not in stored and AZURE_KEY not in stored
    assert dict(row["tags"])["api_key"] == "REDACTED"


# --------------------------------------------------------------------------- durability


@pytest.mark.slow
def test_what_was_acknowledged_survives_the_server_being_killed(tmp_path: Path) -> None:
    """The 200 comes after the commit: a SIGKILL right after it loses nothing."""
    ledger = tmp_path / "costs.duckdb"
    config = tmp_path / "unitcost.toml"
    config.write_text("")  # nothing of the developer's own config
    server = subprocess.Popen(
        [UNITCOST, "serve", "--ledger", str(ledger), "--port", "0", "--no-watch"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "UNITCOST_CONFIG": str(config)},
    )
    try:
        url = _listening(server)
        spans = _spans(*[("chat", genai_attributes("gpt-4o", 100 + i, 10)) for i in range(20)])
        assert _export(url, spans) == SpanExportResult.SUCCESS
    finally:
        server.send_signal(signal.SIGKILL)
        server.wait()
    rows = ledger_rows(ledger)
    assert len(rows) == 20 and all(row["cost"] is not None for row in rows)


def _listening(server: subprocess.Popen[str]) -> str:
    assert server.stdout is not None
    for line in _lines(server):
        if "OTLP/HTTP on " in line:
            return line.split("OTLP/HTTP on ")[1].split("/v1/traces")[0]
    raise AssertionError("unitcost serve did not start")


def _lines(server: subprocess.Popen[str]) -> Iterator[str]:
    assert server.stdout is not None
    yield from iter(server.stdout.readline, "")
