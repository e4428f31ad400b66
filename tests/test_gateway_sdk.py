"""The official openai and anthropic SDKs, unchanged but for base_url and key, through a real
gateway process to the simulated provider on 127.0.0.1."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest

from gateway_support import (
    GATEWAY_KEY,
    OTHER_KEY,
    GatewayProcess,
    an,
    event,
    free_port,
    oa,
    simulator,
    spooled,
    unique,
    wait_for_event,
    write_config,
)

EXTRA = r"""
[gateway.cache]
enabled = true
ttl_s = 600

[gateway.models.flaky]
upstream = "sim-openai"
model = "gpt-4o-mini"
fallbacks = ["gpt-4o"]

[gateway.routes.auto]
light = "gpt-4o-mini"
strong = "gpt-4o"
keywords = ["prove"]
escalate_on_tools = true
max_prompt_tokens = 200
max_tokens_cap = 50
reasoning_effort_cap = "low"

[gateway.routes.careful]
mode = "cascade"
light = "gpt-4o-mini"
strong = "gpt-4o"
check = { regex = '^\[gpt-4o\]' }

[[gateway.budgets]]
name = "capped-feature"
scope = "tag:feature"
match = "capped"
period = "day"
timezone = "Europe/Paris"
limit_usd = "0.0005"
action = "block"

[[gateway.budgets]]
name = "agent-guard"
scope = "trace"
max_calls = 2
action = "block"

