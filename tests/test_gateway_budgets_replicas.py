"""Budgets enforced by several gateway replicas sharing Redis, as a platform team runs them.

Real gateway processes on 127.0.0.1, the simulator as their upstream (usage objects shaped as
the real APIs report them), the official OpenAI and Anthropic SDKs as clients, and the real
Redis on 127.0.0.1:6379 under a key prefix of each test's own (removed afterwards).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import anthropic
import openai
import pytest

from gateway_support import GATEWAY_KEY, GatewayProcess, an, free_port, oa, simulator, unique, write_config
from unitcost.gateway.budgets import (
    Line,
    MemoryBudgetState,
    RedisBudgetState,
    lines_for,
    pico_to_nano_ceil,
)
from unitcost.gateway.config import Budget
from unitcost.gateway.tokens import count_prompt
from unitcost.money import usd_to_pico

REDIS_PORT = 6379
REDIS_URL = f"redis://127.0.0.1:{REDIS_PORT}/0"
LIMIT = Decimal("0.02")
NEW_YORK = ZoneInfo("America/New_York")


def redis_client() -> Any:
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1, decode_responses=True)
    try:
        client.ping()
    except redis.RedisError:
        pytest.skip(f"no Redis on 127.0.0.1:{REDIS_PORT}: these budget tests need a real one")
    return client


@contextlib.contextmanager
def redis_prefix() -> Iterator[tuple[Any, str]]:
    client = redis_client()
    prefix = f"unitcost-test-{uuid.uuid4().hex}:"
    try:
        yield client, prefix
    finally:
        for key in client.scan_iter(match=prefix + "*"):
            client.delete(key)


def nano(cost: str) -> int:
    """A cost header in integer nano-USD, rounded up as budget lines count it."""
    return pico_to_nano_ceil(usd_to_pico(Decimal(cost)))


def budgets_config(sim_url: str, redis_url: str, prefix: str, extra: str = "") -> str:
    return f"""
[gateway.redis]
url = "{redis_url}"
prefix = "{prefix}"
lease_s = 1.5
{extra}

[gateway.upstreams.local]
kind = "openai"
base_url = "{sim_url}/v1"
api_key_env = "SIM_OPENAI_KEY"
provider = "self-hosted"
models = ["my-llama"]

[[gateway.budgets]]
name = "probe-cap"
scope = "tag:probe"
period = "month"
timezone = "America/New_York"
limit_usd = "{LIMIT}"
action = "block"

