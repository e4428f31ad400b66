"""The gateway's parts on their own: usage shapes, SSE framing, budgets, spool, config, routing, cache."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from email.utils import format_datetime
from functools import partial
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fake_providers import (
    anthropic_message,
    chat_completion,
    openrouter_completion,
    response_object,
)
from unitcost.config import ConfigError
from unitcost.connectors.responses import normalise_response
from unitcost.events import TOKEN_FIELDS
from unitcost.gateway.budgets import (
    BudgetExceededError,
    MemoryBudgetState,
    Reservation,
    lines_for,
    period_bounds,
)
from unitcost.gateway.cache import MemoryCache, cache_key
from unitcost.gateway.config import Budget, Route, parse_gateway
from unitcost.gateway.estimate import WorstCase
from unitcost.gateway.records import attribution, new_event_id, parse_tags
from unitcost.gateway.routing import answer_passes, apply_caps, escalation_reason
from unitcost.gateway.spool import Spool, drain
from unitcost.gateway.sse import EventSplitter, event_data
from unitcost.gateway.upstream import backoff_delay
from unitcost.gateway.usage import NO_USAGE, Usage, anthropic_usage, openai_usage
from unitcost.gateway.writer import pause_after

counts = st.integers(min_value=0, max_value=10**7)

# ------------------------------------------------------------------ usage shapes


@given(prompt=counts, cached=counts, completion=counts, reasoning=counts)
def test_openai_usage_subsets_never_exceed_totals(
    prompt: int, cached: int, completion: int, reasoning: int
) -> None:
    usage = openai_usage(
        {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "prompt_tokens_details": {"cached_tokens": cached},
            "completion_tokens_details": {"reasoning_tokens": reasoning},
        },
        "chat",
    ).tokens
    assert usage["input_tokens"] == prompt and usage["output_tokens"] == completion
    assert usage["cache_read_tokens"] == min(cached, prompt)
    assert usage["reasoning_tokens"] == min(reasoning, completion)


@given(uncached=counts, read=counts, w5=counts, w1=counts, out=counts)
def test_anthropic_usage_becomes_totals_with_subsets(
    uncached: int, read: int, w5: int, w1: int, out: int
) -> None:
    usage = anthropic_usage(
        {
            "input_tokens": uncached,
            "cache_read_input_tokens": read,
            "cache_creation_input_tokens": w5 + w1,
            "cache_creation": {"ephemeral_5m_input_tokens": w5, "ephemeral_1h_input_tokens": w1},
            "output_tokens": out,
        }
    ).tokens
    assert usage["input_tokens"] == uncached + read + w5 + w1
    assert (usage["cache_read_tokens"], usage["cache_write_5m_tokens"], usage["cache_write_1h_tokens"]) == (
        read,
        w5,
        w1,
    )


def test_anthropic_usage_without_the_5m_1h_split_counts_writes_as_5m() -> None:
    usage = anthropic_usage(
        {"input_tokens": 10, "cache_creation_input_tokens": 30, "output_tokens": 1}
    ).tokens
    assert (usage["input_tokens"], usage["cache_write_5m_tokens"], usage["cache_write_1h_tokens"]) == (
        40,
        30,
        0,
    )


def test_responses_api_usage_shape() -> None:
    usage = openai_usage(
        {
            "input_tokens": 100,
            "input_tokens_details": {"cached_tokens": 60},
            "output_tokens": 30,
            "output_tokens_details": {"reasoning_tokens": 20},
        },
        "responses",
    ).tokens
    assert (usage["input_tokens"], usage["cache_read_tokens"], usage["reasoning_tokens"]) == (100, 60, 20)


def test_missing_or_garbage_usage_is_unknown_with_the_reason_not_zero() -> None:
    assert openai_usage(None, "chat") == Usage(unknown=NO_USAGE)
    assert anthropic_usage(None) == Usage(unknown=NO_USAGE)
    garbage = openai_usage({"prompt_tokens": -5, "completion_tokens": 7}, "chat")
    assert garbage.tokens == {} and garbage.unknown is not None
    assert "usage.prompt_tokens" in garbage.unknown and "-5" in garbage.unknown


@pytest.mark.parametrize(
    ("payload", "operation", "api"),
    [
        (chat_completion("gpt-4o"), "chat", "openai"),
        (response_object("gpt-4o"), "responses", "openai"),
        (openrouter_completion("anthropic/claude-sonnet-4.5"), "chat", "openai"),
        (anthropic_message("claude-sonnet-4-5"), "messages", "anthropic"),
    ],
)
def test_usage_is_read_as_unitcost_record_reads_it(payload: dict[str, Any], operation: str, api: str) -> None:
    read = (anthropic_usage if api == "anthropic" else partial(openai_usage, operation=operation))(
        payload["usage"]
    )
    expected = normalise_response(payload)
    assert read.tokens == {name: expected[name] for name in read.tokens}
    assert set(read.tokens) >= {name for name in TOKEN_FIELDS if expected.get(name)}
    assert read.billed_cost == expected.get("billed_cost")


# ------------------------------------------------------------------ SSE


@given(cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=12), crlf=st.booleans())
def test_sse_events_survive_any_chunking(cuts: list[int], crlf: bool) -> None:
    events = [b'event: message_start\ndata: {"a": 1}\n\n', b"data: [DONE]\n\n", b'data: {"x": "y\\n"}\n\n']
    stream = b"".join(events)
    if crlf:
        stream = stream.replace(b"\n", b"\r\n")
    points = sorted({min(c, len(stream)) for c in cuts})
    pieces = [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)], strict=True)]
    splitter = EventSplitter()
    out = [event for piece in pieces for event in splitter.feed(piece)]
    assert out == events
    assert event_data(out[0]) == ("message_start", '{"a": 1}')


# ------------------------------------------------------------------ budgets


def budget(**kw: Any) -> Budget:
    base: dict[str, Any] = {"name": "b", "scope": "team", "limit_usd": Decimal("1"), "period": "day"}
    base.update(kw)
    return Budget(**base)


def test_periods_are_calendar_aligned_in_the_budget_time_zone() -> None:
    now = datetime(2025, 3, 30, 0, 30, tzinfo=UTC)  # 01:30 in Paris, the night clocks go forward
    paris = ZoneInfo("Europe/Paris")
    assert period_bounds(budget(timezone=paris), now) == (
        "2025-03-30",
        datetime(2025, 3, 30, 22, 0, tzinfo=UTC),
    )
    label, reset = period_bounds(budget(period="week", timezone=paris), now)
    assert (label, reset) == ("2025-03-24", datetime(2025, 3, 30, 22, 0, tzinfo=UTC))
    label, reset = period_bounds(budget(period="month"), datetime(2025, 12, 31, 23, 59, tzinfo=UTC))
    assert (label, reset) == ("2025-12-01", datetime(2026, 1, 1, tzinfo=UTC))
    assert period_bounds(budget(period="total"), now) == ("all", None)


def test_lines_move_to_the_next_period_at_the_reset_and_not_before() -> None:
    """The gateway remembers each budget's current period; a line still changes key exactly at the reset."""
    paris = ZoneInfo("Europe/Paris")
    daily = budget(timezone=paris)
    attrs = {"team": "x", "tags": {}}
    reset = datetime(2025, 3, 30, 22, 0, tzinfo=UTC)
    keys = [
        lines_for([daily], attrs, "", at)[0].key
        for at in (
            datetime(2025, 3, 30, 12, 0, tzinfo=UTC),
            reset - timedelta(microseconds=1),
            reset,
            datetime(2025, 3, 30, 12, 0, tzinfo=UTC),  # a clock set back: the earlier period again
        )
    ]
    assert keys == ["budget:b:x:2025-03-30", "budget:b:x:2025-03-30", "budget:b:x:2025-03-31", keys[0]]


