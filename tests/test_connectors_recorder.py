"""unitcost.record / tags / instrument with the official openai and anthropic SDKs against a fake upstream."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import anthropic
import openai
import pytest

import unitcost
from fake_providers import ANTHROPIC_USAGE, CHAT_USAGE, RESPONSES_USAGE, fake_provider_app, serve_app
from unitcost.api import Ledger
from unitcost.config import Config
from unitcost.connectors.recorder import Recorder
from unitcost.pricing.book import PriceBook


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    with serve_app(fake_provider_app()) as url:
        yield url


@pytest.fixture
def openai_client(upstream: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=upstream + "/v1", api_key="sk-test-not-a-secret", max_retries=0)


@pytest.fixture
def anthropic_client(upstream: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=upstream, api_key="sk-ant-test", max_retries=0)


def rows(path: Path, where: str = "true") -> list[dict]:
    with Ledger(path, config=Config()) as ledger:
        return ledger.store.fetch(f"SELECT * FROM events WHERE {where} ORDER BY ts").to_pylist()


def test_openai_sdk_chat_recorded_with_exact_usage_and_cost(
    openai_client: openai.OpenAI, tmp_path: Path, book: PriceBook
) -> None:
    path = tmp_path / "l.duckdb"
    recorder = Recorder(path)
    response = openai_client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "hi"}]
    )
    event_id = recorder.record(
        response, team="support", feature="reply", unit="ticket", unit_id="T-1", region="eu"
    )
    recorder.close()
    (row,) = rows(path)
    assert row["event_id"] == event_id
    assert row["model"] == "gpt-4o-2024-08-06"
    assert row["input_tokens"] == CHAT_USAGE["prompt_tokens"]
    assert row["cache_read_tokens"] == CHAT_USAGE["prompt_tokens_details"]["cached_tokens"]
    assert row["output_tokens"] == CHAT_USAGE["completion_tokens"]
    assert row["reasoning_tokens"] == CHAT_USAGE["completion_tokens_details"]["reasoning_tokens"]
    assert (row["team"], row["feature"], row["unit"], row["unit_id"]) == ("support", "reply", "ticket", "T-1")
    assert dict(row["tags"]) == {"region": "eu"}
    expected = book.price(
        "gpt-4o-2024-08-06",
        provider="openai",
        at=row["ts"],
        input_tokens=1834,
        cache_read_tokens=1024,
        output_tokens=412,
        reasoning_tokens=256,
    )
    assert row["cost"] == expected.cost
    assert row["source"] == "sdk"


def test_openai_stream_and_responses(openai_client: openai.OpenAI, tmp_path: Path) -> None:
    path = tmp_path / "l.duckdb"
    recorder = Recorder(path)
    stream = openai_client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "hi"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    recorder.record(list(stream), feature="stream")
    response = openai_client.responses.create(model="o3", input="hi")
    recorder.record(response, feature="responses")
    recorder.close()
    by_feature = {r["feature"]: r for r in rows(path)}
    assert by_feature["stream"]["input_tokens"] == 1834
    assert by_feature["stream"]["cache_read_tokens"] == 1024
    responses = by_feature["responses"]
    assert (responses["input_tokens"], responses["cache_read_tokens"]) == (5120, 4096)
    assert responses["cache_write_1h_tokens"] == RESPONSES_USAGE["input_tokens_details"]["cache_write_tokens"]
    assert (responses["output_tokens"], responses["reasoning_tokens"]) == (900, 640)
    assert responses["operation"] == "responses"


def test_anthropic_sdk_messages_streamed_and_not(
    anthropic_client: anthropic.Anthropic, tmp_path: Path
) -> None:
    path = tmp_path / "l.duckdb"
    recorder = Recorder(path)
    message = anthropic_client.messages.create(
        model="claude-sonnet-4-6", max_tokens=1024, messages=[{"role": "user", "content": "hi"}]
    )
    recorder.record(message, feature="plain")
    events = anthropic_client.messages.create(
        model="claude-sonnet-4-6", max_tokens=1024, messages=[{"role": "user", "content": "hi"}], stream=True
    )
    recorder.record(list(events), feature="events")
    with anthropic_client.messages.stream(
        model="claude-sonnet-4-6", max_tokens=1024, messages=[{"role": "user", "content": "hi"}]
    ) as stream:
        final = stream.get_final_message()
    recorder.record(final, feature="helper")
    recorder.close()
    found = {r["feature"]: r for r in rows(path)}
    u = ANTHROPIC_USAGE
    for feature in ("plain", "events", "helper"):
        row = found[feature]
        assert (
            row["input_tokens"]
            == u["input_tokens"] + u["cache_read_input_tokens"] + u["cache_creation_input_tokens"]
        )
        assert row["cache_read_tokens"] == u["cache_read_input_tokens"]
        assert row["cache_write_5m_tokens"] == u["cache_creation"]["ephemeral_5m_input_tokens"]
        assert row["cache_write_1h_tokens"] == u["cache_creation"]["ephemeral_1h_input_tokens"]
        assert row["output_tokens"] == u["output_tokens"]
        assert row["provider"] == "anthropic"
        assert row["cost"] is not None
        assert row["cost_cache_write_1h"] > row["cost_cache_write_5m"] > 0


def test_tags_block_decorator_nesting_and_explicit_override(tmp_path: Path) -> None:
    from fake_providers import chat_completion

    recorder = Recorder(tmp_path / "l.duckdb")
    payload = chat_completion("gpt-4o-mini")

    @unitcost.tags(feature="triage", unit="ticket")
    def handle(ticket: str) -> None:
        with unitcost.tags(unit_id=ticket, priority="p1"):
            recorder.record(payload, event_id=f"e-{ticket}")

    with unitcost.tags(team="support", environment="prod"):
        handle("T-9")
        recorder.record(payload, team="billing", event_id="e-explicit")
    recorder.record(payload, event_id="e-outside")

    async def in_task() -> None:
        with unitcost.tags(team="async-team"):
            await asyncio.sleep(0)
            recorder.record(payload, event_id="e-async")

    asyncio.run(in_task())
    recorder.close()
    found = {r["event_id"]: r for r in rows(tmp_path / "l.duckdb")}
    inner = found["e-T-9"]
    assert (inner["team"], inner["feature"], inner["unit"], inner["unit_id"]) == (
        "support",
        "triage",
        "ticket",
        "T-9",
    )
    assert inner["environment"] == "prod"
    assert dict(inner["tags"]) == {"priority": "p1"}
    assert found["e-explicit"]["team"] == "billing"
    assert found["e-outside"]["team"] is None
    assert found["e-async"]["team"] == "async-team"


def test_record_refuses_what_it_cannot_read(tmp_path: Path) -> None:
    recorder = Recorder(tmp_path / "l.duckdb")
    with pytest.raises(ValueError, match="not a known provider response"):
        recorder.record({"text": "hello"})
    with pytest.raises(ValueError, match="pass model="):
        recorder.record({"error": {"message": "boom", "type": "server_error"}})
    recorder.record({"error": {"message": "boom", "type": "server_error"}}, model="gpt-4o", event_id="err-1")
    recorder.close()
    (row,) = rows(tmp_path / "l.duckdb")
    assert (row["status"], row["input_tokens"], row["cost"]) == ("error", 0, 0)


def test_instrumented_sdks_record_every_call_without_call_site_changes(
    openai_client: openai.OpenAI, anthropic_client: anthropic.Anthropic, tmp_path: Path
) -> None:
    path = tmp_path / "l.duckdb"
    recorder = Recorder(path)
    done = unitcost.instrument(into=recorder)
    try:
        assert "openai.resources.chat.completions.Completions.create" in done
        with unitcost.tags(team="platform"):
            openai_client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "a"}])
            chunks = list(
                openai_client.chat.completions.create(
                    model="gpt-4o-mini",
                    messages=[{"role": "user", "content": "b"}],
                    stream=True,
                    stream_options={"include_usage": True},
                )
            )
            assert chunks[-1].usage.prompt_tokens == 1834  # the caller still sees every chunk
            anthropic_client.messages.create(
                model="claude-sonnet-4-6", max_tokens=10, messages=[{"role": "user", "content": "c"}]
            )
            with pytest.raises(openai.NotFoundError):
                openai_client.chat.completions.create(
                    model="missing-model", messages=[{"role": "user", "content": "d"}]
                )
            with pytest.raises(anthropic.APIStatusError):
                anthropic_client.messages.create(
                    model="overloaded", max_tokens=10, messages=[{"role": "user", "content": "e"}]
                )
    finally:
        unitcost.uninstrument()
    recorder.close()
    found = rows(path)
    assert [r["team"] for r in found] == ["platform"] * 5
    by_model = {r["model"]: r for r in found}
    assert by_model["gpt-4o"]["served_model"] == "gpt-4o-2024-08-06"
    assert by_model["gpt-4o-mini"]["input_tokens"] == 1834
    assert by_model["gpt-4o-mini"]["ttft_ms"] is not None
    assert by_model["claude-sonnet-4-6"]["cache_write_1h_tokens"] == 2000
    assert (by_model["missing-model"]["status"], by_model["missing-model"]["http_status"]) == ("error", 404)
    assert by_model["overloaded"]["http_status"] == 529
    assert all(r["latency_ms"] > 0 for r in found)
    # Nothing of the key reaches the ledger.
    assert "sk-test-not-a-secret" not in str(found)


def test_buffered_events_are_flushed_at_exit(tmp_path: Path, upstream: str) -> None:
    path = tmp_path / "exit.duckdb"
    script = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        import unitcost
        from fake_providers import chat_completion
        unitcost.configure({str(path)!r}, flush_interval=3600)
        for i in range(25):
            unitcost.record(chat_completion("gpt-4o-mini"), team="batch", event_id=f"x-{{i}}")
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)
    assert len(rows(path)) == 25


def test_transient_ledger_failures_are_retried_not_dropped(tmp_path: Path) -> None:
    from unitcost.connectors.writer import BatchWriter

    attempts = []

    def flaky_ledger() -> Ledger:
        attempts.append(1)
        if len(attempts) < 3:
            raise RuntimeError("ledger busy (simulated)")
        return Ledger(tmp_path / "l.duckdb", config=Config())

    writer = BatchWriter(flaky_ledger, source="sdk")
    record = {"event_id": "r-1", "model": "gpt-4o-mini", "input_tokens": 5, "ts": "2025-09-16T10:00:00Z"}
    writer.submit([record], wait=False)
    assert writer.flush(timeout=60)
    writer.close()
    assert len(attempts) == 3
    assert [r["event_id"] for r in rows(tmp_path / "l.duckdb")] == ["r-1"]


def test_the_write_at_exit_of_a_short_script_succeeds_first_time(tmp_path: Path) -> None:
    """A script that records and ends before the first flush tick has its first write in the
    exit hook; it failed there once ("can't register atexit after shutdown", logged as a
    retry) because the write path imported a module that registers an exit hook of its own."""
    path = tmp_path / "exit.duckdb"
    script = textwrap.dedent(
        f"""
        import unitcost
        unitcost.configure({str(path)!r}, flush_interval=3600)
        unitcost.record({{"object": "chat.completion", "model": "gpt-4o-mini",
                          "usage": {{"prompt_tokens": 1200, "completion_tokens": 80}}}}, unit="ticket", unit_id="T-1")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], check=False, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "could not write" not in done.stderr and "retry" not in done.stderr, done.stderr
    (row,) = rows(path)
    assert row["unit_id"] == "T-1" and row["cost"] is not None


