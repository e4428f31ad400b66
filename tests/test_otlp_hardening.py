"""The OTLP receiver against what real exporters and real operations throw at it: spans without
usage, instrumentation quirks, absurd values, oversized bodies, a crashed server, a busy ledger."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from otlp_payloads import genai_attributes, json_request, json_span, ledger_rows, protobuf_request
from unitcost.otlp.extract import extract
from unitcost.otlp.mapping import AttributeMapping, Span, SpanError
from unitcost.otlp.rows import SpanMapper, span_to_event

PROTOBUF = {"Content-Type": "application/x-protobuf"}
JSON = {"Content-Type": "application/json"}
UNITCOST = str(Path(sys.executable).parent / "unitcost")


def span(attrs: dict[str, Any], **kw: Any) -> Span:
    defaults: dict[str, Any] = {
        "trace_id": "0af7651916cd43dd8448eb211c80319c",
        "span_id": "b7ad6b7169203331",
        "parent_span_id": "",
        "name": "chat",
        "start_ns": 1_758_000_000_000_000_000,
        "end_ns": 1_758_000_001_000_000_000,
        "attributes": attrs,
        "error": False,
    }
    return Span(**{**defaults, **kw})


# --------------------------------------------------------------------------- mapping


def test_a_call_span_without_usage_is_stored_unpriced_not_at_zero(
    otlp_receiver: tuple[str, Any, Path],
) -> None:
    """The official OpenAI instrumentation on a stream without `include_usage` reports the call
    and its model but no token counts: that is unknown usage, not a free call."""
    url, rec, path = otlp_receiver
    no_usage = json_span(
        {"gen_ai.operation.name": "chat", "gen_ai.system": "openai", "gen_ai.request.model": "gpt-4o"}
    )
    embeddings = json_span(
        {
            "gen_ai.operation.name": "embeddings",
            "gen_ai.system": "openai",
            "gen_ai.request.model": "text-embedding-3-small",
            "gen_ai.usage.input_tokens": 12,
        }
    )
    failed = json_span(
        {"gen_ai.system": "openai", "gen_ai.request.model": "gpt-4o", "error.type": "RateLimitError"},
        status={"code": 2},
    )
    body = orjson.dumps(json_request([no_usage, embeddings, failed]))
    response = httpx.post(url + "/v1/traces", content=body, headers=JSON)
    assert response.status_code == 200 and response.json() == {}
    rec.writer.close()
    rows = {row["event_id"].rsplit(":", 1)[1]: row for row in ledger_rows(path)}
    unknown = rows[no_usage["spanId"]]
    assert unknown["cost"] is None
    assert "usage unknown" in unknown["unpriced_reason"]
    assert rows[embeddings["spanId"]]["cost"] is not None  # input alone is usage
    # A failed attempt with no usage is what the gateway records too: an error with zero tokens.
    assert rows[failed["spanId"]]["status"] == "error"
    assert rows[failed["spanId"]]["unpriced_reason"] is None


def test_openlit_anthropic_spans_report_the_uncached_input() -> None:
    """OpenLIT copies Anthropic's `input_tokens` (uncached only) into gen_ai.usage.input_tokens and
    reports the cache reads and writes beside it, whatever their size; other instrumentations
    (OpenLLMetry, the official one) report the whole prompt, as the conventions say."""
    cached = {
        "gen_ai.usage.cache_read.input_tokens": 2000,
        "gen_ai.usage.cache_creation.input_tokens": 500,
    }
    openlit = genai_attributes(
        "claude-sonnet-4-5", 3000, 200, provider="anthropic", **cached, **{"telemetry.sdk.name": "openlit"}
    )
    event = span_to_event(span(openlit), {}, AttributeMapping())
    assert event is not None and event["input_tokens"] == 5500
    assert (event["cache_read_tokens"], event["cache_write_5m_tokens"]) == (2000, 500)
    whole = genai_attributes("claude-sonnet-4-5", 3000, 200, provider="anthropic", **cached)
    event = span_to_event(span(whole), {}, AttributeMapping())
    assert event is not None and event["input_tokens"] == 3000
    # An OpenLIT span of another provider reports the whole prompt (OpenAI's prompt_tokens).
    openai = genai_attributes(
        "gpt-4o", 3000, 200, **{"gen_ai.usage.cache_read.input_tokens": 2000, "telemetry.sdk.name": "openlit"}
    )
    event = span_to_event(span(openai), {}, AttributeMapping())
    assert event is not None and event["input_tokens"] == 3000


def test_an_empty_request_model_counts_as_absent() -> None:
    attrs = genai_attributes(**{"gen_ai.request.model": "", "gen_ai.response.model": "gpt-4o-2024-08-06"})
    event = span_to_event(span(attrs), {}, AttributeMapping())
    assert event is not None and event["model"] == "gpt-4o-2024-08-06"
    # The same span in protobuf (read in place, by another path).
    out = extract(protobuf_request([{"attributes": attrs}]), "application/x-protobuf", SpanMapper())
    assert out.rejected == 0 and out.rows[0][5] == "gpt-4o-2024-08-06"


def test_a_billed_amount_is_bounded_before_it_is_written_out() -> None:
    """`gen_ai.usage.cost = "1e300000000"` is twelve bytes on the wire and would be 300 MB of
    digits as plain text: it is refused as no amount for one call, without building the text."""
    huge = genai_attributes(**{"gen_ai.usage.cost": "1e300000000"})
    with pytest.raises(SpanError, match=r"gen_ai\.usage\.cost: not a plausible amount"):
        span_to_event(span(huge), {}, AttributeMapping())
    tiny = genai_attributes(**{"gen_ai.usage.cost": "1e-300000000"})
    event = span_to_event(span(tiny), {}, AttributeMapping())
    assert event is not None and event["billed_cost"] == 0
    exact = genai_attributes(**{"gen_ai.usage.cost": "0.000123456789"})
    event = span_to_event(span(exact), {}, AttributeMapping())
    assert event is not None and str(event["billed_cost"]) == "0.000123456789"


def test_a_bad_otlp_attributes_section_is_named() -> None:
    for value in (5, ["k8s.namespace.name"]):
        with pytest.raises(ValueError, match=r"\[otlp\] attributes = .*expected a table"):
            AttributeMapping.from_config({"attributes": value})


# --------------------------------------------------------------------------- the server


def test_an_oversized_body_is_refused_from_its_length_before_it_is_read(
    otlp_receiver: tuple[str, Any, Path],
) -> None:
    """A client announcing 100 MiB is answered 413 at once: the server neither waits for nor holds it."""
    url, _, _ = otlp_receiver
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as conn:
        conn.sendall(
            b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
            b"Content-Length: 104857600\r\n\r\n" + b"\x00" * 1024
        )
        head = conn.recv(4096)
    assert head.startswith(b"HTTP/1.1 413")


def _wait_gone(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        if Path(f"/proc/{pid}/stat").exists() and Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z":
            return True  # exited, waiting for its (new) parent to reap it
        time.sleep(0.1)
    return False


@pytest.mark.slow
def test_decode_workers_do_not_outlive_a_killed_server(tmp_path: Path) -> None:
    """A server killed with SIGKILL (the OOM killer) cannot stop its pool: its workers stop themselves."""
    script = textwrap.dedent(
        """
        import multiprocessing, sys, time
        from unitcost.otlp.mapping import AttributeMapping
        from unitcost.otlp.workers import DecodePool

        if __name__ == "__main__":
            pool = DecodePool(AttributeMapping(), 2)
            print(" ".join(str(p.pid) for p in multiprocessing.active_children()
                           if "resource_tracker" not in (p.name or "")), flush=True)
            time.sleep(600)
        """
    )
    path = tmp_path / "server.py"
    path.write_text(script)
    server = subprocess.Popen([sys.executable, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        workers = [int(pid) for pid in server.stdout.readline().split()]
        assert len(workers) == 2
    finally:
        server.send_signal(signal.SIGKILL)
        server.wait()
    gone = [pid for pid in workers if _wait_gone(pid, 60)]
    for pid in set(workers) - set(gone):
        os.kill(pid, signal.SIGKILL)  # do not leave them behind when the test fails
    assert gone == workers


def _serve(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`unitcost serve` that is expected to refuse to start (a server that starts is killed at the timeout)."""
    try:
        return subprocess.run(
            [UNITCOST, "serve", *args],
            check=False,
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "COLUMNS": "200", **(env or {})},
        )
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(
            f"`unitcost serve {' '.join(args)}` started instead of refusing: {exc.stdout!r}"
        ) from None


