"""What-if repricing: hand-computed from published prices, and exact against the recorded cost."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from unitcost.analytics.window import Window
from unitcost.compare.whatif import (
    Alternative,
    CacheAssumption,
    needed_cuts,
    needs_recorded_models,
    run_whatif,
)
from unitcost.compare.workload import load_workload
from unitcost.money import pico_to_usd

_ids = itertools.count()
SEPT = Window(datetime(2025, 1, 1, tzinfo=UTC), datetime(2025, 12, 1, tzinfo=UTC))


def ev(ts: str, provider: str, model: str, **usage: Any) -> dict[str, Any]:
    return {"event_id": f"w{next(_ids)}", "ts": ts, "provider": provider, "model": model, **usage}


def whatif(ledger: Any, *alts: Alternative, where: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """Rows of a what-if, checked to be the same however the cuts are narrowed."""
    results = []
    for with_recorded in {True, needs_recorded_models(alts)}:
        for window in (None, SEPT):  # with the window, cuts that cannot matter are dropped
            workload = load_workload(
                ledger.store,
                SEPT,
                list(where),
                needed_cuts(ledger.book, alts, window),
                with_recorded_models=with_recorded,
            )
            results.append(run_whatif(ledger.book, workload, alts).rows())
    assert all(r == results[0] for r in results)
    return results[0]


def test_deepseek_v31_to_v32_by_hand(ledger) -> None:
    # V3.1 (from 2025-09-05 16:00 UTC): miss 0.56, hit 0.07, output 1.68 $/Mtok.
    ledger.ingest_records(
        [
            ev(
                "2025-09-20T10:00:00Z",
                "deepseek",
                "deepseek-chat",
                input_tokens=10_000,
                cache_read_tokens=4_000,
                output_tokens=1_000,
            )
        ]
    )
    rows = whatif(ledger, Alternative.parse("deepseek:deepseek-chat@2025-10-05"))
    # recorded: 6000 x 0.56 + 4000 x 0.07 + 1000 x 1.68 = 5320 micro-USD
    assert rows[0]["total"] == Decimal("0.00532")
    # V3.2-Exp (2025-09-29): 0.28 / 0.028 / 0.42 -> 1680 + 112 + 420 = 2212 micro-USD
    alt = rows[1]
    assert alt["total"] == Decimal("0.002212")
    assert alt["input"] == Decimal("0.00168") and alt["cache_read"] == Decimal("0.000112")
    assert alt["delta_output"] == Decimal("0.00042") - Decimal("0.00168")
    assert alt["cost_per_request"] == Decimal("0.002212")


def test_off_peak_window_follows_the_time_of_day(ledger) -> None:
    # 2025-08-10 17:00 UTC is inside DeepSeek's 16:30-00:30 off-peak window (V3: 0.135 / 0.035 / 0.55).
    ledger.ingest_records(
        [
            ev(
                "2025-08-10T17:00:00Z",
                "deepseek",
                "deepseek-chat",
                input_tokens=2_000_000,
                output_tokens=1_000_000,
            )
        ]
    )
    rows = whatif(
        ledger, Alternative.parse("deepseek-chat@2025-08-11"), Alternative.parse("deepseek-chat@2025-09-20")
    )
    assert rows[0]["total"] == Decimal("0.82")  # 2 x 0.135 + 0.55
    assert rows[1]["total"] == Decimal("0.82")  # the next day, same time of day: still off-peak
    assert rows[2]["total"] == Decimal("2.80")  # V3.1 has no off-peak: 2 x 0.56 + 1.68


def test_anthropic_cache_write_premiums_by_hand(ledger) -> None:
    usage = dict(
        input_tokens=20_000,
        cache_read_tokens=5_000,
        cache_write_5m_tokens=10_000,
        cache_write_1h_tokens=2_000,
        output_tokens=500,
    )
    ledger.ingest_records([ev("2025-09-10T09:00:00Z", "anthropic", "claude-haiku-4-5", **usage)])
    rows = whatif(ledger, Alternative.parse("anthropic:claude-sonnet-4-5"))
    # Haiku 4.5: 3000 x 1 + 5000 x 0.1 + 10000 x 1.25 + 2000 x 2 + 500 x 5 = 22500 micro-USD
    assert rows[0]["total"] == Decimal("0.0225")
    # Sonnet 4.5: 3000 x 3 + 5000 x 0.3 + 10000 x 3.75 (1.25x) + 2000 x 6 (2x) + 500 x 15 = 67500 micro-USD
    sonnet = rows[1]
    assert sonnet["total"] == Decimal("0.0675")
    assert sonnet["cache_write"] == Decimal("0.0495")


def test_long_context_tier_is_decided_per_call(ledger) -> None:
    ledger.ingest_records(
        [
            ev("2025-09-10T09:00:00Z", "openai", "gpt-4o-mini", input_tokens=100_000, output_tokens=1_000),
            ev("2025-09-10T09:05:00Z", "openai", "gpt-4o-mini", input_tokens=250_000, output_tokens=1_000),
        ]
    )
    rows = whatif(
        ledger,
        Alternative.parse("anthropic:claude-sonnet-4-5", token_ratio=Decimal(1)),
        Alternative.parse("anthropic:claude-sonnet-4-5"),
    )
    assert rows[2]["total"] == rows[1]["total"]  # no published OpenAI/Anthropic ratio: 1
    # <= 200k: 100000 x 3 + 1000 x 15 = 315000; > 200k: 250000 x 6 + 1000 x 22.5 = 1522500 micro-USD
    assert rows[1]["total"] == Decimal("1.8375")


def test_prefix_caching_from_provider_rules(ledger) -> None:
    ledger.ingest_records(
        [
            ev("2025-09-10T09:00:00Z", "openai", "gpt-4o-mini", input_tokens=10_000, output_tokens=100),
            ev("2025-09-10T09:01:00Z", "openai", "gpt-4o-mini", input_tokens=2_000, output_tokens=100),
        ]
    )
    cache = CacheAssumption.parse("prefix", Decimal("0.5"), 5)
    rows = whatif(
        ledger, Alternative.parse("anthropic:claude-sonnet-4-5", cache=cache, token_ratio=Decimal(1))
    )
    # 10k prompt: prefix 5000 >= 1024 -> 1000 written (x1.25), 4000 read (x0.1), 5000 uncached:
    #   5000 x 3 + 4000 x 0.3 + 1000 x 3.75 + 100 x 15 = 21450
    # 2k prompt: prefix 1000 < 1024 -> nothing cached: 2000 x 3 + 100 x 15 = 7500
    assert rows[1]["total"] == Decimal("0.02895")
    assert rows[1]["cache_write"] == Decimal("0.00375")
    assert "prefix >= 1024" in str(rows[1]["assumptions"])


def test_hit_ratio_tokenizer_ratio_reasoning_multiplier_and_batch(ledger) -> None:
    ledger.ingest_records(
        [ev("2025-09-10T09:00:00Z", "openai", "gpt-4o-mini", input_tokens=1_000, output_tokens=100)]
    )
    rows = whatif(
        ledger,
        Alternative.parse("deepseek:deepseek-chat@2025-10-05"),
        Alternative.parse("deepseek:deepseek-chat@2025-10-05", cache=CacheAssumption.parse("50%")),
        Alternative.parse(None, tier="batch"),
    )
    # OpenAI 0.25 tok/char -> DeepSeek 0.3 tok/char: x1.2 -> 1200 x 0.28 + 120 x 0.42 = 386.4
    assert rows[1]["total"] == Decimal("0.0003864")
    assert "x1.2" in str(rows[1]["assumptions"])
    # half the (scaled) prompt read from cache: 600 x 0.28 + 600 x 0.028 + 120 x 0.42 = 235.2
    assert rows[2]["total"] == Decimal("0.0002352")
    # OpenAI batch is half price: (1000 x 0.15 + 100 x 0.6) / 2
    assert rows[3]["total"] == Decimal("0.000105")


def test_reasoning_multiplier_is_stated(ledger) -> None:
    ledger.ingest_records(
        [
            ev(
                "2025-09-10T09:00:00Z",
                "openai",
                "o3",
                input_tokens=1_000,
                output_tokens=5_000,
                reasoning_tokens=4_000,
            )
        ]
    )
    rows = whatif(ledger, Alternative.parse(None, reasoning_multiplier=Decimal("0.5")))
    recorded, halved = rows[0], rows[1]
    assert halved["reasoning"] == recorded["reasoning"] / 2
    assert "reasoning tokens x0.5" in str(halved["assumptions"])


def test_unpriced_calls_are_left_out_and_counted(ledger) -> None:
    ledger.ingest_records(
        [
            ev("2025-09-10T09:00:00Z", "openai", "gpt-4o-mini", input_tokens=1_000, output_tokens=100),
            ev("2025-09-10T09:00:00Z", "self-hosted", "acme-7b", input_tokens=1_000, output_tokens=100),
            ev("2025-09-10T09:00:00Z", "deepseek", "deepseek-chat", input_tokens=1_000, output_tokens=100),
        ]
    )
    workload = load_workload(ledger.store, SEPT, [], needed_cuts(ledger.book, []))
    assert workload.calls == 2 and workload.unpriced_calls == 1
    # DeepSeek has no batch price: those calls are unpriced under the alternative, and the
    # recorded total it is compared with leaves them out too (like for like).
    rows = whatif(ledger, Alternative.parse(None, tier="batch"))
    assert rows[1]["unpriced_calls"] == 1
    assert rows[1]["delta"] == Decimal("-0.000105")
    assert "no batch price" in str(rows[1]["assumptions"])


# ------------------------------------------------------------------ property: identity reprice

MODELS = [
    ("deepseek", "deepseek-chat"),
    ("deepseek", "deepseek-reasoner"),
    ("anthropic", "claude-sonnet-4-5"),
    ("anthropic", "claude-haiku-4-5"),
    ("openai", "gpt-4o-mini"),
    ("openai", "o3"),
    ("google", "gemini-2.5-pro"),
]


@st.composite
def events(draw: st.DrawFn) -> dict[str, Any]:
    provider, model = draw(st.sampled_from(MODELS))
    when = datetime(2025, 8, 1, tzinfo=UTC) + timedelta(seconds=draw(st.integers(0, 75 * 86400)))
    prompt = draw(st.one_of(st.integers(0, 5_000), st.integers(150_000, 300_000)))
    read = draw(st.integers(0, prompt))
    writes = draw(st.integers(0, prompt - read)) if provider == "anthropic" else 0
    w1h = draw(st.integers(0, writes))
    output = draw(st.integers(0, 20_000))
    return ev(
        when.isoformat().replace("+00:00", "Z"),
        provider,
        model,
        input_tokens=prompt,
        cache_read_tokens=read,
        cache_write_5m_tokens=writes - w1h,
        cache_write_1h_tokens=w1h,
        output_tokens=output,
        reasoning_tokens=draw(st.integers(0, output)),
        service_tier=draw(st.sampled_from(["standard", "standard", "batch"])),
        cache_hit=draw(st.booleans()) and draw(st.booleans()),
    )


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch=st.lists(events(), min_size=20, max_size=60))
def test_repricing_to_own_model_and_date_reproduces_the_recorded_cost(batch, book, tmp_path: Path) -> None:
    from unitcost.api import Ledger
    from unitcost.config import Config

    path = tmp_path / f"p{next(_ids)}.duckdb"
    with Ledger(path, book=book, config=Config()) as ledger:
        ledger.ingest_records(batch)
        recorded = ledger.sql("SELECT sum(cost) AS c FROM events")["c"].iloc[0]
        rows = whatif(ledger, Alternative())
    recorded = Decimal(0) if recorded is None or str(recorded) in ("<NA>", "nan") else Decimal(str(recorded))
    same = rows[1]
    if same.get("total") is None:  # every call was unpriced (e.g. a tier with no price)
        assert recorded == 0
        return
    assert abs(same["total"] - recorded) <= Decimal("1e-9")
    assert same["unpriced_calls"] == 0
    assert same["delta"] == 0


def test_exactness_does_not_depend_on_float(ledger) -> None:
    ledger.ingest_records(
        [
            ev("2025-09-10T09:00:00Z", "openai", "gpt-4o-mini", input_tokens=1, output_tokens=1)
            for _ in range(3)
        ]
    )
    rows = whatif(ledger, Alternative())
    assert rows[1]["total"] == pico_to_usd(3 * (150_000 + 600_000))


@pytest.mark.parametrize("text", ["hit=2", "sometimes", "-0.1"])
def test_bad_cache_assumptions_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        CacheAssumption.parse(text)


@pytest.mark.parametrize("model", ["claude-sonnet-4-5", "claude-haiku-4-5"])
def test_cache_rule_multipliers_match_the_price_book(book, model: str) -> None:
    from unitcost.compare.rules import cache_rule_for

    rule = cache_rule_for("anthropic", model)
    price = book.price(model, provider="anthropic", at=datetime(2025, 9, 10, tzinfo=UTC), input_tokens=1)
    rates = price.rates  # USD per Mtok actually applied
    assert rates["cache_write_5m"] == rates["input_text"] * rule.write_premium_5m
    assert rates["cache_write_1h"] == rates["input_text"] * rule.write_premium_1h
    assert rates["cache_read_text"] == rates["input_text"] * rule.read_multiplier
    assert rule.writes_billed and rule.min_prefix_tokens == (4096 if "haiku" in model else 1024)


def test_every_cache_rule_and_tokenizer_family_has_a_source() -> None:
    from unitcost.compare.rules import cache_rule_for, cache_rules, tokenizer_families

    assert all(r.source.startswith(("https://", "unitcost default")) for r in cache_rules())
    assert all(f.source.startswith("https://") for f in tokenizer_families().values())
    assert cache_rule_for("nobody", "x").provider == "*"  # the catch-all is last


def test_a_price_change_during_the_at_day_splits_it_by_time_of_day(ledger) -> None:
    # DeepSeek V3.1 starts 2025-09-05 16:00 UTC: on that day 15:50 is V3 (0.27, before the 16:30
    # off-peak window) and 16:10 is V3.1 (0.56). No window edge lies between them: only the day's
    # price change can split them.
    ledger.ingest_records(
        [
            ev("2025-09-20T15:50:00Z", "openai", "gpt-4o-mini", input_tokens=1_000_000, output_tokens=0),
            ev("2025-09-20T16:10:00Z", "openai", "gpt-4o-mini", input_tokens=1_000_000, output_tokens=0),
        ]
    )
    rows = whatif(ledger, Alternative.parse("deepseek:deepseek-chat@2025-09-05", token_ratio=Decimal(1)))
    assert rows[1]["total"] == Decimal("0.83")


def test_units_and_successes_count_like_the_report(ledger) -> None:
    ledger.ingest_records(
        [
            ev(
                "2025-09-10T09:00:00Z",
                "openai",
                "gpt-4o-mini",
                input_tokens=100,
                output_tokens=10,
                unit="ticket",
                unit_id=f"t{i % 4}",
                trace_id=f"tr{i}",
            )
            for i in range(8)
        ]
    )
    ledger.record_outcome(unit="ticket", unit_id="t0", success=True)
    ledger.record_outcome(unit="ticket", unit_id="t1", success=False)
    ledger.record_outcome(trace_id="tr2", success=True)  # judges ticket t2 through one of its calls
    workload = load_workload(ledger.store, SEPT, [], needed_cuts(ledger.book, []))
    headline = ledger.report_sections(SEPT.since, SEPT.until).headline
    assert (workload.units, workload.successes) == (4, 2)
    assert (headline["units"], headline["successes"]) == (4, 2)


def test_cost_per_unit_counts_the_units_calls_as_the_report_does(ledger) -> None:
    """`as recorded` divided every selected call's cost by the units: with a call outside any
    unit, its cost per unit was four times the report's for the same window."""
    ledger.ingest_records(
        [
            ev("2025-09-20T10:00:00Z", "openai", "gpt-4o", input_tokens=1_000, unit="ticket", unit_id="T1"),
            ev("2025-09-20T11:00:00Z", "openai", "gpt-4o", input_tokens=3_000),
        ]
    )
    rows = whatif(ledger, Alternative.parse("openai:gpt-4o-mini"))
    report = ledger.report(since="2025-01-01", until="2025-12-01")
    assert rows[0]["total"] == Decimal("0.01")
    assert rows[0]["cost_per_unit"] == Decimal("0.0025") == report["cost_per_unit"].iloc[0]
    # gpt-4o-mini, $0.15 per million input: the unit's 1,000 tokens.
    assert rows[1]["cost_per_unit"] == Decimal("0.00015")


