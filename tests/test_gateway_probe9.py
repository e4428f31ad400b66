"""The response cache keeps only whole answers, on one gateway and across replicas sharing Redis,
and every Redis client the gateway builds honours [gateway.redis] timeout_s.

An answer cut short (Chat Completions `finish_reason` "length" or "content_filter", a Responses
object whose `status` is "incomplete" or "failed", an Anthropic message whose `stop_reason` is
"max_tokens", "refusal", ...) goes to the client that asked, and is never served again from the
cache as if the model had finished. Real servers on 127.0.0.1: the fake upstream of
fake_providers.py (its answers ended the way the prompt asks), gateway processes, Redis on
127.0.0.1:6379 under a key prefix of the test's own, and the official openai and anthropic SDKs.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from fake_providers import fake_provider_app, read_whole_body, serve_app
from gateway_support import GatewayProcess, an, event, free_port, oa, unique, write_config
from unitcost.gateway.cache import RedisCache
from unitcost.gateway.config import parse_gateway
from unitcost.gateway.server import build_gateway, recover

REDIS_URL = "redis://127.0.0.1:6379/0"
CACHE = "\n[gateway.cache]\nenabled = true\nttl_s = 600\n"
_END = re.compile(rb"probe:end=([a-z_]+)(?:/([a-z_]+))?")
_PROMPT_ID = re.compile(rb"[0-9a-f]{32}")


def end_as(payload: dict[str, Any], end: str, why: str | None) -> None:
    """End the fake's answer as a provider does when it stops early, in each API's own shape."""
    if payload.get("object") == "chat.completion":
        for choice in payload["choices"]:
            choice["finish_reason"] = end
    elif payload.get("object") == "response":
        payload["status"] = end
        if end == "incomplete":  # e.g. max_output_tokens reached: the message item is cut too
            payload["incomplete_details"] = {"reason": why}
            payload["output"][0]["status"] = "incomplete"
        elif end == "failed":
            payload["error"] = {"code": "server_error", "message": "The model failed to generate a response."}
            payload["output"] = []
    else:  # an Anthropic message
        payload["stop_reason"] = end


class EndsAsAsked:
    """fake_provider_app(), whose answer ends as `probe:end=END[/REASON]` in the prompt says.
    It counts the requests that reach it, by the prompt's unique id."""

    def __init__(self) -> None:
        self.app = fake_provider_app()
        self.asked: Counter[bytes] = Counter()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        body, replay = await read_whole_body(receive)
        found = _PROMPT_ID.search(body)
        if found:
            self.asked[found.group(0)] += 1
        directive = _END.search(body)
        head: dict[str, Any] = {}
        chunks: list[bytes] = []

        async def ended(message: dict[str, Any]) -> None:
            if directive is None:
                return await send(message)
            if message["type"] == "http.response.start":
                head.update(message)
                return None
            chunks.append(message.get("body", b""))
            if message.get("more_body"):
                return None
            payload = orjson.loads(b"".join(chunks))
            why = directive.group(2)
            end_as(payload, directive.group(1).decode(), why.decode() if why else None)
            out = orjson.dumps(payload)
            headers = [(k, v) for k, v in head["headers"] if k.lower() != b"content-length"]
            await send({**head, "headers": [*headers, (b"content-length", str(len(out)).encode())]})
            return await send({"type": "http.response.body", "body": out})

        return await self.app(scope, replay, ended)

    def times_asked(self, prompt: str) -> int:
        found = _PROMPT_ID.search(prompt.encode())
        assert found is not None
        return self.asked[found.group(0)]


@pytest.fixture(scope="module")
def upstream() -> Iterator[tuple[str, EndsAsAsked]]:
    fake = EndsAsAsked()
    with serve_app(fake) as url:
        yield url, fake


@pytest.fixture(scope="module")
def gateway(
    upstream: tuple[str, EndsAsAsked], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[GatewayProcess, Path]]:
    directory = tmp_path_factory.mktemp("probe9")
    port = free_port()
    with GatewayProcess(write_config(directory, upstream[0], port, CACHE), port) as process:
        yield process, directory


def ask(gw: GatewayProcess, api: str, prompt: str) -> tuple[Any, str | None]:
    """One non-streamed call through the SDK: the raw response and the end reason its client read."""
    if api == "chat":
        raw = oa(gw).chat.completions.with_raw_response.create(
            model="gpt-4o-mini", max_tokens=64, messages=[{"role": "user", "content": prompt}]
        )
        return raw, raw.parse().choices[0].finish_reason
    if api == "responses":
        raw = oa(gw).responses.with_raw_response.create(
            model="gpt-4o-mini", input=prompt, max_output_tokens=64
        )
        parsed = raw.parse()
        why = parsed.incomplete_details.reason if parsed.incomplete_details else None
        return raw, parsed.status + (f"/{why}" if why else "")
    raw = an(gw).messages.with_raw_response.create(
        model="claude-sonnet-4-5", max_tokens=64, messages=[{"role": "user", "content": prompt}]
    )
    return raw, raw.parse().stop_reason


def is_hit(raw: Any) -> bool:
    return raw.headers.get("x-unitcost-cache") == "hit"


CUT_SHORT = [
    ("chat", "length"),
    ("chat", "content_filter"),
    ("responses", "incomplete/max_output_tokens"),
    ("responses", "incomplete/content_filter"),
    ("responses", "failed"),
    ("messages", "max_tokens"),
    ("messages", "refusal"),
    ("messages", "pause_turn"),
    ("messages", "model_context_window_exceeded"),
]
WHOLE = [
    ("chat", "stop"),
    ("chat", "tool_calls"),
    ("responses", "completed"),
    ("messages", "end_turn"),
    ("messages", "stop_sequence"),
    ("messages", "tool_use"),
]