[[gateway.budgets]]
name = "free-tier"
scope = "tag:free"
limit_usd = "1"
max_calls = 100
unpriced = "allow"
"""


@dataclass
class Fleet:
    replicas: list[GatewayProcess]
    redis: Any
    prefix: str

    def line(self, budget: str, value: str) -> dict[str, int]:
        """The counters of one budget line (its period's key, found by pattern)."""
        keys = list(self.redis.scan_iter(match=f"{self.prefix}budget:{budget}:{value}:*"))
        assert len(keys) <= 1, keys
        raw = self.redis.hgetall(keys[0]) if keys else {}
        return {name: int(raw.get(name, 0)) for name in ("s", "c", "r")}

    def wait_line(self, budget: str, value: str, ready: Any, timeout: float = 30.0) -> dict[str, int]:
        deadline = time.monotonic() + timeout
        while True:
            counters = self.line(budget, value)
            if ready(counters):
                return counters
            if time.monotonic() > deadline:
                raise AssertionError(f"line {budget}/{value} never got there: {counters}")
            time.sleep(0.05)

    def leases(self) -> dict[str, float]:
        return dict(self.redis.zrange(f"{self.prefix}budget-leases", 0, -1, withscores=True))


def start_replicas(root: Path, sim_url: str, config_text: str, count: int) -> list[GatewayProcess]:
    replicas = []
    for i in range(count):
        directory = root / f"replica-{i}"
        directory.mkdir()
        port = free_port()
        replicas.append(GatewayProcess(write_config(directory, sim_url, port, config_text), port))
    for replica in replicas:
        replica.start()
    return replicas


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    """Three replicas sharing budgets through Redis, each with its own spool and ledger."""
    with redis_prefix() as (client, prefix), simulator() as (sim_url, _):
        root = tmp_path_factory.mktemp("fleet")
        replicas = start_replicas(root, sim_url, budgets_config(sim_url, REDIS_URL, prefix), 3)
        try:
            yield Fleet(replicas, client, prefix)
        finally:
            for replica in replicas:
                if replica.proc is not None and replica.proc.poll() is None:
                    replica.stop()


def probe() -> tuple[str, dict[str, str]]:
    value = uuid.uuid4().hex
    return value, {"x-unitcost-tags": f"probe={value}"}


def in_thread(target: Any) -> tuple[threading.Thread, list[Any]]:
    """Run `target` in a thread; its result (or the exception it raised) lands in the list."""
    out: list[Any] = []

    def run() -> None:
        try:
            out.append(target())
        except Exception as exc:  # handed to the test
            out.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, out


# ------------------------------------------------------------------ concurrency


def test_three_replicas_hold_one_limit_under_concurrent_load(fleet: Fleet) -> None:
    value, headers = probe()
    clients = [
        openai.AsyncOpenAI(base_url=r.url + "/v1", api_key=GATEWAY_KEY, max_retries=0) for r in fleet.replicas
    ]

    async def one(i: int) -> str | openai.RateLimitError:
        try:
            raw = await clients[i % 3].chat.completions.with_raw_response.create(
                model="gpt-4o-mini",
                max_tokens=1000,
                messages=[{"role": "user", "content": unique("sim:output=900 sim:latency_ms=150")}],
                extra_headers=headers,
            )
        except openai.RateLimitError as exc:
            return exc
        return str(raw.headers["x-unitcost-cost"])

    async def fire() -> list[str | openai.RateLimitError]:
        return await asyncio.gather(*(one(i) for i in range(90)))

    results = asyncio.run(fire())
    costs = [r for r in results if isinstance(r, str)]
    blocked = [r for r in results if isinstance(r, openai.RateLimitError)]
    assert costs and blocked
    assert all(exc.body["budget"]["name"] == "probe-cap" for exc in blocked)  # type: ignore[index]
    # Spend is settled to the real costs, nothing stays reserved, and the limit held for the fleet.
    counters = fleet.line("probe-cap", value)
    assert counters == {"s": sum(nano(c) for c in costs), "c": len(costs), "r": 0}
    assert sum(Decimal(c) for c in costs) <= LIMIT
    assert not fleet.leases()


def test_a_block_names_what_requests_in_flight_on_other_replicas_hold(fleet: Fleet) -> None:
    """Replica 0 has a request in flight; replicas 1 (OpenAI SDK) and 2 (Anthropic SDK) are
    refused, and the 429 says what is spent, what is reserved, what is left and when it resets."""
    value, headers = probe()
    slow = unique("sim:latency_ms=2500")
    holder, answer = in_thread(
        lambda: oa(fleet.replicas[0]).chat.completions.create(
            model="gpt-4o",
            max_tokens=1000,
            messages=[{"role": "user", "content": slow}],
            extra_headers=headers,
        )
    )
    reserved = fleet.wait_line("probe-cap", value, lambda c: c["r"] > 0)["r"]
    before = datetime.now(UTC)
    with pytest.raises(openai.RateLimitError) as blocked:
        oa(fleet.replicas[1]).chat.completions.create(
            model="gpt-4o",
            max_tokens=1000,
            messages=[{"role": "user", "content": unique()}],
            extra_headers=headers,
        )
    body = blocked.value.body
    assert isinstance(body, dict) and body["code"] == "budget_exceeded"
    budget = body["budget"]
    held = Decimal(reserved).scaleb(-9)
    assert budget["name"] == "probe-cap" and budget["value"] == value
    assert (Decimal(budget["spend_usd"]), Decimal(budget["reserved_usd"])) == (0, held)
    assert Decimal(budget["remaining_usd"]) == LIMIT - held
    assert "reserved by requests in flight" in body["message"]
    # The period is the calendar month in New York: it resets at local midnight on the 1st.
    local = before.astimezone(NEW_YORK)
    first = (local.replace(day=1) + timedelta(days=32)).replace(
        day=1, hour=0, minute=0, second=0, microsecond=0
    )
    reset = first.replace(tzinfo=None).replace(tzinfo=NEW_YORK).astimezone(UTC)
    assert budget["reset_at"] == reset.isoformat().replace("+00:00", "Z")
    response = blocked.value.response
    assert response.headers["x-should-retry"] == "false"
    assert 0 < int(response.headers["retry-after"]) <= (reset - before).total_seconds() + 1

    with pytest.raises(anthropic.RateLimitError) as refused:
        an(fleet.replicas[2]).messages.create(
            model="claude-sonnet-4-5",
            max_tokens=1000,
            messages=[{"role": "user", "content": unique()}],
            extra_headers=headers,
        )
    error = refused.value.body["error"]  # type: ignore[index]
    assert error["type"] == "rate_limit_error" and error["budget"]["name"] == "probe-cap"

    holder.join(60)
    assert isinstance(answer[0], openai.types.chat.ChatCompletion), answer
    counters = fleet.line("probe-cap", value)
    assert counters["r"] == 0 and counters["c"] == 1 and 0 < counters["s"] < reserved


def test_a_stream_longer_than_the_lease_keeps_its_reservation(fleet: Fleet) -> None:
    """Leases are renewed while a request runs: another replica's reservations, which release
    expired leases, leave a long stream's reservation alone."""
    value, headers = probe()
    content = unique("sim:chunk_ms=700")

    def stream() -> int:
        chunks = oa(fleet.replicas[0]).chat.completions.create(
            model="gpt-4o-mini",
            max_tokens=1000,
            stream=True,
            messages=[{"role": "user", "content": content}],
            extra_headers=headers,
        )
        return sum(1 for _ in chunks)

    thread, out = in_thread(stream)
    reserved = fleet.wait_line("probe-cap", value, lambda c: c["r"] > 0)["r"]
    time.sleep(3.5)  # more than two leases of 1.5 s
    _, other = probe()
    oa(fleet.replicas[1]).chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": unique()}], extra_headers=other
    )
    assert fleet.line("probe-cap", value)["r"] == reserved  # still held: its lease was renewed
    thread.join(60)
    assert isinstance(out[0], int) and out[0] > 3, out
    counters = fleet.line("probe-cap", value)
    assert counters["r"] == 0 and counters["c"] == 1 and 0 < counters["s"] < reserved