def test_cost_per_success_and_successes_follow_the_reports_judgements(ledger) -> None:
    """Judgements kept per trace covered no call without a unit, and `as recorded` divided every
    call's cost by the successes: the what-if and the report disagreed for the same window."""
    ledger.ingest_records(
        [
            ev("2025-09-20T10:00:00Z", "openai", "gpt-4o", input_tokens=1_000, unit="ticket", unit_id="T1"),
            ev("2025-09-20T10:01:00Z", "openai", "gpt-4o", input_tokens=1_000, unit="ticket", unit_id="T1"),
            ev("2025-09-20T11:00:00Z", "openai", "gpt-4o", input_tokens=2_000, trace_id="TS"),
            ev("2025-09-20T12:00:00Z", "openai", "gpt-4o", input_tokens=4_000, trace_id="TF"),
            ev("2025-09-20T13:00:00Z", "openai", "gpt-4o", input_tokens=8_000),
        ]
    )
    ledger.record_outcome(unit="ticket", unit_id="T1", success=True)
    ledger.record_outcome(trace_id="TS", success=True)
    ledger.record_outcome(trace_id="TF", success=False)
    rows = whatif(ledger, Alternative.parse("openai:gpt-4o-mini"))
    report = ledger.report(since="2025-01-01", until="2025-12-01")
    # Judged calls: T1's two, TS's and TF's: 8,000 tokens at $2.50 per million; two successes.
    assert rows[0]["cost_per_success"] == Decimal("0.01") == report["cost_per_success"].iloc[0]
    assert report["successes"].iloc[0] == 2
    # gpt-4o-mini, $0.15 per million input, for the same judged calls.
    assert rows[1]["cost_per_success"] == Decimal("0.0006")


