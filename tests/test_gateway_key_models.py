"""A virtual key limited to some models (`models = [...]` on a [[gateway.keys]] entry), through
a real gateway process to the fake upstream of fake_providers.py on 127.0.0.1, with the official
openai and anthropic SDKs as clients.

The key's list (exact names and `*` globs) is matched against the name the client asks for:
a model, an alias or a route, before the gateway resolves it. A model outside the list is a 403
permission error in the API's own format, on every endpoint that names a model (Chat
Completions, Responses, embeddings, Messages, count_tokens), and the model listings show only
what the key may call. A refused call is not sent upstream, records no event, holds nothing on
a budget and is counted in /metrics as refused.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from fake_providers import RecordingUpstream, serve_app
from gateway_support import (
    GATEWAY_KEY,
    GatewayProcess,
    free_port,
    oa,
    spooled,
    unique,
    wait_for_event,
    write_config,
)
from unitcost.config import ConfigError
from unitcost.gateway.config import parse_gateway
from unitcost.gateway.keys import hash_key

INTERN_KEY = "uc-test-key-intern-0123456789"
INTERN_MODELS = ["gpt-4o-mini*", "claude-*-haiku*"]
EXTRA = f"""
[gateway.models.premium]           # an alias of the expensive model
upstream = "sim-openai"
model = "gpt-4o"

[gateway.models."gpt-4o-mini-2024-07-18"]
upstream = "sim-openai"
model = "gpt-4o-mini"

[gateway.models.claude-fast]
upstream = "sim-anthropic"
model = "claude-3-5-haiku-20241022"

[gateway.routes.auto]
light = "gpt-4o-mini"
strong = "gpt-4o"
keywords = ["prove"]

[[gateway.keys]]
name = "intern"
team = "interns"
models = {INTERN_MODELS!r}
sha256 = "{hash_key(INTERN_KEY)}"

