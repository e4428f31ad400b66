"""Prometheus /metrics of the gateway, as a platform team scrapes it.

A real gateway process on 127.0.0.1 in front of the simulated provider, driven by the official
openai and anthropic SDKs; /metrics is scraped with httpx and read with prometheus_client's
own parser, and every money and token figure is checked against what the ledger recorded.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway_support import (
    GATEWAY_KEY,
    OTHER_KEY,
    GatewayProcess,
    ThreadServer,
    an,
    free_port,
    oa,
    simulator,
    spooled,
    unique,
    write_config,
)
from test_gateway_budgets_replicas import REDIS_URL, redis_prefix
from unitcost.api import Ledger
from unitcost.config import ConfigError
from unitcost.gateway.config import parse_gateway
from unitcost.gateway.keys import hash_key
from unitcost.gateway.metrics import metrics_token

TOKEN_ENV = "UC_TEST_METRICS_TOKEN"
TOKEN = "metrics-token-3f9a1c0e"
NO_TEAM_KEY = "uc-test-key-without-team"
CONFIGURED_MODELS = {
    "gpt-4o-mini",
    "gpt-4o",
    "text-embedding-3-small",
    "claude-sonnet-4-5",
    "claude-3-5-haiku-20241022",
    "my-llama",
}

EXTRA = f"""
[gateway.metrics]
bearer_token_env = "{TOKEN_ENV}"

[gateway.cache]
enabled = true

[gateway.upstreams.local]
kind = "openai"
base_url = "{{sim}}/v1"
provider = "self-hosted"
models = ["my-llama"]

[[gateway.keys]]
name = "no-team-key"
user = "bob"
sha256 = "{hash_key(NO_TEAM_KEY)}"

[[gateway.budgets]]
name = "team-monthly"
scope = "team"
period = "month"
limit_usd = "100"
unpriced = "allow"

[[gateway.budgets]]
name = "everything"
scope = "global"
period = "day"
limit_usd = "1000"
max_calls = 100000
unpriced = "allow"

[[gateway.budgets]]
name = "per-user"
scope = "user"
limit_usd = "50"
unpriced = "allow"

[[gateway.budgets]]
name = "capped-feature"
scope = "tag:feature"
match = "capped"
limit_usd = "0.0000001"

