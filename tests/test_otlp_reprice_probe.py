"""What a platform or FinOps user relies on from `unitcost serve` fed by real exporters, and
from `unitcost reprice` after a price correction: nothing lost, nothing secret stored, and a
repriced ledger that says exactly what a fresh ingest with the same prices would."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
import zlib
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from typer.testing import CliRunner

from fake_providers import serve_app
from otlp_payloads import genai_attributes, json_request, json_span, ledger_rows, protobuf_request
from unitcost.api import Ledger
from unitcost.cli import app as cli
from unitcost.config import Config
from unitcost.otlp.decode import decompress
from unitcost.otlp.receiver import TraceReceiver
from unitcost.otlp.server import otlp_app

UNITCOST = str(Path(sys.executable).parent / "unitcost")
PROTOBUF = {"Content-Type": "application/x-protobuf"}
JSON = {"Content-Type": "application/json"}
API_KEY = "sk-proj-" + "a1B2c3D4e5F6g7H8i9J0" * 2


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[tuple[str, TraceReceiver, Path]]:
    """A real `unitcost serve` app on 127.0.0.1 with a team mapping in `[otlp.attributes]`."""
    path = tmp_path / "otlp.duckdb"
    config = Config(raw={"otlp": {"attributes": {"k8s.namespace.name": "team"}}})
    app, rec = otlp_app(path, config=config)
    with serve_app(app) as url:
        yield url, rec, path


def stored(rec: TraceReceiver, path: Path) -> list[dict[str, Any]]:
    """The ledger's events, once the server has let go of its write connection."""
    rec.writer.close()
    return ledger_rows(path)


def _export_with_sdk(url: str, compression: Compression, attributes: dict[str, Any]) -> None:
    """One GenAI span (with a child span of another instrumentation) through the official exporter."""
    resource = Resource.create({"service.name": "support-bot", "k8s.namespace.name": "payments"})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(
        SimpleSpanProcessor(
            OTLPSpanExporter(endpoint=f"{url}/v1/traces", compression=compression, timeout=10)
        )
    )
    tracer = provider.get_tracer("probe")
    with tracer.start_as_current_span("chat gpt-4o") as span:
        span.set_attributes(attributes)
        span.add_event("gen_ai.content.prompt", {"gen_ai.prompt": "EVENT PROMPT TEXT"})
        with tracer.start_as_current_span("SELECT orders") as child:
            child.set_attribute("db.system", "postgresql")
    provider.shutdown()


# --------------------------------------------------------------------------- OTLP receiver


@pytest.mark.parametrize("compression", [Compression.Gzip, Compression.Deflate])
def test_the_python_exporter_compressed_either_way_is_recorded(
    receiver: tuple[str, TraceReceiver, Path], compression: Compression
) -> None:
    """OTEL_EXPORTER_OTLP_COMPRESSION=deflate is one of the Python exporter's settings: before,
    it got a 415, which exporters do not retry, and every span was lost."""
    url, rec, path = receiver
    _export_with_sdk(url, compression, genai_attributes("gpt-4o", input_tokens=1000, output_tokens=100))
    (row,) = stored(rec, path)  # the database span is not a model call: ignored, not stored
    assert (row["model"], row["input_tokens"], row["team"], row["app"]) == (
        "gpt-4o",
        1000,
        "payments",
        "support-bot",
    )
    assert row["cost"] == Decimal("0.0035")  # $2.50 / $10 per million tokens


def test_deflate_without_zlib_header_and_x_gzip_are_read() -> None:
    """Some clients send raw deflate under `deflate`, and `x-gzip` is gzip (RFC 9110)."""
    body = orjson.dumps(json_request([json_span(genai_attributes())]))
    raw = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    assert decompress(raw.compress(body) + raw.flush(), "deflate") == body
    assert decompress(zlib.compress(body), "Deflate") == body
    assert decompress(gzip.compress(body), "x-gzip") == body


def test_prompts_answers_and_span_events_never_reach_the_ledger(
    receiver: tuple[str, TraceReceiver, Path],
) -> None:
    """Content capture turned on in an instrumentation must not put prompts in the ledger."""
    url, rec, path = receiver
    attributes = {
        **genai_attributes("gpt-4o"),
        "gen_ai.input.messages": '[{"role": "user", "content": "ATTRIBUTE PROMPT TEXT"}]',
        "gen_ai.output.messages": '[{"role": "assistant", "content": "ATTRIBUTE ANSWER TEXT"}]',
    }
    _export_with_sdk(url, Compression.NoCompression, attributes)
    (row,) = stored(rec, path)
    everything = json.dumps(row, default=str)
    for text in ("PROMPT TEXT", "ANSWER TEXT"):
        assert text not in everything


