"""A seeded, realistic month of LLM traffic for the demo, benchmarks and tests.

The month is September 2025, chosen because real prices moved in it: DeepSeek's V3.1
price change (5 Sep, 16:00 UTC) and V3.2-Exp price cut (29 Sep). Four teams run ten
features on five providers. The traffic has what real traffic has: office-hours and
weekday seasonality, prompt caching (Anthropic 1-hour cache writes then reads, OpenAI
automatic cache hits), reasoning tokens, Gemini prompts over 200k tokens, batch jobs,
rate-limit errors with retries, client timeouts that the provider still billed, and a
self-hosted model with no price. Two incidents are planted on purpose:

- the runaway agent: on 17 September a `code-agent` trace loops for six hours, its
  context growing every turn;
- the prompt-change leak: from 15 September 12:00 UTC the `reply-draft` prompt of the
  support team grows by 40 % with no change of model.

Everything is drawn from one NumPy generator seeded by `seed`, so a seed always gives the
same events, ids included. Generation is vectorised: a few hundred thousand events take
about a second.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa

from ..events import EVENT_SCHEMA, FIELDS

MONTH_START = datetime(2025, 9, 1, tzinfo=UTC)
MONTH_DAYS = 30
RUNAWAY_DAY = 17
LEAK_START = datetime(2025, 9, 15, 12, tzinfo=UTC)
LEAK_FACTOR = 1.4

# Share of a weekday's calls in each UTC hour: a European office day with an American tail.
_HOURS = np.array([1, 1, 1, 1, 1, 2, 4, 7, 10, 11, 11, 10, 8, 9, 10, 10, 9, 8, 6, 4, 3, 2, 2, 1], dtype=float)
_HOURS /= _HOURS.sum()


@dataclass(frozen=True)
class Workload:
    """One feature's traffic and usage shape."""

    team: str
    app: str
    feature: str
    provider: str
    model: str
    unit: str
    calls_per_day: float
    input_median: float
    output_median: float
    input_sigma: float = 0.5
    output_sigma: float = 0.6
    weekend: float = 0.25
    calls_per_unit: float = 1.0
    cache: str = "none"
    """none | openai (automatic hits) | anthropic-1h | anthropic-5m | deepseek (automatic hits)"""
    cache_share: float = 0.0
    """Share of the prompt that is a stable, cacheable prefix."""
    reasoning: float = 0.0
    """Share of output tokens spent reasoning."""
    tier: str = "standard"
    error_rate: float = 0.01
    timeout_rate: float = 0.003
    latency_ms: float = 1500.0
    success: float = 0.9
    long_context: float = 0.0
    """Share of calls whose prompt exceeds 200k tokens (long documents)."""
    customers: tuple[str, ...] = ("acme", "globex", "initech", "umbrella", "hooli")
    environment: str = "prod"