[[gateway.budgets]]
name = "interns-calls"
scope = "team"
match = "interns"
max_calls = 1000
"""
INTERN_OPENAI = {"gpt-4o-mini", "gpt-4o-mini-2024-07-18"}
INTERN_ANTHROPIC = ["claude-3-5-haiku-20241022"]
EMBEDDING = {
    "object": "list",
    "data": [{"object": "embedding", "index": 0, "embedding": [0.0023064255, -0.009327292, 0.015797347]}],
    "model": "text-embedding-3-small",
    "usage": {"prompt_tokens": 8, "total_tokens": 8},
}


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[GatewayProcess, Path, RecordingUpstream]]:
    directory = tmp_path_factory.mktemp("gateway_key_models")
    upstream = RecordingUpstream(
        {"/v1/messages/count_tokens": {"input_tokens": 2095}, "/v1/embeddings": EMBEDDING}
    )
    with serve_app(upstream) as url:
        port = free_port()
        config = write_config(directory, url, port, EXTRA)
        with GatewayProcess(config, port) as process:
            yield process, directory, upstream


def intern_openai(gw: GatewayProcess) -> openai.OpenAI:
    return oa(gw, key=INTERN_KEY)


def intern_anthropic(gw: GatewayProcess, key: str = INTERN_KEY) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gw.url, api_key=key, max_retries=0)


Scrape = list[tuple[str, dict[str, str], float]]


def scrape(gw: GatewayProcess) -> Scrape:
    response = httpx.get(gw.url + "/metrics")
    assert response.status_code == 200
    return [
        (s.name, dict(s.labels), s.value)
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    ]


def total(scraped: Scrape, name: str, **labels: str) -> float:
    """The sum of the samples of `name` that have these labels (and any others)."""
    return sum(
        value
        for sample_name, sample_labels, value in scraped
        if sample_name == name and labels.items() <= sample_labels.items()
    )


def recorded_since(gw: GatewayProcess, directory: Path, before: set[str]) -> set[str]:
    """The events spooled since `before`, besides the one of an allowed call made now: the spool
    is written in order, so anything recorded before that call is there once its event is."""
    raw = intern_openai(gw).chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": unique("marker")}]
    )
    marker = raw.headers["x-unitcost-event-id"]
    wait_for_event(directory, marker)
    return set(spooled(directory)) - before - {marker}


def assert_openai_refusal(exc: openai.PermissionDeniedError, model: str) -> None:
    assert exc.status_code == 403
    body = exc.response.json()
    assert body == {
        "error": {
            "message": body["error"]["message"],
            "type": "permission_error",
            "param": "model",
            "code": "model_not_allowed",
        }
    }
    message = body["error"]["message"]
    assert f"`{model}`" in message and "'intern'" in message and "gpt-4o-mini*" in message
    assert INTERN_KEY not in exc.response.text and hash_key(INTERN_KEY) not in exc.response.text
    assert exc.response.headers["x-should-retry"] == "false"


def assert_anthropic_refusal(exc: anthropic.PermissionDeniedError, model: str) -> None:
    assert exc.status_code == 403
    body = exc.response.json()
    assert body == {
        "type": "error",
        "error": {"type": "permission_error", "message": body["error"]["message"]},
    }
    assert f"`{model}`" in body["error"]["message"] and "claude-*-haiku*" in body["error"]["message"]
    assert INTERN_KEY not in exc.response.text and hash_key(INTERN_KEY) not in exc.response.text


# ------------------------------------------------------------------ OpenAI endpoints


def test_openai_endpoints_refuse_a_model_outside_the_keys_list(gateway) -> None:
    gw, directory, upstream = gateway
    before, sent, metrics = set(spooled(directory)), len(upstream.seen), scrape(gw)
    client = intern_openai(gw)
    messages = [{"role": "user", "content": unique()}]

    with pytest.raises(openai.PermissionDeniedError) as chat:
        client.chat.completions.create(model="gpt-4o", messages=messages)
    assert_openai_refusal(chat.value, "gpt-4o")
    with pytest.raises(openai.PermissionDeniedError) as streamed:
        client.chat.completions.create(model="gpt-4o", messages=messages, stream=True)
    assert_openai_refusal(streamed.value, "gpt-4o")
    with pytest.raises(openai.PermissionDeniedError) as responses:
        client.responses.create(model="gpt-4o", input=unique())
    assert_openai_refusal(responses.value, "gpt-4o")
    with pytest.raises(openai.PermissionDeniedError) as embeddings:
        client.embeddings.create(model="text-embedding-3-small", input="hello")
    assert_openai_refusal(embeddings.value, "text-embedding-3-small")

    assert len(upstream.seen) == sent  # nothing was sent upstream
    assert recorded_since(gw, directory, before) == set()  # no event: the refusals cost nothing
    after = scrape(gw)
    cases = (("chat", "gpt-4o"), ("responses", "gpt-4o"), ("embeddings", "text-embedding-3-small"))
    requests = "unitcost_gateway_requests_total"
    refused = {"provider": "openai", "team": "interns", "outcome": "model_refused"}
    assert {
        route: total(after, requests, route=route, model=model, **refused)
        - total(metrics, requests, route=route, model=model, **refused)
        for route, model in cases
    } == {"chat": 2, "responses": 1, "embeddings": 1}
    refusals = "unitcost_gateway_model_refusals_total"
    assert {
        route: total(after, refusals, route=route, model=model, team="interns")
        - total(metrics, refusals, route=route, model=model, team="interns")
        for route, model in cases
    } == {"chat": 2, "responses": 1, "embeddings": 1}
    # The budget line of the key's team counted the one allowed call (the marker), not the
    # refusals, and nothing was spent on the refused model.
    calls = "unitcost_gateway_budget_calls"
    assert total(after, calls, budget="interns-calls") - total(metrics, calls, budget="interns-calls") == 1
    assert total(after, "unitcost_gateway_spend_usd_total", model="gpt-4o", team="interns") == 0


def test_the_list_is_matched_against_the_name_asked_for_before_alias_and_route(gateway) -> None:
    gw, _, upstream = gateway
    client = intern_openai(gw)
    messages = [{"role": "user", "content": unique()}]
    # Allowed by the glob: a model, and an alias whose own name matches it.
    assert client.chat.completions.create(model="gpt-4o-mini", messages=messages).model == "gpt-4o-mini"
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini-2024-07-18", messages=messages)
    assert raw.headers["x-unitcost-model"] == "gpt-4o-mini"
    assert raw.http_response.status_code == 200
    sent = len(upstream.seen)
    # Names the list does not match are refused, whatever is behind them: an alias of the
    # expensive model, a route (even though its light model is allowed), an alias of an
    # allowed model under another name.
    for name in ("premium", "auto", "fast"):
        with pytest.raises(openai.PermissionDeniedError) as refused:
            client.chat.completions.create(model=name, messages=messages)
        assert_openai_refusal(refused.value, name)
    # A name the list matches but the gateway does not serve: a 404 that names only what the
    # key may call.
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="gpt-4o-mini-nonexistent", messages=messages)
    message = missing.value.response.json()["error"]["message"]
    assert "gpt-4o-mini-2024-07-18" in message and "premium" not in message and "gpt-4o," not in message
    assert len(upstream.seen) == sent


def test_a_key_without_a_list_still_calls_every_model(gateway) -> None:
    gw, _, _ = gateway
    client = oa(gw, key=GATEWAY_KEY)
    messages = [{"role": "user", "content": unique()}]
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o", messages=messages)
    assert raw.headers["x-unitcost-model"] == "gpt-4o" and raw.parse().model == "gpt-4o-2024-08-06"
    assert client.embeddings.create(model="text-embedding-3-small", input="hello").usage.prompt_tokens == 8
    assert "gpt-4o" in {m.id for m in client.models.list()}


# ------------------------------------------------------------------ Anthropic endpoints


def test_anthropic_endpoints_refuse_a_model_outside_the_keys_list(gateway) -> None:
    gw, directory, upstream = gateway
    before, sent, metrics = set(spooled(directory)), len(upstream.seen), scrape(gw)
    client = intern_anthropic(gw)
    messages = [{"role": "user", "content": unique()}]

    with pytest.raises(anthropic.PermissionDeniedError) as message:
        client.messages.create(model="claude-sonnet-4-5", max_tokens=64, messages=messages)
    assert_anthropic_refusal(message.value, "claude-sonnet-4-5")
    with pytest.raises(anthropic.PermissionDeniedError) as streamed:
        client.messages.create(model="claude-sonnet-4-5", max_tokens=64, messages=messages, stream=True)
    assert_anthropic_refusal(streamed.value, "claude-sonnet-4-5")
    with pytest.raises(anthropic.PermissionDeniedError) as counted:
        client.messages.count_tokens(model="claude-sonnet-4-5", messages=messages)
    assert_anthropic_refusal(counted.value, "claude-sonnet-4-5")
    with pytest.raises(anthropic.PermissionDeniedError) as alias:  # claude-fast: not matched by name
        client.messages.create(model="claude-fast", max_tokens=64, messages=messages)
    assert_anthropic_refusal(alias.value, "claude-fast")

    assert len(upstream.seen) == sent
    assert recorded_since(gw, directory, before) == set()
    after = scrape(gw)
    refusals = "unitcost_gateway_model_refusals_total"
    assert {
        route: total(after, refusals, route=route, model="claude-sonnet-4-5", team="interns")
        - total(metrics, refusals, route=route, model="claude-sonnet-4-5", team="interns")
        for route in ("messages", "count_tokens")
    } == {"messages": 2, "count_tokens": 1}
    requests = "unitcost_gateway_requests_total"
    refused = {"route": "messages", "team": "interns", "outcome": "model_refused"}
    assert total(after, requests, **refused) - total(metrics, requests, **refused) == 3

    # The model the glob allows goes through, on both endpoints.
    haiku = "claude-3-5-haiku-20241022"
    assert client.messages.create(model=haiku, max_tokens=64, messages=messages).model == haiku
    assert client.messages.count_tokens(model=haiku, messages=messages).input_tokens == 2095
    assert upstream.seen[sent:] == ["/v1/chat/completions", "/v1/messages", "/v1/messages/count_tokens"]


# ------------------------------------------------------------------ GET /v1/models, /v1/models/{id}


def test_model_listings_show_only_what_the_key_may_call(gateway) -> None:
    gw, _, upstream = gateway
    sent = len(upstream.seen)
    client = intern_openai(gw)
    assert {m.id for m in client.models.list()} == INTERN_OPENAI
    assert client.models.retrieve("gpt-4o-mini-2024-07-18").id == "gpt-4o-mini-2024-07-18"
    for hidden in ("gpt-4o", "premium", "auto", "text-embedding-3-small"):
        with pytest.raises(openai.NotFoundError):
            client.models.retrieve(hidden)

    claude = intern_anthropic(gw)
    assert [m.id for m in claude.models.list()] == INTERN_ANTHROPIC
    assert claude.models.retrieve("claude-3-5-haiku-20241022").id == "claude-3-5-haiku-20241022"
    with pytest.raises(anthropic.NotFoundError):
        claude.models.retrieve("claude-sonnet-4-5")
    with pytest.raises(anthropic.BadRequestError):  # a hidden model is no cursor either
        claude.models.list(after_id="claude-sonnet-4-5")

    # Another key's listing is unchanged.
    everything = {m.id for m in oa(gw, key=GATEWAY_KEY).models.list()}
    assert everything > INTERN_OPENAI and {"gpt-4o", "premium", "auto"} <= everything
    assert len(upstream.seen) == sent


# ------------------------------------------------------------------ configuration


def _section(models: Any, setting: str = "models") -> dict[str, Any]:
    return {
        "upstreams": {
            "o": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1", "models": ["gpt-4o", "gpt-4o-mini"]}
        },
        "models": {"fast": {"upstream": "o", "model": "gpt-4o-mini"}},
        "keys": [{"name": "intern", "sha256": hash_key(INTERN_KEY), setting: models}],
    }


def test_the_keys_list_is_parsed_and_matched_as_globs() -> None:
    key = parse_gateway(_section(["gpt-4o-mini*", "fast"])).keys[0]
    assert key.models == ("gpt-4o-mini*", "fast")
    assert key.allows("gpt-4o-mini") and key.allows("gpt-4o-mini-2024-07-18") and key.allows("fast")
    assert not key.allows("gpt-4o") and not key.allows("fast2") and not key.allows("GPT-4O-MINI")
    assert parse_gateway(_section(["*"])).keys[0].allows("anything")
    assert parse_gateway({**_section(None), "keys": [{"sha256": hash_key("x")}]}).keys[0].models is None


@pytest.mark.parametrize(
    ("models", "setting", "said"),
    [
        ([], "models", "non-empty list"),
        ("gpt-4o-mini", "models", "non-empty list"),
        (["gpt-4o-mini", 3], "models", "non-empty list"),
        (["gpt4o-mini"], "models", "'gpt4o-mini' matches none"),
        (["claude-*"], "models", "'claude-*' matches none"),
        (["gpt-4o?"], "models", "'gpt-4o?' matches none"),  # `?` is itself, not a wildcard
        (["gpt-4o-mini"], "allowed_models", "unknown setting 'allowed_models'"),
    ],
)
def test_a_list_that_would_not_do_what_it_says_is_refused(models: Any, setting: str, said: str) -> None:
    with pytest.raises(ConfigError) as refused:
        parse_gateway(_section(models, setting))
    assert "gateway.keys #1" in str(refused.value) and said in str(refused.value)