[[gateway.budgets]]
name = "cheapco"
scope = "customer"
match = "cheapco"
period = "month"
limit_usd = "0.0000001"
action = "downgrade"
downgrade_to = "fast"
"""


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GatewayProcess, Path]]:
    directory = tmp_path_factory.mktemp("gateway")
    with simulator() as (sim_url, _sim):
        port = free_port()
        config = write_config(directory, sim_url, port, EXTRA)
        with GatewayProcess(config, port) as process:
            yield process, directory


def test_openai_sync_chat_is_recorded_priced_and_attributed(gateway, book) -> None:
    gw, directory = gateway
    raw = oa(gw).chat.completions.with_raw_response.create(
        model="fast",
        messages=[{"role": "user", "content": unique("sim:cached=10 sim:reasoning=5 sim:input=40")}],
        extra_headers={
            "x-unitcost-tags": "feature=rerank,customer=acme,experiment=b",
            "x-unitcost-trace-id": "trace-sync",
            "x-unitcost-unit": "ticket:123",
        },
    )
    completion = raw.parse()
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == 40
    assert completion.usage.prompt_tokens_details.cached_tokens == 10
    record = event(directory, raw.headers)
    assert record["model"] == "gpt-4o-mini" and record["tags"]["gateway_model"] == "fast"
    assert record["input_tokens"] == 40 and record["cache_read_tokens"] == 10
    assert record["output_tokens"] == 16 and record["reasoning_tokens"] == 5
    assert (record["team"], record["user"], record["feature"], record["customer"]) == (
        "search",
        "alice",
        "rerank",
        "acme",
    )
    assert record["tags"]["experiment"] == "b" and record["tags"]["key"] == "search-key"
    assert (record["unit"], record["unit_id"], record["trace_id"]) == ("ticket", "123", "trace-sync")
    expected = book.price(
        "gpt-4o-mini", provider="openai", input_tokens=40, cache_read_tokens=10, output_tokens=16
    )
    assert Decimal(raw.headers["x-unitcost-cost"]) == expected.cost
    assert float(raw.headers["x-unitcost-overhead-ms"]) >= 0


def test_openai_async_chat(gateway) -> None:
    gw, directory = gateway

    async def run() -> list[Any]:
        client = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key=GATEWAY_KEY, max_retries=0)
        calls = [
            client.chat.completions.with_raw_response.create(
                model="gpt-4o", messages=[{"role": "user", "content": unique()}]
            )
            for _ in range(5)
        ]
        results = await asyncio.gather(*calls)
        await client.close()
        return results

    results = asyncio.run(run())
    events = spooled(directory)
    assert {events[r.headers["x-unitcost-event-id"]]["model"] for r in results} == {"gpt-4o"}


def test_openai_stream_usage_captured_and_hidden_when_not_asked(gateway) -> None:
    gw, directory = gateway
    stream = oa(gw).chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": unique("sim:output=9")}], stream=True
    )
    chunks = list(stream.parse())
    assert chunks and all(chunk.usage is None for chunk in chunks)
    assert all(chunk.choices for chunk in chunks)  # the extra usage-only chunk was taken out
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text.startswith("[gpt-4o-mini]")
    record = event(directory, stream.headers)
    assert record["output_tokens"] == 9 and record["input_tokens"] > 0 and record["status"] == "ok"
    assert record["ttft_ms"] is not None


def test_stream_cut_by_the_client_is_recorded_as_cancelled(gateway) -> None:
    gw, directory = gateway
    body = {
        "model": "gpt-4o-mini",
        "stream": True,
        "messages": [{"role": "user", "content": unique("sim:chunk_ms=500 sim:output=12")}],
    }
    headers = {"authorization": f"Bearer {GATEWAY_KEY}"}
    with (
        httpx.Client(timeout=10) as http,
        http.stream("POST", gw.url + "/v1/chat/completions", json=body, headers=headers) as response,
    ):
        event_id = response.headers["x-unitcost-event-id"]
        first = next(response.iter_raw())  # the next event is half a second away
        assert first.startswith(b"data: ")
    # Leaving the block closed the connection mid-stream.
    record = wait_for_event(directory, event_id)
    assert record["status"] == "cancelled" and record["model"] == "gpt-4o-mini"
    # The usage chunk never came, yet the prompt was billed: unknown usage, not zero tokens.
    assert record["tags"]["usage_unknown"] == "the provider reported no usage"
    assert "output_tokens" not in record


def test_openai_stream_keeps_usage_chunk_when_asked(gateway) -> None:
    gw, _ = gateway
    chunks = list(
        oa(gw).chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": unique("sim:output=7")}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 7


def test_responses_api_plain_and_streamed(gateway) -> None:
    gw, directory = gateway
    client = oa(gw)
    raw = client.responses.with_raw_response.create(
        model="gpt-4o", input=unique("sim:reasoning=3 sim:output=10")
    )
    response = raw.parse()
    assert response.usage is not None and response.usage.output_tokens_details.reasoning_tokens == 3
    record = event(directory, raw.headers)
    assert (record["operation"], record["reasoning_tokens"], record["output_tokens"]) == ("responses", 3, 10)
    streamed = client.responses.with_raw_response.create(
        model="gpt-4o", input=unique("sim:output=6"), stream=True
    )
    kinds = [e.type for e in streamed.parse()]
    assert kinds[-1] == "response.completed"
    assert event(directory, streamed.headers)["output_tokens"] == 6


def test_embeddings_and_model_lists(gateway) -> None:
    gw, directory = gateway
    raw = oa(gw).embeddings.with_raw_response.create(model="text-embedding-3-small", input=["a", "b"])
    assert len(raw.parse().data) == 2
    assert event(directory, raw.headers)["operation"] == "embeddings"
    assert "fast" in {m.id for m in oa(gw).models.list()}
    assert "claude-sonnet-4-5" in {m.id for m in an(gw).models.list()}


def test_anthropic_cache_writes_and_reads_are_totals_with_subsets(gateway, book) -> None:
    gw, directory = gateway
    prompt = unique(
        "sim:input=3000 sim:cached=1000 sim:cache_write_5m=500 sim:cache_write_1h=700 sim:output=20"
    )
    raw = an(gw).messages.with_raw_response.create(
        model="claude-sonnet-4-5", max_tokens=100, messages=[{"role": "user", "content": prompt}]
    )
    message = raw.parse()
    assert message.usage.input_tokens == 800  # Anthropic reports the uncached part only
    record = event(directory, raw.headers)
    assert record["input_tokens"] == 3000
    assert (
        record["cache_read_tokens"],
        record["cache_write_5m_tokens"],
        record["cache_write_1h_tokens"],
    ) == (
        1000,
        500,
        700,
    )
    expected = book.price(
        "claude-sonnet-4-5",
        provider="anthropic",
        input_tokens=3000,
        cache_read_tokens=1000,
        cache_write_5m_tokens=500,
        cache_write_1h_tokens=700,
        output_tokens=20,
    )
    assert Decimal(raw.headers["x-unitcost-cost"]) == expected.cost


def test_anthropic_async_stream(gateway) -> None:
    gw, directory = gateway

    async def run() -> tuple[str, Any, Any]:
        client = anthropic.AsyncAnthropic(base_url=gw.url, api_key=GATEWAY_KEY, max_retries=0)
        async with client.messages.stream(
            model="claude-3-5-haiku-20241022",
            max_tokens=64,
            messages=[{"role": "user", "content": unique("sim:cached=4 sim:output=12")}],
        ) as stream:
            text = "".join([t async for t in stream.text_stream])
            final = await stream.get_final_message()
            headers = stream.response.headers
        await client.close()
        return text, final, headers

    text, final, headers = asyncio.run(run())
    assert text.startswith("[claude-3-5-haiku")
    assert final.usage.output_tokens == 12
    record = event(directory, headers)
    assert (record["output_tokens"], record["cache_read_tokens"], record["status"]) == (12, 4, "ok")


def test_errors_in_each_api_format(gateway) -> None:
    gw, _ = gateway
    with pytest.raises(openai.NotFoundError) as found:
        oa(gw).chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}])
    assert "no-such-model" in str(found.value)
    with pytest.raises(anthropic.NotFoundError):
        an(gw).messages.create(
            model="no-such-model", max_tokens=5, messages=[{"role": "user", "content": "x"}]
        )
    with pytest.raises(openai.AuthenticationError):
        oa(gw, key="uc-wrong").chat.completions.create(
            model="fast", messages=[{"role": "user", "content": "x"}]
        )
    with pytest.raises(anthropic.BadRequestError):
        an(gw).messages.create(model="fast", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    headers = {"authorization": f"Bearer {GATEWAY_KEY}", "content-type": "application/json"}
    bad = httpx.post(gw.url + "/v1/chat/completions", content=b'{"model": "fast", ', headers=headers)
    assert bad.status_code == 400 and "not valid JSON" in bad.json()["error"]["message"]
    big = httpx.post(gw.url + "/v1/messages", content=b"x" * 300_000, headers=headers)
    assert big.status_code == 413 and big.json()["type"] == "error"
    with pytest.raises(openai.BadRequestError) as upstream_error:
        oa(gw).chat.completions.create(
            model="fast", messages=[{"role": "user", "content": unique("sim:status=400")}]
        )
    assert "simulated error 400" in str(upstream_error.value)
    assert "sk-sim-secret" not in str(upstream_error.value)


def test_retries_are_each_recorded(gateway) -> None:
    gw, directory = gateway
    raw = oa(gw).chat.completions.with_raw_response.create(
        model="fast", messages=[{"role": "user", "content": unique("sim:fail_first=2")}]
    )
    final = event(directory, raw.headers)
    first = spooled(directory)[spooled(directory)[final["retry_of"]]["retry_of"]]
    assert (first["attempt"], first["status"], first["http_status"]) == (1, "error", 503)
    assert final["attempt"] == 3 and final["status"] == "ok"


def test_fallback_after_retries(gateway) -> None:
    gw, directory = gateway
    raw = oa(gw).chat.completions.with_raw_response.create(
        model="flaky", messages=[{"role": "user", "content": unique("sim:fail_first=3 sim:fail_status=429")}]
    )
    record = event(directory, raw.headers)
    assert (record["model"], record["fallback_from"], record["attempt"]) == ("gpt-4o", "gpt-4o-mini", 1)


def test_routing_light_by_default_escalates_on_rules_and_caps(gateway) -> None:
    gw, directory = gateway
    light = oa(gw).chat.completions.with_raw_response.create(
        model="auto",
        max_tokens=500,
        reasoning_effort="high",
        messages=[{"role": "user", "content": unique("summarise sim:output=100")}],
    )
    record = event(directory, light.headers)
    assert record["model"] == "gpt-4o-mini" and "escalated_from" not in record
    assert record["output_tokens"] == 50  # max_tokens capped by the route
    strong = oa(gw).chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": unique("please prove this")}]
    )
    record = event(directory, strong.headers)
    assert (record["model"], record["escalated_from"], record["tags"]["escalation"]) == (
        "gpt-4o",
        "gpt-4o-mini",
        "keyword:prove",
    )


def test_cascade_escalates_when_the_check_fails(gateway) -> None:
    gw, directory = gateway
    raw = oa(gw).chat.completions.with_raw_response.create(
        model="careful", messages=[{"role": "user", "content": unique()}]
    )
    assert raw.parse().choices[0].message.content.startswith("[gpt-4o]")
    final = event(directory, raw.headers)
    assert (final["model"], final["escalated_from"]) == ("gpt-4o", "gpt-4o-mini")
    assert Decimal(raw.headers["x-unitcost-cost"]) > 0


def test_cache_hit_costs_nothing_and_opt_out_works(gateway) -> None:
    gw, directory = gateway
    messages = [{"role": "user", "content": unique()}]
    first = oa(gw).chat.completions.with_raw_response.create(model="gpt-4o", messages=messages)
    second = oa(gw).chat.completions.with_raw_response.create(model="gpt-4o", messages=messages)
    assert "x-unitcost-cache" not in first.headers and second.headers["x-unitcost-cache"] == "hit"
    assert second.headers["x-unitcost-cost"] == "0" and Decimal(second.headers["x-unitcost-saved"]) > 0
    assert second.parse().choices[0].message.content == first.parse().choices[0].message.content
    assert event(directory, second.headers)["cache_hit"] is True
    bypass = oa(gw).chat.completions.with_raw_response.create(
        model="gpt-4o", messages=messages, extra_headers={"x-unitcost-cache": "no"}
    )
    assert "x-unitcost-cache" not in bypass.headers


def test_budget_block_is_a_429_naming_the_budget(gateway) -> None:
    gw, directory = gateway
    with pytest.raises(openai.RateLimitError) as blocked:
        oa(gw).chat.completions.create(
            model="fast",
            max_tokens=1000,
            messages=[{"role": "user", "content": unique()}],
            extra_headers={"x-unitcost-tags": "feature=capped"},
        )
    body = blocked.value.body
    assert isinstance(body, dict)
    budget = body["budget"]
    assert (budget["name"], budget["limit_usd"], budget["spend_usd"]) == ("capped-feature", "0.0005", "0")
    assert budget["reset_at"].endswith(("T22:00:00Z", "T23:00:00Z"))  # midnight in Paris
    record = spooled(directory)[blocked.value.response.headers["x-unitcost-event-id"]]
    assert (record["http_status"], record["tags"]["blocked_by_budget"]) == (429, "capped-feature")
    with pytest.raises(anthropic.RateLimitError):
        an(gw).messages.create(
            model="claude-sonnet-4-5",
            max_tokens=1000,
            messages=[{"role": "user", "content": unique()}],
            extra_headers={"x-unitcost-tags": "feature=capped"},
        )


@pytest.mark.parametrize("tag", ["blocked_by_budget", "escalation", "key", "usage_unknown", "reserved_usd"])
def test_clients_cannot_write_the_gateways_own_tags(gateway, tag: str) -> None:
    gw, directory = gateway
    before = len(spooled(directory))
    with pytest.raises(openai.BadRequestError) as refused:
        oa(gw).chat.completions.create(
            model="fast",
            messages=[{"role": "user", "content": unique()}],
            extra_headers={"x-unitcost-tags": f"feature=x,{tag}=cascade_check_failed"},
        )
    assert f"x-unitcost-tags: {tag} is reserved" in str(refused.value)
    assert len(spooled(directory)) == before  # refused before any upstream call or reservation


def test_trace_call_budget_stops_a_runaway_agent(gateway) -> None:
    gw, _ = gateway
    trace = {"x-unitcost-trace-id": f"agent-{uuid.uuid4().hex}"}
    for _ in range(2):
        oa(gw).chat.completions.create(
            model="fast", messages=[{"role": "user", "content": unique()}], extra_headers=trace
        )
    with pytest.raises(openai.RateLimitError) as blocked:
        oa(gw).chat.completions.create(
            model="fast", messages=[{"role": "user", "content": unique()}], extra_headers=trace
        )
    assert blocked.value.body["budget"]["name"] == "agent-guard"  # type: ignore[index]


def test_downgrade_budget_serves_the_cheaper_model(gateway) -> None:
    gw, directory = gateway
    raw = oa(gw, key=OTHER_KEY).chat.completions.with_raw_response.create(
        model="gpt-4o",
        messages=[{"role": "user", "content": unique()}],
        extra_headers={"x-unitcost-tags": "customer=cheapco"},
    )
    assert raw.headers["x-unitcost-model"] == "gpt-4o-mini"
    record = event(directory, raw.headers)
    assert (record["team"], record["tags"]["downgraded_from"]) == ("ads", "gpt-4o")
    assert raw.headers["x-unitcost-budget"] == "cheapco"


def test_no_secret_in_spool(gateway) -> None:
    gw, directory = gateway
    oa(gw).chat.completions.create(model="fast", messages=[{"role": "user", "content": unique()}])
    for path in (directory / "spool").glob("*"):
        text = path.read_text()
        assert "sk-sim-secret" not in text and GATEWAY_KEY not in text