def test_lines_follow_scope_and_match() -> None:
    now = datetime(2025, 9, 1, tzinfo=UTC)
    budgets = [
        budget(name="team-search", match="search"),
        budget(name="per-team"),
        budget(name="per-customer", scope="tag:customer"),
        budget(name="per-trace", scope="trace", period="total", limit_usd=None, max_calls=5),
    ]
    attrs = {"team": "search", "customer": "acme", "tags": {}, "trace": "t1"}
    lines = lines_for(budgets, attrs, "p:", now)
    assert [(line.budget.name, line.value) for line in lines] == [
        ("team-search", "search"),
        ("per-team", "search"),
        ("per-customer", "acme"),
        ("per-trace", "t1"),
    ]
    assert lines[0].key == "p:budget:team-search:search:2025-09-01"
    assert [line.budget.name for line in lines_for(budgets, {"team": "ads", "tags": {}}, "p:", now)] == [
        "per-team"
    ]


def test_memory_reservation_is_all_or_nothing() -> None:
    now = datetime(2025, 9, 1, tzinfo=UTC)
    wide = budget(name="wide", limit_usd=Decimal("10"))
    narrow = budget(name="narrow", limit_usd=Decimal("0.000002"))
    lines = lines_for([wide, narrow], {"team": "x"}, "", now)
    state = MemoryBudgetState()

    async def run() -> None:
        assert await state.reserve(lines, 1500) == [(1500, 1), (1500, 1)]
        with pytest.raises(BudgetExceededError) as exc:
            await state.reserve(lines, 600)
        assert exc.value.line.budget.name == "narrow" and exc.value.spend_nano == 1500
        assert await state.read(lines) == [(1500, 1), (1500, 1)]  # the wide line took nothing
        await state.adjust(lines, -1000)
        assert (await state.reserve(lines, 600))[1] == (1100, 2)

    asyncio.run(run())


