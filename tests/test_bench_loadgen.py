"""The benchmark's C load generator counts what it sends and receives, and times from the schedule."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from gateway_support import simulator

SOURCE = Path(__file__).resolve().parents[1] / "bench" / "gateway" / "loadgen.c"
BODY = '{"model": "gpt-4o-mini", "max_tokens": 4, "messages": [{"role": "user", "content": "hi {i}"}]}'


@pytest.fixture(scope="module")
def loadgen(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("gcc") is None:
        pytest.skip("no gcc to build the load generator")
    binary = tmp_path_factory.mktemp("loadgen") / "loadgen"
    subprocess.run(["gcc", "-O2", "-Wall", "-Werror", "-o", str(binary), str(SOURCE)], check=True)
    return binary


def run(loadgen: Path, tmp_path: Path, port: int, rate: int, duration: float) -> tuple[dict, list[list[str]]]:
    body = tmp_path / "body.json"
    body.write_text(BODY)
    out = tmp_path / "latencies.txt"
    cmd = [str(loadgen), "--port", str(port), "--rate", str(rate), "--duration", str(duration)]
    cmd += ["--body-file", str(body), "--out", str(out), "--timeout", "10"]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=60)
    return json.loads(done.stdout), [line.split() for line in out.read_text().splitlines()]


def test_every_scheduled_request_is_counted_with_latency_from_its_due_time(
    loadgen: Path, tmp_path: Path
) -> None:
    with simulator(latency_ms=20) as (url, sim):
        summary, rows = run(loadgen, tmp_path, int(url.rsplit(":", 1)[1]), rate=200, duration=0.5)
        served = sim.requests["chat"]
    assert (summary["sent"], summary["ok"], summary["failures"]) == (100, 100, 0)
    assert served == 100
    assert [int(due) for due, *_ in rows] == [i * 5000 for i in range(100)]  # 200/s: one every 5 ms
    assert all(status == "200" and int(latency) >= 20_000 for _, latency, status, _ in rows)
    assert summary["cpu_us_per_request"] > 0


def test_refused_connections_are_failures_not_a_hang(loadgen: Path, tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    summary, rows = run(loadgen, tmp_path, port, rate=100, duration=0.2)
    assert (summary["sent"], summary["ok"], summary["failures"]) == (20, 0, 20)
    assert all(status == "0" for _, _, status, _ in rows)
