"""Nothing lost, nothing overspent: kill -9 under load, and a shared budget under concurrency."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import threading
import time
import uuid
from decimal import Decimal
from pathlib import Path

import duckdb
import httpx
import pytest

from gateway_support import GATEWAY_KEY, GatewayProcess, free_port, simulator, write_config
from unitcost.gateway.spool import CHECKPOINT

HEADERS = {"authorization": f"Bearer {GATEWAY_KEY}"}


def ledger_rows(directory: Path, sql: str) -> list[tuple[object, ...]]:
    with duckdb.connect(str(directory / "ledger.duckdb"), read_only=True) as con:
        return con.execute(sql).fetchall()


def test_kill_9_under_load_loses_no_returned_response(tmp_path: Path) -> None:
    threads_count = 6
    with simulator(latency_ms=5) as (sim_url, _):
        port = free_port()
        config = write_config(tmp_path, sim_url, port)
        gateway = GatewayProcess(config, port).start()
        received: list[str] = []
        lock = threading.Lock()
        stop = threading.Event()

        def client() -> None:
            with httpx.Client(base_url=gateway.url, headers=HEADERS, timeout=10) as http:
                while not stop.is_set():
                    body = {"model": "fast", "messages": [{"role": "user", "content": uuid.uuid4().hex}]}
                    try:
                        response = http.post("/v1/chat/completions", json=body)
                        response.read()
                    except httpx.HTTPError:
                        return  # the gateway is gone: this request's response never arrived
                    if response.status_code == 200:
                        with lock:
                            received.append(response.headers["x-unitcost-event-id"])

        workers = [threading.Thread(target=client) for _ in range(threads_count)]
        for worker in workers:
            worker.start()
        deadline = time.monotonic() + 30
        while len(received) < 300 and time.monotonic() < deadline:
            time.sleep(0.05)
        gateway.kill9()
        stop.set()
        for worker in workers:
            worker.join(timeout=20)
        assert len(received) >= 300

        restarted = GatewayProcess(config, port).start()  # replays the spool into the ledger
        output = restarted.stop()
    rows = [row[0] for row in ledger_rows(tmp_path, "SELECT event_id FROM events")]
    ids = set(rows)
    assert len(rows) == len(ids), "the replay counted an event twice"
    missing = set(received) - ids
    assert not missing, f"{len(missing)} events of returned responses were lost"
    # Events spooled for requests in flight at the kill (their clients never got an answer) are
    # kept: the upstream did the work. There can be at most one per client connection.
    assert len(ids) - len(received) <= threads_count
    assert "sk-sim-secret" not in output


def ledger_writer_of(gateway: int) -> int:
    """The pid of the gateway's ledger writer (its child started by multiprocessing's spawn)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue  # gone meanwhile
        parent = int(stat.rpartition(")")[2].split()[1])
        if parent == gateway and b"spawn_main" in cmdline:
            return int(entry.name)
    raise AssertionError(f"gateway {gateway} has no ledger writer process")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the writer dies with the gateway on Linux")
def test_restart_after_kill_9_is_not_locked_out_by_a_starved_ledger_writer(tmp_path: Path) -> None:
    # The ledger writer runs niced: on a busy machine it can get almost no CPU for many seconds
    # while it holds the ledger's lock. Stopping it (SIGSTOP) before the gateway is killed makes
    # that starvation certain instead of likely. The restarted gateway must still open the ledger
    # and replay the spool, which it cannot while the orphaned writer lives.
    with simulator() as (sim_url, _):
        port = free_port()
        config = write_config(tmp_path, sim_url, port)
        gateway = GatewayProcess(config, port).start()
        assert gateway.proc is not None
        checkpoint = tmp_path / "spool" / CHECKPOINT
        deadline = time.monotonic() + 180  # a niced process on a busy machine: be patient
        while not checkpoint.exists():  # the writer has drained once: it is past its start-up
            assert time.monotonic() < deadline, "the ledger writer never drained the spool"
            time.sleep(0.05)
        writer = ledger_writer_of(gateway.proc.pid)
        received: list[str] = []
        try:
            os.kill(writer, signal.SIGSTOP)
            with httpx.Client(base_url=gateway.url, headers=HEADERS, timeout=30) as http:
                for _ in range(5):
                    body = {"model": "fast", "messages": [{"role": "user", "content": uuid.uuid4().hex}]}
                    response = http.post("/v1/chat/completions", json=body)
                    assert response.status_code == 200
                    received.append(response.headers["x-unitcost-event-id"])
            gateway.kill9()
            restarted = GatewayProcess(config, port).start()
            output = restarted.stop()
        finally:
            # Never leave a stopped orphan behind (the pid is checked to still be that writer).
            with contextlib.suppress(OSError):
                if b"spawn_main" in Path(f"/proc/{writer}/cmdline").read_bytes():
                    os.kill(writer, signal.SIGKILL)
    # The stopped writer ingested none of them: the restart replayed them from the spool.
    assert "5 events of a previous run replayed" in output
    ids = {row[0] for row in ledger_rows(tmp_path, "SELECT event_id FROM events")}
    assert set(received) <= ids