WORKLOADS: tuple[Workload, ...] = (
    Workload(
        "support",
        "helpdesk",
        "ticket-triage",
        "openai",
        "gpt-4o-mini",
        "ticket",
        2600,
        1800,
        60,
        calls_per_unit=1.0,
        cache="openai",
        cache_share=0.6,
        latency_ms=700,
        success=0.93,
    ),
    Workload(
        "support",
        "helpdesk",
        "reply-draft",
        "anthropic",
        "claude-sonnet-4-5",
        "ticket",
        1500,
        9000,
        450,
        calls_per_unit=2.5,
        cache="anthropic-1h",
        cache_share=0.75,
        latency_ms=4200,
        success=0.86,
    ),
    Workload(
        "support",
        "helpdesk",
        "summarise",
        "deepseek",
        "deepseek-chat",
        "ticket",
        1400,
        5200,
        300,
        cache="deepseek",
        cache_share=0.5,
        latency_ms=2600,
        success=0.95,
    ),
    Workload(
        "search",
        "site-search",
        "query-rewrite",
        "openai",
        "gpt-4.1-nano",
        "query",
        4000,
        350,
        40,
        weekend=0.6,
        latency_ms=350,
        success=0.97,
    ),
    Workload(
        "search",
        "site-search",
        "answer",
        "google",
        "gemini-2.5-pro",
        "query",
        1800,
        22000,
        700,
        input_sigma=0.9,
        weekend=0.6,
        cache="none",
        reasoning=0.55,
        latency_ms=6500,
        success=0.88,
        long_context=0.015,
    ),
    Workload(
        "legal",
        "contracts",
        "contract-review",
        "openai",
        "o3",
        "document",
        260,
        38000,
        2600,
        input_sigma=0.7,
        calls_per_unit=3.0,
        cache="openai",
        cache_share=0.3,
        reasoning=0.7,
        latency_ms=21000,
        success=0.9,
    ),
    Workload(
        "legal",
        "contracts",
        "clause-extraction",
        "openai",
        "gpt-4o-mini",
        "document",
        1100,
        14000,
        900,
        tier="batch",
        calls_per_unit=4.0,
        weekend=0.1,
        latency_ms=60000,
        error_rate=0.002,
        timeout_rate=0.0,
        success=0.96,
    ),
    Workload(
        "eng",
        "dev-tools",
        "code-agent",
        "anthropic",
        "claude-sonnet-4-5",
        "task",
        900,
        30000,
        1100,
        input_sigma=0.6,
        calls_per_unit=12.0,
        cache="anthropic-5m",
        cache_share=0.85,
        reasoning=0.3,
        weekend=0.15,
        latency_ms=9000,
        success=0.62,
    ),
    Workload(
        "eng",
        "dev-tools",
        "code-review",
        "openai",
        "gpt-5",
        "task",
        300,
        16000,
        1800,
        calls_per_unit=1.0,
        cache="openai",
        cache_share=0.4,
        reasoning=0.6,
        weekend=0.1,
        latency_ms=14000,
        success=0.8,
    ),
    Workload(
        "eng",
        "dev-tools",
        "log-classifier",
        "self-hosted",
        "acme-classifier-v2",
        "task",
        700,
        1200,
        20,
        weekend=0.9,
        latency_ms=180,
        error_rate=0.0,
        timeout_rate=0.0,
        success=0.99,
        environment="prod",
    ),
)


@dataclass
class DemoMonth:
    """The generated month: events and outcomes as Arrow tables, plus what was planted."""

    events: pa.Table
    outcomes: pa.Table
    runaway_trace: str
    notes: list[str] = field(default_factory=list)


def generate(seed: int = 7, scale: float = 1.0, workloads: tuple[Workload, ...] = WORKLOADS) -> DemoMonth:
    """Events for September 2025. `scale` multiplies volumes (1.0 is about 370k events)."""
    rng = np.random.default_rng(seed)
    parts = [_workload_events(rng, w, scale, index) for index, w in enumerate(workloads)]
    runaway = _runaway_agent(rng)
    tables = [p for p, _ in parts] + [runaway]
    events = pa.concat_tables(tables).cast(EVENT_SCHEMA)
    order = np.argsort(np.asarray(events.column("ts").cast(pa.int64()).to_numpy()), kind="stable")
    events = events.take(pa.array(order))
    # The looping agent never finished its task: a failure that cost money.
    failed_task = pa.table({"unit": ["task"], "unit_id": ["TAS-runaway-1"], "success": [False]})
    outcomes = _outcomes(rng, [o for _, o in parts] + [failed_task])
    trace = runaway.column("trace_id")[0].as_py()
    return DemoMonth(
        events,
        outcomes,
        trace,
        notes=[
            f"runaway agent: trace {trace} on 2025-09-{RUNAWAY_DAY:02d}",
            f"prompt-change leak: support/reply-draft input +{round((LEAK_FACTOR - 1) * 100)}% from "
            f"{LEAK_START:%Y-%m-%d %H:%M} UTC",
            "price changes: DeepSeek V3.1 on 2025-09-05 16:00 UTC, V3.2-Exp on 2025-09-29",
        ],
    )