[[gateway.budgets]]
name = "strict-feature"
scope = "tag:feature"
match = "strict"
limit_usd = "1"
"""


# ------------------------------------------------------------------ reading /metrics


@dataclass
class Scrape:
    text: str
    samples: list[tuple[str, dict[str, str], float]]

    def value(self, name: str, **labels: str) -> float:
        """The sum of the samples named `name` whose labels include `labels`."""
        return sum(v for n, lb, v in self.samples if n == name and labels.items() <= lb.items())

    def by(self, name: str, *keys: str) -> dict[tuple[str, ...], float]:
        out: dict[tuple[str, ...], float] = defaultdict(float)
        for n, lb, v in self.samples:
            if n == name:
                out[tuple(lb[k] for k in keys)] += v
        return dict(out)

    def labels(self, name: str) -> list[dict[str, str]]:
        return [lb for n, lb, _ in self.samples if n == name]


def scrape(gw: GatewayProcess, token: str | None = TOKEN) -> Scrape:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    response = httpx.get(gw.url + "/metrics", headers=headers, timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples = [
        (s.name, dict(s.labels), s.value)
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    ]
    return Scrape(response.text, samples)


def ledger_rows(directory: Path) -> list[dict[str, Any]]:
    with Ledger(str(directory / "ledger.duckdb")) as ledger:
        rows: list[dict[str, Any]] = ledger.store.fetch(
            "SELECT provider, model, team, cache_hit, tags, cost, avoided_cost, cache_savings, ttft_ms, "
            "input_tokens, cache_read_tokens, cache_write_5m_tokens, cache_write_1h_tokens, "
            "output_tokens, reasoning_tokens FROM events"
        ).to_pylist()
    for row in rows:
        row["tags"] = dict(row["tags"] or [])
    return rows


def close(a: float, b: float | Decimal) -> bool:
    return math.isclose(a, float(b), rel_tol=1e-9, abs_tol=1e-15)


# ------------------------------------------------------------------ one gateway, every kind of call


@dataclass
class Driven:
    gw: GatewayProcess
    directory: Path
    first: Scrape
    again: Scrape
    refused: list[httpx.Response]
    rows: list[dict[str, Any]]


def drive(gw: GatewayProcess) -> None:
    """One call of each kind a platform team sees, through the official SDKs."""
    client = oa(gw)
    client.chat.completions.create(
        model="fast",
        messages=[{"role": "user", "content": unique("sim:cached=10 sim:reasoning=5 sim:input=40")}],
    )
    stream = client.chat.completions.create(
        model="gpt-4o",
        messages=[{"role": "user", "content": unique()}],
        stream=True,
        stream_options={"include_usage": True},
    )
    assert [chunk for chunk in stream][-1].usage is not None
    an(gw).messages.create(
        model="claude-sonnet-4-5",
        max_tokens=100,
        messages=[{"role": "user", "content": unique("sim:cached=200 sim:cache_write_5m=100 sim:input=400")}],
    )
    # Only cache writes: they cost more than uncached input (the write premium).
    events = an(gw).messages.create(
        model="claude-sonnet-4-5",
        max_tokens=100,
        messages=[{"role": "user", "content": unique("sim:cache_write_1h=300 sim:input=350")}],
        stream=True,
    )
    assert [e.type for e in events][-1] == "message_stop"
    client.chat.completions.create(model="my-llama", messages=[{"role": "user", "content": unique()}])
    repeated = [{"role": "user", "content": unique()}]
    client.chat.completions.create(model="gpt-4o", messages=repeated)
    hit = client.chat.completions.with_raw_response.create(model="gpt-4o", messages=repeated)
    assert hit.headers["x-unitcost-cache"] == "hit"
    oa(gw, OTHER_KEY).embeddings.create(model="text-embedding-3-small", input=unique())
    # A team named by a header, not by the key: a raw request value, never a label.
    oa(gw, NO_TEAM_KEY).responses.create(
        model="gpt-4o-mini",
        input=unique(),
        extra_headers={"x-unitcost-tags": "team=header-team", "x-unitcost-trace-id": "trace-secret-42"},
    )
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(
            model="fast",
            max_tokens=1000,
            messages=[{"role": "user", "content": unique()}],
            extra_headers={"x-unitcost-tags": "feature=capped"},
        )
    with pytest.raises(openai.PermissionDeniedError):  # a model without a price under a money limit
        client.chat.completions.create(
            model="my-llama",
            messages=[{"role": "user", "content": unique()}],
            extra_headers={"x-unitcost-tags": "feature=strict"},
        )
    with pytest.raises(openai.InternalServerError):  # after the gateway's 2 retries
        client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": unique("sim:status=500")}]
        )
    with pytest.raises(openai.RateLimitError):  # the provider's own 429
        client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": unique("sim:status=429")}]
        )
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "hi"}])


def wait_for_writer(gw: GatewayProcess, timeout: float = 60.0) -> Scrape:
    """A scrape taken once the ledger writer has moved every spooled event into the ledger."""
    deadline = time.monotonic() + timeout
    while True:
        got = scrape(gw)
        written = got.value("unitcost_ledger_writer_events_total", result="accepted")
        if written and written == got.value("unitcost_gateway_spool_events_total"):
            return got
        assert time.monotonic() < deadline, "the ledger writer never caught up with the spool"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def driven(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Driven]:
    directory = tmp_path_factory.mktemp("metrics")
    with simulator() as (sim_url, _sim):
        port = free_port()
        config = write_config(directory, sim_url, port, EXTRA.replace("{sim}", sim_url))
        gw = GatewayProcess(config, port, env={TOKEN_ENV: TOKEN}).start()
        try:
            drive(gw)
            first = wait_for_writer(gw)
            again = scrape(gw)
            refused = [
                httpx.get(gw.url + "/metrics", headers=headers)
                for headers in (
                    {},
                    {"authorization": "Bearer wrong"},
                    {"authorization": f"Bearer {GATEWAY_KEY}"},
                )
            ]
        finally:
            gw.stop()
    yield Driven(gw, directory, first, again, refused, ledger_rows(directory))


def upstream_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Events of calls that reached an upstream (not cache hits, not budget refusals)."""
    return [r for r in rows if not r["cache_hit"] and "blocked_by_budget" not in r["tags"]]