def test_concurrent_reservations_never_pass_the_limit() -> None:
    lines = lines_for([budget(limit_usd=Decimal("0.000050"))], {"team": "x"}, "", datetime.now(UTC))
    state = MemoryBudgetState()

    async def one() -> bool:
        try:
            await state.reserve(lines, 7_000)
        except BudgetExceededError:
            return False
        await asyncio.sleep(0.001)
        await state.adjust(lines, -1_000)  # settle: real cost below the worst case
        return True

    async def run() -> list[bool]:
        return await asyncio.gather(*(one() for _ in range(100)))

    admitted = sum(asyncio.run(run()))
    spend, calls = asyncio.run(state.read(lines))[0]
    assert calls == admitted and spend == admitted * 6_000 and spend <= 50_000


def test_remaining_and_over_report_the_tightest_line() -> None:
    lines = lines_for(
        [
            budget(name="a", limit_usd=Decimal("1")),
            budget(name="b", limit_usd=Decimal("0.5"), action="alert"),
        ],
        {"team": "x"},
        "",
        datetime.now(UTC),
    )
    reservation = Reservation(lines, 600_000_000, [(600_000_000, 1), (600_000_000, 1)])
    tightest = reservation.remaining()
    assert tightest is not None and tightest[0].budget.name == "b" and tightest[1] == 0
    assert [line.budget.name for line in reservation.over("alert")] == ["b"]


def test_worst_case_is_an_upper_bound_of_the_exact_price(book) -> None:
    estimator = WorstCase(book)
    for model, provider in (("gpt-4o", "openai"), ("claude-sonnet-4-5", "anthropic")):
        for inp in (10, 5_000, 250_000):
            exact = book.price(model, provider=provider, input_tokens=inp, output_tokens=800).cost
            bound = Decimal(estimator.worst_case_pico(provider, model, inp, 800)).scaleb(-12)
            assert exact <= bound <= exact * Decimal("1.0001") + Decimal("1e-9")
    assert estimator.worst_case_pico("nobody", "no-such-model", 10, 10) == 0


# ------------------------------------------------------------------ spool


