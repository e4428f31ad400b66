"""Prompt-caching rules follow the model, then the provider, then the catch-all.

Minimums from https://platform.claude.com/docs/en/build-with-claude/prompt-caching ("Cache
limitations": 1,024 tokens for Claude Sonnet 4.5, 4,096 for Claude Haiku 4.5, 2,048 for Claude
Haiku 3.5, "These minimums apply on every platform where each model is available"),
https://developers.openai.com/api/docs/guides/prompt-caching ("For GPT-5.6 and later, cache
writes cost 1.25x the standard, uncached input-token rate"; "A cached prefix remains eligible
for reuse for 30 minutes") and https://ai.google.dev/gemini-api/docs/caching (2,048 for
Gemini 2.5 Flash and 2.5 Pro, implicit caching, no write fee).
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from unitcost.analytics.window import Window
from unitcost.compare import rules
from unitcost.compare.costing import Q
from unitcost.compare.rules import cache_rule_for, cache_rules
from unitcost.compare.whatif import Alternative, CacheAssumption, apply_cache, needed_cuts, run_whatif
from unitcost.compare.workload import load_workload
from unitcost.pricing.quantities import N_QUANTITIES

_ids = itertools.count()
SEPT = Window(datetime(2025, 9, 1, tzinfo=UTC), datetime(2025, 10, 1, tzinfo=UTC))
WHOLE_PROMPT = CacheAssumption("prefix", prefix_share=Decimal(1), prefix_reuse=5)

# The same Claude model as each platform spells it.
SONNET_4_5 = [
    ("anthropic", "claude-sonnet-4-5"),
    ("anthropic", "claude-sonnet-4-5-20250929"),
    ("google", "claude-sonnet-4-5@20250929"),  # Vertex AI
    ("aws", "us.anthropic.claude-sonnet-4-5-20250929-v1:0"),  # Bedrock
    ("aws", "global.anthropic.claude-sonnet-4-5-20250929-v1:0"),
    ("openrouter", "anthropic/claude-sonnet-4.5"),
]
HAIKU_4_5 = [
    ("anthropic", "claude-haiku-4-5"),
    ("google", "claude-haiku-4-5@20251001"),
    ("aws", "regional.anthropic.claude-haiku-4-5-20251001-v1:0"),
    ("openrouter", "anthropic/claude-haiku-4.5"),
]
HAIKU_3_5 = [
    ("anthropic", "claude-3-5-haiku-20241022"),
    ("google", "claude-3-5-haiku@20241022"),
    ("aws", "regional.anthropic.claude-3-5-haiku-20241022-v1:0"),
    ("openrouter", "anthropic/claude-3.5-haiku"),
]


def prompt(tokens: int) -> tuple[int, ...]:
    q = [0] * N_QUANTITIES
    q[Q["input_text"]] = tokens
    return tuple(q)


def cached(provider: str, model: str, tokens: int) -> int:
    """Tokens of a `tokens`-token prompt read or written from cache when all of it is a stable prefix."""
    q = apply_cache(WHOLE_PROMPT, prompt(tokens), provider, model, Decimal(tokens), set())
    return q[Q["cache_read_text"]] + q[Q["cache_write_5m"]] + q[Q["cache_write_1h"]]


@pytest.mark.parametrize(("provider", "model"), SONNET_4_5)
def test_a_1500_token_prompt_is_cacheable_on_sonnet_wherever_it_is_served(provider: str, model: str) -> None:
    rule = cache_rule_for(provider, model)
    assert (rule.provider, rule.min_prefix_tokens, rule.writes_billed) == ("anthropic", 1024, True)
    # 1500 tokens: one call in 5 writes (300, at the 5-minute write price), the rest read
    q = apply_cache(WHOLE_PROMPT, prompt(1500), provider, model, Decimal(1500), set())
    assert (q[Q["cache_read_text"]], q[Q["cache_write_5m"]], q[Q["input_text"]]) == (1200, 300, 0)


@pytest.mark.parametrize(
    ("provider", "model", "minimum"), [(*m, 4096) for m in HAIKU_4_5] + [(*m, 2048) for m in HAIKU_3_5]
)
def test_a_1500_token_prompt_is_not_cacheable_on_haiku_wherever_it_is_served(
    provider: str, model: str, minimum: int
) -> None:
    rule = cache_rule_for(provider, model)
    assert (rule.provider, rule.min_prefix_tokens, rule.writes_billed) == ("anthropic", minimum, True)
    assert cached(provider, model, 1500) == 0
    assert cached(provider, model, rule.min_prefix_tokens) > 0  # the minimum itself is cacheable


@pytest.mark.parametrize(
    ("provider", "model", "minimum"),
    [
        ("anthropic", "claude-opus-4-20250514", 1024),  # Opus 4, with its date
        ("anthropic", "claude-opus-4-0", 1024),
        ("anthropic", "claude-opus-4-1-20250805", 1024),
        ("google", "claude-4-opus", 1024),  # the price book's Vertex AI spelling
        ("aws", "regional.anthropic.claude-opus-4-5-v1:0", 4096),
        ("google", "claude-opus-4-6", 4096),
        ("anthropic", "claude-opus-4-7", 2048),
        ("github-copilot", "claude-opus-4.8-fast", 1024),
        ("anthropic", "claude-opus-5", 512),
        ("aws", "global.anthropic.claude-fable-5-1-v1:0", 512),
        ("anthropic", "claude-sonnet-4-6", 1024),
        ("anthropic", "claude-3-7-sonnet-latest", 1024),
        ("anthropic", "claude-3-haiku-20240307", 2048),
    ],
)
def test_each_claude_model_takes_its_own_minimum(provider: str, model: str, minimum: int) -> None:
    rule = cache_rule_for(provider, model)
    assert (rule.provider, rule.min_prefix_tokens) == ("anthropic", minimum)


@pytest.mark.parametrize(
    ("provider", "model", "rule_provider", "minimum"),
    [
        # No rule knows these names: the provider's rule applies.
        ("openai", "gpt-4o", "openai", 1024),
        ("openai", "gpt-5.5", "openai", 1024),
        ("google", "gemini-3-pro-preview", "google", 4096),
        ("deepseek", "deepseek-chat", "deepseek", 64),
        # A Claude model Anthropic's page gives no minimum for: Anthropic's default, on any platform.
        ("anthropic", "claude-opus-5-5", "anthropic", 1024),
        ("google", "claude-fable-5-2", "anthropic", 1024),
        # Neither the name nor the provider: the catch-all, last in the data.
        ("together", "deepseek-ai/DeepSeek-V3", "*", 1024),
        ("nobody", "x", "*", 1024),
    ],
)
def test_an_unknown_model_falls_back_to_its_providers_rule(
    provider: str, model: str, rule_provider: str, minimum: int
) -> None:
    rule = cache_rule_for(provider, model)
    assert (rule.provider, rule.min_prefix_tokens) == (rule_provider, minimum)


def test_the_models_rule_wins_over_the_providers() -> None:
    # Google's own default (4096, no write fee) is not Claude's on Vertex AI; nor is the
    # catch-all (no write fee) Claude's on Bedrock, nor Gemini's on OpenRouter.
    assert cache_rule_for("google", "gemini-3-pro-preview").min_prefix_tokens == 4096
    vertex = cache_rule_for("google", "claude-sonnet-4-5@20250929")
    assert (vertex.provider, vertex.min_prefix_tokens, vertex.writes_billed) == ("anthropic", 1024, True)
    bedrock = cache_rule_for("aws", "us.anthropic.claude-sonnet-4-5-20250929-v1:0")
    assert bedrock == cache_rule_for("anthropic", "claude-sonnet-4-5")
    gemini = cache_rule_for("openrouter", "google/gemini-2.5-flash")
    assert gemini == cache_rule_for("google", "gemini-2.5-pro")
    assert (gemini.provider, gemini.min_prefix_tokens, gemini.writes_billed) == ("google", 2048, False)
    assert "for Claude Opus 4.8, Sonnet 5, Sonnet 4.6/4.5" in vertex.describe()


@pytest.mark.parametrize("model", ["gpt-5.6-sol", "gpt-5.6-terra", "gpt-6-astra", "gpt-6.1-terra"])
def test_openai_gpt_5_6_and_later_bill_cache_writes_with_a_30_minute_ttl(book, model: str) -> None:
    rule = cache_rule_for("openai", model)
    assert (rule.min_prefix_tokens, rule.writes_billed, rule.ttl) == (1024, True, "30m")
    assert cache_rule_for("openai", "gpt-5.5").writes_billed is False  # "earlier models": no write fee
    # The rule explains the book's rates; the rates themselves are the book's.
    rates = book.price(model, provider="openai", at=datetime(2026, 10, 1, tzinfo=UTC), input_tokens=1).rates
    assert rates["cache_write_5m"] == rates["input_text"] * rule.write_premium_5m
    assert rule.read_multiplier is None  # each model's cached-input price: 0.1x on 5.6, 0.05x on 6.1
    # A 30-minute write is a short-lived one: the 5-minute write column, as the connectors record it.
    q = apply_cache(WHOLE_PROMPT, prompt(1500), "openai", model, Decimal(1500), set())
    assert (q[Q["cache_read_text"]], q[Q["cache_write_5m"]], q[Q["cache_write_1h"]]) == (1200, 300, 0)


def test_the_data_must_end_with_the_catch_all(monkeypatch: pytest.MonkeyPatch) -> None:
    last = cache_rules()[-1]
    assert (last.provider, last.models, last.provider_default) == ("*", (), True)
    data = rules._load("cache_rules.toml")
    monkeypatch.setattr(rules, "_load", lambda name: {"rule": data["rule"][:-1]})
    rules.cache_rules.cache_clear()
    try:
        with pytest.raises(ValueError, match="catch-all"):
            rules.cache_rules()
    finally:
        monkeypatch.undo()
        rules.cache_rules.cache_clear()
        rules.cache_rule_for.cache_clear()


def ev(provider: str, model: str, **usage: Any) -> dict[str, Any]:
    return {
        "event_id": f"c{next(_ids)}",
        "ts": "2025-09-10T09:00:00Z",
        "provider": provider,
        "model": model,
        **usage,
    }


def whatif(ledger: Any, *alts: Alternative) -> list[dict[str, Any]]:
    workload = load_workload(ledger.store, SEPT, [], needed_cuts(ledger.book, alts, SEPT))
    return run_whatif(ledger.book, workload, alts).rows()


def test_whatif_to_claude_on_vertex_and_bedrock_follows_the_models_rule(ledger) -> None:
    # One recorded GPT-4o-mini call of 1,500 prompt tokens; 80% of it a stable prefix (1,200
    # tokens), one call in 5 writing it: 240 written, 960 read, 300 uncached.
    ledger.ingest_records([ev("openai", "gpt-4o-mini", input_tokens=1_500, output_tokens=0)])
    cache = CacheAssumption.parse("prefix", Decimal("0.8"), 5)
    rows = whatif(
        ledger,
        Alternative.parse("google:claude-sonnet-4-5", cache=cache, token_ratio=Decimal(1)),
        Alternative.parse(
            "aws:regional.anthropic.claude-haiku-4-5-20251001-v1:0", cache=cache, token_ratio=Decimal(1)
        ),
    )
    vertex, bedrock = rows[1], rows[2]
    # Sonnet 4.5 on Vertex AI: 1,200 >= Anthropic's 1,024 for Sonnet 4.5, so it is cached, and the
    # write pays Anthropic's 5-minute write price ($3 input, $0.30 read, $3.75 write per Mtok):
    #   300 x 3 + 960 x 0.30 + 240 x 3.75 = 2088 micro-USD
    # (under Google's own rule, 4,096, it was billed whole: 1500 x 3 = 4500).
    assert vertex["total"] == Decimal("0.002088")
    assert vertex["cache_write"] == Decimal("0.0009")
    assert "anthropic rule: prefix >= 1024 tokens" in str(vertex["assumptions"])
    # Haiku 4.5 on Bedrock: 1,200 < 4,096, nothing cached; 1500 x $1.10 (Bedrock's regional
    # endpoint price) = 1650 (under the catch-all, 1,024 and no write fee, it read 960 from cache).
    assert bedrock["total"] == Decimal("0.00165")
    assert bedrock["cache_read"] == 0 and bedrock["cache_write"] == 0
    assert "anthropic rule: prefix >= 4096 tokens" in str(bedrock["assumptions"])


def test_whatif_to_gpt_5_6_bills_the_cache_writes(ledger) -> None:
    ledger.ingest_records([ev("openai", "gpt-4o-mini", input_tokens=1_500, output_tokens=0)])
    cache = CacheAssumption.parse("prefix", Decimal("0.8"), 5)
    (row,) = whatif(ledger, Alternative.parse("openai:gpt-5.6-sol@2026-10-01", cache=cache))[1:]
    # gpt-5.6-sol on 2026-10-01 per the price book: $4 input, $0.40 cached, $5 cache write (1.25x):
    #   300 x 4 + 960 x 0.40 + 240 x 5 = 2784 micro-USD (with writes billed as input, 2544).
    assert row["total"] == Decimal("0.002784")
    assert row["cache_write"] == Decimal("0.0012")
    assert "writes billed (30m TTL)" in str(row["assumptions"])
