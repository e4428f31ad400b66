"""Cost levers: each one hand-computed on a tiny workload, and the combination never double counts."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from unitcost.analytics.window import Window
from unitcost.compare.levers import Settings, run_levers
from unitcost.compare.whatif import Alternative, needed_cuts
from unitcost.compare.workload import load_workload
from unitcost.money import pico_to_usd

WINDOW = Window(datetime(2025, 9, 1, tzinfo=UTC), datetime(2025, 10, 1, tzinfo=UTC))


def record(ledger: Any, n: int, model: str, provider: str = "openai", **usage: int) -> None:
    ledger.ingest_records(
        [
            {
                "event_id": f"{model}-{i}",
                # spread over 30 days so that "monthly" is the window itself
                "ts": f"2025-09-{1 + i * 29 // max(n - 1, 1):02d}T12:00:00Z",
                "provider": provider,
                "model": model,
                **usage,
            }
            for i in range(n)
        ]
    )


def levers(ledger: Any, **overrides: object) -> tuple[Decimal, dict[str, Any]]:
    settings = Settings.build(overrides)
    light = [Alternative(provider=p, model=m) for p, m in settings.light.items()]
    workload = load_workload(ledger.store, WINDOW, [], needed_cuts(ledger.book, light), with_units=False)
    baseline, results = run_levers(ledger.book, workload, settings)
    return pico_to_usd(baseline.total), {r.lever: r for r in results}


def test_each_lever_by_hand_on_gpt5(ledger) -> None:
    # 10 calls of gpt-5 (1.25 in / 0.125 cached / 10 out $/Mtok): 10,000 in, 2,000 out of which 1,000 reasoning.
    record(ledger, 10, "gpt-5", input_tokens=10_000, output_tokens=2_000, reasoning_tokens=1_000)
    spend, result = levers(ledger)
    per_call = Decimal("0.0125") + Decimal("0.02")  # 10k x 1.25 + 2k x 10 micro-USD
    assert spend == 10 * per_call
    # 29 days between first and last call: monthly = saving x 30 / 29
    month = Decimal(30) / Decimal(29)
    # reasoning -30%: 10 x 300 tokens x $10/Mtok
    assert result["reasoning effort"].saving == 10 * 300 * 10 * 10**6
    # rounded to the pico-dollar like every amount: a stable string in json and csv
    assert result["reasoning effort"].monthly_saving == (Decimal("0.03") * month).quantize(Decimal("1e-12"))
    # structured output -15% of visible output: 10 x 150 x $10/Mtok
    assert pico_to_usd(result["structured output"].saving) == Decimal("0.015")
    # batch 20% at half price: 0.2 x 0.5 x spend
    assert pico_to_usd(result["batch mode"].saving) == spend / 10
    # prompt caching: prefix 3,000 >= 1024, 1 call in 5 writes (no fee on OpenAI), 2,400 read at 0.125 instead of 1.25
    assert (
        pico_to_usd(result["prompt caching"].saving)
        == 10 * 2_400 * (Decimal("1.25") - Decimal("0.125")) / 10**6
    )
    # routing: all calls on gpt-4o-mini (0.15 / 0.6) plus 40% escalated on gpt-5
    light = 10 * (10_000 * Decimal("0.15") + 2_000 * Decimal("0.6")) / 10**6
    assert pico_to_usd(result["light-by-default routing"].cost_after) == light + spend * Decimal("0.4")
    # summarisation: prompts of 10k >= 8k lose 30% (3,000 tokens); a summary every 5 calls on gpt-4o-mini
    # reads 600 and writes 60 tokens per call, so per call: -3000 x 1.25 + 600 x 0.15 + 60 x 0.6 micro-USD
    summary_saving = 10 * (3_000 * Decimal("1.25") - 600 * Decimal("0.15") - 60 * Decimal("0.6")) / 10**6
    assert pico_to_usd(result["context summarisation"].saving) == summary_saving
    # self-hosted: 20% of tokens at $0.925926/Mtok (2.50 / (1500 x 3600 x 0.5 / 1e6))
    moved_tokens = 2 * (10_000 + 2_000)
    hosted = spend * Decimal("0.2") - moved_tokens * Decimal("0.925926") / 10**6
    assert pico_to_usd(result["self-hosted model"].saving) == hosted
    # model choice: 25% on gpt-4o-mini
    assert pico_to_usd(result["model choice"].saving) == (spend - light) / 4
    for r in result.values():
        assert r.share_of_spend == (Decimal(r.saving) / Decimal(10 * per_call * 10**12)).quantize(
            Decimal("1e-12")
        )


def test_combined_is_applied_in_sequence_not_summed(ledger) -> None:
    record(ledger, 10, "gpt-5", input_tokens=10_000, output_tokens=2_000, reasoning_tokens=1_000)
    _, result = levers(ledger)
    combined = result["combined"].saving
    parts = [result[name].saving for name in ("light-by-default routing", "batch mode", "reasoning effort")]
    assert max(parts) < combined < sum(r.saving for n, r in result.items() if n != "combined")
    assert result["combined"].cost_after > 0


def test_levers_never_pick_a_more_expensive_option(ledger) -> None:
    # Already on the light model with no reasoning and tiny prompts: nothing to route, summarise or cache.
    record(ledger, 5, "gpt-4o-mini", input_tokens=500, output_tokens=100)
    _, result = levers(ledger)
    for name in ("model choice", "light-by-default routing", "context summarisation", "prompt caching"):
        assert result[name].saving == 0, name


def test_overrides_change_the_assumption(ledger) -> None:
    record(ledger, 10, "gpt-5", input_tokens=10_000, output_tokens=2_000, reasoning_tokens=1_000)
    spend, result = levers(ledger, batch_share="0.5", self_hosted_usd_per_mtok="0")
    assert pico_to_usd(result["batch mode"].saving) == spend / 4
    assert pico_to_usd(result["self-hosted model"].saving) == spend / 5
    assert "50%" in result["batch mode"].assumption


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"nonsense": "1"}, "unknown lever setting"),
        ({"batch_share": "1.5"}, "within 0..1"),
        ({"utilisation": "0"}, "utilisation must be above 0"),
        ({"tokens_per_second": "0"}, "tokens_per_second must be above 0"),
        ({"gpus": "0"}, "gpus must be above 0"),
        ({"summarise_every": "0"}, "summarise_every must be at least 1"),
        ({"prefix_reuse": "0"}, "prefix_reuse must be at least 1"),
        ({"self_hosted_usd_per_mtok": "-1"}, "self_hosted_usd_per_mtok cannot be negative"),
        ({"gpu_hour_usd": "-5"}, "gpu_hour_usd cannot be negative"),
        ({"summarise_min_prompt": "-1"}, "summarise_min_prompt cannot be negative"),
        ({"gpu_hour_usd": "NaN"}, "gpu_hour_usd must be a finite number"),
    ],
)
def test_bad_overrides_are_refused(ledger, overrides: dict[str, str], message: str) -> None:
    record(ledger, 2, "gpt-5", input_tokens=10, output_tokens=10)
    with pytest.raises(ValueError, match=message):
        levers(ledger, **overrides)
