"""What the gateway records and settles when upstreams answer like the real providers, and when
they go wrong: OpenRouter's usage accounting, Anthropic thinking tokens, replies without
usage, Responses streams that fail, upstream streams that break or stall, and fallbacks under
a budget. A real gateway process, the official SDKs (or httpx for raw streams), and the fake
upstream of fake_providers.py on 127.0.0.1."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from fake_providers import (
    ANTHROPIC_USAGE,
    FAILED_RESPONSES_USAGE,
    anthropic_events,
    anthropic_message,
    fake_provider_app,
    openrouter_completion,
    serve_app,
)
from gateway_support import (
    GATEWAY_KEY,
    GatewayProcess,
    an,
    event,
    free_port,
    oa,
    unique,
    wait_for_event,
    write_config,
)
from unitcost.connectors.responses import normalise_response
from unitcost.events import TOKEN_FIELDS
from unitcost.gateway.budgets import pico_to_nano_ceil
from unitcost.gateway.estimate import WorstCase
from unitcost.gateway.tokens import count_prompt
from unitcost.gateway.usage import NO_FINAL_USAGE

HEADERS = {"authorization": f"Bearer {GATEWAY_KEY}"}
NO_USAGE = "the provider reported no usage"


def extra(fake_url: str, dead_port: int) -> str:
    return f"""
[gateway.upstreams.openrouter]
kind = "openai"
base_url = "{fake_url}/api/v1"
api_key_env = "SIM_OPENAI_KEY"
provider = "openrouter"
models = ["anthropic/claude-sonnet-4.5"]

[gateway.upstreams.reasoning]
kind = "openai"
base_url = "{fake_url}/v1"
api_key_env = "SIM_OPENAI_KEY"
models = ["o3"]

[gateway.upstreams.impatient]
kind = "openai"
base_url = "{fake_url}/v1"
api_key_env = "SIM_OPENAI_KEY"
timeout_s = 1

[gateway.models.impatient-mini]
upstream = "impatient"
model = "gpt-4o-mini"

[gateway.upstreams.down]
kind = "openai"
base_url = "http://127.0.0.1:{dead_port}/v1"
api_key_env = "SIM_OPENAI_KEY"

[gateway.models.cheap]
upstream = "down"
model = "gpt-4o-mini"
fallbacks = ["o3"]

[[gateway.budgets]]
name = "per-customer"
scope = "customer"
limit_usd = "0.02"
action = "block"