# --------------------------------------------------------------------------- one workload


def _timestamps(rng: np.random.Generator, per_weekday: float, weekend: float, scale: float) -> np.ndarray:
    """Poisson arrivals with hour-of-day and weekday shape, as int64 microseconds since the epoch."""
    days = np.arange(MONTH_DAYS)
    weekday = np.array([(MONTH_START + timedelta(days=int(d))).weekday() for d in days])
    rate = per_weekday * scale * np.where(weekday >= 5, weekend, 1.0)
    rate = rate * rng.lognormal(0.0, 0.08, size=MONTH_DAYS)  # day-to-day noise
    counts = rng.poisson(rate)
    n = int(counts.sum())
    day_of = np.repeat(days, counts)
    hour = rng.choice(24, size=n, p=_HOURS)
    second = rng.uniform(0, 3600, size=n)
    start_us = int(MONTH_START.timestamp() * 1_000_000)
    ts = start_us + (day_of * 86400 + hour * 3600 + second) * 1_000_000
    return np.sort(ts.astype(np.int64))


def _lognormal_tokens(rng: np.random.Generator, median: float, sigma: float, n: int) -> np.ndarray:
    return np.maximum(1, np.round(rng.lognormal(np.log(median), sigma, size=n))).astype(np.int64)


def _workload_events(
    rng: np.random.Generator, w: Workload, scale: float, index: int
) -> tuple[pa.Table, pa.Table]:
    ts = _timestamps(rng, w.calls_per_day, w.weekend, scale)
    n = len(ts)
    inp = _lognormal_tokens(rng, w.input_median, w.input_sigma, n)
    out = _lognormal_tokens(rng, w.output_median, w.output_sigma, n)
    if w.feature == "reply-draft":
        leak_us = int(LEAK_START.timestamp() * 1_000_000)
        inp = np.where(ts >= leak_us, np.round(inp * LEAK_FACTOR).astype(np.int64), inp)
    if w.long_context:
        long_calls = rng.random(n) < w.long_context
        inp = np.where(long_calls, rng.integers(205_000, 600_000, size=n), inp)

    # Business units: consecutive calls of a feature share a unit (ticket, document, task).
    unit_index = np.floor(np.arange(n) / w.calls_per_unit).astype(np.int64)
    first_of_unit = np.concatenate(([True], unit_index[1:] != unit_index[:-1]))

    cache_read = np.zeros(n, dtype=np.int64)
    cw5 = np.zeros(n, dtype=np.int64)
    cw1 = np.zeros(n, dtype=np.int64)
    prefix = np.round(inp * w.cache_share).astype(np.int64)
    if w.cache in ("openai", "deepseek"):
        # Automatic prefix caching: hits in busy hours, in 128-token (OpenAI) or 64-token blocks.
        block = 128 if w.cache == "openai" else 64
        hit = (rng.random(n) < 0.7) & (prefix >= 1024)
        cache_read = np.where(hit, (prefix // block) * block, 0)
    elif w.cache.startswith("anthropic"):
        write_first = first_of_unit | (rng.random(n) < 0.08)
        if w.cache == "anthropic-1h":
            cw1 = np.where(write_first, prefix, 0)
        else:
            cw5 = np.where(write_first, prefix, 0)
        cache_read = np.where(write_first, 0, prefix)
    reasoning = np.round(out * w.reasoning * rng.uniform(0.6, 1.2, size=n)).astype(np.int64)
    out = np.maximum(out, reasoning + 1)

    # Outcomes of attempts: rate limits with a retry, timeouts the provider still billed.
    roll = rng.random(n)
    status = np.where(
        roll < w.error_rate, "error", np.where(roll < w.error_rate + w.timeout_rate, "timeout", "ok")
    )
    http = np.where(
        status == "error",
        rng.choice([429, 500, 503], size=n, p=[0.7, 0.2, 0.1]),
        np.where(status == "timeout", -1, 200),
    )
    # A timeout never got an HTTP response: its status is null, not 0.
    http = np.ma.masked_equal(http, -1)
    errored = status == "error"
    # A rejected or crashed request bills nothing.
    inp_billed = np.where(errored, 0, inp)
    out_billed = np.where(errored, 0, out)
    zero_if_error = np.where(errored, 0, 1)

    latency = rng.lognormal(np.log(w.latency_ms), 0.35, size=n)
    latency = np.where(
        status == "timeout", 60_000.0, np.where(errored, rng.uniform(50, 400, size=n), latency)
    )
    ttft = np.where(status == "ok", latency * rng.uniform(0.05, 0.3, size=n), np.nan)

    prefix_id = f"{index:02d}"
    event_ids = np.char.add(f"demo-{prefix_id}-", np.arange(n).astype(str))
    unit_ids = np.char.add(f"{w.unit[:3].upper()}-{prefix_id}-", unit_index.astype(str))
    customers = np.asarray(w.customers)[unit_index % len(w.customers)]
    users = np.char.add("u", (rng.zipf(1.6, size=n) % 400).astype(str))
    regions = np.where(rng.random(n) < 0.7, "eu", "us")

    base = {
        "event_id": event_ids,
        "ts": ts,
        "trace_id": np.char.add("tr-", unit_ids),
        "provider": np.full(n, w.provider),
        "model": np.full(n, w.model),
        "operation": np.full(n, "messages" if w.provider == "anthropic" else "chat"),
        "service_tier": np.full(n, w.tier),
        "input_tokens": inp_billed,
        "cache_read_tokens": cache_read * zero_if_error,
        "cache_write_5m_tokens": cw5 * zero_if_error,
        "cache_write_1h_tokens": cw1 * zero_if_error,
        "output_tokens": out_billed,
        "reasoning_tokens": reasoning * zero_if_error,
        "status": status,
        "http_status": http,
        "latency_ms": np.round(latency, 1),
        "ttft_ms": np.round(ttft, 1),
        "attempt": np.ones(n, dtype=np.int64),
        "team": np.full(n, w.team),
        "app": np.full(n, w.app),
        "feature": np.full(n, w.feature),
        "user": users,
        "customer": customers,
        "environment": np.full(n, w.environment),
        "unit": np.full(n, w.unit),
        "unit_id": unit_ids,
        "region": regions,
    }
    events = _table(base)

    # Every rate-limited or crashed attempt is retried once, a second or two later, and succeeds.
    retry_idx = np.flatnonzero(errored)
    if len(retry_idx):
        retry = {k: (v[retry_idx] if isinstance(v, np.ndarray) else v) for k, v in base.items()}
        retry["event_id"] = np.char.add(event_ids[retry_idx], "-r1")
        retry["ts"] = ts[retry_idx] + rng.integers(500_000, 3_000_000, size=len(retry_idx))
        retry["attempt"] = np.full(len(retry_idx), 2)
        retry["status"] = np.full(len(retry_idx), "ok")
        retry["http_status"] = np.full(len(retry_idx), 200)
        retry["input_tokens"] = inp[retry_idx]
        retry["output_tokens"] = out[retry_idx]
        retry["cache_read_tokens"] = cache_read[retry_idx]
        retry["cache_write_5m_tokens"] = cw5[retry_idx]
        retry["cache_write_1h_tokens"] = cw1[retry_idx]
        retry["reasoning_tokens"] = reasoning[retry_idx]
        retry["latency_ms"] = np.round(rng.lognormal(np.log(w.latency_ms), 0.35, size=len(retry_idx)), 1)
        retry["retry_of"] = event_ids[retry_idx]
        events = pa.concat_tables([events, _table(retry)], promote_options="default")

    # One judgement per unit, late: did the ticket get solved, the document reviewed, the task done?
    units = np.unique(unit_ids)
    outcomes = pa.table(
        {
            "unit": np.full(len(units), w.unit),
            "unit_id": units,
            "success": rng.random(len(units)) < w.success,
        }
    )
    return events, outcomes


def _runaway_agent(rng: np.random.Generator) -> pa.Table:
    """One code-agent trace that loops for six hours, its context growing each turn."""
    n = 2400
    start = MONTH_START + timedelta(days=RUNAWAY_DAY - 1, hours=9, minutes=12)
    start_us = int(start.timestamp() * 1_000_000)
    ts = start_us + np.sort(rng.uniform(0, 6 * 3600, size=n) * 1_000_000).astype(np.int64)
    context = np.linspace(12_000, 160_000, n).astype(np.int64)
    cache_read = np.round(context * 0.9).astype(np.int64)
    cw5 = (context - cache_read) // 2
    out = _lognormal_tokens(rng, 900, 0.4, n)
    reasoning = np.round(out * 0.3).astype(np.int64)
    trace = "tr-runaway-0917"
    base = {
        "event_id": np.char.add("demo-runaway-", np.arange(n).astype(str)),
        "ts": ts,
        "trace_id": np.full(n, trace),
        "session_id": np.full(n, "sess-agent-42"),
        "provider": np.full(n, "anthropic"),
        "model": np.full(n, "claude-sonnet-4-5"),
        "operation": np.full(n, "messages"),
        "service_tier": np.full(n, "standard"),
        "input_tokens": context,
        "cache_read_tokens": cache_read,
        "cache_write_5m_tokens": cw5,
        "output_tokens": out,
        "reasoning_tokens": reasoning,
        "status": np.full(n, "ok"),
        "http_status": np.full(n, 200),
        "latency_ms": np.round(rng.lognormal(np.log(8000), 0.3, size=n), 1),
        "attempt": np.ones(n, dtype=np.int64),
        "team": np.full(n, "eng"),
        "app": np.full(n, "dev-tools"),
        "feature": np.full(n, "code-agent"),
        "user": np.full(n, "u-ci-bot"),
        "customer": np.full(n, "internal"),
        "environment": np.full(n, "prod"),
        "unit": np.full(n, "task"),
        "unit_id": np.full(n, "TAS-runaway-1"),
        "region": np.full(n, "eu"),
    }
    return _table(base)


def _table(columns: dict[str, np.ndarray]) -> pa.Table:
    n = len(columns["event_id"])
    arrays: dict[str, pa.Array] = {}
    for f in FIELDS:
        target = EVENT_SCHEMA.field(f.name).type
        if f.name == "tags":
            region = columns.get("region")
            if region is None:
                arrays["tags"] = pa.array([[]] * n, type=target)
            else:
                keys = pa.array(np.full(n, "region"))
                offsets = pa.array(np.arange(n + 1, dtype=np.int32))
                arrays["tags"] = pa.MapArray.from_arrays(offsets, keys, pa.array(region))
            continue
        value = columns.get(f.name)
        if value is None:
            default = f.default
            arrays[f.name] = (
                pa.nulls(n, type=target) if default is None else pa.array(np.full(n, default)).cast(target)
            )
        elif f.name == "ts":
            arrays[f.name] = pa.array(value, type=pa.int64()).cast(pa.timestamp("us", tz="UTC"))
        elif f.kind == "float":
            arrays[f.name] = pa.array(value, type=pa.float64(), from_pandas=True)
        else:
            arrays[f.name] = pa.array(value).cast(target)
    return pa.table(arrays)


def _outcomes(rng: np.random.Generator, parts: list[pa.Table]) -> pa.Table:
    table = pa.concat_tables(parts)
    n = table.num_rows
    complained = rng.random(n) < 0.02
    feedback = pa.array(np.full(n, "customer complained"), type=pa.string(), mask=~complained)
    return table.append_column("feedback", feedback)
