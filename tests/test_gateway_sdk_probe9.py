"""What a user of the official openai and anthropic SDKs meets first: the model list and a
model's own entry (`client.models.list()` / `.retrieve()`), Anthropic's free token count
(`client.messages.count_tokens()`), the upstream's retry advice on errors (`retry-after-ms`,
`x-should-retry`, which both SDKs read), and answers cut by max tokens in the simulator.

Real servers on 127.0.0.1: a gateway process in front of the fake upstream of
fake_providers.py (wrapped here to answer count_tokens and to fail as the prompt asks, as
Anthropic and OpenAI do, with their retry headers), and the simulator in a thread. Shapes are
the providers' API references: OpenAI `{"object": "list", "data": [{"id", "object": "model",
"created", "owned_by"}]}`; Anthropic `{"data": [{"type": "model", "id", "display_name",
"created_at"}], "has_more", "first_id", "last_id"}` paged by `limit`/`after_id`/`before_id`;
count_tokens answering `{"input_tokens": N}`.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import orjson
import pytest
from starlette.responses import JSONResponse

from fake_providers import fake_provider_app, read_whole_body, serve_app
from gateway_support import (
    GATEWAY_KEY,
    GatewayProcess,
    an,
    free_port,
    oa,
    simulator,
    spooled,
    unique,
    wait_for_event,
    write_config,
)
from unitcost.gateway.upstream import backoff_delay

ANTHROPIC_SECRET = "sk-ant-probe-upstream-key"
COUNTED = 2095
"""What the fake's count_tokens answers: Anthropic's `{"input_tokens": N}`."""
_PROMPT_ID = re.compile(rb"[0-9a-f]{32}")
_FAIL = re.compile(rb"probe:fail=(\d+)/(true|false)")

EXTRA = """
[gateway.upstreams.local]
kind = "openai"
base_url = "http://127.0.0.1:9/v1"
models = ["meta-llama/Llama-3.1-8B-Instruct"]

[gateway.models.claude-fast]
upstream = "sim-anthropic"
model = "claude-3-5-haiku-20241022"

[gateway.routes.auto]
light = "gpt-4o-mini"
strong = "gpt-4o"
keywords = ["prove"]
"""
OPENAI_NAMES = {
    "gpt-4o-mini",
    "gpt-4o",
    "text-embedding-3-small",
    "fast",
    "auto",
    "meta-llama/Llama-3.1-8B-Instruct",
}
ANTHROPIC_NAMES = ["claude-fast", "claude-sonnet-4-5", "claude-3-5-haiku-20241022"]


class ProbeUpstream:
    """fake_provider_app(), plus what it lacks: Anthropic's count_tokens, and an error with the
    providers' retry headers when the prompt says `probe:fail=STATUS/SHOULD_RETRY`. It keeps
    every request it is sent, and counts them by the prompt's unique id."""

    def __init__(self) -> None:
        self.app = fake_provider_app()
        self.seen: list[tuple[str, dict[str, str], bytes]] = []
        self.asked: Counter[bytes] = Counter()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        body, replay = await read_whole_body(receive)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        self.seen.append((scope["path"], headers, body))
        found = _PROMPT_ID.search(body)
        if found:
            self.asked[found.group(0)] += 1

        fail = _FAIL.search(body)
        if fail:
            return await self._failure(scope["path"], int(fail.group(1)), fail.group(2).decode())(
                scope, replay, send
            )
        if scope["path"] == "/v1/messages/count_tokens":
            return await JSONResponse({"input_tokens": COUNTED})(scope, replay, send)
        return await self.app(scope, replay, send)

    @staticmethod
    def _failure(path: str, status: int, should_retry: str) -> JSONResponse:
        headers = {
            "x-should-retry": should_retry,
            "retry-after-ms": "1",
            "retry-after": "1",
            "x-request-id": "req_probe9",
            "request-id": "req_probe9",
        }
        message = f"probe failure {status}"
        if path.startswith("/v1/messages"):
            kind = {429: "rate_limit_error", 529: "overloaded_error", 400: "invalid_request_error"}
            error = {"type": kind.get(status, "api_error"), "message": message}
            return JSONResponse({"type": "error", "error": error}, status, headers)
        body = {"error": {"message": message, "type": "server_error", "param": None, "code": None}}
        return JSONResponse(body, status, headers)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GatewayProcess, Path, ProbeUpstream]]:
    directory = tmp_path_factory.mktemp("gateway_sdk_probe9")
    upstream = ProbeUpstream()
    with serve_app(upstream) as url:
        port = free_port()
        config = write_config(directory, url, port, EXTRA)
        with GatewayProcess(config, port, env={"SIM_ANTHROPIC_KEY": ANTHROPIC_SECRET}) as process:
            yield process, directory, upstream