# ------------------------------------------------------------------ the figures


def test_requests_are_counted_once_by_route_and_outcome(driven: Driven) -> None:
    got = driven.first
    outcomes = got.by("unitcost_gateway_requests_total", "outcome")
    assert outcomes == {
        ("ok",): 8,
        ("cache_hit",): 1,
        ("budget_refused",): 2,
        ("upstream_error",): 1,
        ("rate_limited",): 1,
        ("client_error",): 1,
    }
    routes = got.by("unitcost_gateway_requests_total", "route")
    assert routes == {("chat",): 10, ("messages",): 2, ("embeddings",): 1, ("responses",): 1}
    assert got.value("unitcost_gateway_requests_total", model="my-llama", outcome="ok") == 1
    assert got.value("unitcost_gateway_requests_total", model="none", outcome="client_error") == 1
    # Every upstream attempt, retries included: 3 for the 500, 3 for the 429.
    attempts = got.by("unitcost_gateway_upstream_attempts_total", "status")
    assert attempts == {("ok",): 8, ("error",): 6}
    assert attempts[("ok",)] + attempts[("error",)] == len(upstream_rows(driven.rows))


def test_spend_equals_the_ledger_and_unpriced_calls_are_not_zero_dollars(driven: Driven) -> None:
    got, rows = driven.first, driven.rows
    priced = [r for r in upstream_rows(rows) if r["cost"] is not None]
    ledger_total = sum((r["cost"] for r in rows if r["cost"] is not None), Decimal(0))
    assert ledger_total > 0
    assert close(got.value("unitcost_gateway_spend_usd_total"), ledger_total)
    by_model: dict[tuple[str, str, str], Decimal] = defaultdict(Decimal)
    for r in priced:
        by_model[(r["provider"], r["model"], r["team"] or "none")] += r["cost"]
    spend = got.by("unitcost_gateway_spend_usd_total", "provider", "model", "team")
    assert spend.keys() == {(p, m, "other" if t == "header-team" else t) for p, m, t in by_model}
    for (provider, model, team), cost in by_model.items():
        assert close(spend[(provider, model, "other" if team == "header-team" else team)], cost)
    # The model without a price: counted apart, never in spend.
    unpriced = [r for r in upstream_rows(rows) if r["cost"] is None]
    assert [(r["provider"], r["model"]) for r in unpriced] == [("self-hosted", "my-llama")]
    assert got.by("unitcost_gateway_unpriced_calls_total", "provider", "model", "reason") == {
        ("self-hosted", "my-llama", "no_price"): 1
    }
    assert not any(lb["model"] == "my-llama" for lb in got.labels("unitcost_gateway_spend_usd_total"))


def test_tokens_by_kind_add_up_to_the_ledger(driven: Driven) -> None:
    got, rows = driven.first, upstream_rows(driven.rows)
    kinds = got.by("unitcost_gateway_tokens_total", "kind")
    writes = sum(r["cache_write_5m_tokens"] + r["cache_write_1h_tokens"] for r in rows)
    reads = sum(r["cache_read_tokens"] for r in rows)
    reasoning = sum(r["reasoning_tokens"] for r in rows)
    assert reads == 210 and writes == 400 and reasoning == 5
    assert kinds == {
        ("input_uncached",): sum(r["input_tokens"] for r in rows) - reads - writes,
        ("cache_read",): reads,
        ("cache_write",): writes,
        ("output",): sum(r["output_tokens"] for r in rows) - reasoning,
        ("reasoning",): reasoning,
    }
    search = got.value("unitcost_gateway_tokens_total", team="search")
    assert search == sum(r["input_tokens"] + r["output_tokens"] for r in rows if r["team"] == "search")


