"""What a FinOps user reads from whatif, levers and explain-price-change: no silent gaps, no
figures that claim more than the data, every number a stable exact string."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from unitcost.analytics.window import Window
from unitcost.api import Ledger
from unitcost.cli import app
from unitcost.compare.levers import Settings, run_levers
from unitcost.compare.whatif import Alternative, needed_cuts
from unitcost.compare.workload import load_workload
from unitcost.config import Config
from unitcost.money import pico_to_usd
from unitcost.pricing.book import PriceBook

SEPT = ("--since", "2025-09-01", "--until", "2025-10-01")


def run(*args: str) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def refused(*args: str) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 2, result.output
    return " ".join(result.output.split())


def call(event_id: str, ts: str, provider: str, model: str, **usage: Any) -> dict[str, Any]:
    return {"event_id": event_id, "ts": ts, "provider": provider, "model": model, **usage}


# --------------------------------------------------------------------------- explain-price-change


def test_explain_finds_the_calls_a_source_recorded_under_a_dated_model_id(ledger, ledger_path: Path) -> None:
    """Anthropic (and LiteLLM logs) record `claude-sonnet-4-5-20250929`; the price book prices it
    as claude-sonnet-4-5. `--model anthropic:claude-sonnet-4-5` answered "neither period has
    priced calls"."""
    ledger.ingest_records(
        [
            call(
                f"s{day}",
                f"2025-09-{day:02d}T10:00:00Z",
                "anthropic",
                "claude-sonnet-4-5-20250929",
                input_tokens=10_000,
                cache_read_tokens=4_000,
                output_tokens=1_000,
            )
            for day in (1, 2, 20, 21, 22)
        ]
    )
    ledger.close()
    out = run(
        "explain-price-change",
        "-l",
        str(ledger_path),
        "--model",
        "anthropic:claude-sonnet-4-5",
        "--from",
        "2025-09-01..2025-09-05",
        "--to",
        "2025-09-20..2025-09-25",
        "--format",
        "json",
    )
    periods = json.loads(out)[0]["periods"]
    # 6,000 x 3 + 4,000 x 0.3 + 1,000 x 15 = 34,200 micro-USD a call
    assert [p["calls"] for p in periods] == [2, 3]
    assert [Decimal(p["cost"]) for p in periods] == [Decimal("0.0684"), Decimal("0.1026")]


def test_explain_keeps_to_the_provider_named(ledger, ledger_path: Path) -> None:
    """`--model deepseek:deepseek-chat` also took in calls of another provider that recorded the
    same model name: their cost was explained as DeepSeek's."""
    ledger.ingest_records(
        [
            call(f"d{day}", f"2025-09-{day:02d}T10:00:00Z", "deepseek", "deepseek-chat", input_tokens=10_000)
            for day in (20, 30)
        ]
        + [
            call(f"o{day}", f"2025-09-{day:02d}T10:00:00Z", "openai", "deepseek-chat", input_tokens=10_000)
            for day in (20, 30)
        ]
    )
    ledger.close()
    out = run(
        "explain-price-change",
        "-l",
        str(ledger_path),
        "--model",
        "deepseek:deepseek-chat",
        "--from",
        "2025-09-20",
        "--to",
        "2025-09-30",
        "--window",
        "1d",
        "--format",
        "json",
    )
    data = json.loads(out)[0]
    # V3.1 0.56 then V3.2-Exp 0.28 $/Mtok of cache-miss input: 5,600 then 2,800 micro-USD
    assert [p["calls"] for p in data["periods"]] == [1, 1]
    assert [Decimal(p["cost"]) for p in data["periods"]] == [Decimal("0.0056"), Decimal("0.0028")]
    assert not [n for n in data["notes"] if "no recorded price" in n]


CACHE_MISS_EXAMPLE = (
    "explain-price-change",
    "--model",
    "deepseek:deepseek-chat",
    "--from",
    "2025-09-20",
    "--to",
    "2025-10-05",
    "--example",
    "cache-miss-heavy",
    "--format",
)