def recorded_since(gw: GatewayProcess, directory: Path, before: set[str]) -> set[str]:
    """The events spooled since `before`, besides the one of a chat call made now: the spool is
    written in order, so anything recorded before that call is there once its event is."""
    raw = oa(gw).chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": unique("marker")}]
    )
    marker = raw.headers["x-unitcost-event-id"]
    wait_for_event(directory, marker)
    return set(spooled(directory)) - before - {marker}


def sdk_openai(gw: GatewayProcess, retries: int) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key=GATEWAY_KEY, max_retries=retries)


def sdk_anthropic(gw: GatewayProcess, retries: int) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gw.url, api_key=GATEWAY_KEY, max_retries=retries)


# ------------------------------------------------------------------ GET /v1/models, /v1/models/{id}


def test_openai_sdk_retrieves_a_model(gateway) -> None:
    gw, directory, upstream = gateway
    before, sent = set(spooled(directory)), len(upstream.seen)
    client = oa(gw)
    model = client.models.retrieve("gpt-4o")
    assert (model.id, model.object, model.owned_by, model.created) == ("gpt-4o", "model", "openai", 0)
    assert client.models.retrieve("fast").owned_by == "openai"  # an alias
    assert client.models.retrieve("auto").owned_by == "unitcost"  # a route
    # A name with a slash (vLLM, Ollama): the SDK sends it percent-encoded.
    llama = "meta-llama/Llama-3.1-8B-Instruct"
    assert client.models.retrieve(llama).id == llama
    with pytest.raises(openai.NotFoundError) as missing:
        client.models.retrieve("no-such-model")
    assert missing.value.code == "model_not_found"
    with pytest.raises(openai.AuthenticationError):
        oa(gw, key="uc-wrong").models.retrieve("gpt-4o")
    assert len(upstream.seen) == sent  # served from the configuration
    assert recorded_since(gw, directory, before) == set()  # no LLM usage, no event


def test_openai_sdk_lists_only_what_it_can_call(gateway) -> None:
    gw, directory, upstream = gateway
    before, sent = set(spooled(directory)), len(upstream.seen)
    client = oa(gw)
    models = list(client.models.list())
    assert {m.id for m in models} == OPENAI_NAMES  # no Anthropic-only model: /v1/chat would refuse it
    assert all(m.object == "model" and m.created == 0 for m in models)
    owners = {m.id: m.owned_by for m in models}
    assert (owners["gpt-4o"], owners["fast"], owners["auto"]) == ("openai", "openai", "unitcost")
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("claude-sonnet-4-5")
    with pytest.raises(openai.AuthenticationError):
        oa(gw, key="uc-wrong").models.list()
    assert len(upstream.seen) == sent
    assert recorded_since(gw, directory, before) == set()


def test_anthropic_sdk_retrieves_a_model(gateway) -> None:
    gw, _, upstream = gateway
    sent = len(upstream.seen)
    client = an(gw)
    model = client.models.retrieve("claude-fast")
    assert (model.type, model.id, model.display_name) == ("model", "claude-fast", "claude-fast")
    assert model.created_at.year == 1970  # the gateway knows its models' names, not their dates
    with pytest.raises(anthropic.NotFoundError):
        client.models.retrieve("gpt-4o")  # served through the OpenAI endpoints only
    with pytest.raises(anthropic.AuthenticationError):
        anthropic.Anthropic(base_url=gw.url, api_key="uc-wrong", max_retries=0).models.retrieve("claude-fast")
    assert len(upstream.seen) == sent


def test_anthropic_sdk_lists_and_pages_only_what_it_can_call(gateway) -> None:
    gw, directory, upstream = gateway
    before, sent = set(spooled(directory)), len(upstream.seen)
    client = an(gw)
    assert [m.id for m in client.models.list()] == ANTHROPIC_NAMES
    first = client.models.list(limit=1)
    assert [m.id for m in first.data] == ANTHROPIC_NAMES[:1]
    assert (first.has_more, first.first_id, first.last_id) == (True, "claude-fast", "claude-fast")
    assert [m.id for m in first] == ANTHROPIC_NAMES  # the SDK's pager follows after_id
    back = client.models.list(before_id="claude-3-5-haiku-20241022", limit=1)
    assert [m.id for m in back.data] == ["claude-sonnet-4-5"] and back.has_more is True
    raw = httpx.get(
        gw.url + "/v1/models?limit=2&after_id=claude-fast",
        headers={"x-api-key": GATEWAY_KEY, "anthropic-version": "2023-06-01"},
    ).json()
    assert raw == {
        "data": [
            {"type": "model", "id": name, "display_name": name, "created_at": "1970-01-01T00:00:00Z"}
            for name in ANTHROPIC_NAMES[1:]
        ],
        "has_more": False,
        "first_id": "claude-sonnet-4-5",
        "last_id": "claude-3-5-haiku-20241022",
    }
    with pytest.raises(anthropic.BadRequestError):
        client.models.list(limit=0)
    assert len(upstream.seen) == sent
    assert recorded_since(gw, directory, before) == set()


