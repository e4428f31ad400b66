"""The gateway's response cache as a platform team relies on it, and the config checks around it.

A cache is an optimisation: when its Redis is down (at start or mid-run) requests are served by
the upstream, the outage is logged once, and caching resumes when Redis is back. Cached answers
stay within their tenant, never cover an error, a fallback or a different request, and their
events carry the true cost (0) and what they avoided. Real servers on 127.0.0.1: the simulated
provider, gateway processes, Redis on 127.0.0.1:6379 behind a relay that can be cut, and the
official openai and anthropic SDKs as clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

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
    write_config,
)
from unitcost.config import ConfigError
from unitcost.gateway.budgets import AlertLog, Reservation, lines_for
from unitcost.gateway.cache import RedisCache
from unitcost.gateway.config import Budget, parse_gateway
from unitcost.gateway.keys import hash_key

REDIS_PORT = 6379
SEARCH_KEY_2 = "uc-test-key-team-search-second"
"""A second key of team "search" (the first is GATEWAY_KEY; OTHER_KEY is team "ads")."""

EXTRA = f"""
[gateway.models.flaky]
upstream = "sim-openai"
model = "gpt-4o-mini"
fallbacks = ["gpt-4o"]

[gateway.routes.careful]
mode = "cascade"
light = "gpt-4o-mini"
strong = "gpt-4o"
check = {{ regex = '^\\[gpt-4o\\]' }}