def test_explain_shows_no_price_for_a_component_the_periods_did_not_use(ledger_path: Path) -> None:
    """With no cache reads, writes or reasoning, the table read "price: cache write $0/Mtok", as if
    those tokens were free; there is no such price to show."""
    out = run(*CACHE_MISS_EXAMPLE, "json")
    rows = {r["factor"]: r for r in json.loads(out)[0]["contributions"]}
    for unused in ("price: cache read", "price: cache write", "price: reasoning"):
        assert rows[unused]["before"] is None and rows[unused]["after"] is None
        assert Decimal(rows[unused]["contribution"]) == 0
    assert rows["price: input"]["before"] == "$0.56/Mtok"
    md = run(*CACHE_MISS_EXAMPLE, "markdown")
    assert "| price: cache write | — | — |" in md


def test_explain_says_when_the_price_changed_inside_a_period(ledger, ledger_path: Path) -> None:
    """The list price shown for a period is the one at its start; a period straddling DeepSeek's
    2025-09-29 change pays a blend, and nothing said so."""
    ledger.ingest_records(
        [
            call(f"d{day}", f"2025-09-{day:02d}T10:00:00Z", "deepseek", "deepseek-chat", input_tokens=10_000)
            for day in (20, 27, 30)
        ]
    )
    ledger.close()
    out = run(
        "explain-price-change",
        "-l",
        str(ledger_path),
        "--model",
        "deepseek:deepseek-chat",
        "--from",
        "2025-09-20..2025-09-21",
        "--to",
        "2025-09-27..2025-10-01",
        "--format",
        "json",
    )
    notes = json.loads(out)[0]["notes"]
    assert any("changed inside the second period (2025-09-29 00:00 UTC)" in n for n in notes), notes
    assert not any("inside the first period" in n for n in notes)


def test_explain_with_only_unpriced_calls_says_they_have_no_price(ledger, ledger_path: Path) -> None:
    ledger.ingest_records(
        [
            call(f"d{day}", f"2025-09-{day:02d}T10:00:00Z", "deepseek", "deepseek-chat", input_tokens=10)
            for day in (1, 20)
        ]
        + [call("x1", "2025-09-02T10:00:00Z", "acme", "acme-7b", input_tokens=10)]
    )
    ledger.close()
    message = refused(
        "whatif", "-l", str(ledger_path), *SEPT, "--where", "model=acme-7b", "--as", "openai:gpt-4o"
    )
    # not "try --since ... --until": the window does hold the call, it has no price
    assert "the one selected call has no recorded price" in message and "acme-7b" in message
    assert "try --since" not in message
    message = refused("levers", "-l", str(ledger_path), *SEPT, "--where", "model=acme-7b")
    assert "the one selected call has no recorded price" in message


# --------------------------------------------------------------------------- levers


def _levers(ledger: Any, **overrides: object) -> dict[str, Any]:
    settings = Settings.build(overrides)
    light = [Alternative(provider=p, model=m) for p, m in settings.light.items()]
    window = Window(datetime(2025, 9, 1, tzinfo=UTC), datetime(2025, 10, 1, tzinfo=UTC))
    workload = load_workload(ledger.store, window, [], needed_cuts(ledger.book, light), with_units=False)
    return {r.lever: r for r in run_levers(ledger.book, workload, settings)[1]}


def test_self_hosting_is_not_proposed_where_it_costs_more(ledger) -> None:
    """gpt-4.1-nano (0.10 / 0.40 $/Mtok) is cheaper than the $0.93/Mtok GPU profile: moving 20% of
    it showed a negative "saving" of -120% of spend, against "a lever never picks an option that
    costs more"."""
    ledger.ingest_records(
        [
            call(f"n{day}", f"2025-09-{day:02d}T12:00:00Z", "openai", "gpt-4.1-nano", input_tokens=1_000)
            for day in range(1, 31)
        ]
        + [
            # gpt-5 (1.25 / 10 $/Mtok) is dearer than the profile: that share does move
            call(
                f"g{day}",
                f"2025-09-{day:02d}T12:00:00Z",
                "openai",
                "gpt-5",
                input_tokens=1_000,
                output_tokens=1_000,
            )
            for day in range(1, 31)
        ]
    )
    hosted = _levers(ledger)["self-hosted model"]
    # only gpt-5 moves: 30 calls x 20% x (1,000 x 1.25 + 1,000 x 10 - 2,000 x 0.925926) micro-USD
    per_call = (Decimal(1_000) * Decimal("1.25") + 1_000 * 10 - 2_000 * Decimal("0.925926")) / 10**6
    assert pico_to_usd(hosted.saving) == 30 * Decimal("0.2") * per_call
    assert hosted.saving > 0


