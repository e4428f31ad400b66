"""What `unitcost.record(response, ...)` costs the caller, per call.

Records the official SDKs' response objects (an `openai` ChatCompletion and an `anthropic`
Message, built from the API references' payloads) inside a `unitcost.tags(...)` block,
with the background writer running as it does in production (flushing every second to a
DuckDB ledger). The time measured is the time spent in `record` by the calling thread:
reading the usage, merging attribution, buffering. Writing happens on the writer thread.

    .venv/bin/python bench/record_overhead.py --calls 20000
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=20_000)
    args = parser.parse_args()

    import anthropic.types
    import openai.types.chat

    import unitcost
    from fake_providers import anthropic_message, chat_completion
    from unitcost.api import Ledger

    os.environ.setdefault("UNITCOST_PRICES_DIR", "/nonexistent")
    samples = {
        "openai ChatCompletion": openai.types.chat.ChatCompletion.model_validate(chat_completion("gpt-4o")),
        "anthropic Message": anthropic.types.Message.model_validate(anthropic_message("claude-sonnet-4-6")),
        "Gemini JSON dict": {
            "usageMetadata": {"promptTokenCount": 900, "candidatesTokenCount": 80, "thoughtsTokenCount": 40},
            "modelVersion": "gemini-2.5-flash",
        },
    }
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "record.duckdb"
        recorder = unitcost.configure(path, flush_interval=1.0)
        print(
            f"machine: {platform.python_implementation()} {platform.python_version()}, {os.cpu_count()} cores"
        )
        print(f"load average at start (other jobs share the machine): {os.getloadavg()[0]:.1f}")
        total = 0
        for label, response in samples.items():
            timings = []
            cpu_started = time.thread_time_ns()
            with unitcost.tags(team="search", feature="autocomplete"):
                for i in range(args.calls):
                    started = time.perf_counter_ns()
                    unitcost.record(response, unit="query", unit_id=f"q-{i}")
                    timings.append(time.perf_counter_ns() - started)
            cpu_per_call = (time.thread_time_ns() - cpu_started) / args.calls / 1000
            total += args.calls
            timings.sort()
            print(
                f"{label:>22}: median {statistics.median(timings) / 1000:.1f} µs, "
                f"p99 {timings[int(len(timings) * 0.99)] / 1000:.1f} µs, "
                f"mean {statistics.fmean(timings) / 1000:.1f} µs; caller CPU {cpu_per_call:.1f} µs "
                f"per call (timer included) over {args.calls:,} calls"
            )
        flushed_at = time.perf_counter()
        recorder.close()
        print(f"final flush and close: {time.perf_counter() - flushed_at:.2f} s")
        with Ledger(path) as ledger:
            print(f"events in the ledger: {ledger.count():,} of {total:,} recorded")


if __name__ == "__main__":
    main()
