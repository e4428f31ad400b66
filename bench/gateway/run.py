"""Gateway overhead benchmark: open-loop constant-rate load through unitcost's gateway and
LiteLLM's proxy, both in front of the same simulated upstream with a fixed service time.

    .venv/bin/python bench/gateway/run.py --rates 200,500,1000 --duration 10

Each request is scheduled at t0 + i/rate whatever happened before (open loop: a slow
response delays nobody, so queueing is measured, not hidden). Latency is counted from the
scheduled instant. Overhead = end-to-end latency - the upstream's fixed service time.
The same load straight to the simulator ("direct") shows what the load generator and the
loopback network add by themselves.

LiteLLM runs from its own venv (bench/gateway/.venv-litellm, `pip install 'litellm[proxy]'`),
with no database. Results: a markdown table on stdout and JSON in bench/out/.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]
UNITCOST = ROOT / ".venv" / "bin" / "unitcost"
LITELLM = ROOT / "bench" / "gateway" / ".venv-litellm" / "bin" / "litellm"
KEY = "uc-bench-key"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited with {proc.returncode}")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise TimeoutError(url)


def tree_pids(pid: int) -> list[int]:
    pids = [pid]
    for task in Path(f"/proc/{pid}/task").glob("*"):
        children = (task / "children").read_text().split() if (task / "children").exists() else []
        for child in children:
            pids.extend(tree_pids(int(child)))
    return pids


def rss_mib(pid: int) -> float:
    """Current resident memory of a process and its children, MiB (sampled during the run)."""
    total = 0
    for p in tree_pids(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except FileNotFoundError:
            continue
    return total / 1024


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def load(
    url: str, model: str, rate: int, duration: float, pid: int | None, headers: dict[str, str]
) -> dict[str, Any]:
    """Open loop: request i leaves at t0 + i/rate whatever happened before; latency counts from then."""
    import aiohttp

    total = int(rate * duration)
    latencies: list[float] = []
    reported: list[float] = []
    failures = 0
    peak = 0.0
    connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=60)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout, headers=headers) as http:

        async def one(i: int, scheduled: float) -> None:
            nonlocal failures
            body = {"model": model, "max_tokens": 16, "messages": [{"role": "user", "content": f"hello {i}"}]}
            try:
                async with http.post(url, json=body) as response:
                    await response.read()
                    status = response.status
                    own = response.headers.get("x-unitcost-overhead-ms")
            except (TimeoutError, aiohttp.ClientError):
                failures += 1
                return
            if status != 200:
                failures += 1
                return
            latencies.append(time.perf_counter() - scheduled)
            if own is not None:
                reported.append(float(own))

        tasks = []
        start = time.perf_counter() + 0.05
        next_sample = start
        for i in range(total):
            scheduled = start + i / rate
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i, scheduled)))
            if pid is not None and time.perf_counter() >= next_sample:
                peak = max(peak, rss_mib(pid))
                next_sample += 0.5
        await asyncio.gather(*tasks)
        if pid is not None:
            peak = max(peak, rss_mib(pid))
    return {
        "rate": rate,
        "sent": total,
        "ok": len(latencies),
        "failures": failures,
        "latencies": latencies,
        "reported": reported,
        "peak_rss_mib": peak,
    }


def summarise(name: str, run: dict[str, Any], service_ms: float) -> dict[str, Any]:
    lat_ms = [x * 1000 for x in run["latencies"]]
    row = {
        "system": name,
        "rate": run["rate"],
        "success": run["ok"] / run["sent"] if run["sent"] else 0.0,
        "p50_overhead_ms": percentile(lat_ms, 0.50) - service_ms,
        "p99_overhead_ms": percentile(lat_ms, 0.99) - service_ms,
        "peak_rss_mib": run["peak_rss_mib"],
    }
    if run["reported"]:
        row["self_reported_p50_ms"] = percentile(run["reported"], 0.50)
        row["self_reported_p99_ms"] = percentile(run["reported"], 0.99)
    return row


def start(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    log = open(cwd / f"{Path(cmd[0]).name}.log", "wb")  # noqa: SIM115 - closed when the process ends
    return subprocess.Popen(
        cmd, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
    )


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()


def unitcost_config(directory: Path, sim: str, port: int) -> Path:
    import hashlib

    digest = hashlib.sha256(KEY.encode()).hexdigest()
    path = directory / "unitcost.toml"
    path.write_text(
        f"""