def test_levers_json_amounts_are_exact_short_strings(ledger, ledger_path: Path) -> None:
    """monthly_saving and share_of_spend came out as 28-significant-digit quotients
    ("288.8122962560906961517641942"), different from every other amount's 12 places."""
    ledger.ingest_records(
        [
            call(
                f"g{i}",
                f"2025-09-{1 + i * 29 // 9:02d}T12:00:00Z",
                "openai",
                "gpt-5",
                input_tokens=10_000,
                output_tokens=2_000,
                reasoning_tokens=1_000,
            )
            for i in range(10)
        ]
    )
    ledger.close()
    data = json.loads(run("levers", "-l", str(ledger_path), *SEPT, "--format", "json"))
    reasoning = next(r for r in data["levers"] if r["lever"] == "reasoning effort")
    # 10 x 300 reasoning tokens x $10/Mtok = 0.03 over 29 days: x 30/29, to the pico-dollar
    assert reasoning["monthly_saving"] == "0.031034482759"
    for row in data["levers"]:
        for key in ("monthly_saving", "share_of_spend"):
            assert len(row[key].partition(".")[2]) <= 12, row


def test_levers_on_less_than_a_day_say_what_they_scaled_from(ledger, ledger_path: Path) -> None:
    """One call: JSON said span_days "0" while the savings were multiplied by 30 (one day)."""
    ledger.ingest_records(
        [
            call(
                "o1",
                "2025-09-10T10:00:00Z",
                "openai",
                "o3",
                input_tokens=2_000,
                output_tokens=3_000,
                reasoning_tokens=2_000,
            )
        ]
    )
    ledger.close()
    data = json.loads(run("levers", "-l", str(ledger_path), *SEPT, "--format", "json"))
    assert Decimal(data["span_days"]) == 1 and Decimal(data["calls_span_days"]) == 0
    reasoning = next(r for r in data["levers"] if r["lever"] == "reasoning effort")
    # o3 reasoning at $8/Mtok: 600 tokens cut = 4,800 micro-USD in the day, x 30 a month
    assert Decimal(reasoning["saving"]) == Decimal("0.0048")
    assert Decimal(reasoning["monthly_saving"]) == Decimal("0.144")
    table = " ".join(run("levers", "-l", str(ledger_path), *SEPT).split())
    assert "over 1.0 days" in table and "span less than a day" in table


def test_levers_count_calls_the_current_price_book_cannot_reprice(tmp_path: Path) -> None:
    """A ledger priced with an overrides file, read without it: every saving and the spend came
    out $0.00 with no word on why."""
    overrides = tmp_path / "prices.toml"
    overrides.write_text(
        '[[price]]\nprovider = "acme"\nmodel = "acme-7b"\nfrom = 2025-08-01\nsource = "finance sheet"\n'
        'input_mtok = "0.05"\noutput_mtok = "0.20"\n',
        encoding="utf-8",
    )
    path = tmp_path / "priced.duckdb"
    with Ledger(path, book=PriceBook.load(overrides), config=Config()) as priced:
        priced.ingest_records(
            [
                call(f"a{day}", f"2025-09-{day:02d}T10:00:00Z", "acme", "acme-7b", input_tokens=1_000)
                for day in (1, 2, 3)
            ]
            + [call("g1", "2025-09-02T10:00:00Z", "openai", "gpt-5", input_tokens=1_000, output_tokens=500)]
        )
    data = json.loads(run("levers", "-l", str(path), *SEPT, "--format", "json"))
    assert sum(data["not_repriced"].values()) == 3 and "acme" in next(iter(data["not_repriced"]))
    table = " ".join(run("levers", "-l", str(path), *SEPT).split())
    assert "3 selected calls have a recorded price but none in the price book used now" in table
    with_prices = json.loads(
        run("levers", "-l", str(path), *SEPT, "--prices", str(overrides), "--format", "json")
    )
    assert with_prices["not_repriced"] == {}
