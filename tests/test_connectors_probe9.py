"""An application instrumenting itself with unitcost from Python, against a fake OpenAI/Anthropic
upstream on 127.0.0.1 driven by the official SDKs: attribution that follows the call, tags blocks
shared by concurrent handlers, recorders the app forgot to close, credentials in attribution
values, batch results, and a ledger that stays unwritable while the app keeps recording."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

import unitcost
from fake_providers import (
    ANTHROPIC_USAGE,
    CHAT_USAGE,
    anthropic_message,
    chat_completion,
    fake_provider_app,
    serve_app,
)
from unitcost.api import Ledger
from unitcost.config import Config
from unitcost.connectors import tagging
from unitcost.connectors.recorder import Recorder
from unitcost.pricing.book import PriceBook

# ---------------------------------------------------------------- batch results, as the APIs serve them

# A line of an OpenAI Batch output file (platform.openai.com/docs/guides/batch) and one of its
# error file: a request the batch expired before running.
OPENAI_BATCH_LINES = [
    {
        "id": "batch_req_123",
        "custom_id": "request-2",
        "response": {"status_code": 200, "request_id": "req_123", "body": chat_completion("gpt-4o-mini")},
        "error": None,
    },
    {
        "id": "batch_req_456",
        "custom_id": "request-3",
        "response": None,
        "error": {
            "code": "batch_expired",
            "message": "This request could not be executed before the completion window expired.",
        },
    },
]
BATCH_USAGE = {**ANTHROPIC_USAGE, "service_tier": "batch"}
# Anthropic Message Batches results (docs.anthropic.com, "Retrieving batch results").
ANTHROPIC_BATCH_RESULTS = [
    {
        "custom_id": "my-first-request",
        "result": {
            "type": "succeeded",
            "message": {**anthropic_message("claude-sonnet-4-6"), "usage": BATCH_USAGE},
        },
    },
    {
        "custom_id": "my-second-request",
        "result": {
            "type": "errored",
            "error": {
                "type": "error",
                "error": {
                    "type": "invalid_request_error",
                    "message": "Validation error: messages: Field required",
                },
            },
        },
    },
    {"custom_id": "my-third-request", "result": {"type": "expired"}},
    {"custom_id": "my-fourth-request", "result": {"type": "canceled"}},
]


def _jsonl(lines: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(line).encode() + b"\n" for line in lines)


async def _file_content(request: Request) -> Response:
    return Response(_jsonl(OPENAI_BATCH_LINES), media_type="application/octet-stream")


async def _message_batch(request: Request) -> Response:
    batch_id = request.path_params["batch_id"]
    return JSONResponse(
        {
            "id": batch_id,
            "type": "message_batch",
            "processing_status": "ended",
            "request_counts": {"processing": 0, "succeeded": 1, "errored": 1, "canceled": 1, "expired": 1},
            "ended_at": "2025-09-10T10:20:00Z",
            "created_at": "2025-09-10T10:00:00Z",
            "expires_at": "2025-09-11T10:00:00Z",
            "archived_at": None,
            "cancel_initiated_at": None,
            "results_url": f"{request.base_url}v1/messages/batches/{batch_id}/results",
        }
    )


async def _batch_results(request: Request) -> Response:
    return Response(_jsonl(ANTHROPIC_BATCH_RESULTS), media_type="application/binary")


def _upstream_app() -> Starlette:
    app = fake_provider_app()
    app.router.routes.extend(
        [
            Route("/v1/files/{file_id}/content", _file_content, methods=["GET"]),
            Route("/v1/messages/batches/{batch_id}", _message_batch, methods=["GET"]),
            Route("/v1/messages/batches/{batch_id}/results", _batch_results, methods=["GET"]),
        ]
    )
    return app


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    with serve_app(_upstream_app()) as url:
        yield url


def rows(path: Path, where: str = "true") -> list[dict[str, Any]]:
    with Ledger(path, config=Config()) as ledger:
        return ledger.store.fetch(f"SELECT * FROM events WHERE {where} ORDER BY event_id").to_pylist()


@pytest.fixture
def instrumented(tmp_path: Path) -> Iterator[Recorder]:
    recorder = Recorder(tmp_path / "l.duckdb", flush_interval=3600)
    unitcost.instrument(into=recorder)
    try:
        yield recorder
    finally:
        unitcost.uninstrument()
        recorder.close()


# ---------------------------------------------------------------- attribution follows the call


def test_a_stream_read_after_its_tags_block_keeps_the_blocks_tags(
    upstream: str, instrumented: Recorder, tmp_path: Path
) -> None:
    """A web handler makes the call inside `unitcost.tags(...)` and returns the stream, which the
    framework reads after the block has ended: the call was recorded with no team and no user."""
    oai = openai.OpenAI(base_url=upstream + "/v1", api_key="sk-test-not-a-secret", max_retries=0)
    with unitcost.tags(team="search", user="u-1"):
        stream = oai.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "a"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    with unitcost.tags(team="someone-else"):  # where it is read does not make it another's call
        chunks = list(stream)
    assert chunks[-1].usage.prompt_tokens == CHAT_USAGE["prompt_tokens"]

    async def handler(claude: anthropic.AsyncAnthropic) -> Any:
        with unitcost.tags(team="support", user="u-2", unit="ticket", unit_id="T-9"):
            return await claude.messages.create(
                model="claude-sonnet-4-6",
                max_tokens=10,
                messages=[{"role": "user", "content": "q"}],
                stream=True,
            )

    async def serve() -> None:
        claude = anthropic.AsyncAnthropic(base_url=upstream, api_key="sk-ant-test", max_retries=0)
        stream = await handler(claude)
        async for _ in stream:  # the framework's task, outside the handler's block
            pass

    asyncio.run(serve())
    assert instrumented.flush(60)
    by_model = {r["model"]: r for r in rows(tmp_path / "l.duckdb")}
    openai_row, claude_row = by_model["gpt-4o-mini"], by_model["claude-sonnet-4-6"]
    assert (openai_row["team"], openai_row["user"]) == ("search", "u-1")
    assert (claude_row["team"], claude_row["user"], claude_row["unit"], claude_row["unit_id"]) == (
        "support",
        "u-2",
        "ticket",
        "T-9",
    )
    assert claude_row["output_tokens"] == ANTHROPIC_USAGE["output_tokens"]


def test_one_tags_instance_entered_by_concurrent_tasks_and_threads() -> None:
    """`SUPPORT = unitcost.tags(team="support")` then `with SUPPORT:` in every handler: when the
    handler that entered first left first, it failed with "Token was created in a different
    Context" (the instance kept one stack of tokens for all of them)."""
    support = unitcost.tags(team="support")

    async def first(inside: asyncio.Event, second_inside: asyncio.Event) -> dict[str, Any]:
        with support, unitcost.tags(user="a"):
            inside.set()
            await second_inside.wait()
            return dict(tagging.current())

    async def second(first_inside: asyncio.Event, inside: asyncio.Event) -> dict[str, Any]:
        await first_inside.wait()
        with support, unitcost.tags(user="b"):
            inside.set()
            await asyncio.sleep(0)  # the first handler leaves the block while this one is inside
            return dict(tagging.current())

    async def two_requests() -> list[dict[str, Any]]:
        a_inside, b_inside = asyncio.Event(), asyncio.Event()
        return await asyncio.gather(first(a_inside, b_inside), second(a_inside, b_inside))

    assert asyncio.run(two_requests()) == [{"team": "support", "user": "a"}, {"team": "support", "user": "b"}]
    assert tagging.current() == {}

    a_inside, b_inside, a_left = threading.Event(), threading.Event(), threading.Event()

    def thread_a() -> dict[str, Any]:
        try:
            with support:
                a_inside.set()
                b_inside.wait(60)
                inside = dict(tagging.current())
        finally:
            a_left.set()
        return {**inside, "after": dict(tagging.current())}

    def thread_b() -> dict[str, Any]:
        a_inside.wait(60)
        with support:
            b_inside.set()
            a_left.wait(60)
            inside = dict(tagging.current())
        return {**inside, "after": dict(tagging.current())}

    with ThreadPoolExecutor(2) as pool:
        seen = [future.result(60) for future in (pool.submit(thread_a), pool.submit(thread_b))]
    assert seen == [{"team": "support", "after": {}}] * 2