# ------------------------------------------------------------------ what a reservation must cover


def test_a_model_without_a_price_is_refused_by_a_money_limit_not_counted_as_zero(fleet: Fleet) -> None:
    value, headers = probe()
    with pytest.raises(openai.PermissionDeniedError) as refused:
        oa(fleet.replicas[2]).chat.completions.create(
            model="my-llama", messages=[{"role": "user", "content": unique()}], extra_headers=headers
        )
    body = refused.value.body
    assert isinstance(body, dict) and body["code"] == "budget_unpriced_model"
    assert "'probe-cap'" in body["message"] and "my-llama has no price" in body["message"]
    assert fleet.line("probe-cap", value) == {"s": 0, "c": 0, "r": 0}

    # A budget that says unpriced = "allow" lets it through, counted by its calls only.
    free = uuid.uuid4().hex
    raw = oa(fleet.replicas[2]).chat.completions.with_raw_response.create(
        model="my-llama",
        messages=[{"role": "user", "content": unique()}],
        extra_headers={"x-unitcost-tags": f"free={free}"},
    )
    assert raw.headers["x-unitcost-cost"] == "unpriced"
    assert fleet.line("free-tier", free) == {"s": 0, "c": 1, "r": 0}


def test_n_choices_are_reserved_n_times(fleet: Fleet) -> None:
    """OpenAI generates and bills every one of the `n` choices a chat request asks for."""
    _, headers = probe()
    messages = [{"role": "user", "content": unique()}]
    with pytest.raises(openai.RateLimitError) as blocked:
        oa(fleet.replicas[0]).chat.completions.create(
            model="gpt-4o", max_tokens=800, n=3, messages=messages, extra_headers=headers
        )
    assert "worst case $0.024" in blocked.value.body["message"]  # type: ignore[index]
    oa(fleet.replicas[0]).chat.completions.create(
        model="gpt-4o", max_tokens=800, messages=messages, extra_headers=headers
    )