def test_money_saved_by_both_caches_equals_the_ledger(driven: Driven) -> None:
    got, rows = driven.first, driven.rows
    avoided = sum(r["avoided_cost"] for r in rows if r["cache_hit"])
    assert avoided > 0
    assert close(got.value("unitcost_gateway_response_cache_saved_usd_total"), avoided)
    assert got.by("unitcost_gateway_response_cache_saved_usd_total", "model", "team") == {
        ("gpt-4o", "search"): pytest.approx(float(avoided))
    }
    savings = [r["cache_savings"] for r in upstream_rows(rows) if r["cache_savings"]]
    saved = sum(s for s in savings if s > 0)
    premium = -sum(s for s in savings if s < 0)
    assert saved > 0 and premium > 0
    assert close(got.value("unitcost_gateway_prompt_cache_saved_usd_total"), saved)
    assert close(got.value("unitcost_gateway_prompt_cache_write_premium_usd_total"), premium)


def test_latency_and_time_to_first_token_histograms(driven: Driven) -> None:
    got, rows = driven.first, upstream_rows(driven.rows)
    assert got.value("unitcost_gateway_upstream_latency_seconds_count") == len(rows)
    streams = [r for r in rows if r["ttft_ms"] is not None]
    assert len(streams) == 2
    assert got.by("unitcost_gateway_time_to_first_token_seconds_count", "model") == {
        ("gpt-4o",): 1,
        ("claude-sonnet-4-5",): 1,
    }
    ttft_sum = got.value("unitcost_gateway_time_to_first_token_seconds_sum")
    assert ttft_sum == pytest.approx(sum(r["ttft_ms"] for r in streams) / 1000, rel=1e-6)
    buckets = {lb["le"] for lb in got.labels("unitcost_gateway_upstream_latency_seconds_bucket")}
    assert {"0.1", "1.0", "30.0", "600.0", "+Inf"} <= buckets
    assert got.value("unitcost_gateway_overhead_seconds_count") > 0


def test_budget_gauges_and_refusals(driven: Driven) -> None:
    got, rows = driven.first, driven.rows
    spend_gauges = got.by("unitcost_gateway_budget_spend_usd", "budget", "value")
    # global, one per team a key names, and the budgets of one named value; not per user.
    assert spend_gauges.keys() == {
        ("everything", "*"),
        ("team-monthly", "search"),
        ("team-monthly", "ads"),
        ("capped-feature", "capped"),
        ("strict-feature", "strict"),
    }
    priced = [r for r in rows if r["cost"] is not None]
    for team in ("search", "ads"):
        cost = sum(r["cost"] for r in priced if r["team"] == team)
        calls = sum(1 for r in rows if r["team"] == team)
        # Budget lines count whole nano-dollars, rounded up per call.
        assert cost > 0 and abs(spend_gauges[("team-monthly", team)] - float(cost)) <= 1e-9 * calls
    total = sum(r["cost"] for r in priced)
    assert abs(spend_gauges[("everything", "*")] - float(total)) <= 1e-9 * len(rows)
    assert spend_gauges[("capped-feature", "capped")] == 0
    assert got.value("unitcost_gateway_budget_limit_usd", budget="everything") == 1000
    assert got.value("unitcost_gateway_budget_limit_usd", budget="team-monthly", value="search") == 100
    ratio = got.value("unitcost_gateway_budget_used_ratio", budget="team-monthly", value="search")
    assert ratio == pytest.approx(spend_gauges[("team-monthly", "search")] / 100)
    # Calls that reserved: everything but the cache hit, the refusals and the 404.
    assert got.value("unitcost_gateway_budget_calls", budget="everything") == 10
    assert got.value("unitcost_gateway_budget_max_calls", budget="everything") == 100000
    assert got.value("unitcost_gateway_budget_state_up") == 1
    assert got.by("unitcost_gateway_budget_refusals_total", "budget", "reason") == {
        ("capped-feature", "limit_usd"): 1,
        ("strict-feature", "unpriced_model"): 1,
    }


def test_spool_and_ledger_writer(driven: Driven) -> None:
    got, rows = driven.first, driven.rows
    events = got.value("unitcost_gateway_spool_events_total")
    assert events == len(rows) == len(spooled(driven.directory))
    assert got.value("unitcost_ledger_writer_events_total", result="accepted") == events
    assert got.value("unitcost_ledger_writer_events_total", result="rejected") == 0
    assert got.value("unitcost_ledger_writer_up") == 1
    assert got.value("unitcost_ledger_writer_last_drain_timestamp_seconds") > time.time() - 600
    assert got.value("unitcost_gateway_spool_backlog_bytes") == 0
    assert got.value("unitcost_gateway_spool_append_failures_total") == 0