def test_whatif_gives_the_same_rows_on_clickhouse(ledger, book) -> None:
    """The grouping by units and judgements broke whatif (and levers) on ClickHouse: `GROUP BY
    false` is a position there, and the outcomes' own `ts` made the events' ambiguous."""
    import uuid

    pytest.importorskip("chdb", reason="the chdb package runs ClickHouse in-process")
    from unitcost.api import Ledger
    from unitcost.config import Config

    records = [
        ev("2025-09-20T10:00:00Z", "openai", "gpt-4o", input_tokens=1_000, unit="ticket", unit_id="T1"),
        ev("2025-09-20T11:00:00Z", "openai", "gpt-4o", input_tokens=2_000, trace_id="TS"),
        ev("2025-09-20T12:00:00Z", "openai", "gpt-4o", input_tokens=4_000),
    ]
    with Ledger(f"chdb://?database=t_{uuid.uuid4().hex}", book=book, config=Config()) as house:
        for target in (ledger, house):
            target.ingest_records(records)
            assert whatif(target, Alternative.parse("openai:gpt-4o-mini"))[0]["cost_per_success"] is None
        expected = whatif(ledger, Alternative.parse("openai:gpt-4o-mini"))
        assert whatif(house, Alternative.parse("openai:gpt-4o-mini")) == expected
        for target in (ledger, house):
            target.record_outcome(unit="ticket", unit_id="T1", success=True)
            target.record_outcome(trace_id="TS", success=True)
        expected = whatif(ledger, Alternative.parse("openai:gpt-4o-mini"))
        assert expected[0]["cost_per_success"] == Decimal("0.00375")
        assert whatif(house, Alternative.parse("openai:gpt-4o-mini")) == expected


def test_ratios_are_money_to_the_pico_dollar_and_percentages_as_numbers(ledger) -> None:
    """cost_per_request came out as a 28-digit decimal beside 12-place money."""
    # $0.01 over three calls: a third of a cent repeats for ever.
    ledger.ingest_records(
        [ev("2025-09-20T10:00:00Z", "openai", "gpt-4o", input_tokens=n) for n in (1_000, 1_000, 2_000)]
    )
    rows = whatif(ledger, Alternative.parse("openai:gpt-4o-mini"))
    for row in rows:
        per_request = row["cost_per_request"]
        assert isinstance(per_request, Decimal) and per_request.as_tuple().exponent >= -12
    assert rows[0]["cost_per_request"] == Decimal("0.003333333333")
    alt = whatif(ledger, Alternative.parse("openai:gpt-4o-mini"))[1]
    assert isinstance(alt["delta_pct"], float) and round(alt["delta_pct"], 6) == -94.0