def test_prompt_cache_writes_are_reserved_at_their_price(fleet: Fleet) -> None:
    """Anthropic bills cache writes at 1.25x (5 minutes) or 2x (one hour) the input price: a
    request that asks for them is reserved at that rate, not at the plain input rate."""
    text = "cost " * 4400

    def body(ttl: str | None, directive: str = "") -> dict[str, Any]:
        block: dict[str, Any] = {"type": "text", "text": text}
        if ttl is not None:
            block["cache_control"] = {"type": "ephemeral", "ttl": ttl}
        return {
            "model": "claude-sonnet-4-5",
            "max_tokens": 1,
            "system": [block],
            "messages": [{"role": "user", "content": unique(directive)}],
        }

    tokens = count_prompt(body(None))
    # At $3/M input: plain and 5-minute writes fit the $0.02 limit, one-hour writes do not.
    assert tokens * Decimal("3.75e-6") < LIMIT < tokens * Decimal("6e-6")
    for request in (body(None), body("5m", f"sim:cache_write_5m={tokens - 100}")):
        _, headers = probe()
        an(fleet.replicas[1]).messages.create(**request, extra_headers=headers)
    _, headers = probe()
    with pytest.raises(anthropic.RateLimitError):
        an(fleet.replicas[1]).messages.create(**body("1h"), extra_headers=headers)


# ------------------------------------------------------------------ a replica that dies


def test_a_replica_killed_with_requests_in_flight_does_not_hold_their_reservations_forever(
    fleet: Fleet,
) -> None:
    value, headers = probe()
    oa(fleet.replicas[0]).chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": unique()}], extra_headers=headers
    )
    settled = fleet.line("probe-cap", value)
    victim = fleet.replicas[2]
    threads = [
        in_thread(
            lambda: oa(victim).chat.completions.create(
                model="gpt-4o-mini",
                max_tokens=1000,
                messages=[{"role": "user", "content": unique("sim:latency_ms=30000")}],
                extra_headers=headers,
            )
        )[0]
        for _ in range(4)
    ]
    fleet.wait_line("probe-cap", value, lambda c: c["c"] == settled["c"] + 4)
    victim.kill9()
    for thread in threads:
        thread.join(30)
    # Once their leases have run out (Redis time), the next reservation anywhere releases them.
    deadline = max(fleet.leases().values(), default=0)
    while int(fleet.redis.time()[0]) * 1000 <= deadline:
        time.sleep(0.1)
    raw = oa(fleet.replicas[1]).chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": unique()}], extra_headers=headers
    )
    counters = fleet.line("probe-cap", value)
    # Money back to what settled calls cost; the four calls stay counted (they were sent).
    assert counters == {
        "s": settled["s"] + nano(raw.headers["x-unitcost-cost"]),
        "c": settled["c"] + 5,
        "r": 0,
    }
    assert not fleet.leases()
    victim.start()  # the fixture's other tests keep three replicas


# ------------------------------------------------------------------ Redis going away