def test_spool_drains_exactly_once_and_skips_a_torn_line(tmp_path: Path) -> None:
    delivered: list[str] = []

    def sink(batch: Any) -> None:
        delivered.extend(r["event_id"] for r in batch)

    spool = Spool(tmp_path, fsync_interval_ms=1)
    for i in range(5):
        spool.append({"event_id": f"e{i}"})
    # A crash: the process dies without close(), a write was cut by power loss.
    with (tmp_path / "events-00000001.jsonl").open("ab") as handle:
        handle.write(b'{"event_id": "torn')
    assert drain(tmp_path, sink) == 5 and delivered == [f"e{i}" for i in range(5)]
    again = Spool(tmp_path)  # a restart writes to a new segment
    again.append({"event_id": "e5"})
    again.close()
    assert drain(tmp_path, sink) == 1 and delivered[-1] == "e5"
    assert drain(tmp_path, sink) == 0  # everything is behind the checkpoint now
    assert not (tmp_path / "events-00000001.jsonl").exists()  # consumed segments are removed


def test_spool_keeps_lines_when_the_ledger_write_fails(tmp_path: Path) -> None:
    def broken(batch: Any) -> None:
        raise RuntimeError("disk full")

    spool = Spool(tmp_path)
    spool.append({"event_id": "kept"})
    spool.close()
    with pytest.raises(RuntimeError):
        drain(tmp_path, broken)
    delivered: list[Any] = []
    assert drain(tmp_path, delivered.extend) == 1 and delivered[0]["event_id"] == "kept"


