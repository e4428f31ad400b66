"""unitcost.instrument() with the SDKs' other ways of calling: `with_streaming_response` (the
body read by the caller however it likes, sync and async), the SDKs' own retries (each failed
attempt kept, the retry linked to it), embeddings and `beta.responses`.

The real `openai` and `anthropic` clients talk to a fake provider on 127.0.0.1 that reports
usage exactly as the APIs do (`fake_providers`), with a few routes added here: embeddings, and
models that fail the first attempt (429) or every attempt (500).
"""

from __future__ import annotations

import asyncio
import base64
import csv
import gzip
import json
import logging
import struct
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import anthropic
import httpx2
import openai
import orjson
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from typer.testing import CliRunner

import unitcost
from fake_providers import (
    ANTHROPIC_USAGE,
    CHAT_USAGE,
    RESPONSES_USAGE,
    anthropic_events,
    fake_provider_app,
    serve_app,
)
from unitcost.api import Ledger
from unitcost.cli import app
from unitcost.config import Config
from unitcost.connectors import importers
from unitcost.connectors.recorder import Recorder

HI = [{"role": "user", "content": "hi"}]
EMBEDDING_USAGE = {"prompt_tokens": 8, "total_tokens": 8}
ANTHROPIC_INPUT = (
    ANTHROPIC_USAGE["input_tokens"]
    + ANTHROPIC_USAGE["cache_read_input_tokens"]
    + ANTHROPIC_USAGE["cache_creation_input_tokens"]
)


async def _embeddings(request: Request) -> Response:
    body = await request.json()
    vector = [0.25, -0.5, 1.0]
    encoded: Any = vector
    if body.get("encoding_format") == "base64":  # what the SDK asks for unless told otherwise
        encoded = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
    return JSONResponse(
        {
            "object": "list",
            "data": [{"object": "embedding", "index": 0, "embedding": encoded}],
            "model": body["model"],
            "usage": EMBEDDING_USAGE,
        }
    )


def _failing(request: Request, model: str) -> Response | None:
    """`flaky-*` models fail their first attempt with a 429, `down-*` models every attempt with a 500."""
    first = request.headers.get("x-stainless-retry-count", "0") == "0"
    anthropic_shape = request.url.path.endswith("/messages")
    if model.startswith("flaky") and first:
        status, kind = 429, "rate_limit_error"
    elif model.startswith("down"):
        status, kind = 500, "api_error"
    else:
        return None
    error = {"type": kind, "message": "try again"}
    body = {"type": "error", "error": error} if anthropic_shape else {"error": {**error, "code": None}}
    return JSONResponse(body, status_code=status, headers={"retry-after-ms": "1"})


def provider_app() -> Starlette:
    upstream = fake_provider_app()
    handlers = {route.path: route.endpoint for route in upstream.routes}

    def failing_first(path: str) -> Any:
        async def handle(request: Request) -> Response:
            body = await request.json()
            failure = _failing(request, body["model"])
            if failure is not None:
                return failure
            return await handlers[path](request)

        return handle

    routes = [Route(path, failing_first(path), methods=["POST"]) for path in handlers]
    return Starlette(routes=[*routes, Route("/v1/embeddings", _embeddings, methods=["POST"])])


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    with serve_app(provider_app()) as url:
        yield url


def rows(recorded: tuple[Recorder, Path]) -> list[dict[str, Any]]:
    recorder, path = recorded
    recorder.close()
    with Ledger(path, config=Config()) as ledger:
        return ledger.store.fetch("SELECT * FROM events ORDER BY ts").to_pylist()