def test_flush_says_false_when_events_were_lost(tmp_path: Path) -> None:
    """A ledger that cannot be written: after the writer's retries the events are given up; flush()
    returned True ("all in the ledger") all the same, so an app had no way to notice."""
    from unitcost.connectors import writer

    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    recorder = Recorder(not_a_dir / "l.duckdb", flush_interval=3600)
    retries = writer.RETRIES
    writer.RETRIES = 1  # give up after one retry, not after five growing pauses
    try:
        recorder.record({"object": "chat.completion", "model": "gpt-4o-mini", "usage": {"prompt_tokens": 5}})
        assert recorder.flush(timeout=60) is False
        assert recorder.last_error is not None
    finally:
        writer.RETRIES = retries
        recorder.close()


def test_flush_says_true_once_everything_is_written(tmp_path: Path) -> None:
    path = tmp_path / "l.duckdb"
    recorder = Recorder(path, flush_interval=3600)
    try:
        for i in range(3):
            recorder.record(
                {"object": "chat.completion", "model": "gpt-4o-mini", "usage": {"prompt_tokens": 5}},
                event_id=f"ok-{i}",
            )
        # One the ledger rejects still counts as handled: it is logged, not lost.
        recorder.record(
            {"object": "chat.completion", "model": "gpt-4o-mini", "usage": {"prompt_tokens": 5}},
            latency_ms=-1,
        )
        assert recorder.flush(timeout=60) is True
    finally:
        recorder.close()
    assert sorted(r["event_id"] for r in rows(path)) == ["ok-0", "ok-1", "ok-2"]


def test_a_closed_recorder_refuses_to_record(tmp_path: Path) -> None:
    """After close() an event was buffered and never written, without a word."""
    recorder = Recorder(tmp_path / "l.duckdb", flush_interval=3600)
    recorder.close()
    with pytest.raises(RuntimeError, match="closed"):
        recorder.record({"object": "chat.completion", "model": "gpt-4o-mini", "usage": {"prompt_tokens": 5}})
