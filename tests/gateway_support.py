"""Real servers on 127.0.0.1 for the gateway tests: the simulator in a thread, gateways as processes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson

GATEWAY_KEY = "uc-test-key-team-search"
OTHER_KEY = "uc-test-key-team-ads"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(url: str, timeout: float = 60.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            out = proc.stdout.read().decode() if proc.stdout else ""
            raise RuntimeError(f"process exited with {proc.returncode}: {out}")
        with contextlib.suppress(httpx.HTTPError):
            httpx.get(url, timeout=1.0)
            return
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer in {timeout} s")


class ThreadServer:
    """A handler served by the gateway's HTTP server in a background thread (for the simulator)."""

    def __init__(self, handler: Any, port: int) -> None:
        self.handler = handler
        self.port = port
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.stop_event: asyncio.Event | None = None

    def _run(self) -> None:
        from unitcost.gateway.httpserver import HttpServer, serve_until_stopped

        async def main() -> None:
            self.loop = asyncio.get_running_loop()
            self.stop_event = asyncio.Event()
            await serve_until_stopped(HttpServer(self.handler), "127.0.0.1", self.port, self.stop_event)

        asyncio.run(main())

    def __enter__(self) -> ThreadServer:
        self.thread.start()
        wait_http(f"http://127.0.0.1:{self.port}/v1/models")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.loop is not None and self.stop_event is not None:
            self.loop.call_soon_threadsafe(self.stop_event.set)
        self.thread.join(timeout=10)


@contextlib.contextmanager
def simulator(latency_ms: float = 0.0) -> Iterator[tuple[str, Any]]:
    from unitcost.gateway.simulator import Simulator

    sim = Simulator(latency_ms=latency_ms)
    port = free_port()
    with ThreadServer(sim.handle, port):
        yield f"http://127.0.0.1:{port}", sim


def write_config(
    directory: Path, sim_url: str, port: int, extra: str = "", *, name: str = "unitcost.toml"
) -> Path:
    from unitcost.gateway.keys import hash_key

    text = f"""
[ledger]
path = "ledger.duckdb"

[gateway]
port = {port}
spool_dir = "spool"
retries = 2
backoff_base_s = 0.005
max_body_bytes = 200000
default_max_tokens = 1000

[gateway.upstreams.sim-openai]
kind = "openai"
base_url = "{sim_url}/v1"
api_key_env = "SIM_OPENAI_KEY"
models = ["gpt-4o-mini", "gpt-4o", "text-embedding-3-small"]

[gateway.upstreams.sim-anthropic]
kind = "anthropic"
base_url = "{sim_url}"
api_key_env = "SIM_ANTHROPIC_KEY"
models = ["claude-sonnet-4-5", "claude-3-5-haiku-20241022"]

[gateway.models.fast]
upstream = "sim-openai"
model = "gpt-4o-mini"

[[gateway.keys]]
name = "search-key"
team = "search"
user = "alice"
sha256 = "{hash_key(GATEWAY_KEY)}"

[[gateway.keys]]
name = "ads-key"
team = "ads"
sha256 = "{hash_key(OTHER_KEY)}"
{extra}
"""
    path = directory / name
    path.write_text(text)
    return path


class GatewayProcess:
    """`unitcost gateway --config ...` as a real process."""

    def __init__(self, config: Path, port: int, env: dict[str, str] | None = None) -> None:
        self.config = config
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.env = {**os.environ, "SIM_OPENAI_KEY": "sk-sim-secret-openai", **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> GatewayProcess:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "from unitcost.cli import main; main()",
                "gateway",
                "--config",
                str(self.config),
            ],
            cwd=self.config.parent,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        wait_http(self.url + "/health", proc=self.proc)
        return self

    def stop(self) -> str:
        """Graceful stop (SIGTERM): the spool is ingested into the ledger. Returns the output."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        out, _ = self.proc.communicate(timeout=60)
        return out.decode()

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout=30)

    def __enter__(self) -> GatewayProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.stop()


def spooled(directory: Path) -> dict[str, dict[str, Any]]:
    """Events the gateway spooled so far, by event_id (readable while the gateway runs)."""
    events: dict[str, dict[str, Any]] = {}
    for path in sorted((directory / "spool").glob("events-*.jsonl")):
        for line in path.read_bytes().splitlines():
            record = orjson.loads(line)
            events[record["event_id"]] = record
    return events


def wait_for_event(directory: Path, event_id: str, timeout: float = 10.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = spooled(directory).get(event_id)
        if found is not None:
            return found
        time.sleep(0.05)
    raise AssertionError(f"event {event_id} was not spooled")


# ------------------------------------------------------------------ SDK clients of a running gateway


def oa(gw: Any, key: str = GATEWAY_KEY) -> Any:
    """The official OpenAI SDK, pointed at the gateway, with no retries of its own."""
    import openai

    return openai.OpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0)


def an(gw: Any) -> Any:
    """The official Anthropic SDK, pointed at the gateway, with no retries of its own."""
    import anthropic

    return anthropic.Anthropic(base_url=gw.url, api_key=GATEWAY_KEY, max_retries=0)


def unique(text: str = "hello") -> str:
    """A prompt no earlier request sent, so that no response cache answers it."""
    import uuid

    return f"{text} {uuid.uuid4().hex}"


def event(directory: Path, headers: Any) -> dict[str, Any]:
    """The spooled event of the request whose response carried `headers`."""
    return spooled(directory)[headers["x-unitcost-event-id"]]