# ---------------------------------------------------------------- credentials


def test_credentials_in_attribution_values_are_redacted(tmp_path: Path) -> None:
    """Free tags were cleaned of credentials, but `user=`, `customer=` ... of `record` and of
    `unitcost.tags` were stored as given: a bearer token passed as the user landed in the ledger."""
    path = tmp_path / "l.duckdb"
    recorder = Recorder(path, flush_interval=3600)
    key = "sk-proj-4fTq9ZkP2vXw8LmN3bR7yH1cD6eJ0aSg"
    with unitcost.tags(team="search", customer=f"https://acme:{key}@example.com/hook"):
        recorder.record(chat_completion("gpt-4o-mini"), event_id="r-1", user=f"Bearer {key}", unit_id=1234)
    assert recorder.flush(60)
    recorder.close()
    (row,) = rows(path)
    assert key not in str(row)
    assert row["user"] == "Bearer REDACTED"
    assert "REDACTED" in row["customer"] and row["customer"].endswith("example.com/hook")
    assert (row["team"], row["unit_id"]) == ("search", "1234")


# ---------------------------------------------------------------- batch


def test_batch_results_read_with_the_sdks_are_recorded_at_the_batch_tier(
    upstream: str, tmp_path: Path, book: PriceBook
) -> None:
    """Batch results were refused ("not a known provider response"), and the body inside an
    OpenAI output line, recorded alone, says `service_tier: default`: priced at twice the bill."""
    path = tmp_path / "l.duckdb"
    recorder = Recorder(path, flush_interval=3600)
    oai = openai.OpenAI(base_url=upstream + "/v1", api_key="sk-test-not-a-secret", max_retries=0)
    for line in oai.files.content("file-batch-output").text.splitlines():
        item = json.loads(line)
        # A request the batch never ran names no model: the app knows what it asked for.
        recorder.record(
            item, event_id=item["custom_id"], **({} if item["response"] else {"model": "gpt-4o-mini"})
        )
    claude = anthropic.Anthropic(base_url=upstream, api_key="sk-ant-test", max_retries=0)
    for result in claude.messages.batches.results("msgbatch_01HkcTjaV5uDC8jWR4ZsDV8d"):
        model = None if result.result.type == "succeeded" else "claude-sonnet-4-6"
        recorder.record(result, event_id=result.custom_id, model=model)
    assert recorder.flush(60)
    recorder.close()
    found = {r["event_id"]: r for r in rows(path)}

    done = found["request-2"]
    assert (done["status"], done["service_tier"], done["input_tokens"]) == ("ok", "batch", 1834)
    assert (done["cache_read_tokens"], done["output_tokens"], done["reasoning_tokens"]) == (1024, 412, 256)
    expected = book.price(
        "gpt-4o-mini",
        provider="openai",
        at=done["ts"],
        tier="batch",
        input_tokens=1834,
        cache_read_tokens=1024,
        output_tokens=412,
        reasoning_tokens=256,
    )
    assert done["cost"] == expected.cost
    expired = found["request-3"]
    assert (expired["status"], expired["input_tokens"], expired["output_tokens"]) == ("timeout", 0, 0)

    message = found["my-first-request"]
    u = ANTHROPIC_USAGE
    assert message["service_tier"] == "batch"
    assert (
        message["input_tokens"]
        == u["input_tokens"] + u["cache_read_input_tokens"] + u["cache_creation_input_tokens"]
    )
    assert (message["cache_write_5m_tokens"], message["cache_write_1h_tokens"]) == (500, 2000)
    assert message["cost"] is not None and "batch" in message["price_ref"]
    assert [found[k]["status"] for k in ("my-second-request", "my-third-request", "my-fourth-request")] == [
        "error",
        "timeout",
        "cancelled",
    ]
    assert all(
        found[k]["input_tokens"] == 0 for k in ("my-second-request", "my-third-request", "my-fourth-request")
    )