def test_a_line_being_written_is_left_for_the_next_drain(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.append({"event_id": "a"})
    path = tmp_path / "events-00000001.jsonl"
    with path.open("ab") as handle:
        handle.write(b'{"event_id": "b"')  # the rest of the line is not there yet
    delivered: list[Any] = []
    assert drain(tmp_path, delivered.extend, live=True) == 1
    with path.open("ab") as handle:
        handle.write(b"}\n")
    assert drain(tmp_path, delivered.extend, live=True) == 1 and delivered[-1]["event_id"] == "b"
    spool.close()


def test_spool_files_are_private(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.append({"event_id": "x"})
    spool.close()
    assert os.stat(tmp_path / "events-00000001.jsonl").st_mode & 0o077 == 0


_SHORT_WRITE_SCRIPT = """
import json, resource, signal, sys
from unitcost.gateway.spool import Spool

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # past the limit: a short write, then EFBIG
spool = Spool(sys.argv[1], fsync_interval_ms=60_000)
returned = []
resource.setrlimit(resource.RLIMIT_FSIZE, (1000, resource.RLIM_INFINITY))
for i in range(100):
    try:
        spool.append({"event_id": f"e{i:03d}", "pad": "x" * 30})
    except OSError:
        break
    returned.append(f"e{i:03d}")
resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
spool.append({"event_id": "after"})  # room again
returned.append("after")
spool.close()
print(json.dumps(returned))
"""


@pytest.mark.skipif(sys.platform == "win32", reason="RLIMIT_FSIZE is POSIX")
def test_spool_append_never_returns_for_a_line_cut_short(tmp_path: Path) -> None:
    # A file size limit makes the kernel cut a write short exactly as a full disk does. Each line
    # is 59 bytes: the limit of 1000 falls inside the 17th. Before, append returned for that
    # torn line (its response went out, its event was unreadable) and the next line was glued to
    # the fragment, unreadable too.
    done = subprocess.run(
        [sys.executable, "-c", _SHORT_WRITE_SCRIPT, str(tmp_path)], capture_output=True, check=True
    )
    returned = orjson.loads(done.stdout)
    assert returned[-2:] == ["e015", "after"]  # 16 whole lines fit under the limit
    delivered: list[Any] = []
    drain(tmp_path, delivered.extend)
    assert [r["event_id"] for r in delivered] == returned


def test_ledger_reopened_accepts_records(ledger_path: Path, book) -> None:
    from unitcost.api import Ledger
    from unitcost.config import Config

    record = {"event_id": "a", "ts": "2025-09-01T00:00:00Z", "model": "gpt-4o", "input_tokens": 5}
    with Ledger(ledger_path, book=book, config=Config()) as first:
        first.ingest_records([record])
    with Ledger(ledger_path, book=book, config=Config()) as second:  # failed before the schema_version fix
        summary = second.ingest_records([record, {**record, "event_id": "b"}])
    assert (summary.accepted, summary.duplicates) == (1, 1)


# ------------------------------------------------------------------ config


def minimal(**extra: Any) -> dict[str, Any]:
    section: dict[str, Any] = {"upstreams": {"o": {"kind": "openai", "base_url": "http://127.0.0.1:1/v1"}}}
    section.update(extra)
    return section


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({}, "at least one upstream"),
        (minimal(upstreams={"o": {"base_url": "x"}}), "base_url"),
        (minimal(upstreams={"o": {"base_url": "http://h", "api_key": "sk-1"}}), "never written in the file"),
        (minimal(models={"m": {"upstream": "nope"}}), "not declared"),
        (minimal(budgets=[{"scope": "planet", "limit_usd": 1}]), "scope"),
        (minimal(budgets=[{"action": "downgrade", "limit_usd": 1}]), "downgrade_to"),
        (minimal(budgets=[{"scope": "team"}]), "limit_usd, max_calls"),
        (minimal(budgets=[{"limit_usd": 1, "timezone": "Mars/Olympus"}]), "time zone"),
        (minimal(routes={"r": {"light": "a", "strong": "b"}}), "not declared"),
        (minimal(keys=[{"sha256": "abc"}]), "SHA-256"),
    ],
)
def test_config_errors_say_where_and_why(section: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_gateway(section)


def test_config_targets_aliases_and_pass_through_models() -> None:
    config = parse_gateway(
        minimal(
            upstreams={"o": {"base_url": "http://h/v1", "models": ["gpt-4o"], "api_key_env": "K"}},
            models={"fast": {"upstream": "o", "model": "gpt-4o-mini"}},
        )
    )
    assert config.target("fast").model == "gpt-4o-mini"  # type: ignore[union-attr]
    assert config.target("gpt-4o").upstream == "o"  # type: ignore[union-attr]
    assert config.target("other") is None
    assert config.require_key is False


# ------------------------------------------------------------------ attribution, routing, cache, retries


def test_tags_header_parsing() -> None:
    assert parse_tags("feature=rerank, customer=acme,bad,=x,y=") == {"feature": "rerank", "customer": "acme"}
    attrs = attribution(
        {"x-unitcost-tags": "feature=f,env2=x", "x-unitcost-unit": "ticket:T-1", "x-unitcost-trace-id": "t"},
        None,
        "prod",
    )
    assert (attrs["feature"], attrs["unit"], attrs["unit_id"], attrs["environment"]) == (
        "f",
        "ticket",
        "T-1",
        "prod",
    )
    assert attrs["tags"] == {"env2": "x"}


def scorer_escalates(body: Any) -> bool:
    return "urgent" in orjson.dumps(body).decode()


def test_routing_rules_and_cascade_checks() -> None:
    route = Route(
        "r",
        "light",
        "strong",
        keywords=("Prove",),
        escalate_on_tools=True,
        max_prompt_tokens=50,
        scorer="test_gateway_parts:scorer_escalates",
    )
    user = {"messages": [{"role": "user", "content": "hi"}]}
    assert escalation_reason(route, user) is None
    assert escalation_reason(route, {**user, "tools": [{"type": "function"}]}) == "tools"
    assert (
        escalation_reason(route, {"messages": [{"role": "user", "content": "please prove it"}]})
        == "keyword:Prove"
    )
    assert (
        escalation_reason(route, {"messages": [{"role": "user", "content": "word " * 200}]})
        == "prompt_length"
    )
    assert escalation_reason(route, {"messages": [{"role": "user", "content": "urgent"}]}) == "scorer"
    schema = {"type": "object", "required": ["answer"], "properties": {"answer": {"type": "integer"}}}
    checked = Route("c", "l", "s", mode="cascade", check_json_schema=schema)
    assert answer_passes(checked, '{"answer": 4}')
    assert not answer_passes(checked, '{"answer": "four"}')
    assert not answer_passes(checked, "four")
    assert not answer_passes(Route("c", "l", "s", check_regex=r"^\d+$"), "n/a")


def test_caps_lower_max_tokens_and_reasoning_effort() -> None:
    route = Route("r", "l", "s", max_tokens_cap=100, reasoning_effort_cap="low")
    body: dict[str, Any] = {"max_tokens": 500, "reasoning_effort": "high", "reasoning": {"effort": "medium"}}
    apply_caps(route, body, "openai")
    assert body == {"max_tokens": 100, "reasoning_effort": "low", "reasoning": {"effort": "low"}}
    unset: dict[str, Any] = {"messages": []}
    apply_caps(route, unset, "anthropic")
    assert unset["max_tokens"] == 100


def test_cache_key_ignores_stream_and_user_but_not_content() -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "a"}], "temperature": 0}
    same = {"temperature": 0, "messages": [{"content": "a", "role": "user"}], "model": "m", "user": "u"}
    assert cache_key("/chat/completions", body, "m") == cache_key("/chat/completions", same, "m")
    assert cache_key("/chat/completions", body, "m") != cache_key("/responses", body, "m")
    assert cache_key("/chat/completions", body, "m") != cache_key(
        "/chat/completions", {**body, "temperature": 1}, "m"
    )