def test_scrapes_are_not_requests(driven: Driven) -> None:
    first, again = driven.first, driven.again
    for name in ("unitcost_gateway_requests_total", "unitcost_gateway_spool_events_total"):
        assert again.value(name) == first.value(name)


def test_labels_are_bounded_and_no_secret_is_exposed(driven: Driven) -> None:
    got = driven.first
    for name, labels, _ in got.samples:
        if "team" in labels:
            assert labels["team"] in {"search", "ads", "none", "other"}, (name, labels)
        if "model" in labels:
            assert labels["model"] in CONFIGURED_MODELS | {"none", "other"}, (name, labels)
    assert got.value("unitcost_gateway_requests_total", team="other") == 1  # the header's team
    text = got.text
    for secret in (
        GATEWAY_KEY,
        OTHER_KEY,
        NO_TEAM_KEY,
        hash_key(GATEWAY_KEY),
        "sk-sim-secret-openai",
        TOKEN,
        "search-key",
        "no-team-key",
        "alice",
        "bob",
        "header-team",
        "trace-secret-42",
        "no-such-model",
        "_created",
    ):
        assert secret not in text, secret


def test_metrics_need_the_bearer_token(driven: Driven) -> None:
    """No token, a wrong one, a virtual key: 401, and nothing of the figures."""
    for refused in driven.refused:
        assert refused.status_code == 401 and refused.headers["www-authenticate"].startswith("Bearer")
        assert "unitcost_gateway" not in refused.text


# ------------------------------------------------------------------ configuration


def test_metrics_settings_are_checked() -> None:
    base = {"upstreams": {"up": {"base_url": "http://127.0.0.1:9/v1"}}}
    assert parse_gateway(base).metrics_enabled is True
    with pytest.raises(ConfigError, match="unknown setting 'bearer_token'"):
        parse_gateway({**base, "metrics": {"bearer_token": "in-the-file"}})
    with pytest.raises(ConfigError, match="enabled must be true or false"):
        parse_gateway({**base, "metrics": {"enabled": "yes"}})
    named = parse_gateway({**base, "metrics": {"bearer_token_env": "UC_TEST_UNSET_TOKEN_VARIABLE"}})
    with pytest.raises(ConfigError, match="UC_TEST_UNSET_TOKEN_VARIABLE, which is not set"):
        metrics_token(named)


def test_a_gateway_whose_token_variable_is_unset_does_not_start(tmp_path: Path) -> None:
    with simulator() as (sim_url, _sim):
        port = free_port()
        config = write_config(tmp_path, sim_url, port, EXTRA.replace("{sim}", sim_url))
        with pytest.raises(RuntimeError) as refused:
            GatewayProcess(config, port, env={TOKEN_ENV: ""}).start()
    assert f"{TOKEN_ENV}, which is not set" in " ".join(str(refused.value).split())


def test_metrics_can_be_turned_off(tmp_path: Path) -> None:
    from unitcost.gateway.budgets import MemoryBudgetState
    from unitcost.gateway.server import build_gateway
    from unitcost.pricing.book import PriceBook

    raw = {
        "upstreams": {"up": {"base_url": "http://127.0.0.1:9/v1", "models": ["gpt-4o-mini"]}},
        "spool_dir": str(tmp_path / "spool"),
    }
    for enabled, status in ((True, 200), (False, 404)):
        config = parse_gateway({**raw, "metrics": {"enabled": enabled}})
        gateway = build_gateway(config, PriceBook(), MemoryBudgetState())
        port = free_port()
        try:
            with ThreadServer(gateway.handle, port):
                response = httpx.get(f"http://127.0.0.1:{port}/metrics")
        finally:
            gateway.spool.close()
        assert response.status_code == status
        assert ("unitcost_gateway_requests_total" in response.text) is enabled


# ------------------------------------------------------------------ replicas sharing Redis


