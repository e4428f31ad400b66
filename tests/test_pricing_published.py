"""Published prices, hand-computed: each expectation is tokens × the provider's listed $/MTok."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from unitcost.pricing.book import PriceBook

M = 1_000_000


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


# DeepSeek, per https://api-docs.deepseek.com/quick_start/pricing and its news pages.
# (when, model, cache-hit $/MTok, cache-miss $/MTok, output $/MTok)
DEEPSEEK = [
    ("2025-01-10T12:00", "deepseek-chat", "0.014", "0.14", "0.28"),  # V3 launch promotion
    ("2025-02-08T15:59:59", "deepseek-chat", "0.014", "0.14", "0.28"),  # last second of the promotion
    ("2025-02-08T16:00", "deepseek-chat", "0.07", "0.27", "1.10"),  # standard V3
    ("2025-03-03T10:00", "deepseek-chat", "0.07", "0.27", "1.10"),  # peak hours
    ("2025-03-03T16:30", "deepseek-chat", "0.035", "0.135", "0.55"),  # off-peak starts 16:30 UTC
    ("2025-03-04T00:29", "deepseek-chat", "0.035", "0.135", "0.55"),  # ... and wraps past midnight
    ("2025-03-04T00:30", "deepseek-chat", "0.07", "0.27", "1.10"),  # ... until 00:30 UTC
    ("2025-03-03T10:00", "deepseek-reasoner", "0.14", "0.55", "2.19"),
    ("2025-03-03T20:00", "deepseek-reasoner", "0.035", "0.135", "0.55"),  # off-peak, 75% off
    ("2025-09-05T15:59", "deepseek-chat", "0.07", "0.27", "1.10"),
    ("2025-09-05T16:00", "deepseek-chat", "0.07", "0.56", "1.68"),  # V3.1, no more off-peak
    ("2025-09-05T20:00", "deepseek-chat", "0.07", "0.56", "1.68"),
    ("2025-09-05T20:00", "deepseek-reasoner", "0.07", "0.56", "1.68"),
    ("2025-09-29T00:00", "deepseek-chat", "0.028", "0.28", "0.42"),  # V3.2-Exp
    ("2025-12-15T09:00", "deepseek-reasoner", "0.028", "0.28", "0.42"),
]


@pytest.mark.parametrize(("when", "model", "hit", "miss", "out"), DEEPSEEK)
def test_deepseek_periods(book: PriceBook, when: str, model: str, hit: str, miss: str, out: str) -> None:
    call = book.price(model, input_tokens=3 * M, cache_read_tokens=2 * M, output_tokens=M, at=at(when))
    expected = 2 * Decimal(hit) + Decimal(miss) + Decimal(out)
    assert call.cost == expected, (call.price_ref, call.rates)
    assert call.price is not None and call.price.layer == "unitcost"
    assert call.price.source.startswith("https://api-docs.deepseek.com/")


def test_deepseek_v32_cut_is_not_half_for_a_cache_heavy_workload(book: PriceBook) -> None:
    """The announced 'more than 50%' cut is 60% on a cache-miss prompt and 50% on a cached one."""
    before, after = at("2025-09-20T10:00"), at("2025-10-05T10:00")
    miss_before = book.price("deepseek-chat", input_tokens=M, at=before).cost
    miss_after = book.price("deepseek-chat", input_tokens=M, at=after).cost
    hit_before = book.price("deepseek-chat", input_tokens=M, cache_read_tokens=M, at=before).cost
    hit_after = book.price("deepseek-chat", input_tokens=M, cache_read_tokens=M, at=after).cost
    assert miss_after / miss_before == Decimal("0.5")  # 0.56 -> 0.28
    assert hit_after / hit_before == Decimal("0.4")  # 0.07 -> 0.028


def test_anthropic_one_hour_cache_write_costs_twice_the_input_price(book: PriceBook) -> None:
    # Claude Sonnet 4.5: $3 input, $3.75 5-minute write, $6 1-hour write, $0.30 read, $15 output.
    call = book.price(
        "claude-sonnet-4-5",
        input_tokens=100_000,
        cache_write_1h_tokens=60_000,
        cache_write_5m_tokens=10_000,
        cache_read_tokens=20_000,
        output_tokens=2_000,
        reasoning_tokens=500,
        at=at("2025-11-01"),
    )
    b = call.breakdown
    assert b is not None
    assert b.cache_write_1h == Decimal("0.36")  # 60k × $6/MTok
    assert b.cache_write_5m == Decimal("0.0375")  # 10k × $3.75
    assert b.cache_read == Decimal("0.006")  # 20k × $0.30
    assert b.input == Decimal("0.03")  # 10k uncached × $3
    assert b.output == Decimal("0.0225")  # 1.5k × $15
    assert b.reasoning == Decimal("0.0075")  # reasoning at the output price
    assert call.cost == Decimal("0.4635")
    # Writing 70k tokens costs more than they saved on this call.
    assert (
        b.cache_savings
        == 20_000 * (Decimal(3) - Decimal("0.3")) / M - 60_000 * Decimal(3) / M - 10_000 * Decimal("0.75") / M
    )


def test_gemini_prompt_over_200k_tokens_is_billed_at_the_long_context_tier(book: PriceBook) -> None:
    # Gemini 2.5 Pro: $1.25 / $10 up to 200k prompt tokens, $2.50 / $15 above, on the whole request.
    short = book.price(
        "gemini-2.5-pro", provider="google", input_tokens=200_000, output_tokens=1_000, at=at("2025-11-01")
    )
    long = book.price(
        "gemini-2.5-pro", provider="google", input_tokens=200_001, output_tokens=1_000, at=at("2025-11-01")
    )
    assert short.cost == Decimal("0.25") + Decimal("0.01")
    assert long.cost == Decimal("200001") * Decimal("2.5") / M + Decimal("0.015")


def test_gpt4o_quick_start_example(book: PriceBook) -> None:
    # README: 12k prompt of which 8k cached, 900 output; $2.50 input, $1.25 cached, $10 output.
    call = book.price(
        "gpt-4o", input_tokens=12_000, cache_read_tokens=8_000, output_tokens=900, at=at("2025-06-01")
    )
    assert call.cost == Decimal("0.029")
    assert call.breakdown is not None and call.breakdown.cache_savings == Decimal("0.01")


@pytest.mark.parametrize(
    ("when", "cost"),
    [
        # 1M input tokens of which half cached, 1M output:
        ("2024-06-01", "20"),  # gpt-4o-2024-05-13: $5 input, the cached half as input too, $15 output
        ("2024-10-01T23:59:59", "20"),
        ("2024-10-02", "11.875"),  # gpt-4o-2024-08-06 from the alias update: $2.50, $1.25 cached, $10
    ],
)
def test_the_gpt4o_alias_cost_its_first_snapshots_price_until_openai_moved_it(
    book: PriceBook, when: str, cost: str
) -> None:
    call = book.price("gpt-4o", input_tokens=M, cache_read_tokens=M // 2, output_tokens=M, at=at(when))
    assert call.cost == Decimal(cost), call.price_ref
    assert call.earliest_known is None  # a price in force that day, not the earliest one known
    batch = book.price(
        "gpt-4o", input_tokens=M, cache_read_tokens=M // 2, output_tokens=M, at=at(when), tier="batch"
    )
    assert batch.cost == Decimal(cost) / 2


@pytest.mark.parametrize(
    ("tier", "when", "layer"),
    [
        ("batch", "2024-04-14", None),  # before the Batch API existed: no batch price
        ("batch", "2024-04-15", "unitcost"),  # unitcost's tier rule: half the standard price
        ("batch", "2026-11-01", "genai-prices"),  # genai-prices' own batch variant (from 2026-10-14)
        ("flex", "2025-09-01", None),  # gpt-4o never had flex
    ],
)
def test_openai_tiers(book: PriceBook, tier: str, when: str, layer: str | None) -> None:
    call = book.price("gpt-4o", input_tokens=M, output_tokens=M, at=at(when), tier=tier)
    if layer is None:
        assert call.cost is None and call.unpriced_reason and tier in call.unpriced_reason
        return
    standard = book.price("gpt-4o", input_tokens=M, output_tokens=M, at=at(when)).cost
    assert standard == Decimal("12.5")  # $2.50 input + $10 output
    assert call.cost == Decimal("6.25")
    assert call.price_ref is not None and f"{layer}:" in call.price_ref.split("|")[-1]


@pytest.mark.parametrize(
    ("provider", "model"),
    [("anthropic", "claude-opus-4-1"), ("anthropic", "claude-sonnet-4-0"), ("openai", "chatgpt-4o-latest")],
)
def test_batch_stays_half_price_where_the_data_has_no_batch_price_of_its_own(
    book: PriceBook, provider: str, model: str
) -> None:
    """genai-prices carries batch prices from 2026-10-14, for some models only: the 50 % rule
    ended that day, and every other model's batch calls had no price at all."""
    for when in ("2026-10-13", "2026-11-20"):
        usage = {"input_tokens": M, "cache_read_tokens": M // 4, "output_tokens": M}
        standard = book.price(model, provider=provider, at=at(when), **usage).cost
        batch = book.price(model, provider=provider, at=at(when), tier="batch", **usage)
        assert standard is not None and batch.cost == standard / 2, (when, batch.unpriced_reason)
        assert batch.price_ref is not None and "unitcost:" in batch.price_ref.split("|")[-1]


def test_tier_rules_follow_standard_price_changes(book: PriceBook) -> None:
    # o3's standard price fell from $10/$40 to $2/$8 on 2025-06-10; flex is half of whichever applies.
    for when in ("2025-05-01", "2025-07-01"):
        standard = book.price("o3", input_tokens=M, output_tokens=M, at=at(when)).cost
        flex = book.price("o3", input_tokens=M, output_tokens=M, at=at(when), tier="flex").cost
        assert standard is not None and flex == standard / 2


def test_priority_prices_before_genai_data(book: PriceBook) -> None:
    call = book.price(
        "gpt-4o",
        input_tokens=M,
        cache_read_tokens=M // 2,
        output_tokens=M,
        at=at("2025-09-01"),
        tier="priority",
    )
    assert call.cost == Decimal("4.25") / 2 + Decimal("2.125") / 2 + Decimal("17")
    assert call.price is not None and call.price.source == "https://openai.com/api-priority-processing/"


def test_anthropic_batch_stacks_with_cache_multipliers(book: PriceBook) -> None:
    standard = book.price(
        "claude-sonnet-4-5",
        input_tokens=50_000,
        cache_write_1h_tokens=40_000,
        output_tokens=1_000,
        at=at("2025-11-01"),
    )
    batch = book.price(
        "claude-sonnet-4-5",
        input_tokens=50_000,
        cache_write_1h_tokens=40_000,
        output_tokens=1_000,
        at=at("2025-11-01"),
        tier="batch",
    )
    assert standard.cost is not None and batch.cost == standard.cost / 2


def test_o3_launch_price_had_its_own_cached_rate(book: PriceBook) -> None:
    # $10 input, $2.50 cached input, $40 output until the 2025-06-10 cut to $2 / $0.50 / $8.
    usage = {"input_tokens": M, "cache_read_tokens": M // 2, "output_tokens": M}
    before = book.price("o3", at=at("2025-05-01"), **usage)
    after = book.price("o3", at=at("2025-06-10"), **usage)
    assert before.cost == Decimal("5") + Decimal("1.25") + Decimal("40")
    assert after.cost == Decimal("1") + Decimal("0.25") + Decimal("8")


@pytest.mark.parametrize("name", ["claude-sonnet-4", "claude-sonnet-4-20250514"])
def test_claude_sonnet_4_long_context_rates(book: PriceBook, name: str) -> None:
    # From 2025-08-12 (1M context): a prompt over 200k tokens is billed at $6 / $22.50 throughout.
    usage = {"input_tokens": 250_000, "cache_read_tokens": 100_000, "output_tokens": 2_000}
    long = book.price(name, at=at("2025-10-01"), **usage)
    assert long.cost == Decimal("0.9") + Decimal("0.06") + Decimal("0.045")
    short = book.price(name, input_tokens=200_000, output_tokens=2_000, at=at("2025-10-01"))
    assert short.cost == Decimal("0.6") + Decimal("0.03")


def test_gpt4o_audio_preview_prices_audio_tokens_as_audio(book: PriceBook) -> None:
    # Text $2.50 / $10; audio $100 / $200 at launch, $40 / $80 from the 2024-12-17 snapshot.
    usage = {
        "input_tokens": 1_100_000,
        "input_audio_tokens": M,
        "output_tokens": 2 * M,
        "output_audio_tokens": M,
    }
    assert (
        book.price("gpt-4o-audio-preview", at=at("2024-11-01"), **usage).cost
        == Decimal("0.25") + 100 + 10 + 200
    )
    assert (
        book.price("gpt-4o-audio-preview", at=at("2025-06-01"), **usage).cost
        == Decimal("0.25") + 40 + 10 + 80
    )
    mini = book.price("gpt-4o-mini-audio-preview", at=at("2025-06-01"), **usage)
    assert mini.cost == Decimal("0.015") + 10 + Decimal("0.6") + 20


@pytest.mark.parametrize(
    ("name", "provider", "ref"),
    [
        ("openai/gpt-4o", None, "genai-prices:openai/gpt-4o"),
        ("openai/gpt-4o", "openai", "genai-prices:openai/gpt-4o"),
        ("anthropic/claude-sonnet-4-5", None, "genai-prices:anthropic/claude-sonnet-4-5"),
        ("gemini/gemini-2.5-pro", None, "genai-prices:google/gemini-2.5-pro"),
        ("openai/gpt-4o", "openrouter", "genai-prices:openrouter/openai/gpt-4o"),
    ],
)
def test_provider_prefixed_names_are_the_providers_own_model(
    book: PriceBook, name: str, provider: str | None, ref: str
) -> None:
    """LiteLLM writes `openai/gpt-4o`; genai-prices matched that to OpenRouter's resale entry,
    which has no cached-input rate (cached tokens at $2.50, not $1.25), and with the provider
    given as openai the call was unpriced."""
    call = book.price(name, provider=provider, input_tokens=M, cache_read_tokens=M, at=at("2025-10-01"))
    assert call.price_ref == ref, call.unpriced_reason
    if ref == "genai-prices:openai/gpt-4o":
        assert call.cost == Decimal("1.25")


def test_unknown_model_is_unpriced_with_a_reason_never_zero(book: PriceBook) -> None:
    call = book.price("acme-classifier-v2", provider="self-hosted", input_tokens=1_000, at=at("2025-09-01"))
    assert call.cost is None
    assert call.unpriced_reason and "acme-classifier-v2" in call.unpriced_reason


def test_a_model_with_an_empty_price_is_unpriced(book: PriceBook) -> None:
    # genai-prices lists qwen-3-coder-480b on Cerebras with no price at all; calc_price says $0.
    call = book.price("qwen-3-coder-480b", provider="cerebras", input_tokens=1_000, at=at("2026-01-01"))
    assert call.cost is None and "no price for input_text" in (call.unpriced_reason or "")


def test_reasoning_has_its_own_price_when_the_model_has_one(book: PriceBook) -> None:
    # Perplexity sonar-deep-research: $2 input, $8 output, $3 per million reasoning tokens.
    call = book.price(
        "sonar-deep-research",
        provider="perplexity",
        input_tokens=M,
        output_tokens=2 * M,
        reasoning_tokens=M,
        at=at("2026-01-01"),
    )
    assert call.breakdown is not None
    assert call.breakdown.reasoning == Decimal(3)
    assert call.breakdown.output == Decimal(8)
    assert call.breakdown.input == Decimal(2)
