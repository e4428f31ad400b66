"""The tokenizer family a what-if scales token counts by follows the model, not who serves it.

Claude on Vertex AI or Bedrock spends Claude's tokens, GPT-4o on Azure OpenAI's, DeepSeek on
Bedrock or Fireworks DeepSeek's: the provider decides only for a model no family's name
patterns know (`openai:tts-1`, `google:gemma-3`). Model ids are spelled as each provider does.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from unitcost.analytics.window import Window
from unitcost.compare import rules
from unitcost.compare.whatif import (
    Alternative,
    CacheAssumption,
    needed_cuts,
    needs_recorded_models,
    run_whatif,
)
from unitcost.compare.workload import load_workload

_ids = itertools.count()
SEPT = Window(datetime(2025, 1, 1, tzinfo=UTC), datetime(2025, 12, 1, tzinfo=UTC))


def ev(provider: str, model: str, **usage: Any) -> dict[str, Any]:
    return {
        "event_id": f"tf{next(_ids)}",
        "ts": "2025-09-20T10:00:00Z",
        "provider": provider,
        "model": model,
        **usage,
    }


def whatif(ledger: Any, *alts: Alternative) -> list[dict[str, Any]]:
    """Rows of a what-if, checked to be the same with and without the recorded models' scan
    (without it, the cuts must cover a call of any tokenizer family) and with or without the
    selection window narrowing the cuts."""
    results = []
    for with_recorded in {True, needs_recorded_models(alts)}:
        for window in (None, SEPT):
            workload = load_workload(
                ledger.store,
                SEPT,
                [],
                needed_cuts(ledger.book, alts, window),
                with_recorded_models=with_recorded,
            )
            results.append(run_whatif(ledger.book, workload, alts).rows())
    assert all(r == results[0] for r in results)
    return results[0]


@pytest.mark.parametrize(
    ("provider", "model", "family"),
    [
        # Anthropic's models wherever they are served
        ("google-vertex", "claude-sonnet-4-5@20250929", "anthropic"),
        ("vertex_ai", "claude-3-5-sonnet-v2@20241022", "anthropic"),
        ("google", "claude-sonnet-4-5", "anthropic"),  # the price book's key for Claude on Vertex
        ("bedrock", "anthropic.claude-3-5-sonnet-20240620-v1:0", "anthropic"),
        ("bedrock", "us.anthropic.claude-sonnet-4-5-20250929-v1:0", "anthropic"),
        ("aws", "regional.anthropic.claude-3-7-sonnet-20250219-v1:0", "anthropic"),
        ("openrouter", "anthropic/claude-sonnet-4.5", "anthropic"),
        # OpenAI's
        ("azure", "gpt-4o", "openai"),
        ("azure", "gpt-4o-2024-08-06", "openai"),
        ("azure", "o3-mini", "openai"),
        ("azure", "text-embedding-3-small", "openai"),
        ("openai", "ft:gpt-4o-mini-2024-07-18:acme::9abcDEF", "openai"),
        ("openrouter", "openai/o3:batch", "openai"),
        ("groq", "openai/gpt-oss-120b", "openai"),
        ("bedrock", "openai.gpt-oss-20b-1:0", "openai"),
        # Google's
        ("google", "gemini-2.5-pro", "google"),
        ("vertex_ai", "gemini-2.0-flash-001", "google"),
        ("openrouter", "google/gemini-2.5-flash", "google"),
        # open weights, by their vendor's name
        ("together", "meta-llama/Llama-3.3-70B-Instruct-Turbo", "llama"),
        ("groq", "llama-3.3-70b-versatile", "llama"),
        ("bedrock", "us.meta.llama3-3-70b-instruct-v1:0", "llama"),
        ("fireworks", "accounts/fireworks/models/llama-v3p1-8b-instruct", "llama"),
        ("groq", "deepseek-r1-distill-llama-70b", "llama"),  # a Llama fine-tune keeps Llama's tokenizer
        ("together", "mistralai/Mixtral-8x7B-Instruct-v0.1", "mistral"),
        ("bedrock", "mistral.mistral-large-2402-v1:0", "mistral"),
        ("mistral", "codestral-2508", "mistral"),
        ("together", "deepseek-ai/DeepSeek-V3", "deepseek"),
        ("fireworks", "accounts/fireworks/models/deepseek-v3-0324", "deepseek"),
        ("bedrock", "us.deepseek.r1-v1:0", "deepseek"),
        ("azure", "MAI-DS-R1", "deepseek"),
        ("deepseek", "deepseek-chat", "deepseek"),
    ],
)
def test_the_family_follows_the_model_name(provider: str, model: str, family: str) -> None:
    match = rules.tokenizer_family(provider, model)
    assert match.family is not None and match.family.name == family
    assert match.by_model
    assert match.describe() == f"{model}: {family} tokenizer (by model name)"


@pytest.mark.parametrize(
    ("provider", "model", "family"),
    [
        ("openai", "tts-1", "openai"),  # the provider's own models no pattern names
        ("openai", "whisper-1", "openai"),
        ("google", "gemma-3", "google"),  # as before: Google's provider figure
        # A reseller of several vendors decides nothing: Phi on Azure is not OpenAI's tokenizer,
        # Qwen on Together or Bedrock's Nova are of no known family.
        ("azure", "phi-4", None),
        ("together", "Qwen/Qwen3-235B-A22B-Instruct-2507-tput", None),
        ("bedrock", "amazon.nova-pro-v1:0", None),
        ("x-ai", "grok-4", None),
        # an R1 distilled into another vendor's model keeps that model's tokenizer, not DeepSeek's
        ("groq", "deepseek-r1-distill-qwen-32b", None),
    ],
)
def test_the_provider_decides_only_when_no_model_name_matches(
    provider: str, model: str, family: str | None
) -> None:
    match = rules.tokenizer_family(provider, model)
    assert (match.family.name if match.family else None) == family
    assert not match.by_model
    if family:
        assert match.describe() == f"{model}: {family} tokenizer (by provider {provider})"
    else:
        assert match.describe() == f"{model}: no known tokenizer family"


def test_ratio_between_a_model_and_itself_on_another_provider_is_one() -> None:
    for source in [
        ("google", "claude-sonnet-4-5"),
        ("google-vertex", "claude-sonnet-4-5@20250929"),
        ("bedrock", "us.anthropic.claude-sonnet-4-5-20250929-v1:0"),
    ]:
        ratio, why = rules.tokenizer_ratio(*source, "anthropic", "claude-sonnet-4-5")
        assert ratio == 1
        assert why.endswith("; same tokenizer family")
        assert f"{source[1]}: anthropic tokenizer (by model name)" in why
    ratio, why = rules.tokenizer_ratio("azure", "gpt-4o", "openai", "gpt-4o")
    assert (ratio, why.endswith("same tokenizer family")) == (1, True)


def test_ratios_name_each_sides_family() -> None:
    # GPT-4o on Azure is OpenAI's tokenizer: 0.3 / 0.25 tok/char to DeepSeek
    ratio, why = rules.tokenizer_ratio("azure", "gpt-4o", "deepseek", "deepseek-chat")
    assert ratio == Decimal("1.2")
    assert why.startswith(
        "gpt-4o: openai tokenizer (by model name) → deepseek-chat: deepseek tokenizer (by model name); "
        "deepseek 0.3 tok/char (https://api-docs.deepseek.com/"
    )
    # Claude on Vertex is not Gemini's tokenizer: Anthropic publishes no figure, so 1 (it was 1.2)
    ratio, why = rules.tokenizer_ratio("google", "claude-sonnet-4-5", "deepseek", "deepseek-chat")
    assert ratio == 1
    assert why == (
        "claude-sonnet-4-5: anthropic tokenizer (by model name) → deepseek-chat: deepseek tokenizer "
        "(by model name); no published tokens-per-character figure for the anthropic tokenizer: ratio 1 assumed"
    )
    # DeepSeek on Bedrock is DeepSeek's tokenizer, whose figure is published
    ratio, _ = rules.tokenizer_ratio("aws", "deepseek.r1-v1:0", "openai", "gpt-4o-mini")
    assert ratio == Decimal("0.25") / Decimal("0.3")
    # Gemini on Vertex and Claude on Vertex: one provider, two families
    ratio, why = rules.tokenizer_ratio("google", "gemini-2.5-pro", "google", "claude-sonnet-4-5")
    assert ratio == 1 and "for the anthropic tokenizer: ratio 1 assumed" in why
    # a model of no known family says so, by name
    ratio, why = rules.tokenizer_ratio("x-ai", "grok-4", "openai", "gpt-4o")
    assert ratio == 1 and why.endswith("; no tokenizer family known for grok-4: ratio 1 assumed")
    # as before, between the first parties
    assert rules.tokenizer_ratio("openai", "gpt-4o-mini", "deepseek", "deepseek-chat")[0] == Decimal("1.2")
    assert rules.tokenizer_ratio("google", "gemini-2.5-flash", "openai", "gpt-5")[0] == 1


def test_claude_on_vertex_against_claude_direct_and_deepseek(ledger) -> None:
    ledger.ingest_records(
        [ev("google-vertex", "claude-sonnet-4-5@20250929", input_tokens=10_000, output_tokens=1_000)]
    )
    rows = whatif(
        ledger,
        Alternative.parse("anthropic:claude-sonnet-4-5"),
        Alternative.parse("deepseek:deepseek-chat@2025-10-05"),
    )
    # Not Gemini's 0.25 tok/char scaled to DeepSeek's 0.3 (x1.2): Claude's tokens, ratio 1 assumed.
    # V3.2-Exp: 10000 x 0.28 + 1000 x 0.42 = 3220 micro-USD
    deepseek = rows[2]
    assert deepseek["total"] == Decimal("0.00322")
    assert "no published tokens-per-character figure for the anthropic tokenizer" in str(
        deepseek["assumptions"]
    )
    # Same tokenizer: 10000 x 3 + 1000 x 15 = 45000 micro-USD
    direct = rows[1]
    assert direct["total"] == Decimal("0.045")
    assert "tokens x1 google→anthropic (claude-sonnet-4-5: anthropic tokenizer (by model name) → " in str(
        direct["assumptions"]
    )
    assert "same tokenizer family" in str(direct["assumptions"])


def test_claude_on_bedrock_inference_profile_against_claude_direct(ledger) -> None:
    ledger.ingest_records(
        [
            ev(
                "bedrock",
                "us.anthropic.claude-sonnet-4-5-20250929-v1:0",
                input_tokens=10_000,
                output_tokens=1_000,
            ),
            ev(
                "bedrock",
                "anthropic.claude-3-5-sonnet-20240620-v1:0",
                input_tokens=20_000,
                output_tokens=2_000,
            ),
        ]
    )
    rows = whatif(ledger, Alternative.parse("anthropic:claude-sonnet-4-5"))
    # 30000 x 3 + 3000 x 15 = 135000 micro-USD
    assert rows[1]["total"] == Decimal("0.135")
    said = str(rows[1]["assumptions"])
    for recorded in (
        "regional.anthropic.claude-sonnet-4-5-20250929-v1:0",
        "regional.anthropic.claude-3-5-sonnet-20240620-v1:0",
    ):
        assert (
            f"tokens x1 aws→anthropic ({recorded}: anthropic tokenizer (by model name) → "
            "claude-sonnet-4-5: anthropic tokenizer (by model name); same tokenizer family)"
        ) in said


def test_gpt_4o_on_azure_is_openai_s_tokenizer(ledger) -> None:
    ledger.ingest_records([ev("azure", "gpt-4o", input_tokens=1_000, output_tokens=100)])
    rows = whatif(
        ledger,
        Alternative.parse("deepseek:deepseek-chat@2025-10-05"),
        Alternative.parse("anthropic:claude-sonnet-4-5"),
    )
    # OpenAI 0.25 -> DeepSeek 0.3 tok/char: x1.2 -> 1200 x 0.28 + 120 x 0.42 = 386.4 micro-USD
    assert rows[1]["total"] == Decimal("0.0003864")
    assert "tokens x1.2 azure→deepseek (gpt-4o: openai tokenizer (by model name) → " in str(
        rows[1]["assumptions"]
    )
    # to Claude: 1000 x 3 + 100 x 15, with the reason the ratio is 1 naming both families
    assert rows[2]["total"] == Decimal("0.0045")
    assert (
        "tokens x1 azure→anthropic (gpt-4o: openai tokenizer (by model name) → claude-sonnet-4-5: anthropic "
        "tokenizer (by model name); no published tokens-per-character figure for the anthropic tokenizer"
    ) in str(rows[2]["assumptions"])


def test_open_weights_on_resellers(ledger) -> None:
    ledger.ingest_records(
        [
            ev("together", "meta-llama/Llama-3.3-70B-Instruct-Turbo", input_tokens=1_000, output_tokens=100),
            ev("bedrock", "us.deepseek.r1-v1:0", input_tokens=6_000, output_tokens=600),
        ]
    )
    rows = whatif(ledger, Alternative.parse("openai:gpt-4o-mini"))
    # Llama: no published figure, x1 -> 1000 x 0.15 + 100 x 0.6 = 210 micro-USD
    # DeepSeek R1 on Bedrock: DeepSeek's 0.3 -> OpenAI's 0.25, x5/6 -> 5000 x 0.15 + 500 x 0.6 = 1050
    assert rows[1]["total"] == Decimal("0.00126")
    said = str(rows[1]["assumptions"])
    assert (
        "tokens x1 together→openai (meta-llama/Llama-3.3-70B-Instruct-Turbo: llama tokenizer (by model name) → "
        "gpt-4o-mini: openai tokenizer (by model name); no published tokens-per-character figure for the llama"
    ) in said
    assert "tokens x0.8333 aws→openai (deepseek.r1-v1:0: deepseek tokenizer (by model name) → " in said


def test_one_provider_two_families_is_said(ledger) -> None:
    # Gemini to Claude, both on Vertex AI: no provider change, but a family change (ratio 1 assumed)
    ledger.ingest_records([ev("google", "gemini-2.5-flash", input_tokens=1_000, output_tokens=100)])
    rows = whatif(
        ledger, Alternative.parse("google:claude-sonnet-4-5"), Alternative.parse("google:gemini-2.5-pro")
    )
    assert (
        "tokens x1 google→google (gemini-2.5-flash: google tokenizer (by model name) → claude-sonnet-4-5"
        in str(rows[1]["assumptions"])
    )
    # Gemini to Gemini on one provider: nothing to say, as before
    assert "tokens" not in str(rows[2]["assumptions"])


def test_cuts_without_the_recorded_models_cover_every_family(ledger) -> None:
    # GPT-4o on Azure to DeepSeek with prefix caching: DeepSeek caches a prefix of 64 tokens, so
    # at ratio 1.2 and a half-prompt prefix a recorded prompt above 106 tokens is cacheable (at
    # ratio 1 it would take 128). The what-if that skips the recorded models' scan must cut there
    # too, though no provider of the calls (azure) has a family of its own.
    ledger.ingest_records(
        [
            ev("azure", "gpt-4o", input_tokens=100, output_tokens=10),
            ev("azure", "gpt-4o", input_tokens=110, output_tokens=10),
        ]
    )
    alt = Alternative.parse("deepseek:deepseek-chat@2025-10-05", cache=CacheAssumption.parse("prefix"))
    rows = whatif(ledger, alt)
    # 100 -> 120 tokens (prefix 60 < 64, not cached): 120 x 0.28 + 12 x 0.42 = 38.64
    # 110 -> 132 tokens (prefix 66: 13 written as input, 53 read): 79 x 0.28 + 53 x 0.028 + 12 x 0.42 = 28.644
    assert rows[1]["total"] == Decimal("0.000067284")
