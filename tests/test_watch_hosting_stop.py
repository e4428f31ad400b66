"""Stopping and starting the hosts of the watch loop as an operator does: `unitcost watch` stopped
by a service manager (SIGTERM), `unitcost serve` and the gateway given a watch config they cannot
run. Real processes and a real webhook receiver on 127.0.0.1."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

from unitcost.api import Ledger
from unitcost.config import Config, load_config

CLI = [sys.executable, "-c", "from unitcost.cli import main; main()"]


class _FlakyHook(BaseHTTPRequestHandler):
    """Answers 500 to the first `failures` posts, then 204."""

    failures: ClassVar[int] = 0
    seen: ClassVar[list[int]] = []

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        status = 500 if len(_FlakyHook.seen) < _FlakyHook.failures else 204
        _FlakyHook.seen.append(status)
        self.send_response(status)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def _unpriced_event(path: Path) -> None:
    """An hour the watch judges as complete with a model nobody priced: one notification."""
    from datetime import UTC, datetime, timedelta

    at = (datetime.now(UTC) - timedelta(hours=2)).replace(minute=10)
    record = {
        "event_id": "unpriced-1",
        "ts": at.isoformat(),
        "model": "acme-local-7b",
        "provider": "acme",
        "input_tokens": 10,
        "output_tokens": 5,
    }
    with Ledger(path, config=Config()) as ledger:
        ledger.ingest_records([record], source="test")


def test_sigterm_ends_the_watch_loop_and_logs_the_deliveries_since_its_last_cycle(tmp_path: Path) -> None:
    """Between cycles the ledger is closed, so delivery results wait in memory for the next one.
    systemd, Docker and Kubernetes stop a service with SIGTERM: it must end the loop as Ctrl-C
    does, writing those results to alert_log, not kill the process with them."""
    _FlakyHook.failures, _FlakyHook.seen = 2, []
    hook = ThreadingHTTPServer(("127.0.0.1", 0), _FlakyHook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    ledger = tmp_path / "watched.duckdb"
    _unpriced_event(ledger)
    config = tmp_path / "unitcost.toml"
    config.write_text(
        f"""
[watch]
interval_seconds = 3600

[[watch.sink]]
type = "webhook"
url = "http://127.0.0.1:{hook.server_address[1]}/hook"
"""
    )
    watch = subprocess.Popen(
        [*CLI, "watch", "-l", str(ledger), "--config", str(config), "--backfill-hours", "48"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        # Two failed attempts and the delivery: all after the first cycle, while the ledger is closed.
        for _ in range(600):
            if len(_FlakyHook.seen) >= 3 or watch.poll() is not None:
                break
            time.sleep(0.05)
        assert _FlakyHook.seen == [500, 500, 204], _FlakyHook.seen
    finally:
        watch.send_signal(signal.SIGTERM)
        out, _ = watch.communicate(timeout=60)
        hook.shutdown()
        hook.server_close()
    assert watch.returncode == 0, out
    assert "Traceback" not in out, out
    with Ledger(ledger, config=Config(), read_only=True) as opened:
        kinds = opened.store.fetch('SELECT kind FROM alert_log WHERE sink IS NOT NULL ORDER BY "at"').column(
            "kind"
        )
    assert kinds.to_pylist() == ["failed", "failed", "delivered"]


def _bad_sink_config(tmp_path: Path, extra: str = "") -> Path:
    config = tmp_path / "unitcost.toml"
    # The variable holding the Slack URL is not set where the server runs: a common mistake.
    config.write_text(
        extra
        + """
[watch]
interval_seconds = 0.2

[[watch.sink]]
type = "slack"
url_env = "UNITCOST_TEST_UNSET_SLACK_URL"
"""
    )
    return config


def test_serve_refuses_a_sink_it_cannot_deliver_to_before_listening(tmp_path: Path) -> None:
    """A sink without a URL must stop `unitcost serve` at once with the sink named (exit 2), as
    `unitcost watch` does, not leave a server running whose every watch cycle fails."""
    config = _bad_sink_config(tmp_path)
    command = [*CLI, "serve", "--port", "0", "--decode-workers", "0", "-l", str(tmp_path / "l.duckdb")]
    try:
        done = subprocess.run(
            [*command, "--config", str(config)], check=False, capture_output=True, text=True, timeout=60
        )
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"serve kept running: {exc.stdout!r}") from None
    assert done.returncode == 2, done.stdout + done.stderr
    assert "sink slack-1: url (or url_env naming a set variable) is required" in done.stdout
    assert "OTLP/HTTP on" not in done.stdout
    assert "Traceback" not in done.stdout + done.stderr


def test_otlp_app_checks_the_watch_sinks_before_it_returns(tmp_path: Path) -> None:
    from unitcost.otlp.server import otlp_app
    from unitcost.watch.settings import load_watch_settings

    settings = load_watch_settings(load_config(_bad_sink_config(tmp_path)))
    try:
        otlp_app(tmp_path / "l.duckdb", watch=settings)
    except ValueError as exc:
        assert "sink slack-1" in str(exc)
    else:
        raise AssertionError("otlp_app accepted a sink without a URL")


def test_the_gateway_refuses_a_watch_it_cannot_run_rather_than_lose_its_ledger_writer(
    tmp_path: Path,
) -> None:
    """With `[gateway] watch = true` the watch runs in the ledger writer process: a watch config
    that cannot be run used to kill that process at its start, and the gateway then answered
    every call while writing nothing to the ledger. It must refuse to start, naming the problem."""
    import socket

    with socket.socket() as probe:  # a free port: on the old code the gateway did listen
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = _bad_sink_config(
        tmp_path,
        f"""
