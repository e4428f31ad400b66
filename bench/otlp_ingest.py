"""OTLP/HTTP ingestion throughput of `unitcost serve`: GenAI spans per second, batches of 512.

Starts `unitcost serve` as its own process on 127.0.0.1, sends pre-built protobuf export
requests (512 GenAI spans each, as the OpenTelemetry SDK's BatchSpanProcessor sends them)
from several concurrent connections, and counts spans acknowledged per second. Every
acknowledged span is durably in the ledger when its response arrives; after the run the
server is stopped and the ledger is counted to prove it.

    .venv/bin/python bench/otlp_ingest.py --spans 102400 --concurrency 32
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

MODELS = [
    ("openai", "gpt-4o"),
    ("openai", "gpt-4o-mini"),
    ("anthropic", "claude-sonnet-4-6"),
    ("google", "gemini-2.5-flash"),
]


def _kv(key: str, value: object) -> KeyValue:
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    return KeyValue(key=key, value=AnyValue(string_value=str(value)))


def build_request(batch: int, size: int, start_ns: int) -> bytes:
    request = ExportTraceServiceRequest()
    rs = request.resource_spans.add()
    rs.resource.attributes.extend(
        [_kv("service.name", "bench-app"), _kv("deployment.environment.name", "prod")]
    )
    ss = rs.scope_spans.add()
    ss.scope.name = "opentelemetry.instrumentation.openai_v2"
    for i in range(size):
        n = batch * size + i
        provider, model = MODELS[n % len(MODELS)]
        span = ss.spans.add()
        span.trace_id = n.to_bytes(16, "big")
        span.span_id = (n + 1).to_bytes(8, "big")
        span.name = f"chat {model}"
        span.kind = 3
        span.start_time_unix_nano = start_ns + n * 1000
        span.end_time_unix_nano = span.start_time_unix_nano + 800_000_000
        span.attributes.extend(
            [
                _kv("gen_ai.operation.name", "chat"),
                _kv("gen_ai.provider.name", provider),
                _kv("gen_ai.request.model", model),
                _kv("gen_ai.response.model", model),
                _kv("gen_ai.usage.input_tokens", 1000 + n % 5000),
                _kv("gen_ai.usage.output_tokens", 50 + n % 700),
                _kv("gen_ai.usage.cache_read.input_tokens", n % 1000),
                _kv("gen_ai.response.finish_reasons", "stop"),
                _kv("enduser.id", f"user-{n % 997}"),
            ]
        )
    return request.SerializeToString()


def _cpu(stat: Path) -> float:
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            found.extend(int(c) for c in (task / "children").read_text().split())
        except OSError:
            continue
    return found + [g for c in found for g in _children(c)]


def server_cpu(pid: int) -> dict[str, float]:
    """CPU seconds so far of each thread of a process, and of each process it started (decode
    workers), user + system (Linux /proc). Keys: "main", "thread <tid>", "process <pid>"."""
    out: dict[str, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            out["main" if task.name == str(pid) else f"thread {task.name}"] = _cpu(task / "stat")
        except OSError:
            continue  # the thread ended meanwhile
    for child in _children(pid):
        try:
            out[f"process {child}"] = _cpu(Path(f"/proc/{child}/stat"))
        except OSError:
            continue
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def send_all(url: str, bodies: list[bytes], concurrency: int) -> tuple[float, int]:
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    failures = 0

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal failures
        while not queue.empty():
            body = queue.get_nowait()
            response = await client.post(
                url, content=body, headers={"Content-Type": "application/x-protobuf"}
            )
            if response.status_code != 200:
                failures += 1

    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=120) as client:
        started = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        return time.perf_counter() - started, failures


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--spans", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument(
        "--decode-workers", type=int, default=None, help="passed to `unitcost serve` (default: its own)"
    )
    args = parser.parse_args()

    batches = args.spans // args.batch
    start_ns = (int(time.time()) - 86_400) * 1_000_000_000
    bodies = [build_request(b, args.batch, start_ns) for b in range(batches)]
    warmup = [build_request(batches + b, args.batch, start_ns) for b in range(4)]
    with tempfile.TemporaryDirectory() as tmp:
        ledger = Path(tmp) / "bench.duckdb"
        port = free_port()
        exe = Path(sys.executable).parent / "unitcost"
        server = subprocess.Popen(
            [str(exe), "serve", "--port", str(port), "--ledger", str(ledger)]
            + ([] if args.decode_workers is None else ["--decode-workers", str(args.decode_workers)]),
            stdout=subprocess.DEVNULL,
            env={**os.environ, "UNITCOST_PRICES_DIR": "/nonexistent"},
        )
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.1)
                if time.monotonic() > deadline:
                    raise SystemExit("unitcost serve did not start")
            url = f"http://127.0.0.1:{port}/v1/traces"
            asyncio.run(send_all(url, warmup, 2))  # opens the ledger, warms the price book
            warm_stats = httpx.get(url + "/stats").json()
            cpu_before = server_cpu(server.pid)
            client_before = time.process_time()
            elapsed, failures = asyncio.run(send_all(url, bodies, args.concurrency))
            client_cpu = time.process_time() - client_before
            parts_run = {
                name: cpu - cpu_before.get(name, 0.0) for name, cpu in server_cpu(server.pid).items()
            }
            cpu_run = sum(parts_run.values())
            stats = httpx.get(url + "/stats").json()
            stats_before = warm_stats["writer"]
        finally:
            server.send_signal(signal.SIGINT)
            _, _, usage = os.wait4(server.pid, 0)
            server.returncode = 0
        import duckdb

        with duckdb.connect(str(ledger), read_only=True) as con:
            stored = con.execute("SELECT count(*), count(cost) FROM events").fetchone()
    sent = batches * args.batch
    print(f"machine: {platform.python_implementation()} {platform.python_version()}, {os.cpu_count()} cores")
    workers = "the default" if args.decode_workers is None else str(args.decode_workers)
    print(
        f"spans sent: {sent:,} in {batches:,} requests of {args.batch}, concurrency {args.concurrency}; "
        f"decode workers: {workers}"
    )
    print(
        f"failed requests: {failures}; events in ledger: {stored[0]:,} (priced: {stored[1]:,}; 4x{args.batch} warm-up)"
    )
    print(f"elapsed: {elapsed:.2f} s; throughput: {sent / elapsed:,.0f} spans/s (acknowledged = committed)")
    writer = stats["writer"]
    commits = writer["commits"] - stats_before["commits"]
    busy = writer.get("write_seconds", 0.0) - stats_before.get("write_seconds", 0.0)
    print(
        f"ledger commits during the timed run: {commits:,} ({sent / commits:,.0f} events each, "
        f"{busy / commits * 1000:,.0f} ms each); the writer was busy {busy / elapsed:.0%} of the time"
    )
    cpu = usage.ru_utime + usage.ru_stime
    print(
        f"server CPU (whole life, start-up and warm-up included): {cpu:.2f} s = "
        f"{cpu / sent * 1e6:.0f} µs per span ({sent / cpu:,.0f} spans per CPU-second)"
    )
    print(
        f"server CPU during the timed run: {cpu_run:.2f} s = {cpu_run / sent * 1e6:.0f} µs per span "
        f"({sent / cpu_run:,.0f} spans per server CPU-second)"
    )
    busiest = sorted(parts_run.items(), key=lambda item: -item[1])[:5]
    print(
        "server CPU by thread (and worker process) during the timed run: "
        + ", ".join(f"{name} {cpu / sent * 1e6:.0f}" for name, cpu in busiest)
        + " µs per span"
    )
    print(f"client CPU during the timed run: {client_cpu:.2f} s = {client_cpu / sent * 1e6:.0f} µs per span")
    print(f"load average during the run (other jobs share the machine): {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