REPLICA_EXTRA = """
[gateway.redis]
url = "{redis}"
prefix = "{prefix}"

[[gateway.budgets]]
name = "everything"
scope = "global"
period = "month"
limit_usd = "1000"

[[gateway.budgets]]
name = "team-monthly"
scope = "team"
period = "month"
limit_usd = "100"
"""


def test_two_replicas_sharing_redis_report_the_same_budget_spend(tmp_path: Path) -> None:
    with redis_prefix() as (redis, prefix), simulator() as (sim_url, _sim):
        replicas = []
        for i in range(2):
            directory = tmp_path / f"replica-{i}"
            directory.mkdir()
            port = free_port()
            extra = REPLICA_EXTRA.format(redis=REDIS_URL, prefix=prefix)
            replicas.append(GatewayProcess(write_config(directory, sim_url, port, extra), port))
        try:
            for replica in replicas:
                replica.start()
            first, second = replicas
            oa(first).chat.completions.create(
                model="gpt-4o", messages=[{"role": "user", "content": unique()}]
            )
            oa(first).chat.completions.create(model="fast", messages=[{"role": "user", "content": unique()}])
            with anthropic.Anthropic(base_url=second.url, api_key=GATEWAY_KEY, max_retries=0) as client:
                client.messages.create(
                    model="claude-sonnet-4-5", max_tokens=50, messages=[{"role": "user", "content": unique()}]
                )
            scrapes = [scrape(replica, token=None) for replica in replicas]
        finally:
            for replica in replicas:
                if replica.proc is not None and replica.proc.poll() is None:
                    replica.stop()
        (line,) = redis.scan_iter(match=f"{prefix}budget:everything:*")
        shared = int(redis.hget(line, "s")) / 10**9

    gauges = [s.value("unitcost_gateway_budget_spend_usd", budget="everything") for s in scrapes]
    assert gauges[0] == gauges[1] == pytest.approx(shared, abs=1e-12) and shared > 0
    assert [s.value("unitcost_gateway_budget_calls", budget="everything") for s in scrapes] == [3, 3]
    teams = [
        s.value("unitcost_gateway_budget_spend_usd", budget="team-monthly", value="search") for s in scrapes
    ]
    assert teams[0] == teams[1] == gauges[0]
    # Each replica counts only what it answered; together they are the shared line and the ledgers.
    spends = [s.value("unitcost_gateway_spend_usd_total") for s in scrapes]
    assert all(0 < spend < shared for spend in spends)
    ledgers = [ledger_rows(tmp_path / f"replica-{i}") for i in range(2)]
    for spend, rows in zip(spends, ledgers, strict=True):
        assert close(spend, sum(r["cost"] for r in rows))
    assert abs(sum(spends) - shared) <= 3e-9


def test_an_unreachable_budget_state_is_reported_as_such_not_as_zero_spend(tmp_path: Path) -> None:
    """Redis down at scrape time: budget_state_up is 0 and no budget gauge claims $0 spent."""
    import asyncio

    from unitcost.gateway.budgets import RedisBudgetState
    from unitcost.gateway.metrics import GatewayMetrics
    from unitcost.gateway.spool import Spool
    from unitcost.pricing.book import PriceBook

    nobody = f"redis://127.0.0.1:{free_port()}/0"  # a port nothing listens on
    config = parse_gateway(
        {
            "upstreams": {"up": {"base_url": "http://127.0.0.1:9/v1", "models": ["gpt-4o-mini"]}},
            "redis": {"url": nobody, "timeout_s": 0.5},
            "budgets": [{"name": "everything", "scope": "global", "limit_usd": "10"}],
            "spool_dir": str(tmp_path / "spool"),
        }
    )
    spool = Spool(config.spool_dir)

    async def scrape_once() -> str:
        state = RedisBudgetState(nobody, timeout_s=0.5)
        try:
            return (await GatewayMetrics(config, PriceBook(), spool, state).exposition()).decode()
        finally:
            await state.close()

    try:
        text = asyncio.run(scrape_once())
    finally:
        spool.close()
    values = {
        s.name: s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if not s.labels
    }
    assert values["unitcost_gateway_budget_state_up"] == 0
    assert (
        "unitcost_gateway_budget_spend_usd{" not in text and "unitcost_gateway_budget_limit_usd{" not in text
    )