def test_a_credential_in_a_mapped_attribution_field_is_not_stored(
    receiver: tuple[str, TraceReceiver, Path],
) -> None:
    """`enduser.id` (-> user) and `unitcost.team` are free text an app sets: a bearer token put
    there by mistake was stored as is, while the same value in a tag was redacted."""
    url, rec, path = receiver
    span = json_span({**genai_attributes(), "enduser.id": f"Bearer {API_KEY}"})
    body = json_request([span], resource={"service.name": "bot", "unitcost.team": f"ops key={API_KEY}"})
    response = httpx.post(f"{url}/v1/traces", content=orjson.dumps(body), headers=JSON)
    assert (response.status_code, response.json()) == (200, {})
    (row,) = stored(rec, path)
    assert API_KEY not in json.dumps(row, default=str)
    assert row["user"] == "Bearer REDACTED"
    assert row["team"].startswith("ops ")


def test_spans_without_valid_ids_are_rejected_by_name_not_dropped_as_duplicates(
    receiver: tuple[str, TraceReceiver, Path],
) -> None:
    """Every span without ids got the event id `otlp::`: the first was stored and the others were
    counted as its duplicates, different calls silently lost. All-zero ids did the same across
    requests. They are invalid ids; the exporter is told, span by span."""
    url, rec, path = receiver
    good_trace, good_span = os.urandom(16), os.urandom(8)
    body = protobuf_request(
        [
            {"attributes": genai_attributes(input_tokens=1), "trace_id": b"", "span_id": b""},
            {"attributes": genai_attributes(input_tokens=2), "trace_id": b"", "span_id": b""},
            {"attributes": genai_attributes(input_tokens=3), "trace_id": bytes(16), "span_id": bytes(8)},
            {"attributes": genai_attributes(input_tokens=4), "trace_id": good_trace, "span_id": bytes(8)},
            {"attributes": genai_attributes(input_tokens=5), "trace_id": good_trace, "span_id": good_span},
        ]
    )
    response = httpx.post(f"{url}/v1/traces", content=body, headers=PROTOBUF)
    assert response.status_code == 200
    partial = ExportTraceServiceResponse.FromString(response.content).partial_success
    assert partial.rejected_spans == 4
    assert "traceId: missing" in partial.error_message
    assert "traceId: all zeros" in partial.error_message
    assert "spanId: all zeros" in partial.error_message
    zero_ids = json_span(genai_attributes(), traceId="0" * 32, spanId="0" * 16)
    response = httpx.post(f"{url}/v1/traces", content=orjson.dumps(json_request([zero_ids])), headers=JSON)
    assert response.json()["partialSuccess"]["rejectedSpans"] == "1"
    assert [row["input_tokens"] for row in stored(rec, path)] == [5]


def test_an_exporter_retry_of_a_mixed_batch_changes_nothing(
    receiver: tuple[str, TraceReceiver, Path],
) -> None:
    """Retries resend the same span ids: the second send is all duplicates, with the same answer
    for the span that cannot be recorded, and unknown models stay unpriced with their reason."""
    url, rec, path = receiver
    body = protobuf_request(
        [
            {"attributes": genai_attributes("gpt-4o")},
            {"attributes": genai_attributes("acme-inhouse-llm", provider="acme")},
            {"attributes": {"http.request.method": "GET"}},
            {"attributes": genai_attributes("gpt-4o", input_tokens=-1)},
        ]
    )
    answers = [httpx.post(f"{url}/v1/traces", content=body, headers=PROTOBUF) for _ in range(2)]
    assert [a.status_code for a in answers] == [200, 200]
    assert answers[0].content == answers[1].content
    assert ExportTraceServiceResponse.FromString(answers[1].content).partial_success.rejected_spans == 1
    stats = httpx.get(f"{url}/v1/traces/stats").json()
    assert (stats["spans_accepted"], stats["spans_duplicate"], stats["spans_ignored"]) == (2, 2, 2)
    unknown = next(row for row in stored(rec, path) if row["model"] == "acme-inhouse-llm")
    assert unknown["cost"] is None and "unknown model" in unknown["unpriced_reason"]


# --------------------------------------------------------------------------- reprice