# ---------------------------------------------------------------- the recorder and the ledger


def test_a_recorder_the_app_never_closed_is_written_at_exit(tmp_path: Path) -> None:
    """Only the default recorder was flushed at exit: the events of a `Recorder(...)` the app made
    (one per ledger, or `instrument(into=...)`) and did not close were lost without a word."""
    path = tmp_path / "exit.duckdb"
    script = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from unitcost import Recorder
        from fake_providers import chat_completion
        recorder = Recorder({str(path)!r}, flush_interval=3600)
        for i in range(3):
            recorder.record(chat_completion("gpt-4o-mini"), team="nightly", event_id=f"n-{{i}}")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], check=False, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert [r["event_id"] for r in rows(path)] == ["n-0", "n-1", "n-2"]


def test_records_waiting_behind_a_refused_batch_are_kept_with_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ledger that stays unwritable (a full disk) while the app records: each batch went through
    all the retries alone, so the queue grew in memory faster than it was kept on disk. What waits
    behind the refused batch is now kept with it, and the next records try the ledger afresh."""
    from unitcost.connectors import writer as writer_module
    from unitcost.connectors.unwritten import Unwritten

    monkeypatch.setattr(writer_module, "RETRIES", 1)
    all_queued = threading.Event()
    opened: list[int] = []

    def unwritable() -> Ledger:
        opened.append(1)
        all_queued.wait(60)  # the app records on while the first write is under way
        raise OSError(28, "No space left on device (simulated)")

    unwritten = Unwritten(tmp_path / "l.duckdb", tmp_path / "kept")
    writer = writer_module.BatchWriter(unwritable, source="sdk", max_batch=1, unwritten=unwritten)
    for i in range(3):
        writer.submit([{"event_id": f"k-{i}", "model": "gpt-4o-mini", "input_tokens": 5}], wait=False)
    all_queued.set()
    assert writer.flush(timeout=60)
    writer.close()
    kept = [
        json.loads(line)["event_id"] for file in unwritten.files() for line in file.read_text().splitlines()
    ]
    assert sorted(kept) == ["k-0", "k-1", "k-2"]
    assert len(opened) == 1 + writer_module.RETRIES  # one batch's attempts, not one round per batch
    assert len(unwritten.files()) == 1
