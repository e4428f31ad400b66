"""`unitcost prices diff`: every price step inside an interval, each dated and sourced by its own price."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

from unitcost.pricing.book import PriceBook
from unitcost.pricing.history import diff_prices

D = Decimal


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def _steps(rows: list[dict], component: str, window: str | None = None) -> list[tuple]:
    return [
        (r["changed_at"], r["old"], r["new"])
        for r in rows
        if r["component"] == component and r["window"] == window and r["tier"] == "standard"
    ]


def test_two_deepseek_changes_in_one_month_are_two_steps(book: PriceBook) -> None:
    # DeepSeek's published prices: V3 $0.27 / $1.10 until 2025-09-05 16:00 UTC, V3.1 $0.56 / $1.68,
    # then V3.2-Exp $0.28 / $0.42 from 2025-09-29. The ends alone would read $0.27 -> $0.28.
    rows = diff_prices(book, _at("2025-09-01"), _at("2025-10-01"), model_filter="deepseek-chat")
    assert _steps(rows, "input") == [
        (_at("2025-09-05T16:00"), D("0.27"), D("0.56")),
        (_at("2025-09-29"), D("0.56"), D("0.28")),
    ]
    assert _steps(rows, "output") == [
        (_at("2025-09-05T16:00"), D("1.10"), D("1.68")),
        (_at("2025-09-29"), D("1.68"), D("0.42")),
    ]
    # Each step names the source of the price that took effect then.
    sources = {r["changed_at"]: r["source"] for r in rows}
    assert "news250821" in sources[_at("2025-09-05T16:00")]
    assert sources[_at("2025-09-29")].endswith("/updates")
    # Rows come model by model, then in time order.
    assert [r["changed_at"] for r in rows] == sorted(r["changed_at"] for r in rows)


def test_a_price_that_came_and_went_inside_the_interval_is_listed(tmp_path: Path) -> None:
    overrides = tmp_path / "prices.toml"
    overrides.write_text(
        "\n".join(
            f'[[price]]\nprovider = "self-hosted"\nmodel = "promo-llm"\nfrom = {start}\n'
            f'source = "rate card {start}"\ninput_mtok = "{rate}"\noutput_mtok = "1.00"\n'
            for start, rate in (("2025-01-01", "0.50"), ("2025-03-01", "0.25"), ("2025-04-01", "0.50"))
        )
    )
    book = PriceBook.load(overrides)
    rows = diff_prices(book, _at("2025-02-01"), _at("2025-05-01"), model_filter="promo-llm")
    assert _steps(rows, "input") == [
        (_at("2025-03-01"), D("0.50"), D("0.25")),
        (_at("2025-04-01"), D("0.25"), D("0.50")),
    ]
    assert _steps(rows, "output") == []  # unchanged throughout: no row
    # An interval inside one price has nothing to list.
    assert diff_prices(book, _at("2025-03-02"), _at("2025-03-30"), model_filter="promo-llm") == []


def test_a_windowed_price_says_its_hours(book: PriceBook) -> None:
    """`prices show deepseek-chat` labelled the window "off-peak" without saying when it is."""
    from unitcost.pricing.genai_layer import ModelRef
    from unitcost.pricing.history import price_history

    windows = {row["window"] for row in price_history(book, ModelRef("deepseek", "deepseek-chat"))}
    assert "off-peak, 16:30-00:30 UTC" in windows
