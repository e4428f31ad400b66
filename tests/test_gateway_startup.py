"""`unitcost gateway` says it is listening only once it is, and names what stops it from starting."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import duckdb

from gateway_support import GatewayProcess, free_port, simulator, write_config

CLI = [sys.executable, "-c", "from unitcost.cli import main; main()"]


def _gateway(config: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            [*CLI, "gateway", "--config", str(config)],
            check=False,
            capture_output=True,
            text=True,
            timeout=120,
            cwd=config.parent,
            env={**os.environ, "COLUMNS": "200", **(env or {})},
        )
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"the gateway started instead of refusing: {exc.stdout!r}") from None


def test_a_port_in_use_is_named_before_the_gateway_says_it_listens(tmp_path: Path) -> None:
    """Before: the banner, then a traceback (`OSError: address already in use`) and pages of
    nanobind leak reports, exit code 1."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = write_config(tmp_path, "http://127.0.0.1:1", port)
        done = _gateway(config)
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in done.stdout
    assert "unitcost gateway on" not in done.stdout
    assert "Traceback" not in done.stdout + done.stderr


def test_a_ledger_it_cannot_open_stops_it_before_the_banner(tmp_path: Path) -> None:
    """Before: the banner came first, then the error, as if it had been listening."""
    config = write_config(tmp_path, "http://127.0.0.1:1", free_port())
    holder = duckdb.connect(str(tmp_path / "ledger.duckdb"))  # a process that will not give it up
    try:
        done = _gateway(config, env={"UNITCOST_LOCK_WAIT": "0.5"})
    finally:
        holder.close()
    assert done.returncode == 2, done.stdout + done.stderr
    assert "open for writing by another process" in done.stdout
    assert "unitcost gateway on" not in done.stdout


def test_the_banner_comes_once_it_listens(tmp_path: Path) -> None:
    """The banner is printed from the server's ready callback now: it must still come."""
    with simulator() as (sim_url, _):
        port = free_port()
        gateway = GatewayProcess(write_config(tmp_path, sim_url, port), port).start()
        output = gateway.stop()
    assert f"unitcost gateway on http://127.0.0.1:{port} · 2 upstream(s)" in output, output