@pytest.mark.slow
def test_serve_refuses_to_start_on_a_ledger_it_cannot_write(tmp_path: Path) -> None:
    """Before, it listened and answered every export 503 for ever, with the reason only in its log."""
    directory = tmp_path / "not-a-ledger"
    directory.mkdir()
    done = _serve("--ledger", str(directory), "--port", "0")
    assert done.returncode == 2
    assert "is a directory" in done.stdout + done.stderr
    assert "OTLP/HTTP on" not in done.stdout

    ledger = tmp_path / "busy.duckdb"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import duckdb, time; c = duckdb.connect({str(ledger)!r}); print(1, flush=True); time.sleep(600)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "1"
        done = _serve("--ledger", str(ledger), "--port", "0", env={"UNITCOST_LOCK_WAIT": "0.2"})
    finally:
        holder.kill()
        holder.wait()
    assert done.returncode == 2
    assert "open for writing by another process" in done.stdout + done.stderr


@pytest.mark.slow
def test_serve_names_a_port_in_use_and_a_bad_config(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = _serve("--ledger", str(tmp_path / "a.duckdb"), "--port", str(port))
    assert done.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in done.stdout
    assert "OTLP/HTTP on" not in done.stdout  # it never said it was listening

    config = tmp_path / "unitcost.toml"
    config.write_text("[otlp]\nattributes = 5\n")
    done = _serve("--ledger", str(tmp_path / "b.duckdb"), "--port", "0", "--config", str(config))
    assert done.returncode == 2
    assert "[otlp] attributes = 5: expected a table" in done.stdout
    assert "Traceback" not in done.stderr