# ------------------------------------------------------------------ POST /v1/messages/count_tokens


def test_count_tokens_is_forwarded_as_is_and_recorded_nowhere(gateway) -> None:
    gw, directory, upstream = gateway
    before = set(spooled(directory))
    messages = [{"role": "user", "content": unique("how many tokens is this?")}]
    tools = [{"name": "get_weather", "description": "Weather", "input_schema": {"type": "object"}}]
    raw = an(gw).messages.with_raw_response.count_tokens(
        model="claude-fast",
        system="You are terse.",
        messages=messages,
        tools=tools,
        extra_headers={"anthropic-beta": "token-counting-2024-11-01"},
    )
    assert raw.parse().input_tokens == COUNTED
    assert raw.headers["x-unitcost-model"] == "claude-3-5-haiku-20241022"

    path, headers, body = upstream.seen[-1]
    assert path == "/v1/messages/count_tokens"
    assert headers["x-api-key"] == ANTHROPIC_SECRET  # the configured key, never the gateway's
    assert headers["anthropic-version"] == raw.http_request.headers["anthropic-version"]
    assert headers["anthropic-beta"] == "token-counting-2024-11-01"
    sent = orjson.loads(body)
    assert sent == {
        "model": "claude-3-5-haiku-20241022",  # the alias resolved, as for /v1/messages
        "system": "You are terse.",
        "messages": messages,
        "tools": tools,
    }
    assert recorded_since(gw, directory, before) == set()

    seen = len(upstream.seen)
    with pytest.raises(anthropic.AuthenticationError):
        anthropic.Anthropic(base_url=gw.url, api_key="uc-wrong", max_retries=0).messages.count_tokens(
            model="claude-fast", messages=messages
        )
    with pytest.raises(anthropic.NotFoundError):
        an(gw).messages.count_tokens(model="no-such-model", messages=messages)
    with pytest.raises(anthropic.BadRequestError):  # an OpenAI-format model, as on /v1/messages
        an(gw).messages.count_tokens(model="gpt-4o", messages=messages)
    assert len(upstream.seen) == seen


def test_count_tokens_passes_an_upstream_error_back(gateway) -> None:
    gw, directory, _ = gateway
    before = set(spooled(directory))
    with pytest.raises(anthropic.RateLimitError) as limited:
        an(gw).messages.count_tokens(
            model="claude-sonnet-4-5", messages=[{"role": "user", "content": unique("probe:fail=429/false")}]
        )
    assert limited.value.response.headers["request-id"] == "req_probe9"
    assert limited.value.response.headers["x-should-retry"] == "false"
    assert recorded_since(gw, directory, before) == set()


# ------------------------------------------------------------------ retry advice on errors


def _prompt_id(prompt: str) -> bytes:
    found = _PROMPT_ID.search(prompt.encode())
    assert found is not None
    return found.group(0)


def test_should_retry_false_stops_the_gateway_and_the_openai_sdk(gateway) -> None:
    gw, directory, upstream = gateway
    prompt = unique("probe:fail=503/false")
    with pytest.raises(openai.InternalServerError) as failed:
        sdk_openai(gw, retries=2).chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": prompt}]
        )
    headers = failed.value.response.headers
    assert (headers["x-should-retry"], headers["retry-after-ms"]) == ("false", "1")
    assert (headers["retry-after"], headers["x-request-id"]) == ("1", "req_probe9")
    # The provider said not to retry: neither the gateway nor the SDK did.
    assert upstream.asked[_prompt_id(prompt)] == 1
    record = wait_for_event(directory, headers["x-unitcost-event-id"])
    assert (record["status"], record["http_status"], record["attempt"]) == ("error", 503, 1)


def test_should_retry_false_stops_the_anthropic_sdk_too(gateway) -> None:
    gw, _, upstream = gateway
    prompt = unique("probe:fail=529/false")
    with pytest.raises(anthropic.InternalServerError) as failed:
        sdk_anthropic(gw, retries=2).messages.create(
            model="claude-sonnet-4-5", max_tokens=10, messages=[{"role": "user", "content": prompt}]
        )
    assert failed.value.response.headers["x-should-retry"] == "false"
    assert failed.value.response.headers["retry-after-ms"] == "1"
    assert upstream.asked[_prompt_id(prompt)] == 1