CORRECTION = """
[[discount]]
provider = "openai"
percent = 12.5
from = 2025-09-05
source = "contract MSA-2025-014"

[[price]]
provider = "self-hosted"
model = "acme-classifier"
from = 2025-08-01
source = "GPU cost model"
input_mtok = "0.05"
output_mtok = "0.20"
requests_kcount = "0.40"
"""


def _calls() -> list[dict[str, Any]]:
    models = [("openai", "gpt-4o"), ("anthropic", "claude-sonnet-4-5"), ("self-hosted", "acme-classifier")]
    calls = []
    for i in range(60):
        provider, model = models[i % 3]
        calls.append(
            {
                "event_id": f"c{i}",
                "ts": f"2025-09-{1 + i % 10:02d}T{i % 24:02d}:{i % 60:02d}:00Z",
                "provider": provider,
                "model": model,
                "input_tokens": 1000 + 37 * i,
                "cache_read_tokens": 100 * (i % 4),
                "output_tokens": 50 + 11 * i,
                "team": ["search", "support"][i % 2],
            }
        )
    return calls


def _report(path: Path) -> str:
    result = CliRunner().invoke(
        cli,
        [
            "report",
            "--since",
            "2025-09-01",
            "--until",
            "2025-10-01",
            "--by",
            "model,team",
            "-f",
            "json",
            "-l",
            str(path),
        ],
    )
    assert result.exit_code == 0, result.output
    return result.output


def _priced_columns(path: Path) -> list[tuple[Any, ...]]:
    with Ledger(path, config=Config(), read_only=True) as ledger:
        table = ledger.store.fetch(
            "SELECT event_id, cost, cost_input, cost_cache_read, cost_output, cost_other, cache_savings, "
            "price_ref, unpriced_reason, priced_model FROM events ORDER BY event_id"
        )
    return [tuple(row.values()) for row in table.to_pylist()]


def test_reprice_matches_a_fresh_ingest_to_the_last_digit_and_a_second_run_changes_nothing(
    tmp_path: Path,
) -> None:
    """After a discount and a custom model's price are added, the repriced ledger reports what a
    fresh ingest with the same prices reports, and running the same reprice again is a no-op."""
    prices = tmp_path / "prices.toml"
    prices.write_text(CORRECTION)
    repriced, fresh = tmp_path / "repriced.duckdb", tmp_path / "fresh.duckdb"
    with Ledger(repriced, config=Config()) as ledger:
        ledger.ingest_records(_calls())
    with Ledger(fresh, config=Config(), prices=prices) as ledger:
        ledger.ingest_records(_calls())
    with Ledger(repriced, config=Config(), prices=prices) as ledger:
        first = ledger.reprice("2025-09-01", "2025-10-01", reason="MSA")
        second = ledger.reprice("2025-09-01", "2025-10-01")
    assert (first.old_unpriced, first.new_unpriced) == (20, 0)
    discounted = [c for c in _calls() if c["model"] == "gpt-4o" and c["ts"] >= "2025-09-05"]
    assert first.events_changed == 20 + len(discounted) == 32  # every acme call, gpt-4o from the 5th
    assert (second.events_changed, second.old_total, second.old_unpriced) == (0, first.new_total, 0)
    assert _priced_columns(repriced) == _priced_columns(fresh)
    assert _report(repriced) == _report(fresh)


def test_reprice_moves_cost_between_components_when_the_total_is_unchanged(tmp_path: Path) -> None:
    """A price corrected in place (same entry, so the same ref) whose input and output rates swap
    leaves this call's total as it was: the breakdown was not updated, and cost per input token
    in reports stayed wrong while a fresh ingest said otherwise."""
    before, after = tmp_path / "before.toml", tmp_path / "after.toml"
    entry = '[[price]]\nprovider = "self-hosted"\nmodel = "x"\nfrom = 2025-08-01\n'
    entry += 'input_mtok = "{}"\noutput_mtok = "{}"\n'
    before.write_text(entry.format("1", "2"))
    after.write_text(entry.format("2", "1"))
    call = {"event_id": "a", "ts": "2025-09-02T00:00:00Z", "provider": "self-hosted", "model": "x",
            "input_tokens": 1_000_000, "output_tokens": 1_000_000}  # fmt: skip
    with Ledger(tmp_path / "l.duckdb", config=Config(), prices=before) as ledger:
        ledger.ingest_records([call])
    with Ledger(tmp_path / "l.duckdb", config=Config(), prices=after) as ledger:
        result = ledger.reprice("2025-09-01", "2025-10-01")
        (row,) = ledger.store.fetch("SELECT cost, cost_input, cost_output FROM events").to_pylist()
        (rollup,) = ledger.store.fetch("SELECT sum(cost_input) AS cost_input FROM report_hourly").to_pylist()
    assert result.events_changed == 1
    assert (row["cost"], row["cost_input"], row["cost_output"]) == (Decimal(3), Decimal(2), Decimal(1))
    assert rollup["cost_input"] == Decimal(2)