def test_memory_cache_expires_and_evicts() -> None:
    async def run() -> None:
        cache = MemoryCache(ttl_s=0, max_entries=2)
        await cache.put("a", b"1")
        assert await cache.get("a") is None  # expired at once
        cache = MemoryCache(ttl_s=60, max_entries=2)
        for key in "abc":
            await cache.put(key, key.encode())
        assert await cache.get("a") is None and await cache.get("c") == b"c"

    asyncio.run(run())


def test_backoff_has_jitter_and_honours_retry_after() -> None:
    delays = {backoff_delay(3, 0.5, 10, None) for _ in range(50)}
    assert len(delays) > 1 and all(0 <= d <= 2.0 for d in delays)
    assert backoff_delay(1, 0.5, 10, "3") == 3.0
    assert backoff_delay(1, 0.5, 10, "3600") == 10
    # An HTTP-date (RFC 9110), as a proxy in front of a provider may send it: about 5 s from now.
    soon = format_datetime(datetime.now(UTC) + timedelta(seconds=5), usegmt=True)
    assert 3 <= backoff_delay(1, 0.5, 10, soon) <= 5
    assert backoff_delay(1, 0.5, 10, "-1", "nan") <= 0.5  # nothing usable: jitter, the first step


def test_in_process_budgets_are_restored_from_the_ledger(ledger) -> None:
    from datetime import timedelta

    from unitcost.gateway.restore import restore_budgets

    now = datetime.now(UTC)
    base = {
        "model": "gpt-4o",
        "provider": "openai",
        "team": "search",
        "input_tokens": 1000,
        "output_tokens": 100,
    }
    records = [
        {**base, "event_id": "ok1", "ts": now.isoformat()},
        {**base, "event_id": "retry", "ts": now.isoformat(), "attempt": 2},
        {**base, "event_id": "hit", "ts": now.isoformat(), "cache_hit": True},
        {
            **base,
            "event_id": "blocked",
            "ts": now.isoformat(),
            "input_tokens": 0,
            "output_tokens": 0,
            "status": "error",
            "http_status": 429,
            "tags": {"blocked_by_budget": "b"},
        },
        {
            **base,
            "event_id": "cascade-strong",
            "ts": now.isoformat(),
            "escalated_from": "gpt-4o-mini",
            "latency_ms": 80.0,
            "tags": {"escalation": "cascade_check_failed"},
        },
        {**base, "event_id": "old", "ts": (now - timedelta(days=40)).isoformat()},
        {**base, "event_id": "ads", "ts": now.isoformat(), "team": "ads"},
    ]
    # Served calls whose client wrote the gateway's markers in x-unitcost-tags (as it could
    # before they were reserved): they took a reservation and count against max_calls.
    spoofed = [
        {**base, "event_id": "spoof-blocked", "ts": now.isoformat(), "http_status": 200, "latency_ms": 90.0}
        | {"tags": {"blocked_by_budget": "b"}},
        {**base, "event_id": "spoof-cascade", "ts": now.isoformat(), "http_status": 200, "latency_ms": 90.0}
        | {"tags": {"escalation": "cascade_check_failed"}},
    ]
    records += spoofed
    # A call whose provider reported no usage: unpriced, its budget lines kept the reservation.
    records.append(
        {
            **base,
            "event_id": "no-usage",
            "ts": now.isoformat(),
            "input_tokens": 0,
            "output_tokens": 0,
            "http_status": 200,
            "latency_ms": 90.0,
            "tags": {"usage_unknown": "the provider reported no usage", "reserved_usd": "0.0125"},
        }
    )
    ledger.ingest_records(records, source="gateway")
    ledger.ingest_records([{**base, "event_id": "other-source", "ts": now.isoformat()}], source="otlp")
    month = budget(name="m", period="month")
    state = MemoryBudgetState()
    assert restore_budgets(ledger.store, [month], state, "") == 2
    line = lines_for([month], {"team": "search"}, "", now)[0]
    spend, calls = asyncio.run(state.read([line]))[0]
    one = ledger.book.price("gpt-4o", provider="openai", input_tokens=1000, output_tokens=100).cost
    # ok1, the two spoofed calls and the call of unknown usage took reservations; the retry and
    # the cascade's strong step are paid for within theirs; the hit and the rejection cost nothing;
    # the call of unknown usage still holds what was reserved for it.
    assert calls == 4 and Decimal(spend).scaleb(-9) == 5 * one + Decimal("0.0125")