@pytest.mark.parametrize(("api", "end"), CUT_SHORT)
def test_an_answer_cut_short_is_never_served_from_the_cache(gateway, upstream, api: str, end: str) -> None:
    gw, directory = gateway
    prompt = unique(f"probe:end={end}")
    for number in (1, 2):
        raw, seen = ask(gw, api, prompt)
        assert seen == end  # the client that asked gets the answer as the provider ended it
        assert not is_hit(raw)
        assert event(directory, raw.headers)["cache_hit"] is False
        assert upstream[1].times_asked(prompt) == number  # asked the upstream again


@pytest.mark.parametrize(("api", "end"), WHOLE)
def test_a_whole_answer_is_served_from_the_cache(gateway, upstream, api: str, end: str) -> None:
    gw, _ = gateway
    prompt = unique(f"probe:end={end}")
    first, seen = ask(gw, api, prompt)
    assert seen == end and not is_hit(first)
    again, seen = ask(gw, api, prompt)
    assert seen == end and is_hit(again)
    assert upstream[1].times_asked(prompt) == 1


# ------------------------------------------------------------------ replicas sharing Redis


def redis_or_skip() -> Any:
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1)
    try:
        client.ping()
    except redis.RedisError:
        pytest.skip("no Redis on 127.0.0.1:6379: the shared-cache test needs a real one")
    return client


def test_replicas_sharing_a_redis_cache_share_whole_answers_only(upstream, tmp_path: Path) -> None:
    client = redis_or_skip()
    prefix = f"unitcost-test-probe9-{uuid.uuid4().hex}:"
    shared = (
        CACHE.replace("ttl_s = 600", 'ttl_s = 600\nbackend = "redis"')
        + f'\n[gateway.redis]\nurl = "{REDIS_URL}"\nprefix = "{prefix}"\n'
    )
    replicas = []
    try:
        for name in ("a", "b"):
            directory = tmp_path / name
            directory.mkdir()
            port = free_port()
            replicas.append(GatewayProcess(write_config(directory, upstream[0], port, shared), port).start())
        first, second = replicas
        whole = unique("probe:end=completed")
        assert not is_hit(ask(first, "responses", whole)[0])
        assert is_hit(ask(second, "responses", whole)[0])  # stored by one replica, served by the other
        assert len(list(client.scan_iter(match=f"{prefix}cache:*"))) == 1
        cut = unique("probe:end=incomplete/max_output_tokens")
        assert ask(first, "responses", cut)[1] == "incomplete/max_output_tokens"
        raw, seen = ask(second, "responses", cut)
        assert seen == "incomplete/max_output_tokens" and not is_hit(raw)
        assert upstream[1].times_asked(cut) == 2
        assert len(list(client.scan_iter(match=f"{prefix}cache:*"))) == 1  # nothing stored for it
    finally:
        for replica in replicas:
            replica.stop()
        for key in client.scan_iter(match=f"{prefix}*"):
            client.delete(key)


# ------------------------------------------------------------------ Redis timeouts


def redis_section(tmp_path: Path, timeout_s: float) -> dict[str, Any]:
    return {
        "upstreams": {"up": {"base_url": "http://127.0.0.1:9/v1", "models": ["gpt-4o-mini"]}},
        "cache": {"enabled": True, "backend": "redis"},
        "redis": {"url": REDIS_URL, "prefix": f"unitcost-test-{uuid.uuid4().hex}:", "timeout_s": timeout_s},
        "spool_dir": str(tmp_path / f"spool-{uuid.uuid4().hex}"),
    }


def redis_timeouts(client: Any) -> tuple[float, float]:
    kwargs = client.connection_pool.connection_kwargs
    return kwargs["socket_connect_timeout"], kwargs["socket_timeout"]


def test_every_redis_client_of_the_gateway_gives_up_within_the_configured_timeout(
    tmp_path: Path, ledger: Any
) -> None:
    """A hung Redis holds a request no longer than [gateway.redis] timeout_s in any of the
    gateway's Redis clients (the budget state's and the response cache's), whether it does
    not accept the connection or does not answer on it. Nothing connects here: the clients
    are only built, as `unitcost gateway` builds them."""
    config = parse_gateway(redis_section(tmp_path, 0.25))
    book, budgets = recover(config, ledger)
    gateway = build_gateway(config, book, budgets)
    try:
        assert isinstance(gateway.cache, RedisCache)
        assert redis_timeouts(budgets._redis) == (0.25, 0.25)
        assert budgets._redis.connection_pool.timeout == 0.25  # waiting for a pooled connection
        assert redis_timeouts(gateway.cache._redis) == (0.25, 0.25)
        assert gateway.cache._redis.connection_pool.timeout == 0.25  # waiting for a pooled connection
    finally:
        asyncio.run(gateway.aclose())
        gateway.spool.close()


def test_a_long_redis_timeout_does_not_make_the_cache_wait_longer_than_a_miss_is_worth(
    tmp_path: Path, book: Any
) -> None:
    from unitcost.gateway.budgets import MemoryBudgetState

    gateway = build_gateway(parse_gateway(redis_section(tmp_path, 30)), book, MemoryBudgetState())
    try:
        assert isinstance(gateway.cache, RedisCache)
        # docs/gateway.md: the cache's Redis calls have a 1 s timeout (a miss is cheap).
        assert redis_timeouts(gateway.cache._redis) == (1.0, 1.0)
    finally:
        asyncio.run(gateway.aclose())
        gateway.spool.close()