EDGES = [
    ("before", "2025-09-04T23:59:59.999999Z"),
    ("at", "2025-09-05T00:00:00Z"),
    ("just-after", "2025-09-05T00:00:00.000001Z"),
    ("paris-morning", "2025-09-05T01:30:00+02:00"),  # 23:30 UTC the day before
    ("last", "2025-09-05T23:59:59.999999Z"),
    ("next-day", "2025-09-06T00:00:00Z"),
]


@pytest.mark.parametrize("zone", ["America/New_York", "Asia/Tokyo"])
def test_reprice_window_edges_are_utc_whatever_the_local_time_zone(tmp_path: Path, zone: str) -> None:
    """`--since 2025-09-05 --until 2025-09-06` is that UTC day, the start included and the end
    excluded, on a laptop in New York or Tokyo alike; an offset in the argument is honoured."""
    prices = tmp_path / "prices.toml"
    prices.write_text('[[discount]]\nprovider = "openai"\npercent = 10\nfrom = 2025-09-01\n')
    calls = [
        {"event_id": name, "ts": ts, "provider": "openai", "model": "gpt-4o", "input_tokens": 1000}
        for name, ts in EDGES
    ]
    path = tmp_path / "l.duckdb"
    with Ledger(path, config=Config()) as ledger:
        ledger.ingest_records(calls)
    copy = tmp_path / "copy.duckdb"
    shutil.copy(path, copy)
    env = {**os.environ, "TZ": zone}
    for target, window in (
        (path, ("2025-09-05", "2025-09-06")),
        (copy, ("2025-09-05T02:00:00+02:00", "2025-09-05T12:00Z")),
    ):
        since, until = window
        command = [UNITCOST, "reprice", "--since", since, "--until", until, "-l", str(target)]
        command += ["--prices", str(prices), "-f", "json"]
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 0, done.stderr
    with Ledger(path, config=Config(), read_only=True) as ledger:
        changed = ledger.store.fetch("SELECT event_id FROM reprice_events ORDER BY ts").column("event_id")
    assert changed.to_pylist() == ["at", "just-after", "last"]
    with Ledger(copy, config=Config(), read_only=True) as ledger:
        changed = ledger.store.fetch("SELECT event_id FROM reprice_events ORDER BY ts").column("event_id")
    assert changed.to_pylist() == ["at", "just-after"]


def test_a_reprice_that_fails_midway_leaves_costs_rollups_and_audit_as_they_were(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failure while the audit is written (disk full) rolls back the cost updates too: never
    new costs without their audit, nor rollups that disagree with the events."""
    prices = tmp_path / "prices.toml"
    prices.write_text(CORRECTION)
    path = tmp_path / "l.duckdb"
    with Ledger(path, config=Config()) as ledger:
        ledger.ingest_records(_calls())
    before = _priced_columns(path), _report(path)
    with Ledger(path, config=Config(), prices=prices) as ledger:
        insert = ledger.store.insert

        def disk_full(table: str, rows: Any) -> None:
            if table == "reprice_events":
                raise OSError("No space left on device")
            insert(table, rows)

        monkeypatch.setattr(ledger.store, "insert", disk_full)
        with pytest.raises(OSError, match="No space"):
            ledger.reprice("2025-09-01", "2025-10-01")
        monkeypatch.setattr(ledger.store, "insert", insert)
        runs = ledger.store.fetch("SELECT count(*) AS n FROM reprice_runs").column("n")[0].as_py()
    assert runs == 0
    assert (_priced_columns(path), _report(path)) == before


def test_reprice_with_nothing_to_change_says_so_instead_of_an_empty_table(tmp_path: Path) -> None:
    """An empty 'Changes by model' table read like a failure."""
    path = tmp_path / "l.duckdb"
    with Ledger(path, config=Config()) as ledger:
        ledger.ingest_records(_calls()[:3])
    result = CliRunner().invoke(cli, ["reprice", "--since", "2025-09-01", "-l", str(path)])
    assert result.exit_code == 0, result.output
    assert "0 changed" in result.output
    assert "No model's total or count of unpriced calls changed (audit run" in result.output