def redis_url() -> str:
    import redis

    url = "redis://127.0.0.1:6379/0"
    try:
        redis.Redis.from_url(url, socket_connect_timeout=1).ping()
    except redis.RedisError:
        pytest.skip("no Redis on 127.0.0.1:6379: the shared-budget test needs a real one")
    return url


def test_shared_budget_holds_across_two_replicas(tmp_path: Path) -> None:
    import redis

    url = redis_url()
    prefix = f"unitcost-test-{uuid.uuid4().hex}:"
    limit = Decimal("0.50")
    extra = f"""
[gateway.redis]
url = "{url}"
prefix = "{prefix}"

[[gateway.budgets]]
name = "fleet"
scope = "global"
period = "day"
limit_usd = "{limit}"
action = "block"
"""
    with simulator(latency_ms=20) as (sim_url, _):
        replicas = []
        for name in ("a", "b"):
            directory = tmp_path / name
            directory.mkdir()
            port = free_port()
            replicas.append((GatewayProcess(write_config(directory, sim_url, port, extra), port), directory))
        for process, _ in replicas:
            process.start()

        async def fire() -> list[httpx.Response]:
            limits = httpx.Limits(max_connections=400)
            async with httpx.AsyncClient(headers=HEADERS, timeout=60, limits=limits) as http:
                calls = []
                for i in range(300):
                    process = replicas[i % 2][0]
                    prompt = f"sim:input=50 sim:output=800 {uuid.uuid4().hex}"
                    body = {
                        "model": "gpt-4o",
                        "max_tokens": 1000,
                        "messages": [{"role": "user", "content": prompt}],
                    }
                    calls.append(http.post(process.url + "/v1/chat/completions", json=body))
                return await asyncio.gather(*calls)

        responses = asyncio.run(fire())
        for process, _ in replicas:
            process.stop()
    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {200, 429}, statuses
    rejected = [r for r in responses if r.status_code == 429]
    assert rejected and all(r.json()["error"]["budget"]["name"] == "fleet" for r in rejected)

    spend = Decimal(0)
    ok_events = blocked_events = 0
    for _, directory in replicas:
        rows = ledger_rows(
            directory,
            "SELECT coalesce(sum(cost), 0), count(*) FILTER (status = 'ok'), "
            "count(*) FILTER (http_status = 429) FROM events",
        )
        spend += Decimal(rows[0][0])
        ok_events += int(rows[0][1])  # type: ignore[call-overload]
        blocked_events += int(rows[0][2])  # type: ignore[call-overload]
    assert ok_events == statuses.count(200) and blocked_events == len(rejected)
    # Every real cost here is below its reservation, so spend stays under the limit itself.
    assert spend <= limit
    assert spend > limit / 2  # the budget was used, not refused wholesale
    counters = redis.Redis.from_url(url).hgetall(
        f"{prefix}budget:fleet:*:{time.strftime('%Y-%m-%d', time.gmtime())}"
    )
    # Redis holds the settled spend: the ledger's costs rounded up to nano-USD, request by request.
    assert int(counters[b"c"]) == ok_events
    assert abs(Decimal(int(counters[b"s"])).scaleb(-9) - spend) <= Decimal(ok_events) * Decimal("1e-9")


def test_the_gateway_writer_runs_the_watch_when_asked(tmp_path: Path) -> None:
    """With a DuckDB ledger the gateway's writer process is its only writer, so `[gateway] watch =
    true` runs the watch cycles there, between drains: every event the gateway wrote is rolled up."""
    with simulator(latency_ms=1) as (sim_url, _):
        port = free_port()
        config = write_config(tmp_path, sim_url, port, "\n[watch]\ninterval_seconds = 0.1\n")
        config.write_text(config.read_text().replace("[gateway]\n", "[gateway]\nwatch = true\n", 1))
        with (
            GatewayProcess(config, port) as gateway,
            httpx.Client(base_url=gateway.url, headers=HEADERS, timeout=10) as http,
        ):
            for _ in range(5):
                body = {"model": "fast", "messages": [{"role": "user", "content": uuid.uuid4().hex}]}
                assert http.post("/v1/chat/completions", json=body).status_code == 200
            time.sleep(0.5)  # drains and watch cycles; the last ones run when the gateway stops
    calls = ledger_rows(tmp_path, "SELECT CAST(sum(calls) AS BIGINT) FROM watch_hourly")[0][0]
    events = ledger_rows(tmp_path, "SELECT count(*) FROM events")[0][0]
    assert events == 5 and calls == 5