[ledger]
path = "ledger.duckdb"
[gateway]
port = {port}
spool_dir = "spool"
[gateway.upstreams.sim]
kind = "openai"
base_url = "{sim}/v1"
api_key_env = "SIM_KEY"
models = ["gpt-4o-mini"]
[[gateway.keys]]
name = "bench"
team = "bench"
sha256 = "{digest}"
[[gateway.budgets]]
name = "bench-team-month"
scope = "team"
period = "month"
limit_usd = "100000"
"""
    )
    return path


def litellm_config(directory: Path, sim: str) -> Path:
    path = directory / "litellm.yaml"
    path.write_text(
        f"""
model_list:
  - model_name: gpt-4o-mini
    litellm_params:
      model: openai/gpt-4o-mini
      api_base: {sim}/v1
      api_key: sk-sim
litellm_settings:
  telemetry: false
"""
    )
    return path


def run_system(
    name: str,
    url: str,
    proc: subprocess.Popen[bytes] | None,
    args: argparse.Namespace,
    headers: dict[str, str],
) -> list[dict[str, Any]]:
    # Warm-up: connections, imports, first pricing; not measured.
    asyncio.run(load(url, "gpt-4o-mini", 100, 2, None, headers))
    rows = []
    for rate in args.rates:
        run = asyncio.run(load(url, "gpt-4o-mini", rate, args.duration, proc.pid if proc else None, headers))
        row = summarise(name, run, args.service_ms)
        rows.append(row)
        print(json.dumps(row), flush=True)
        time.sleep(1)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rates", default="200,500,1000")
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--service-ms", type=float, default=50.0)
    parser.add_argument("--systems", default="direct,unitcost,litellm")
    args = parser.parse_args()
    args.rates = [int(r) for r in args.rates.split(",")]
    systems = args.systems.split(",")
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    work = Path(tempfile.mkdtemp(prefix="unitcost-bench-gw-"))
    sim_port = free_port()
    sim_url = f"http://127.0.0.1:{sim_port}"
    sim = start(
        [str(UNITCOST), "simulate-provider", "--port", str(sim_port), "--latency-ms", str(args.service_ms)],
        work,
    )
    wait_ready(sim_url + "/v1/models", sim)
    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    try:
        if "direct" in systems:
            rows += run_system("direct (no proxy)", sim_url + "/v1/chat/completions", None, args, {})
        if "unitcost" in systems:
            port = free_port()
            gw = start(
                [str(UNITCOST), "gateway", "--config", str(unitcost_config(work, sim_url, port))], work
            )
            try:
                wait_ready(f"http://127.0.0.1:{port}/health", gw)
                headers = {"authorization": f"Bearer {KEY}"}
                rows += run_system(
                    "unitcost", f"http://127.0.0.1:{port}/v1/chat/completions", gw, args, headers
                )
            finally:
                stop(gw)
        if "litellm" in systems:
            if not LITELLM.exists():
                notes.append(
                    f"LiteLLM not run: {LITELLM} missing (pip install 'litellm[proxy]' in that venv)"
                )
            else:
                port = free_port()
                master = "sk-bench-" + os.urandom(16).hex()
                env = {"LITELLM_LOG": "ERROR", "DISABLE_SCHEMA_UPDATE": "true", "LITELLM_MASTER_KEY": master}
                cmd = [str(LITELLM), "--config", str(litellm_config(work, sim_url)), "--port", str(port)]
                peer = start(cmd, work, env)
                try:
                    wait_ready(f"http://127.0.0.1:{port}/health/liveliness", peer)
                    url = f"http://127.0.0.1:{port}/v1/chat/completions"
                    rows += run_system("litellm", url, peer, args, {"authorization": f"Bearer {master}"})
                finally:
                    stop(peer)
    finally:
        stop(sim)
    out = ROOT / "bench" / "out"
    out.mkdir(exist_ok=True)
    result = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "args": {k: v for k, v in vars(args).items()},
        "rows": rows,
        "notes": notes,
    }
    (out / f"gateway-{int(time.time())}.json").write_text(json.dumps(result, indent=2))
    print(
        "\n| system | rate (req/s) | success | overhead p50 (ms) | overhead p99 (ms) "
        "| self-reported p50/p99 (ms) | peak RSS (MiB) |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        own = (
            f"{r['self_reported_p50_ms']:.2f} / {r['self_reported_p99_ms']:.2f}"
            if "self_reported_p50_ms" in r
            else "-"
        )
        print(
            f"| {r['system']} | {r['rate']} | {r['success']:.2%} | {r['p50_overhead_ms']:.2f} | "
            f"{r['p99_overhead_ms']:.2f} | {own} | {r['peak_rss_mib']:.0f} |"
        )
    for note in notes:
        print(note)
    print(f"work dir (logs): {work}", file=sys.stderr)


if __name__ == "__main__":
    main()