def test_should_retry_true_is_retried_and_passed_on(gateway) -> None:
    gw, directory, upstream = gateway
    prompt = unique("probe:fail=400/true")
    with pytest.raises(openai.BadRequestError) as failed:
        oa(gw).chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": prompt}])
    assert failed.value.response.headers["x-should-retry"] == "true"
    assert upstream.asked[_prompt_id(prompt)] == 3  # the first try and the gateway's 2 retries
    last = wait_for_event(directory, failed.value.response.headers["x-unitcost-event-id"])
    assert (last["attempt"], last["http_status"]) == (3, 400)


def test_retry_headers_reach_a_stream_that_failed_before_its_first_byte(gateway) -> None:
    gw, _, upstream = gateway
    prompt = unique("probe:fail=429/false")
    with pytest.raises(openai.RateLimitError) as limited:
        oa(gw).chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": prompt}], stream=True
        )
    assert limited.value.response.headers["x-should-retry"] == "false"
    assert limited.value.response.headers["retry-after-ms"] == "1"
    assert upstream.asked[_prompt_id(prompt)] == 1


def test_gateway_backoff_prefers_retry_after_ms() -> None:
    assert backoff_delay(1, 0.5, 10, "3", "250") == 0.25
    assert backoff_delay(1, 0.5, 10, None, "1500") == 1.5
    assert backoff_delay(1, 0.5, 10, "3", "soon") == 3.0  # unreadable: the seconds header
    assert backoff_delay(1, 0.5, 10, None, "600000") == 10  # capped at backoff_max_s


# ------------------------------------------------------------------ the simulator's stop reasons


@pytest.fixture(scope="module")
def sim() -> Iterator[str]:
    with simulator() as (url, _):
        yield url


def test_simulator_chat_stops_for_length_at_max_tokens(sim: str) -> None:
    client = openai.OpenAI(base_url=sim + "/v1", api_key="sk-sim", max_retries=0)
    cut = client.chat.completions.create(
        model="gpt-4o-mini", max_tokens=5, messages=[{"role": "user", "content": "hi"}]
    )
    assert cut.choices[0].finish_reason == "length" and cut.usage is not None
    assert cut.usage.completion_tokens == 5
    whole = client.chat.completions.create(
        model="gpt-4o-mini", max_completion_tokens=50, messages=[{"role": "user", "content": "hi"}]
    )
    assert whole.choices[0].finish_reason == "stop"
    chunks = list(
        client.chat.completions.create(
            model="gpt-4o-mini",
            max_tokens=20,
            messages=[{"role": "user", "content": "sim:output=40"}],
            stream=True,
        )
    )
    reasons = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert reasons == ["length"]


def test_simulator_responses_are_incomplete_at_max_output_tokens(sim: str) -> None:
    client = openai.OpenAI(base_url=sim + "/v1", api_key="sk-sim", max_retries=0)
    cut = client.responses.create(model="gpt-4o", input="sim:output=40", max_output_tokens=16)
    assert cut.status == "incomplete" and cut.incomplete_details is not None
    assert cut.incomplete_details.reason == "max_output_tokens"
    assert cut.usage is not None and cut.usage.output_tokens == 16
    whole = client.responses.create(model="gpt-4o", input="sim:output=10", max_output_tokens=16)
    assert whole.status == "completed" and whole.incomplete_details is None
    events = list(
        client.responses.create(model="gpt-4o", input="sim:output=40", max_output_tokens=16, stream=True)
    )
    last = events[-1]
    assert last.type == "response.incomplete"
    assert last.response.incomplete_details is not None
    assert last.response.incomplete_details.reason == "max_output_tokens"


def test_simulator_messages_stop_at_max_tokens(sim: str) -> None:
    client = anthropic.Anthropic(base_url=sim, api_key="sk-ant-sim", max_retries=0)
    cut = client.messages.create(
        model="claude-sonnet-4-5", max_tokens=5, messages=[{"role": "user", "content": "hi"}]
    )
    assert cut.stop_reason == "max_tokens" and cut.usage.output_tokens == 5
    whole = client.messages.create(
        model="claude-sonnet-4-5", max_tokens=100, messages=[{"role": "user", "content": "hi"}]
    )
    assert whole.stop_reason == "end_turn"
    with client.messages.stream(
        model="claude-sonnet-4-5", max_tokens=8, messages=[{"role": "user", "content": "sim:output=30"}]
    ) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "max_tokens" and final.usage.output_tokens == 8
    counted = client.messages.count_tokens(
        model="claude-sonnet-4-5", messages=[{"role": "user", "content": "sim:input=321 hello"}]
    )
    assert counted.input_tokens == 321