[ledger]
path = "ledger.duckdb"

[gateway]
watch = true
port = {port}
spool_dir = "spool"

[gateway.upstreams.sim]
kind = "openai"
base_url = "http://127.0.0.1:1/v1"
models = ["gpt-4o-mini"]
""",
    )
    try:
        done = subprocess.run(
            [*CLI, "gateway", "--config", str(config)],
            check=False,
            capture_output=True,
            text=True,
            timeout=60,
            cwd=tmp_path,
        )
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"the gateway kept running: {exc.stdout!r}") from None
    assert done.returncode == 2, done.stdout + done.stderr
    assert "sink slack-1: url (or url_env naming a set variable) is required" in done.stdout
    assert "Traceback" not in done.stdout + done.stderr


def test_the_gateway_writer_drains_even_if_its_watch_cannot_start(tmp_path: Path) -> None:
    """The drain must not depend on the watch: if building the watcher fails in the writer
    process anyway, the writer says so and goes on moving the spool into the ledger."""
    from datetime import UTC, datetime

    from unitcost.gateway.spool import Spool

    config = _bad_sink_config(tmp_path)
    spool = Spool(tmp_path / "spool")
    spool.append(
        {
            "event_id": "spooled-1",
            "ts": datetime.now(UTC).isoformat(),
            "model": "gpt-4o-mini",
            "provider": "openai",
            "input_tokens": 10,
            "output_tokens": 5,
        }
    )
    spool.close()
    ledger = tmp_path / "ledger.duckdb"
    # The writer process's body, told to stop at once: one last drain (and watch cycle), then exit.
    script = (
        "import os\n"
        "from unitcost.gateway.writer import _run\n"
        "class Stop:\n"
        "    def is_set(self): return True\n"
        "    def wait(self, timeout=None): return True\n"
        f"_run({str(tmp_path / 'spool')!r}, {str(ledger)!r}, {str(config)!r}, 0.01, Stop(), os.getppid(), True)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], check=False, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "the watch cannot run" in done.stderr, done.stderr
    with Ledger(ledger, config=Config(), read_only=True) as opened:
        assert opened.store.fetch("SELECT event_id FROM events").to_pylist() == [{"event_id": "spooled-1"}]


def test_ctrl_c_on_the_gateway_ends_its_writer_with_a_last_drain_and_watch_cycle(tmp_path: Path) -> None:
    """Ctrl-C at a terminal (and systemd's SIGTERM) reaches the whole process group: the ledger
    writer process got it too and died with a KeyboardInterrupt traceback, skipping the last
    drain and the last watch cycle the gateway asks for when it stops."""
    import os
    import uuid

    import httpx

    from gateway_support import GATEWAY_KEY, free_port, simulator, wait_http, write_config

    with simulator(latency_ms=1) as (sim_url, _):
        port = free_port()
        config = write_config(tmp_path, sim_url, port, "\n[watch]\ninterval_seconds = 0.1\n")
        config.write_text(config.read_text().replace("[gateway]\n", "[gateway]\nwatch = true\n", 1))
        gateway = subprocess.Popen(
            [*CLI, "gateway", "--config", str(config)],
            cwd=tmp_path,
            env={**os.environ, "SIM_OPENAI_KEY": "sk-sim-secret-openai"},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # a process group of its own, as a shell gives a foreground job
        )
        try:
            wait_http(f"http://127.0.0.1:{port}/health", proc=gateway)  # type: ignore[arg-type]
            with httpx.Client(
                base_url=f"http://127.0.0.1:{port}",
                headers={"authorization": f"Bearer {GATEWAY_KEY}"},
                timeout=10,
            ) as http:
                for _ in range(3):
                    body = {"model": "fast", "messages": [{"role": "user", "content": uuid.uuid4().hex}]}
                    assert http.post("/v1/chat/completions", json=body).status_code == 200
        finally:
            os.killpg(gateway.pid, signal.SIGINT)
            out, _ = gateway.communicate(timeout=120)
    assert gateway.returncode == 0, out
    assert "Traceback" not in out and "KeyboardInterrupt" not in out, out
    with Ledger(tmp_path / "ledger.duckdb", config=Config(), read_only=True) as opened:
        events = opened.store.fetch("SELECT count(*) AS n FROM events").to_pylist()
        rolled = opened.store.fetch("SELECT CAST(sum(calls) AS BIGINT) AS n FROM watch_hourly").to_pylist()
    assert events == [{"n": 3}] and rolled == [{"n": 3}]
