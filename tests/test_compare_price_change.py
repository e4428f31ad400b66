"""Explaining a price change: an exact decomposition, checked by hand on DeepSeek V3.1 -> V3.2-Exp."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from fractions import Fraction
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from unitcost.compare import price_change as pc
from unitcost.compare.costing import Pricer
from unitcost.compare.decompose import chain, shapley
from unitcost.compare.whatif import Alternative, needed_cuts
from unitcost.compare.workload import load_workload

V31 = datetime(2025, 9, 20, tzinfo=UTC)
V32 = datetime(2025, 10, 5, tzinfo=UTC)


def test_shapley_by_hand_on_a_product() -> None:
    # f = p x q from (1, 1) to (2, 3): p gets (1 + 3) / 2, q gets (2 + 4) / 2
    out = shapley(
        lambda s: s["p"] * s["q"], {"p": Fraction(1), "q": Fraction(1)}, {"p": Fraction(2), "q": Fraction(3)}
    )
    assert out == {"p": Fraction(2), "q": Fraction(3)}
    # a chained index gives the same total but depends on the order
    first_p = chain(
        ["p", "q"],
        {"p": Fraction(1), "q": Fraction(1)},
        {"p": Fraction(2), "q": Fraction(3)},
        lambda s: s["p"] * s["q"],
    )
    assert first_p == {"p": Fraction(1), "q": Fraction(4)}


@given(
    st.lists(st.fractions(min_value=0, max_value=100), min_size=4, max_size=4),
    st.lists(st.fractions(min_value=0, max_value=100), min_size=4, max_size=4),
)
def test_shapley_parts_always_add_up_and_still_factors_get_nothing(
    a: list[Fraction], b: list[Fraction]
) -> None:
    def f(s: dict[str, Fraction]) -> Fraction:
        return s["v"] * (s["x"] * s["p"] + (1 - s["x"]) * s["q"])

    before = dict(zip("vxpq", a, strict=True))
    after = dict(zip("vxpq", b, strict=True))
    after["q"] = before["q"]
    parts = shapley(f, before, after)
    assert sum(parts.values()) == f(after) - f(before)
    assert parts["q"] == 0


def test_deepseek_examples_by_hand(book) -> None:
    pricer = Pricer(book)
    expected = {
        # 100k calls; V3.1 0.56 miss / 0.07 hit / 1.68 out -> V3.2-Exp 0.28 / 0.028 / 0.42 $/Mtok
        "cache-heavy": (
            Decimal("424.20"),
            Decimal("176.40"),
            {"p_input": -84, "p_cache_read": Fraction(-567, 5), "p_output": Fraction(-252, 5)},
        ),
        "cache-miss-heavy": (
            Decimal("515.20"),
            Decimal("240.80"),
            {"p_input": -224, "p_output": Fraction(-252, 5)},
        ),
    }
    for name, (before, after, parts) in expected.items():
        lines = pc.example_lines(book, name, "deepseek", "deepseek-chat", V31)
        e = pc.explain(
            pc.period_from_lines(pricer, "a", lines),
            pc.period_from_lines(pricer, "b", pc.shifted(lines, V32)),
        )
        assert pc.pico_to_usd(e.a.total) == before and pc.pico_to_usd(e.b.total) == after
        assert {k: v for k, v in e.contributions.items() if v} == parts
        assert sum(e.contributions.values()) == e.change
    # The headline is -50% on cache-miss input; neither workload's bill moves by that.
    rows = {
        r["component"]: r["change_pct"]
        for r in pc.list_price_rows(book, book.require("deepseek", "deepseek-chat"), V31, V32)
    }
    assert rows == {"input_mtok": Decimal(-50), "cache_read_mtok": Decimal(-60), "output_mtok": Decimal(-75)}


def _ev(i: int, ts: str, **usage: Any) -> dict[str, Any]:
    return {"event_id": f"pc{ts}{i}", "ts": ts, "provider": "deepseek", "model": "deepseek-chat", **usage}


def test_two_ledger_periods_split_into_price_mix_and_volume(ledger) -> None:
    # Before (V3 off-peak era, 2025-09-01 at noon: 0.27 / 0.07 / 1.10): 4 calls, no cache hits.
    # After (V3.2-Exp, 2025-09-30: 0.28 / 0.028 / 0.42): 6 calls, half the prompt from cache.
    ledger.ingest_records(
        [_ev(i, "2025-09-01T12:00:00Z", input_tokens=10_000, output_tokens=1_000) for i in range(4)]
        + [
            _ev(i, "2025-09-30T12:00:00Z", input_tokens=10_000, cache_read_tokens=5_000, output_tokens=1_000)
            for i in range(6)
        ]
    )
    cuts = needed_cuts(ledger.book, [Alternative()])
    wa = load_workload(ledger.store, pc.parse_period("2025-09-01", "1d"), ["model=deepseek-chat"], cuts)
    wb = load_workload(ledger.store, pc.parse_period("2025-09-30", "1d"), ["model=deepseek-chat"], cuts)
    e = pc.explain(pc.period_from_groups("a", wa.groups), pc.period_from_groups("b", wb.groups))
    # a: 4 x (10000 x 0.27 + 1000 x 1.10) = 15200; b: 6 x (5000 x 0.28 + 5000 x 0.028 + 1000 x 0.42) = 11760 micro-USD
    assert e.a.total == 15_200 * 10**6 and e.b.total == 11_760 * 10**6
    assert sum(e.contributions.values()) == e.change == Fraction(-3440, 10**6)
    assert e.contributions["calls"] > 0 and e.contributions["hit"] < 0 and e.contributions["p_output"] < 0
    assert e.contributions["tokens_per_call"] == 0 and e.contributions["input_share"] == 0
    # Where the cache-hit share was 0 the cache-read price is borrowed, so it cannot move.
    assert e.contributions["p_cache_read"] == 0
    # the input list price rose (0.27 -> 0.28): the decomposition says so with the right sign
    assert e.contributions["p_input"] > 0


def test_a_reversed_period_is_refused() -> None:
    """`--from 2025-09-10..2025-09-05` was taken as an empty period and explained, exit 0."""
    import pytest

    with pytest.raises(ValueError, match="needs B after A"):
        pc.parse_period("2025-09-10..2025-09-05", "7d")
    assert pc.parse_period("2025-09-05..2025-09-10", "7d").length.days == 5
