"""unitcost.instrument() keeps every call the SDKs make: streams without usage, streams that break
or are closed early, raw responses, structured-output parsing and Anthropic's stream helper."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest

import unitcost
from fake_providers import ANTHROPIC_USAGE, CHAT_USAGE, fake_provider_app, serve_app
from unitcost.api import Ledger
from unitcost.config import Config
from unitcost.connectors.recorder import Recorder

HI = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    with serve_app(fake_provider_app()) as url:
        yield url


@pytest.fixture
def clients(upstream: str) -> tuple[openai.OpenAI, anthropic.Anthropic]:
    return (
        openai.OpenAI(base_url=upstream + "/v1", api_key="sk-test-not-a-secret", max_retries=0),
        anthropic.Anthropic(base_url=upstream, api_key="sk-ant-test", max_retries=0),
    )


def by_feature(recorder: Recorder, path: Path) -> dict[str, dict[str, Any]]:
    recorder.close()
    with Ledger(path, config=Config()) as ledger:
        found = ledger.store.fetch("SELECT * FROM events").to_pylist()
    return {r["feature"]: r for r in found}


def test_a_stream_without_usage_is_kept_unpriced_with_the_reason(
    clients: tuple[openai.OpenAI, anthropic.Anthropic], recorded: tuple[Recorder, Path]
) -> None:
    oai, _ = clients
    with unitcost.tags(feature="no-usage"):
        chunks = list(oai.chat.completions.create(model="gpt-4o-mini", messages=HI, stream=True))
    assert chunks  # the caller's stream is untouched
    row = by_feature(*recorded)["no-usage"]
    assert (row["model"], row["status"], row["input_tokens"]) == ("gpt-4o-mini", "ok", 0)
    assert row["cost"] is None  # not priced as zero tokens
    assert "include_usage" in row["unpriced_reason"]


def test_streams_that_break_or_are_closed_early_are_recorded(
    clients: tuple[openai.OpenAI, anthropic.Anthropic], recorded: tuple[Recorder, Path]
) -> None:
    oai, claude = clients
    with unitcost.tags(feature="broken"), pytest.raises(openai.APIConnectionError):
        for _ in oai.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "fake:stream-break"}],
            stream=True,
            stream_options={"include_usage": True},
        ):
            pass
    with unitcost.tags(feature="closed"):
        events = claude.messages.create(model="claude-sonnet-4-6", max_tokens=10, messages=HI, stream=True)
        for _ in events:
            break
        events.close()
    found = by_feature(*recorded)
    broken = found["broken"]
    assert broken["status"] == "error"
    assert broken["cost"] is None and "failed" in broken["unpriced_reason"]
    closed = found["closed"]
    # message_start reported the whole prompt before the caller stopped reading; its output count
    # is a placeholder (1 token), so the call is kept unpriced rather than priced as a 1-token answer.
    assert closed["status"] == "cancelled"
    assert closed["input_tokens"] == (
        ANTHROPIC_USAGE["input_tokens"]
        + ANTHROPIC_USAGE["cache_read_input_tokens"]
        + ANTHROPIC_USAGE["cache_creation_input_tokens"]
    )
    assert closed["cost"] is None and "message_delta" in closed["unpriced_reason"]


def test_raw_responses_structured_outputs_and_the_anthropic_stream_helper(
    clients: tuple[openai.OpenAI, anthropic.Anthropic], recorded: tuple[Recorder, Path]
) -> None:
    oai, claude = clients
    with unitcost.tags(feature="raw"):
        raw = oai.chat.completions.with_raw_response.create(model="gpt-4o", messages=HI)
        assert raw.headers is not None
        assert raw.parse().usage.prompt_tokens == CHAT_USAGE["prompt_tokens"]
    with unitcost.tags(feature="parse"):
        oai.chat.completions.parse(model="gpt-4o-mini", messages=HI)
    with (
        unitcost.tags(feature="helper"),
        claude.messages.stream(model="claude-sonnet-4-6", max_tokens=10, messages=HI) as stream,
    ):
        final = stream.get_final_message()
    assert final.usage.output_tokens == ANTHROPIC_USAGE["output_tokens"]
    found = by_feature(*recorded)
    assert found["raw"]["input_tokens"] == CHAT_USAGE["prompt_tokens"]
    assert found["raw"]["served_model"] == "gpt-4o-2024-08-06"
    assert found["parse"]["cache_read_tokens"] == CHAT_USAGE["prompt_tokens_details"]["cached_tokens"]
    helper = found["helper"]
    assert (helper["status"], helper["output_tokens"]) == ("ok", ANTHROPIC_USAGE["output_tokens"])
    assert helper["cache_write_1h_tokens"] == ANTHROPIC_USAGE["cache_creation"]["ephemeral_1h_input_tokens"]
    assert all(r["cost"] is not None for r in found.values())