[[gateway.budgets]]
name = "per-probe"
scope = "tag:probe"
limit_usd = "1"
action = "block"
"""


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GatewayProcess, Path]]:
    directory = tmp_path_factory.mktemp("gateway")
    with serve_app(fake_provider_app()) as fake_url:
        port = free_port()
        config = write_config(directory, fake_url, port, extra(fake_url, free_port()))
        with GatewayProcess(config, port) as process:
            yield process, directory


def tokens_of(fields: dict[str, Any]) -> dict[str, int]:
    return {name: fields.get(name, 0) for name in TOKEN_FIELDS}


def reservation_usd(book: Any, model: str, body: dict[str, Any], max_tokens: int) -> Decimal:
    """What the gateway reserves for `body` sent to an OpenAI model (no fallbacks)."""
    pico = WorstCase(book).worst_case_pico("openai", model, count_prompt(body), max_tokens)
    return Decimal(pico_to_nano_ceil(pico)).scaleb(-9)


# ------------------------------------------------------------------ usage read as record() reads it


def test_openrouter_cache_writes_and_billed_cost_are_recorded(gateway, book) -> None:
    gw, directory = gateway
    model = "anthropic/claude-sonnet-4.5"
    raw = oa(gw).chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": unique()}]
    )
    record = event(directory, raw.headers)
    expected = normalise_response(openrouter_completion(model))
    assert tokens_of(record) == tokens_of(expected)
    assert record["cache_write_5m_tokens"] == 2500
    assert Decimal(record["billed_cost"]) == expected["billed_cost"] == Decimal("0.0249")
    price = book.price(model, provider="openrouter", **tokens_of(expected))
    assert Decimal(raw.headers["x-unitcost-cost"]) == price.cost


def test_anthropic_thinking_tokens_are_reasoning_tokens(gateway) -> None:
    gw, directory = gateway
    model = "claude-sonnet-4-5"
    expected = tokens_of(normalise_response(anthropic_message(model)))
    assert expected["reasoning_tokens"] == 412
    raw = an(gw).messages.with_raw_response.create(
        model=model, max_tokens=1000, messages=[{"role": "user", "content": unique()}]
    )
    assert tokens_of(event(directory, raw.headers)) == expected
    with an(gw).messages.stream(
        model=model, max_tokens=1000, messages=[{"role": "user", "content": unique()}]
    ) as stream:
        stream.until_done()
        headers = stream.response.headers
    assert tokens_of(event(directory, headers)) == tokens_of(normalise_response(anthropic_events(model)))


# ------------------------------------------------------------------ no usage: unpriced, never $0


def _no_usage_request() -> tuple[dict[str, str], dict[str, Any]]:
    """A budget line of its own (the probe tag) and a body the fake upstream answers without usage."""
    probe = {"x-unitcost-tags": f"probe={uuid.uuid4().hex}"}
    body = {
        "model": "gpt-4o",
        "max_tokens": 500,
        "messages": [{"role": "user", "content": unique("fake:no-usage")}],
    }
    return probe, body


def test_a_reply_without_usage_is_unpriced_and_keeps_its_reservation(gateway, book) -> None:
    gw, directory = gateway
    probe, body = _no_usage_request()
    raw = oa(gw).chat.completions.with_raw_response.create(**body, extra_headers=probe)
    assert raw.headers["x-unitcost-cost"] == "unpriced"
    record = event(directory, raw.headers)
    assert record["tags"]["usage_unknown"] == NO_USAGE
    assert record["status"] == "ok" and "input_tokens" not in record
    reserved = reservation_usd(book, "gpt-4o", body, 500)
    assert Decimal(raw.headers["x-unitcost-budget-remaining"]) == 1 - reserved
    # What is held is in the event, for the budget lines rebuilt from the ledger after a restart.
    assert Decimal(record["tags"]["reserved_usd"]) == reserved


def test_a_stream_without_usage_is_unpriced_and_keeps_its_reservation(gateway, book) -> None:
    gw, directory = gateway
    probe, body = _no_usage_request()
    stream = oa(gw).chat.completions.with_raw_response.create(
        **body, stream=True, stream_options={"include_usage": True}, extra_headers=probe
    )
    assert [chunk.usage for chunk in stream.parse()][-1] is None  # the upstream sent none
    record = event(directory, stream.headers)
    assert record["tags"]["usage_unknown"] == NO_USAGE
    # The next call on the same budget line sees the stream's reservation kept, not $0.
    follow = {"model": "gpt-4o", "max_tokens": 500, "messages": [{"role": "user", "content": unique()}]}
    raw = oa(gw).chat.completions.with_raw_response.create(**follow, extra_headers=probe)
    spent = reservation_usd(book, "gpt-4o", body, 500) + Decimal(raw.headers["x-unitcost-cost"])
    assert Decimal(raw.headers["x-unitcost-budget-remaining"]) == 1 - spent


# ------------------------------------------------------------------ streams that fail


def test_a_responses_stream_ending_in_response_failed_is_an_error_with_its_usage(gateway) -> None:
    gw, directory = gateway
    streamed = oa(gw).responses.with_raw_response.create(
        model="gpt-4o", input=unique("fake:failed"), stream=True
    )
    kinds = [e.type for e in streamed.parse()]
    assert kinds[-1] == "response.failed"
    record = event(directory, streamed.headers)
    assert record["status"] == "error"
    assert (record["input_tokens"], record["cache_read_tokens"], record["output_tokens"]) == (
        FAILED_RESPONSES_USAGE["input_tokens"],
        4096,
        FAILED_RESPONSES_USAGE["output_tokens"],
    )
    completed = oa(gw).responses.with_raw_response.create(model="gpt-4o", input=unique(), stream=True)
    assert [e.type for e in completed.parse()][-1] == "response.completed"
    assert event(directory, completed.headers)["status"] == "ok"


@pytest.mark.parametrize(
    ("model", "how", "status"),
    [("gpt-4o-mini", "stream-break", "error"), ("impatient-mini", "stream-stall", "timeout")],
)
def test_an_upstream_stream_that_breaks_or_stalls_closes_the_client_connection(
    gateway, model: str, how: str, status: str
) -> None:
    gw, directory = gateway
    body = {"model": model, "stream": True, "messages": [{"role": "user", "content": unique(f"fake:{how}")}]}
    # The client's read timeout only bounds the test: the gateway closes the connection as soon as
    # the upstream fails (the stalled upstream: after its timeout_s of 1 s), far sooner.
    with (
        httpx.Client(timeout=30) as http,
        http.stream("POST", gw.url + "/v1/chat/completions", json=body, headers=HEADERS) as response,
    ):
        event_id = response.headers["x-unitcost-event-id"]
        with pytest.raises(httpx.RemoteProtocolError, match="incomplete chunked read"):
            for _ in response.iter_raw():
                pass
    record = wait_for_event(directory, event_id)
    assert record["status"] == status and record["tags"]["usage_unknown"] == NO_USAGE


def test_an_anthropic_stream_cut_before_its_final_usage_is_not_priced_as_a_one_token_answer(
    gateway,
) -> None:
    """message_start says output_tokens 1 (a placeholder); the real count comes in message_delta.
    A stream that breaks in between keeps the prompt's tokens and says the output is not known."""
    gw, directory = gateway
    body = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 400,
        "stream": True,
        "messages": [{"role": "user", "content": unique("fake:stream-break")}],
    }
    headers = {"x-api-key": GATEWAY_KEY, "anthropic-version": "2023-06-01"}
    with (
        httpx.Client(timeout=30) as http,
        http.stream("POST", gw.url + "/v1/messages", json=body, headers=headers) as response,
    ):
        event_id = response.headers["x-unitcost-event-id"]
        with pytest.raises(httpx.RemoteProtocolError):
            for _ in response.iter_raw():
                pass
    record = wait_for_event(directory, event_id)
    assert record["status"] == "error"
    assert record["tags"]["usage_unknown"] == NO_FINAL_USAGE
    assert (
        record["input_tokens"]
        == ANTHROPIC_USAGE["input_tokens"]
        + ANTHROPIC_USAGE["cache_read_input_tokens"]
        + ANTHROPIC_USAGE["cache_creation_input_tokens"]
    )
    assert record.get("cost") is None


# ------------------------------------------------------------------ fallbacks under a budget


def test_fallbacks_are_reserved_so_a_budget_holds_when_the_primary_fails(gateway) -> None:
    gw, directory = gateway
    customer = {"x-unitcost-tags": f"customer={uuid.uuid4().hex}"}

    async def run() -> list[Any]:
        client = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key=GATEWAY_KEY, max_retries=0)
        calls = [
            client.chat.completions.with_raw_response.create(
                model="cheap",
                max_tokens=1000,
                messages=[{"role": "user", "content": unique()}],
                extra_headers=customer,
            )
            for _ in range(20)
        ]
        results = await asyncio.gather(*calls, return_exceptions=True)
        await client.close()
        return results

    results = asyncio.run(run())
    served = [r for r in results if not isinstance(r, BaseException)]
    blocked = [r for r in results if isinstance(r, openai.RateLimitError)]
    assert served and len(served) + len(blocked) == len(results)
    assert {event(directory, r.headers)["model"] for r in served} == {"o3"}  # gpt-4o-mini's upstream is down
    spent = sum(Decimal(r.headers["x-unitcost-cost"]) for r in served)
    assert spent <= Decimal("0.02")