class CuttableProxy:
    """A TCP relay to Redis that can be cut (connections closed, new ones refused) and restored."""

    def __init__(self) -> None:
        self.port = free_port()
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._listening = threading.Event()
        self.restore()

    def restore(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(128)
        listener.settimeout(0.1)
        self._listening.set()
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        self._listening.clear()
        time.sleep(0.3)  # the accept loop notices and closes the listener
        with self._lock:
            for sock in list(self._sockets):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            self._sockets.clear()

    def _accept(self, listener: socket.socket) -> None:
        with listener:
            while self._listening.is_set():
                try:
                    client, _ = listener.accept()
                except TimeoutError:
                    continue
                except OSError:
                    return
                client.settimeout(None)
                upstream = socket.create_connection(("127.0.0.1", REDIS_PORT))
                with self._lock:
                    self._sockets.update((client, upstream))
                for src, dst in ((client, upstream), (upstream, client)):
                    threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


def test_redis_going_away_mid_request_fails_closed_or_open_as_configured(tmp_path: Path) -> None:
    """Replica "closed" (the default) refuses new requests while Redis is away, but a request it
    had admitted still gets its answer; replica "open" (fail_open = true) lets requests through.
    When Redis is back, both write what those calls cost."""
    with redis_prefix() as (client, prefix), simulator() as (sim_url, _):
        proxy = CuttableProxy()
        via_proxy = f"redis://127.0.0.1:{proxy.port}/0"
        replicas = []
        for name, extra in (("closed", ""), ("open", "fail_open = true")):
            directory = tmp_path / name
            directory.mkdir()
            port = free_port()
            text = budgets_config(sim_url, via_proxy, prefix, extra)
            replicas.append(GatewayProcess(write_config(directory, sim_url, port, text), port))
        closed, opened = (replica.start() for replica in replicas)
        fleet = Fleet(replicas, client, prefix)
        try:
            value, headers = probe()
            holder, answer = in_thread(
                lambda: oa(closed).chat.completions.with_raw_response.create(
                    model="gpt-4o-mini",
                    messages=[{"role": "user", "content": unique("sim:latency_ms=1500")}],
                    extra_headers=headers,
                )
            )
            fleet.wait_line("probe-cap", value, lambda c: c["c"] == 1)
            proxy.cut()
            holder.join(30)
            assert not isinstance(answer[0], Exception), answer  # the answer it paid for arrived
            with pytest.raises(openai.InternalServerError) as refused:
                oa(closed).chat.completions.create(
                    model="gpt-4o-mini",
                    messages=[{"role": "user", "content": unique()}],
                    extra_headers=headers,
                )
            assert refused.value.status_code == 503
            assert refused.value.body["code"] == "budget_unavailable"  # type: ignore[index]
            unguarded = oa(opened).chat.completions.with_raw_response.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": unique()}], extra_headers=headers
            )
            assert "x-unitcost-budget" not in unguarded.headers  # no budget figure it could not read
            proxy.restore()
            costs = [answer[0].headers["x-unitcost-cost"], unguarded.headers["x-unitcost-cost"]]
            expected = {"s": sum(nano(c) for c in costs), "c": 2, "r": 0}
            assert fleet.wait_line("probe-cap", value, lambda c: c == expected) == expected
        finally:
            outputs = [replica.stop() for replica in replicas if replica.proc and replica.proc.poll() is None]
            proxy.cut()
    assert any("budget state unreachable" in out and "refused with a 503" in out for out in outputs)
    assert any("admitted unguarded (fail_open = true)" in out for out in outputs)
    assert all("budget state reachable again" in out for out in outputs)


# ------------------------------------------------------------------ the state itself