def real_redis() -> str:
    import redis

    url = "redis://127.0.0.1:6379/0"
    try:
        redis.Redis.from_url(url, socket_connect_timeout=1).ping()
    except redis.RedisError:
        pytest.skip("no Redis on 127.0.0.1:6379")
    return url


def test_redis_reservation_is_all_or_nothing_and_settles() -> None:
    import uuid

    from unitcost.gateway.budgets import RedisBudgetState

    url = real_redis()
    prefix = f"unitcost-test-{uuid.uuid4().hex}:"
    wide = budget(name="wide", limit_usd=Decimal("10"))
    narrow = budget(name="narrow", limit_usd=Decimal("0.000002"), max_calls=5)
    lines = lines_for([wide, narrow], {"team": "x"}, prefix, datetime.now(UTC))

    async def run() -> None:
        state = RedisBudgetState(url)
        try:
            assert await state.reserve(lines, 1500) == [(1500, 1), (1500, 1)]
            with pytest.raises(BudgetExceededError) as exc:
                await state.reserve(lines, 600)
            assert (exc.value.line.budget.name, exc.value.spend_nano, exc.value.calls) == ("narrow", 1500, 1)
            assert await state.read(lines) == [(1500, 1), (1500, 1)]
            await state.adjust(lines, -1000)
            assert await state.read(lines) == [(500, 1), (500, 1)]
        finally:
            await state.close()

    asyncio.run(run())


def test_redis_cache_round_trip_with_ttl() -> None:
    import uuid

    from unitcost.gateway.cache import RedisCache

    url = real_redis()

    async def run() -> None:
        cache = RedisCache(url, f"unitcost-test-{uuid.uuid4().hex}:", ttl_s=60)
        try:
            assert await cache.get("k") is None
            await cache.put("k", b'{"body": "x"}')
            assert await cache.get("k") == b'{"body": "x"}'
        finally:
            await cache.close()

    asyncio.run(run())


# ------------------------------------------------------------------ event ids


def test_event_ids_are_uuid4_unique_and_not_shared_with_a_forked_child() -> None:
    import uuid

    ids = [new_event_id() for _ in range(5000)]
    assert len(set(ids)) == len(ids)
    assert all(uuid.UUID(hex=i).version == 4 and uuid.UUID(hex=i).hex == i for i in ids)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child's next id must not be the parent's next id
        os.write(write, new_event_id().encode())
        os._exit(0)
    os.waitpid(pid, 0)
    assert os.read(read, 64).decode() != new_event_id()


def test_ledger_writer_spaces_costly_drains_to_stay_near_a_tenth_of_a_core() -> None:
    assert pause_after(0.5, 0.01) == 0.5  # cheap drains: every half second
    assert pause_after(0.5, 0.3) == pytest.approx(2.7)  # busy 0.3 s, idle 2.7 s: 10 %
    assert pause_after(0.5, 60.0) == 10.0  # never more than ten seconds behind


