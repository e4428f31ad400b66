"""Gateway overhead benchmark: open-loop constant-rate load through unitcost's gateway and
LiteLLM's proxy, both in front of the same simulated upstream with a fixed service time.

    .venv/bin/python bench/gateway/run.py --rates 200,500,1000 --duration 10

The load generator is `loadgen.c` beside this file, compiled with the machine's gcc at run
time: request i is due at t0 + i/rate whatever happened before (open loop: a slow response
delays nobody, so queueing is measured, not hidden) and its latency counts from that due
instant. It spends tens of microseconds of CPU per request where a Python client spent about
half a millisecond, so on a two-core machine the harness no longer competes with what it
measures. Requests that fail or time out (30 s) rank as infinitely slow in the percentiles.

Overhead = end-to-end latency - the upstream's fixed service time. The same load straight to
the simulator ("direct") is the floor: what the generator, the loopback and the simulator
cost by themselves; "vs direct" subtracts the direct percentile at the same rate.

CPU time of every process on the path is read from /proc before and after each rate and
divided by the requests sent: that is what decides whether two cores can carry the rate.

LiteLLM runs from its own venv (bench/gateway/.venv-litellm, `pip install 'litellm[proxy]'`),
with no database. Results: a markdown table on stdout and JSON in bench/out/.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
UNITCOST = ROOT / ".venv" / "bin" / "unitcost"
LITELLM = HERE / ".venv-litellm" / "bin" / "litellm"
KEY = "uc-bench-key"
BODY = '{"model": "gpt-4o-mini", "max_tokens": 16, "messages": [{"role": "user", "content": "hello {i}"}]}'
TICK = os.sysconf("SC_CLK_TCK")
TARGET_RATE = 500
TIMEOUT_S = 30.0


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


def build_loadgen(work: Path) -> Path:
    binary = work / "loadgen"
    subprocess.run(["gcc", "-O2", "-o", str(binary), str(HERE / "loadgen.c")], check=True)
    return binary


# ---------------------------------------------------------------------- process accounting


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except FileNotFoundError:
            continue
    return found


def descendants(pid: int) -> list[int]:
    out = []
    for child in children(pid):
        out += [child, *descendants(child)]
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU of one process (all its threads), seconds."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK


def rss_mib(pids: list[int]) -> float:
    total = 0
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except FileNotFoundError:
            continue
    return total / 1024


@dataclass
class Watched:
    """The processes whose CPU is charged to one system: the simulator, and the proxy."""

    simulator: int
    proxy: int | None

    def snapshot(self) -> dict[str, float]:
        shot = {"simulator": cpu_seconds(self.simulator)}
        if self.proxy is not None:
            shot["proxy"] = cpu_seconds(self.proxy)
            # The gateway's ledger writer (and LiteLLM's workers, if any) are children.
            shot["proxy children"] = sum(cpu_seconds(p) for p in descendants(self.proxy))
        return shot


# ---------------------------------------------------------------------- load


def load(
    loadgen: Path,
    port: int,
    rate: int,
    duration: float,
    headers: dict[str, str],
    watched: Watched,
    work: Path,
) -> dict[str, Any]:
    body = work / "body.json"
    body.write_text(BODY)
    out = work / f"latencies-{port}-{rate}.txt"
    cmd = [str(loadgen), "--port", str(port), "--rate", str(rate), "--duration", str(duration)]
    cmd += ["--path", "/v1/chat/completions", "--body-file", str(body), "--out", str(out)]
    cmd += ["--timeout", str(TIMEOUT_S)]
    for name, value in headers.items():
        cmd += ["--header", f"{name}: {value}"]
    before = watched.snapshot()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE)
    peak = 0.0
    while proc.poll() is None:
        if watched.proxy is not None:
            peak = max(peak, rss_mib([watched.proxy, *descendants(watched.proxy)]))
        time.sleep(0.5)
    after = watched.snapshot()
    assert proc.stdout is not None
    summary = json.loads(proc.stdout.read())
    latencies: list[float] = []
    reported: list[float] = []
    for line in out.read_text().splitlines():
        _, latency_us, status, overhead = line.split()
        if 200 <= int(status) < 300:
            latencies.append(int(latency_us) / 1000)
            if overhead != "-":
                reported.append(float(overhead))
        else:
            latencies.append(math.inf)  # failed or timed out: slower than anything that succeeded
    sent = summary["sent"]
    cpu = {name: (after[name] - before[name]) * 1e6 / sent for name in after}
    cpu["load generator"] = summary["cpu_us_per_request"]
    return {
        "rate": rate,
        "sent": sent,
        "ok": summary["ok"],
        "latencies_ms": latencies,
        "reported_ms": reported,
        "cpu_us_per_request": cpu,
        "peak_rss_mib": peak,
        "connections": summary["connections"],
    }


def percentile(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summarise(name: str, run: dict[str, Any], service_ms: float) -> dict[str, Any]:
    lat = run["latencies_ms"]
    row: dict[str, Any] = {
        "system": name,
        "rate": run["rate"],
        "success": run["ok"] / run["sent"] if run["sent"] else 0.0,
        "p50_overhead_ms": percentile(lat, 0.50) - service_ms,
        "p99_overhead_ms": percentile(lat, 0.99) - service_ms,
        "cpu_us_per_request": run["cpu_us_per_request"],
        "peak_rss_mib": run["peak_rss_mib"],
        "connections": run["connections"],
    }
    if run["reported_ms"]:
        row["self_reported_p50_ms"] = percentile(run["reported_ms"], 0.50)
        row["self_reported_p99_ms"] = percentile(run["reported_ms"], 0.99)
    return row


# ---------------------------------------------------------------------- systems


def start(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    log = open(cwd / f"{Path(cmd[0]).name}.log", "ab")  # noqa: SIM115 - closed when the process ends
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
    port: int,
    watched: Watched,
    args: argparse.Namespace,
    headers: dict[str, str],
    loadgen: Path,
    work: Path,
) -> list[dict[str, Any]]:
    # Warm-up: connections, imports, first pricing; not measured.
    load(loadgen, port, 100, 2, headers, watched, work)
    rows = []
    for rate in args.rates:
        run = load(loadgen, port, rate, args.duration, headers, watched, work)
        row = summarise(name, run, args.service_ms)
        rows.append(row)
        print(json.dumps(finite(row)), flush=True)
        time.sleep(1)
    return rows


def relative_to_direct(rows: list[dict[str, Any]]) -> None:
    floor = {r["rate"]: r for r in rows if r["system"].startswith("direct")}
    for row in rows:
        base = floor.get(row["rate"])
        if base is not None and not row["system"].startswith("direct"):
            row["p50_vs_direct_ms"] = row["p50_overhead_ms"] - base["p50_overhead_ms"]
            row["p99_vs_direct_ms"] = row["p99_overhead_ms"] - base["p99_overhead_ms"]


def verdict(rows: list[dict[str, Any]]) -> list[str]:
    """The issue's targets at 500 req/s, stated from this run's figures."""
    ours = next((r for r in rows if r["system"] == "unitcost" and r["rate"] == TARGET_RATE), None)
    peer = next((r for r in rows if r["system"] == "litellm" and r["rate"] == TARGET_RATE), None)
    if ours is None:
        return [f"targets: no unitcost run at {TARGET_RATE} req/s"]
    p50, p99 = ours["p50_overhead_ms"], ours["p99_overhead_ms"]
    lines = [
        f"target p50 overhead <= 1 ms at {TARGET_RATE} req/s: {p50:.2f} ms -> {'met' if p50 <= 1 else 'NOT met'}",
        f"target p99 overhead <= 5 ms at {TARGET_RATE} req/s: {p99:.2f} ms -> {'met' if p99 <= 5 else 'NOT met'}",
    ]
    if peer is not None:
        theirs = peer["p99_overhead_ms"]
        met = p99 <= theirs / 5
        described = (
            f"past the {TIMEOUT_S:.0f} s timeout ({peer['success']:.0%} of requests answered)"
            if math.isinf(theirs)
            else f"{theirs:.2f} ms, a fifth is {theirs / 5:.2f} ms"
        )
        lines.append(
            f"target unitcost p99 <= LiteLLM p99 / 5 at {TARGET_RATE} req/s: {p99:.2f} ms; "
            f"LiteLLM p99 {described} -> {'met' if met else 'NOT met'}"
        )
    return lines


def finite(value: Any) -> Any:
    """JSON has no infinity: a percentile past the timeout is written as null."""
    if isinstance(value, float) and math.isinf(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [finite(v) for v in value]
    return value


def fmt(value: float) -> str:
    return "timeout" if math.isinf(value) else f"{value:.2f}"


def print_table(rows: list[dict[str, Any]]) -> None:
    print(
        "\n| system | rate (req/s) | success | overhead p50 / p99 (ms) | vs direct p50 / p99 (ms) "
        "| self-reported p50 / p99 (ms) | CPU µs/request: loadgen / simulator / proxy / proxy children "
        "| peak RSS (MiB) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        own = (
            f"{r['self_reported_p50_ms']:.2f} / {r['self_reported_p99_ms']:.2f}"
            if "self_reported_p50_ms" in r
            else "-"
        )
        rel = (
            f"{fmt(r['p50_vs_direct_ms'])} / {fmt(r['p99_vs_direct_ms'])}" if "p50_vs_direct_ms" in r else "-"
        )
        cpu = r["cpu_us_per_request"]
        rss = f"{r['peak_rss_mib']:.0f}" if "proxy" in cpu else "-"
        cpus = " / ".join(
            f"{cpu[k]:.0f}" if k in cpu else "-"
            for k in ("load generator", "simulator", "proxy", "proxy children")
        )
        print(
            f"| {r['system']} | {r['rate']} | {r['success']:.2%} | {fmt(r['p50_overhead_ms'])} / "
            f"{fmt(r['p99_overhead_ms'])} | {rel} | {own} | {cpus} | {rss} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rates", default="200,500,1000")
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--service-ms", type=float, default=50.0)
    parser.add_argument("--systems", default="direct,unitcost,litellm")
    args = parser.parse_args()
    args.rates = [int(r) for r in args.rates.split(",")]
    systems = args.systems.split(",")
    work = Path(tempfile.mkdtemp(prefix="unitcost-bench-gw-"))
    loadgen = build_loadgen(work)
    load_before = os.getloadavg()
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
            rows += run_system("direct (no proxy)", sim_port, Watched(sim.pid, None), args, {}, loadgen, work)
        if "unitcost" in systems:
            port = free_port()
            gw = start(
                [str(UNITCOST), "gateway", "--config", str(unitcost_config(work, sim_url, port))], work
            )
            try:
                wait_ready(f"http://127.0.0.1:{port}/health", gw)
                headers = {"authorization": f"Bearer {KEY}"}
                rows += run_system("unitcost", port, Watched(sim.pid, gw.pid), args, headers, loadgen, work)
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
                    headers = {"authorization": f"Bearer {master}"}
                    rows += run_system(
                        "litellm", port, Watched(sim.pid, peer.pid), args, headers, loadgen, work
                    )
                finally:
                    stop(peer)
    finally:
        stop(sim)
    load_after = os.getloadavg()
    relative_to_direct(rows)
    lines = verdict(rows)
    out = ROOT / "bench" / "out"
    out.mkdir(exist_ok=True)
    result = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "load_average_before": load_before,
            "load_average_after": load_after,
        },
        "args": dict(vars(args)),
        "rows": finite(rows),
        "targets": lines,
        "notes": notes,
    }
    (out / f"gateway-{int(time.time())}.json").write_text(json.dumps(result, indent=2))
    print_table(rows)
    print(f"\nload average (1 min) before {load_before[0]:.2f}, after {load_after[0]:.2f}")
    for line in [*lines, *notes]:
        print(line)
    print(f"work dir (logs): {work}", file=sys.stderr)


if __name__ == "__main__":
    main()