def test_a_settlement_after_its_lease_was_released_adds_the_whole_cost() -> None:
    """A replica that stalls past its lease: another one releases the reservation, and the
    late settlement then adds the call's whole cost, so the line ends exact either way."""
    with redis_prefix() as (client, prefix):
        budget = Budget(name="b", scope="global", limit_usd=Decimal("1"), period="day")
        lines = lines_for([budget], {}, prefix, datetime.now(UTC))
        key = lines[0].key

        def counters() -> tuple[int, int, int]:
            raw = client.hgetall(key)
            return int(raw.get("s", 0)), int(raw.get("c", 0)), int(raw.get("r", 0))

        async def run() -> None:
            stalled = RedisBudgetState(REDIS_URL, prefix, lease_s=0.2)
            other = RedisBudgetState(REDIS_URL, prefix, lease_s=30)
            try:
                first = await stalled.hold(lines, 5_000)
                assert stalled._heartbeat is not None
                stalled._heartbeat.cancel()  # stops renewing, as a frozen process would
                await asyncio.sleep(0.5)
                second = await other.hold(lines, 3_000)  # releases the expired lease
                assert counters() == (3_000, 2, 3_000)
                await stalled.settle(first, 1_200)
                assert counters() == (4_200, 2, 3_000)
                client.delete(key)  # the line's period ended meanwhile and its key expired
                await other.settle(second, 1_000)
                assert client.ttl(key) > 0  # a settlement never leaves a key that lives forever
            finally:
                await stalled.close()
                await other.close()

        asyncio.run(run())


def test_a_reservation_made_before_a_period_rolls_over_settles_on_its_own_period() -> None:
    with redis_prefix() as (client, prefix):
        budget = Budget(
            name="monthly", scope="global", limit_usd=Decimal("1"), period="month", timezone=NEW_YORK
        )
        november = datetime(2026, 12, 1, 4, 59, 59, tzinfo=UTC)  # 23:59:59 on Nov 30 in New York
        old = lines_for([budget], {}, prefix, november)
        new = lines_for([budget], {}, prefix, november + timedelta(seconds=2))
        assert old[0].reset_at == datetime(2026, 12, 1, 5, tzinfo=UTC) and old[0].key != new[0].key

        async def run() -> None:
            state = RedisBudgetState(REDIS_URL, prefix)
            try:
                late = await state.hold(old, 5_000)
                await state.hold(new, 7_000)
                await state.settle(late, 1_000)
            finally:
                await state.close()

        asyncio.run(run())
        assert client.hgetall(old[0].key) == {"s": "1000", "c": "1", "r": "0"}
        assert client.hgetall(new[0].key) == {"s": "7000", "c": "1", "r": "7000"}


def test_memory_lines_of_finished_traces_are_dropped() -> None:
    """Per-trace budgets make a line per trace: in memory they expire like their Redis keys,
    except while a request still holds a reservation on them."""
    budget = Budget(name="agent", scope="trace", limit_usd=None, max_calls=5, period="total")
    done = Line(budget, "t1", "budget:agent:t1:all", None, 1)
    running = Line(budget, "t2", "budget:agent:t2:all", None, 1)
    state = MemoryBudgetState()

    async def run() -> None:
        await state.settle(await state.hold([done], 100), 50)
        await state.hold([running], 100)  # still in flight
        time.sleep(1.2)
        state._next_sweep = 0
        await state.hold([Line(budget, "t3", "budget:agent:t3:all", None, 60)], 100)

    asyncio.run(run())
    assert set(state._counters) == {"budget:agent:t2:all", "budget:agent:t3:all"}


@pytest.mark.parametrize(
    ("section", "message"),
    [
        (
            {"budgets": [{"name": "b", "limit_usd": "1", "unpriced": "ignore"}]},
            "unpriced must be block or allow",
        ),
        (
            {"redis": {"url": REDIS_URL, "fail_open": "yes"}},
            "[gateway.redis] fail_open must be true or false",
        ),
        ({"redis": {"url": REDIS_URL, "lease_s": 0}}, "[gateway.redis] lease_s must be a positive number"),
    ],
)
def test_budget_settings_are_checked_when_the_config_loads(section: dict[str, Any], message: str) -> None:
    from unitcost.config import ConfigError
    from unitcost.gateway.config import parse_gateway

    upstreams = {"upstreams": {"sim": {"kind": "openai", "base_url": "http://127.0.0.1:1/v1"}}}
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_gateway({**upstreams, **section})