def by_feature(recorded: tuple[Recorder, Path]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for row in rows(recorded):
        assert row["feature"] not in found, f"{row['feature']} recorded twice"
        found[row["feature"]] = row
    return found


def assert_chat_usage(row: dict[str, Any]) -> None:
    details = CHAT_USAGE["prompt_tokens_details"], CHAT_USAGE["completion_tokens_details"]
    assert (row["input_tokens"], row["output_tokens"]) == (
        CHAT_USAGE["prompt_tokens"],
        CHAT_USAGE["completion_tokens"],
    )
    assert (row["cache_read_tokens"], row["reasoning_tokens"]) == (
        details[0]["cached_tokens"],
        details[1]["reasoning_tokens"],
    )
    assert row["status"] == "ok" and row["cost"] is not None


def assert_anthropic_usage(row: dict[str, Any]) -> None:
    split = ANTHROPIC_USAGE["cache_creation"]
    assert (row["input_tokens"], row["cache_read_tokens"]) == (
        ANTHROPIC_INPUT,
        ANTHROPIC_USAGE["cache_read_input_tokens"],
    )
    assert (row["cache_write_5m_tokens"], row["cache_write_1h_tokens"]) == (
        split["ephemeral_5m_input_tokens"],
        split["ephemeral_1h_input_tokens"],
    )
    assert (row["output_tokens"], row["reasoning_tokens"]) == (
        ANTHROPIC_USAGE["output_tokens"],
        ANTHROPIC_USAGE["output_tokens_details"]["thinking_tokens"],
    )
    assert row["status"] == "ok" and row["cost"] is not None


def test_streaming_response_is_recorded_however_the_caller_reads_the_body(
    upstream: str, recorded: tuple[Recorder, Path]
) -> None:
    oai = openai.OpenAI(base_url=upstream + "/v1", api_key="sk-test-not-a-secret", max_retries=0)
    claude = anthropic.Anthropic(base_url=upstream, api_key="sk-ant-test", max_retries=0)
    with (
        unitcost.tags(feature="parse"),
        oai.chat.completions.with_streaming_response.create(model="gpt-4o", messages=HI) as response,
    ):
        completion = response.parse()
    assert completion.usage is not None and completion.usage.prompt_tokens == CHAT_USAGE["prompt_tokens"]
    with (
        unitcost.tags(feature="sse-lines"),
        oai.responses.with_streaming_response.create(model="o4-mini", input="hi", stream=True) as response,
    ):
        lines = list(response.iter_lines())
    # The caller got every line of the event stream: nothing was read on its behalf.
    events = [orjson.loads(line[len("data: ") :]) for line in lines if line.startswith("data: ")]
    assert [e["type"] for e in events][-1] == "response.completed"
    with (
        unitcost.tags(feature="sse-events"),
        claude.messages.with_streaming_response.create(
            model="claude-sonnet-4-6", max_tokens=10, messages=HI, stream=True
        ) as response,
    ):
        kinds = [event.type for event in response.parse()]
    assert kinds == [e["type"] for e in anthropic_events("claude-sonnet-4-6") if e["type"] != "ping"]
    with (
        unitcost.tags(feature="bytes"),
        claude.messages.with_streaming_response.create(
            model="claude-sonnet-4-6", max_tokens=10, messages=HI
        ) as response,
    ):
        body = orjson.loads(b"".join(response.iter_bytes(chunk_size=7)))
    assert body["usage"] == ANTHROPIC_USAGE

    found = by_feature(recorded)
    assert_chat_usage(found["parse"])
    assert found["parse"]["served_model"] == "gpt-4o-2024-08-06"
    responses = found["sse-lines"]
    details = RESPONSES_USAGE["input_tokens_details"]
    assert (responses["input_tokens"], responses["output_tokens"]) == (
        RESPONSES_USAGE["input_tokens"],
        RESPONSES_USAGE["output_tokens"],
    )
    assert (responses["cache_read_tokens"], responses["cache_write_1h_tokens"]) == (
        details["cached_tokens"],
        details["cache_write_tokens"],
    )
    assert responses["reasoning_tokens"] == RESPONSES_USAGE["output_tokens_details"]["reasoning_tokens"]
    assert responses["ttft_ms"] is not None and responses["cost"] is not None
    assert_anthropic_usage(found["sse-events"])
    assert_anthropic_usage(found["bytes"])


def test_async_streaming_response_is_recorded(upstream: str, recorded: tuple[Recorder, Path]) -> None:
    async def calls() -> tuple[list[Any], dict[str, Any]]:
        oai = openai.AsyncOpenAI(base_url=upstream + "/v1", api_key="sk-test-not-a-secret", max_retries=0)
        claude = anthropic.AsyncAnthropic(base_url=upstream, api_key="sk-ant-test", max_retries=0)
        with unitcost.tags(feature="async-stream"):
            async with oai.chat.completions.with_streaming_response.create(
                model="gpt-4o-mini", messages=HI, stream=True, stream_options={"include_usage": True}
            ) as response:
                chunks = [chunk async for chunk in await response.parse()]
        with unitcost.tags(feature="async-json"):
            async with claude.messages.with_streaming_response.create(
                model="claude-sonnet-4-6", max_tokens=10, messages=HI
            ) as response:
                body = await response.json()
        return chunks, body

    chunks, body = asyncio.run(calls())
    assert chunks[-1].usage.prompt_tokens == CHAT_USAGE["prompt_tokens"]
    assert body["usage"] == ANTHROPIC_USAGE
    found = by_feature(recorded)
    assert_chat_usage(found["async-stream"])
    assert found["async-stream"]["model"] == "gpt-4o-mini"
    assert_anthropic_usage(found["async-json"])


def test_streaming_response_closed_unread_is_kept_unpriced_with_the_reason(
    upstream: str, recorded: tuple[Recorder, Path]
) -> None:
    oai = openai.OpenAI(base_url=upstream + "/v1", api_key="sk-test-not-a-secret", max_retries=0)
    claude = anthropic.Anthropic(base_url=upstream, api_key="sk-ant-test", max_retries=0)
    with (
        unitcost.tags(feature="unread"),
        oai.chat.completions.with_streaming_response.create(model="gpt-4o", messages=HI) as response,
    ):
        assert response.http_response.status_code == 200
    with (
        unitcost.tags(feature="stopped"),
        claude.messages.with_streaming_response.create(
            model="claude-sonnet-4-6", max_tokens=10, messages=HI, stream=True
        ) as response,
    ):
        for event in response.parse():
            if event.type == "content_block_start":
                break
    # Read raw, the body's failure is the HTTP client's own error.
    broken_call = oai.chat.completions.with_streaming_response.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "fake:stream-break"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    with unitcost.tags(feature="broken"), pytest.raises(httpx2.RemoteProtocolError), broken_call as response:
        for _ in response.iter_lines():
            pass
    found = by_feature(recorded)
    broken = found["broken"]
    assert (broken["status"], broken["cost"]) == ("error", None)
    assert "failed before its usage" in broken["unpriced_reason"]
    unread = found["unread"]
    assert (unread["status"], unread["model"], unread["cost"]) == ("ok", "gpt-4o", None)
    assert "closed before it was read" in unread["unpriced_reason"]
    stopped = found["stopped"]
    # message_start had the prompt; the output count is a placeholder until message_delta.
    assert (stopped["status"], stopped["input_tokens"], stopped["cost"]) == (
        "cancelled",
        ANTHROPIC_INPUT,
        None,
    )
    assert "message_delta" in stopped["unpriced_reason"]


def test_a_failing_recorder_never_breaks_a_streaming_response(
    upstream: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    closed = Recorder(tmp_path / "l.duckdb")
    closed.close()  # record() now raises: the call must go on regardless, and the log say why
    unitcost.instrument(into=closed)
    try:
        oai = openai.OpenAI(base_url=upstream + "/v1", api_key="sk-test-not-a-secret", max_retries=0)
        with (
            caplog.at_level(logging.WARNING, logger="unitcost.instrument"),
            oai.chat.completions.with_streaming_response.create(
                model="gpt-4o", messages=HI, stream=True, stream_options={"include_usage": True}
            ) as response,
        ):
            chunks = list(response.parse())
    finally:
        unitcost.uninstrument()
    assert chunks[-1].usage.completion_tokens == CHAT_USAGE["completion_tokens"]
    assert [r.getMessage() for r in caplog.records] == [
        "unitcost: call not recorded: this unitcost recorder is closed: its events would not be written"
    ]


def test_sdk_retries_are_recorded_as_failed_attempts_and_their_retry(
    upstream: str, recorded: tuple[Recorder, Path]
) -> None:
    oai = openai.OpenAI(base_url=upstream + "/v1", api_key="sk-test-not-a-secret", max_retries=2)
    claude = anthropic.AsyncAnthropic(base_url=upstream, api_key="sk-ant-test", max_retries=2)
    with unitcost.tags(feature="flaky"):
        completion = oai.chat.completions.create(model="flaky-gpt-4o", messages=HI)
    assert completion.usage is not None

    async def down() -> None:
        with unitcost.tags(feature="down"), pytest.raises(anthropic.InternalServerError):
            await claude.messages.create(model="down-claude", max_tokens=10, messages=HI)

    asyncio.run(down())
    found = rows(recorded)
    flaky = [r for r in found if r["feature"] == "flaky"]
    assert [(r["attempt"], r["status"], r["http_status"]) for r in flaky] == [
        (1, "error", 429),
        (2, "ok", None),
    ]
    assert flaky[1]["retry_of"] == flaky[0]["event_id"] and flaky[0]["retry_of"] is None
    assert flaky[0]["input_tokens"] == 0 and flaky[1]["input_tokens"] == CHAT_USAGE["prompt_tokens"]
    failed = [r for r in found if r["feature"] == "down"]
    assert [(r["attempt"], r["status"], r["http_status"]) for r in failed] == [
        (1, "error", 500),
        (2, "error", 500),
        (3, "error", 500),
    ]
    assert [r["retry_of"] for r in failed] == [None, failed[0]["event_id"], failed[1]["event_id"]]


def test_embeddings_and_beta_apis_are_recorded(upstream: str, recorded: tuple[Recorder, Path]) -> None:
    oai = openai.OpenAI(base_url=upstream + "/v1", api_key="sk-test-not-a-secret", max_retries=0)
    with unitcost.tags(feature="embeddings"):
        vectors = oai.embeddings.create(model="text-embedding-3-small", input="hello")
    assert vectors.data[0].embedding == [0.25, -0.5, 1.0]
    with unitcost.tags(feature="embeddings-raw"):
        oai.embeddings.with_raw_response.create(model="text-embedding-3-small", input="hello").parse()
    with unitcost.tags(feature="beta-responses"):
        oai.beta.responses.create(model="o4-mini", input="hi")
    with unitcost.tags(feature="beta-parse"):
        oai.beta.chat.completions.parse(model="gpt-4o", messages=HI)
    found = by_feature(recorded)
    for name in ("embeddings", "embeddings-raw"):
        row = found[name]
        assert (row["operation"], row["input_tokens"], row["output_tokens"]) == ("embeddings", 8, 0)
        assert row["cost"] is not None, row["unpriced_reason"]
    assert found["beta-responses"]["input_tokens"] == RESPONSES_USAGE["input_tokens"]
    assert found["beta-responses"]["operation"] == "responses"
    assert_chat_usage(found["beta-parse"])


# --------------------------------------------------------------------------- unitcost import


def litellm_row(request_id: str, **fields: Any) -> dict[str, Any]:
    """A LiteLLM_SpendLogs row as its export writes it."""
    return {
        "request_id": request_id,
        "call_type": "acompletion",
        "api_key": "88dc28d0f030c55ed4ab77ed8faf098196cb1c05df778539800c9f1243fe6b4b",
        "spend": 0.0076,
        "startTime": "2025-09-01T10:00:00.000Z",
        "endTime": "2025-09-01T10:00:02.500Z",
        "model": "gpt-4o",
        "custom_llm_provider": "openai",
        "prompt_tokens": 1834,
        "completion_tokens": 412,
        "metadata": {
            "usage_object": {
                "prompt_tokens": 1834,
                "completion_tokens": 412,
                "prompt_tokens_details": {"cached_tokens": 1024},
                "completion_tokens_details": {"reasoning_tokens": 256},
            }
        },
        "messages": [{"role": "user", "content": "hi"}],
        "response": {"choices": [{"message": {"content": "Hello.\nHow can I help?"}}]},
        **fields,
    }


def write_litellm_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    """Nested columns as JSON text, as a database tool exports the SpendLogs table: the
    response pretty-printed, so a row spans several lines of the file."""
    names = list(rows[0])
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=names)
        writer.writeheader()
        for row in rows:
            writer.writerow(
                {
                    k: json.dumps(v, indent=2 if k == "response" else None)
                    if isinstance(v, (dict, list))
                    else v
                    for k, v in row.items()
                }
            )


def imported(path: Path, kind: str = "litellm") -> tuple[int, str]:
    result = CliRunner().invoke(app, ["import", kind, str(path), "--ledger", str(path.parent / "l.duckdb")])
    return result.exit_code, result.output


def test_import_names_the_line_of_each_bad_row_and_keeps_the_good_ones(tmp_path: Path) -> None:
    # JSON lines with blank lines between them (a concatenation of daily dumps).
    lines = tmp_path / "spend.jsonl"
    good, negative = litellm_row("r-1"), litellm_row("r-2", prompt_tokens=-4, metadata={})
    lines.write_text(f"{json.dumps(good)}\n\n{json.dumps(negative)}\nnot json\n")
    code, output = imported(lines)
    assert code == 1
    assert "1 events accepted" in output and "2 rejected" in output
    assert "item 2 (line 3): prompt_tokens: negative count -4" in output
    assert "item 3 (line 4): record: malformed JSON" in output
    # CSV: an answer with line breaks spans several lines, a long conversation is one huge field.
    table = tmp_path / "spend.csv"
    long_prompt = [{"role": "user", "content": "x" * 300_000}]
    write_litellm_csv(
        table,
        [
            litellm_row("c-1", messages=long_prompt),
            litellm_row("c-2", startTime="yesterday"),
            litellm_row("c-3"),
        ],
    )
    code, output = imported(table)
    assert code == 1, output
    assert "2 events accepted" in output
    second = next(n for n, text in enumerate(table.read_text().splitlines(), 1) if text.startswith("c-2,"))
    assert second > 3  # row 1 spans several lines: the item number is not the line
    assert f"item 2 (line {second}): startTime: not a timestamp: 'yesterday'" in output
    code, output = imported(table)  # the same file again changes nothing
    assert "0 events accepted, 2 duplicates" in output
    with Ledger(tmp_path / "l.duckdb", config=Config()) as ledger:
        found = ledger.store.fetch("SELECT * FROM events WHERE event_id = 'litellm:c-1'").to_pylist()
    row = found[0]
    assert (row["input_tokens"], row["cache_read_tokens"], row["reasoning_tokens"]) == (1834, 1024, 256)
    assert row["billed_cost"] == Decimal("0.0076") and row["latency_ms"] == 2500.0


def test_a_large_file_is_ingested_in_bounded_batches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importers, "BATCH", 2)
    rows = [litellm_row(f"r-{n}") for n in range(7)]
    # Item 6 passes the importer but not the ledger's check (reasoning beyond the output): the
    # rejection found in the third batch must still name item 6 and its line.
    rows[5]["metadata"]["usage_object"] = {
        "prompt_tokens": 10,
        "completion_tokens": 5,
        "completion_tokens_details": {"reasoning_tokens": 9},
    }
    path = tmp_path / "spend.jsonl.gz"
    path.write_bytes(gzip.compress(("\n".join(json.dumps(r) for r in rows) + "\n").encode()))
    sizes: list[int] = []
    with Ledger(tmp_path / "l.duckdb", config=Config()) as ledger:
        ingest = ledger.ingest_records

        def spy(records: Any, **kwargs: Any) -> Any:
            records = list(records)
            sizes.append(len(records))
            return ingest(records, **kwargs)

        monkeypatch.setattr(ledger, "ingest_records", spy)
        result = importers.import_file(ledger, "litellm", path)
        assert (result.read, result.accepted, result.rejected) == (7, 6, 1)
        assert [(r.record, r.field) for r in result.rejections] == [(6, "reasoning_tokens")]
        assert result.where(result.rejections[0]) == "item 6 (line 6)"
        assert max(sizes) == 2 and sum(sizes) == 7
        again = importers.import_file(ledger, "litellm", path)
        assert (again.accepted, again.duplicates) == (0, 6)
        assert ledger.count() == 6
        # Streamed in batches, a file that cannot be read to its end is still refused before
        # its first batch is written: the cut is found in a first, cheap pass.
        cut = tmp_path / "cut.jsonl.gz"
        cut.write_bytes(path.read_bytes()[:-6])  # the download was cut: the gzip trailer is missing
        sizes.clear()
        with pytest.raises(importers.ImportFileError, match="gzip"):
            importers.import_file(ledger, "litellm", cut)
        assert sizes == []