[[gateway.keys]]
name = "search-key-2"
team = "search"
sha256 = "{hash_key(SEARCH_KEY_2)}"
"""


def cache_section(**settings: Any) -> str:
    lines = [f"{name} = {value!r}".replace("'", '"') for name, value in settings.items()]
    return "\n[gateway.cache]\nenabled = true\n" + "\n".join(lines) + "\n"


def chat(gw: GatewayProcess, content: str, key: str = GATEWAY_KEY, model: str = "gpt-4o-mini") -> Any:
    return oa(gw, key).chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": content}]
    )


def is_hit(raw: Any) -> bool:
    return raw.headers.get("x-unitcost-cache") == "hit"


def sim_chat_requests(sim: Any) -> int:
    return int(sim.requests["chat"])


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GatewayProcess, Path, Any]]:
    """One gateway with the in-memory cache and the default scope (each virtual key its own)."""
    directory = tmp_path_factory.mktemp("cache")
    with simulator() as (sim_url, sim):
        port = free_port()
        config = write_config(directory, sim_url, port, EXTRA + cache_section(ttl_s=600))
        with GatewayProcess(config, port) as process:
            yield process, directory, sim


# ------------------------------------------------------------------ tenants


def test_a_tenant_never_gets_another_tenants_cached_answer(gateway) -> None:
    gw, _, sim = gateway
    prompt = unique("what is our refund policy")
    first = chat(gw, prompt, GATEWAY_KEY)
    assert is_hit(chat(gw, prompt, GATEWAY_KEY))  # the same key: its own answer, from the cache
    before = sim_chat_requests(sim)
    for key in (OTHER_KEY, SEARCH_KEY_2):  # another team, and another key of the same team
        other = chat(gw, prompt, key)
        assert not is_hit(other)
        assert event(gateway[1], other.headers)["cache_hit"] is False
    assert sim_chat_requests(sim) == before + 2  # both went to the upstream
    assert first.parse().choices[0].message.content.startswith("[gpt-4o-mini]")


def test_cache_scope_team_shares_within_a_team_only(tmp_path: Path) -> None:
    with simulator() as (sim_url, _):
        port = free_port()
        config = write_config(tmp_path, sim_url, port, EXTRA + cache_section(scope="team"))
        with GatewayProcess(config, port) as gw:
            prompt = unique()
            chat(gw, prompt, GATEWAY_KEY)
            assert is_hit(chat(gw, prompt, SEARCH_KEY_2))  # team search
            # A header cannot claim another team's cache: only the virtual key says who calls.
            spoof = oa(gw, OTHER_KEY).chat.completions.with_raw_response.create(
                model="gpt-4o-mini",
                messages=[{"role": "user", "content": prompt}],
                extra_headers={"x-unitcost-tags": "team=search"},
            )
            assert not is_hit(spoof)


# ------------------------------------------------------------------ what the key covers


def test_anthropic_beta_header_changes_the_answer_so_it_changes_the_key(gateway) -> None:
    gw, _, _ = gateway
    prompt = unique()

    def ask(beta: str | None) -> Any:
        extra = {"anthropic-beta": beta} if beta else {}
        return an(gw).messages.with_raw_response.create(
            model="claude-sonnet-4-5",
            max_tokens=64,
            messages=[{"role": "user", "content": prompt}],
            extra_headers=extra,
        )

    ask(None)
    assert is_hit(ask(None))
    assert not is_hit(ask("context-1m-2025-08-07"))
    assert is_hit(ask("context-1m-2025-08-07"))


def test_only_whole_answers_of_the_model_asked_for_are_stored(gateway) -> None:
    gw, _, sim = gateway
    # An error is never stored, so never served.
    failing = unique("sim:status=400")
    for _ in range(2):
        with pytest.raises(openai.BadRequestError):
            chat(gw, failing)
    # A fallback's answer (the primary failed 3 times: its 2 retries too) is not stored under
    # the primary's key: once the primary is back, it answers, not the cache.
    prompt = unique("sim:fail_first=3")
    degraded = chat(gw, prompt, model="flaky")
    assert degraded.parse().choices[0].message.content.startswith("[gpt-4o]")
    again = chat(gw, prompt, model="flaky")
    assert not is_hit(again)
    assert again.parse().choices[0].message.content.startswith("[gpt-4o-mini]")
    assert is_hit(chat(gw, prompt, model="flaky"))  # the primary's own answer is stored
    # A stream is neither served from the cache nor stored.
    streamed = unique()
    for _ in range(2):
        with oa(gw).chat.completions.with_streaming_response.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": streamed}], stream=True
        ) as stream:
            assert "x-unitcost-cache" not in stream.headers
            assert list(stream.iter_lines())
    before = sim_chat_requests(sim)
    assert not is_hit(chat(gw, streamed))
    assert sim_chat_requests(sim) == before + 1


def test_a_hit_records_the_model_that_answered_cost_zero_and_what_it_avoided(tmp_path: Path) -> None:
    """A cascade route's answer came from its strong model: the hit is that model's answer,
    priced as such in the ledger (cost 0, avoided_cost = that answer's cost)."""
    from unitcost.api import Ledger

    with simulator() as (sim_url, _):
        port = free_port()
        config = write_config(tmp_path, sim_url, port, EXTRA + cache_section())
        with GatewayProcess(config, port) as gw:
            prompt = unique("sim:input=900 sim:output=40")
            first = chat(gw, prompt, model="careful")
            answered = event(tmp_path, first.headers)
            assert (answered["model"], answered["escalated_from"]) == ("gpt-4o", "gpt-4o-mini")
            hit = chat(gw, prompt, model="careful")
            assert is_hit(hit) and hit.headers["x-unitcost-cost"] == "0"
            assert hit.headers["x-unitcost-model"] == "gpt-4o"
            record = event(tmp_path, hit.headers)
            assert (record["model"], record["cache_hit"]) == ("gpt-4o", True)
            assert (record["input_tokens"], record["output_tokens"]) == (
                answered["input_tokens"],
                answered["output_tokens"],
            )
            hit_id, answered_id = hit.headers["x-unitcost-event-id"], answered["event_id"]
        with Ledger(str(tmp_path / "ledger.duckdb")) as ledger:
            rows = ledger.sql(
                "SELECT event_id, cost, avoided_cost FROM events "
                f"WHERE event_id IN ('{hit_id}', '{answered_id}')"
            )
        costs = {r.event_id: (r.cost, r.avoided_cost) for r in rows.itertuples(index=False)}
        strong_cost = Decimal(str(costs[answered_id][0]))
        assert strong_cost > 0
        assert Decimal(str(costs[hit_id][0])) == 0
        assert Decimal(str(costs[hit_id][1])) == strong_cost == Decimal(hit.headers["x-unitcost-saved"])


def test_an_unreadable_cache_entry_is_a_miss_not_a_500(tmp_path: Path) -> None:
    """An entry another version of the gateway wrote (or a corrupted one) is ignored."""
    directory = tmp_path
    raw = {
        "upstreams": {"up": {"base_url": "http://127.0.0.1:9/v1", "models": ["gpt-4o-mini"]}},
        "cache": {"enabled": True},
        "spool_dir": str(directory / "spool"),
    }
    config = parse_gateway(raw)
    for entry in (b"not json", b'{"body": "x"}', b'{"body": 1, "usage": {}}', b'{"body": "x", "usage": [1]}'):
        assert _hit_or_none(config, entry) is None


def _hit_or_none(config: Any, entry: bytes) -> Any:
    from unitcost.gateway.app import Call, Gateway

    gateway = Gateway.__new__(Gateway)
    gateway.config = config
    target = config.target("gpt-4o-mini")
    call = Call(
        "openai", "/chat/completions", "chat", {}, {}, {}, "gpt-4o-mini", target, None, 0.0, False, False
    )
    return gateway._cache_hit(call, entry)


# ------------------------------------------------------------------ Redis going away


def redis_or_skip() -> Any:
    import redis

    client = redis.Redis(host="127.0.0.1", port=REDIS_PORT, db=0, socket_connect_timeout=1)
    try:
        client.ping()
    except redis.RedisError:
        pytest.skip(f"no Redis on 127.0.0.1:{REDIS_PORT}: the Redis cache tests need a real one")
    return client


class RedisRelay:
    """A TCP relay to the real Redis that can be down (nothing listens) or up, on one port."""

    def __init__(self) -> None:
        self.port = free_port()
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None

    def up(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def down(self) -> None:
        """Stop listening and cut every relayed connection: Redis is gone for the gateway."""
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
            self._listener = None
        with self._lock:
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            self._sockets.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", REDIS_PORT))
            with self._lock:
                self._sockets.update((client, upstream))
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


def until_hit(gw: GatewayProcess, prompt: str, tries: int = 150) -> Any:
    """Ask until the cache answers (it tries Redis again a second after a failure)."""
    import time

    for _ in range(tries):
        raw = chat(gw, prompt)
        assert raw.http_response.status_code == 200
        if is_hit(raw):
            return raw
        time.sleep(0.1)
    raise AssertionError("the cache never answered once Redis was back")


def test_redis_cache_down_at_start_and_mid_run_serves_upstream_and_resumes(tmp_path: Path) -> None:
    client = redis_or_skip()
    prefix = f"unitcost-test-cache-{uuid.uuid4().hex}:"
    relay = RedisRelay()  # down: nothing listens on its port yet
    redis_section = f'\n[gateway.redis]\nurl = "redis://127.0.0.1:{relay.port}/0"\nprefix = "{prefix}"\n'
    try:
        with simulator() as (sim_url, _):
            port = free_port()
            extra = EXTRA + cache_section(backend="redis", ttl_s=120) + redis_section
            config = write_config(tmp_path, sim_url, port, extra)
            gw = GatewayProcess(config, port).start()
            try:
                prompt = unique()
                for _ in range(3):  # Redis unreachable since the start: served, uncached
                    raw = chat(gw, prompt)
                    assert raw.http_response.status_code == 200 and not is_hit(raw)
                relay.up()
                until_hit(gw, prompt)
                (stored,) = client.keys(f"{prefix}cache:*")
                assert 0 < client.ttl(stored) <= 120  # Redis expires the entry after ttl_s
                relay.down()  # Redis goes away mid-run
                for _ in range(5):
                    raw = chat(gw, prompt)
                    assert raw.http_response.status_code == 200 and not is_hit(raw)
                    assert raw.parse().choices[0].message.content.startswith("[gpt-4o-mini]")
                relay.up()
                until_hit(gw, prompt)
            finally:
                out = gw.stop()
    finally:
        relay.down()
        for key in client.scan_iter(match=f"{prefix}*"):
            client.delete(key)
    assert "Traceback" not in out and "unhandled error" not in out
    # Once per outage, not once per request; and its end, once.
    assert out.count("response cache unreachable") == 2, out
    assert out.count("response cache reachable again") == 2, out
    records = spooled(tmp_path).values()
    assert all(r["status"] == "ok" for r in records)
    assert sum(bool(r["cache_hit"]) for r in records) == 2


def test_redis_cache_outage_is_logged_once_without_the_password(caplog: pytest.LogCaptureFixture) -> None:
    dead = free_port()  # nothing listens there
    url = f"redis://cache-user:hunter2-cache-pw@127.0.0.1:{dead}/0?password=hunter2-query-pw"

    async def run() -> None:
        cache = RedisCache(url, "unitcost-test:", ttl_s=60, retry_s=0.0)
        try:
            for _ in range(5):
                assert await cache.get("k") is None
                await cache.put("k", b"{}")
        finally:
            await cache.close()

    with caplog.at_level(logging.WARNING, logger="unitcost.gateway.cache"):
        asyncio.run(run())
    messages = [r.getMessage() for r in caplog.records]
    assert len([m for m in messages if "response cache unreachable" in m]) == 1, messages
    assert not any("hunter2" in m for m in messages)
    assert any(f"127.0.0.1:{dead}" in m for m in messages)


# ------------------------------------------------------------------ configuration


UPSTREAM = {"kind": "openai", "api_key_env": "OPENAI_API_KEY", "models": ["gpt-4o-mini"]}


@pytest.mark.parametrize(
    "base_url",
    [
        "https://svc-user:s3cr3t-pass@llm.internal/v1",
        "https://sk-proj-s3cr3t-pass@llm.internal/v1",
        "https://llm.internal/v1?api-key=s3cr3t-pass",
    ],
)
def test_an_upstream_url_with_credentials_is_refused_without_quoting_them(base_url: str) -> None:
    with pytest.raises(ConfigError) as refused:
        parse_gateway({"upstreams": {"corp": {**UPSTREAM, "base_url": base_url}}})
    message = str(refused.value)
    assert message.startswith("[gateway.upstreams.corp] base_url")
    assert "api_key_env" in message
    assert "s3cr3t" not in message


@pytest.mark.parametrize(
    ("cache", "expected"),
    [
        ({"enabled": True, "backend": "reddis"}, "backend must be 'memory' or 'redis', not 'reddis'"),
        ({"enabled": True, "ttl": 60}, "unknown setting 'ttl'"),
        ({"enabled": True, "ttl_s": 0}, "ttl_s must be a positive whole number"),
        ({"enabled": True, "max_entries": -1}, "max_entries must be a positive whole number"),
        ({"enabled": "yes"}, "enabled must be true or false"),
        ({"enabled": True, "scope": "user"}, "scope must be one of key, team, global"),
    ],
)
def test_cache_settings_are_checked(cache: dict[str, Any], expected: str) -> None:
    base = {"upstreams": {"up": {**UPSTREAM, "base_url": "https://api.openai.com/v1"}}}
    with pytest.raises(ConfigError) as refused:
        parse_gateway({**base, "cache": cache})
    assert str(refused.value).startswith("[gateway.cache] ")
    assert expected in str(refused.value)


# ------------------------------------------------------------------ budget alerts


def over_threshold(lines: list[Any]) -> Reservation:
    """A reservation that finds each line at 90 % of its limit."""
    return Reservation(lines, 0, [(line.limit_nano * 9 // 10, 1) for line in lines])


def test_alert_log_forgets_ended_periods_and_never_realerts_within_one() -> None:
    daily = Budget("daily", "team", Decimal("10"), "day", action="alert")
    per_trace = Budget("agent", "trace", Decimal("1"), "total", action="alert")
    log = AlertLog()
    start = datetime(2026, 1, 1, 12, tzinfo=UTC)
    for day in range(400):  # more than a year of a running gateway, a new trace each day
        now = start + timedelta(days=day)
        attrs = {"team": "search", "trace": f"trace-{day}"}
        reservation = over_threshold(lines_for([daily, per_trace], attrs, "uc:", now))
        assert log.check(reservation, now) == ["daily", "agent"]  # a new period, a new trace
        later = now + timedelta(hours=6)  # the same period and trace: no second alert
        assert log.check(over_threshold(lines_for([daily, per_trace], attrs, "uc:", later)), later) == []
        # Ended days are forgotten at once; traces 30 days after their last alert.
        assert len(log) <= 1 + 31
    assert len(log) <= 32


def test_alert_log_keeps_an_active_trace_alerted_past_its_ttl() -> None:
    per_trace = Budget("agent", "trace", Decimal("1"), "total", action="alert")
    log = AlertLog()
    now = datetime(2026, 1, 1, tzinfo=UTC)
    attrs = {"trace": "long-agent"}
    assert log.check(over_threshold(lines_for([per_trace], attrs, "uc:", now)), now) == ["agent"]
    for day in range(1, 90):  # the trace keeps calling every day: it stays alerted once
        when = now + timedelta(days=day)
        assert log.check(over_threshold(lines_for([per_trace], attrs, "uc:", when)), when) == []


def test_memory_cache_is_bounded_by_bytes_not_only_by_entries() -> None:
    from unitcost.gateway.cache import MemoryCache

    async def run() -> None:
        cache = MemoryCache(ttl_s=60, max_entries=10_000, max_bytes=8_000)
        for n in range(100):  # 100 answers of 500 bytes: 50 kB, over the 8 kB bound
            await cache.put(f"k{n}", bytes(500))
        assert await cache.get("k0") is None  # the oldest went first
        assert await cache.get("k99") == bytes(500)
        kept = [n for n in range(100) if await cache.get(f"k{n}") is not None]
        assert len(kept) * 500 <= 8_000
        await cache.put("huge", bytes(5_000))  # over an eighth of the bound: not stored
        assert await cache.get("huge") is None and await cache.get("k99") is not None

    asyncio.run(run())