def test_ledger_writer_ledger_runs_duckdb_on_one_thread(tmp_path: Path) -> None:
    from unitcost.api import Ledger
    from unitcost.gateway.writer import THREADS

    with Ledger(str(tmp_path / "ledger.duckdb"), threads=THREADS) as ledger:
        checks = ledger.ingestor()
        summary = ledger.ingest_records(
            [{"event_id": "e1", "ts": "2026-01-01T00:00:00Z", "model": "gpt-4o-mini", "input_tokens": 10}]
        )
        assert summary.accepted == 1
        threads = "SELECT current_setting('threads') AS n"
        assert ledger.store.fetch(threads).column("n").to_pylist() == [THREADS]
        assert checks._con.execute(threads).fetchall() == [(THREADS,)]


def _spooled(event_id: str, billed_cost: Decimal | None = None, **extra: Any) -> dict[str, Any]:
    """A gateway record as the writer reads it back from the spool (JSON round trip)."""
    from unitcost.gateway.records import Attempt

    attempt = Attempt(
        "openai",
        "gpt-4o-mini",
        "chat",
        billed_cost=billed_cost,
        http_status=200,
        usage={"input_tokens": 1200, "cache_read_tokens": 1024, "output_tokens": 16, "reasoning_tokens": 4},
        served_model="gpt-4o-mini-2024-07-18",
        latency_ms=50.25,
        event_id=event_id,
    )
    attrs = {"key": "bench", "team": "search", "trace": "t-1", "session": None, "tags": {"feature": "rerank"}}
    record = orjson.loads(orjson.dumps(attempt.record(attrs, "fast")))
    record.update(extra)
    return dict(record)


def test_ledger_writer_stores_spooled_events_exactly_as_the_general_ingest_path(tmp_path: Path) -> None:
    from unitcost.api import Ledger
    from unitcost.connectors.typed import typed_table
    from unitcost.gateway.writer import ledger_sink, typed_records

    blocked = _spooled("b" * 32, status="error", http_status=429, tags={"blocked_by_budget": "team-month"})
    for usage_field in (
        "input_tokens",
        "cache_read_tokens",
        "output_tokens",
        "reasoning_tokens",
        "latency_ms",
    ):
        del blocked[usage_field]
    stream = _spooled("c" * 32, ttft_ms=12.5, cache_hit=True, status="cancelled", trace_id=None)
    billed = _spooled("d" * 32, billed_cost=Decimal("0.0249"))
    records = [_spooled(f"{i:032x}") for i in range(3)] + [blocked, stream, billed]
    typed = typed_records(records)
    assert typed is not None
    assert typed_table(typed).num_rows == 6  # OpenRouter's billed cost keeps the typed path
    columns = "* EXCLUDE (ingested_at)"
    with Ledger(str(tmp_path / "typed.duckdb")) as typed, Ledger(str(tmp_path / "general.duckdb")) as general:
        ledger_sink(typed)(records)
        general.ingest_records(records, source="gateway")
        query = f"SELECT {columns} FROM events ORDER BY event_id"
        got, want = typed.store.fetch(query).to_pylist(), general.store.fetch(query).to_pylist()
    assert len(got) == 6
    assert got == want
    assert got[-1]["billed_cost"] == Decimal("0.0249")
    assert got[0]["cost"] is not None
    assert sorted(got[0]["tags"]) == [("feature", "rerank"), ("gateway_model", "fast"), ("key", "bench")]


def test_ledger_writer_names_a_bad_spooled_record_and_keeps_the_good_ones(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from unitcost.api import Ledger
    from unitcost.gateway.writer import ledger_sink

    records = [_spooled("a" * 32), _spooled("b" * 32, surprise=1), _spooled("c" * 32, ts="yesterday")]
    with Ledger(str(tmp_path / "ledger.duckdb")) as ledger:
        ledger_sink(ledger)(records)
        kept = ledger.store.fetch("SELECT event_id FROM events").column("event_id").to_pylist()
    assert kept == ["a" * 32]
    assert "surprise" in caplog.text and "ts" in caplog.text
