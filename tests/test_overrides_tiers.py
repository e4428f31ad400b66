"""Your own prices and the batch, flex and priority tiers, as a FinOps team relies on them.

A price pinned in the overrides file (a negotiated fixed price, a self-hosted model) is the
standard price; its tiers come from it, never from the shipped list prices:

1. a tier price declared in the overrides file (inside the entry, or a `[[price]]` of that tier);
2. else a known provider tier discount (a tier rule) applied to *your* price, named in price_ref;
3. else no price, with a reason that says what to add to which entry of which file.

`unitcost price` and ingestion (the array engine) must give the same answer.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pytest
from typer.testing import CliRunner

from unitcost.cli import app
from unitcost.events import events_to_arrow
from unitcost.money import arrow_to_pico, pico_to_usd
from unitcost.pricing.batch import price_table
from unitcost.pricing.book import PriceBook
from unitcost.pricing.model import PriceError

runner = CliRunner()
M = 1_000_000

# After genai-prices' own batch (2026-10-14) and priority (2026-10-12) prices begin: the
# dates at which the shipped list prices used to replace the user's.
AFTER_LIST_TIERS = "2026-11-02T10:00:00Z"

NEGOTIATED = """
[[price]]
provider = "openai"
model = "gpt-4o"
from = 2026-01-01
source = "contract MSA-2026"
input_mtok = "2.00"
cache_read_mtok = "1.00"
output_mtok = "8.00"

[[price]]
provider = "anthropic"
model = "claude-sonnet-4-5"
from = 2026-01-01
source = "contract ANT-2026"
input_mtok = { base = "2.00", tiers = [{ start = 200000, price = "4.00" }] }
output_mtok = "10.00"
"""

SELF_HOSTED = """
[[price]]
provider = "self-hosted"
model = "acme-classifier-v2"
from = 2025-08-01
source = "GPU cost model 2025-08"
input_mtok = "0.05"
output_mtok = "0.20"
requests_kcount = "0.40"
batch = { factor = "0.5" }
  [price.priority]
  input_mtok = "0.08"

[[price]]
provider = "self-hosted"
model = "acme-classifier-v2"
from = 2026-03-01
source = "GPU cost model 2026-03"
input_mtok = "0.04"
output_mtok = "0.16"
"""
CONTRACT = NEGOTIATED + SELF_HOSTED


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "prices.toml"
    path.write_text(text)
    return path


def run(*args: str, code: int = 0) -> str:
    result = runner.invoke(app, list(args), catch_exceptions=False, env={"COLUMNS": "300"})
    assert result.exit_code == code, result.output
    return result.output


def price_json(prices: Path, model: str, tier: str, at: str, *usage: str, code: int = 0) -> dict[str, Any]:
    out = run(
        "price",
        model,
        *usage,
        "--tier",
        tier,
        "--at",
        at,
        "--prices",
        str(prices),
        "--format",
        "json",
        code=code,
    )
    data: dict[str, Any] = json.loads(out)
    return data


def at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


# ---------------------------------------------------------------------- the gap


@pytest.mark.parametrize(
    ("model", "rule_ref", "rule_source"),
    [
        ("gpt-4o", "unitcost:openai[batch]x0.5@2024-04-15", "https://help.openai.com/en/articles/9197833"),
        (
            "claude-sonnet-4-5",
            "unitcost:anthropic[batch]x0.5@2024-10-08",
            "https://docs.anthropic.com/en/docs/build-with-claude/batch-processing#pricing",
        ),
    ],
)
def test_a_negotiated_price_carries_to_batch_through_the_providers_discount(
    tmp_path: Path, model: str, rule_ref: str, rule_source: str
) -> None:
    """Before: from 2026-10-14 a batch call was priced at genai-prices' list batch price
    ($1.25 / $5 for gpt-4o) under a ref that began with the user's price."""
    prices = write(tmp_path, NEGOTIATED)
    data = price_json(prices, model, "batch", AFTER_LIST_TIERS, "--input", "100000", "--output", "100000")
    standard = price_json(
        prices, model, "standard", AFTER_LIST_TIERS, "--input", "100000", "--output", "100000"
    )
    assert Decimal(data["cost"]) == Decimal(standard["cost"]) / 2
    assert data["layer"] == "user" and data["source"].startswith("contract")
    assert data["price_ref"] == f"{standard['price_ref']}|{rule_ref}"
    assert [(a["kind"], a["layer"], a["source"]) for a in data["adjustments"]] == [
        ("tier rule", "unitcost", rule_source)
    ]


def test_the_long_context_rates_of_your_price_carry_to_batch(tmp_path: Path) -> None:
    prices = write(tmp_path, NEGOTIATED)
    data = price_json(prices, "claude-sonnet-4-5", "batch", AFTER_LIST_TIERS, "--input", "300000")
    assert data["context_tier_above"] == 200000
    assert (
        Decimal(data["cost"]) == Decimal("0.3") * Decimal("4.00") / 2
    )  # every token at the >200k rate, halved


def test_a_list_tier_price_does_not_replace_yours_the_reason_says_what_to_add(tmp_path: Path) -> None:
    """Before: priority was OpenAI's published $4.25 / $17, and flex a generic "add a [[price]]"."""
    prices = write(tmp_path, NEGOTIATED)
    data = price_json(prices, "gpt-4o", "priority", AFTER_LIST_TIERS, "--input", "1000", code=1)
    reason = data["unpriced_reason"]
    assert data["cost"] is None
    assert "its standard price is yours (user:openai/gpt-4o@2026-01-01T00:00Z)" in reason
    assert 'add priority = { factor = "..." } or a [price.priority] table of rates' in reason
    assert f"{prices} [[price]] #1 (at line 2)" in reason
    # Before the user's price begins, the published priority price applies as before.
    before = price_json(prices, "gpt-4o", "priority", "2025-09-01", "--input", str(M))
    assert before["price_ref"] == "unitcost:openai/gpt-4o[priority]@2025-07-18T00:00Z"
    assert Decimal(before["cost"]) == Decimal("4.25")


def test_tier_prices_declared_in_the_entry_hold_for_its_dates_only(tmp_path: Path) -> None:
    """Before: the file was refused (`batch` an unknown key) and a self-hosted model had no batch price."""
    prices = write(tmp_path, CONTRACT)
    usage = ("--input", str(M), "--output", str(M))
    batch = price_json(prices, "acme-classifier-v2", "batch", "2025-09-01", *usage)
    # $0.05 + $0.20 + one request at $0.40/1K, all halved
    assert Decimal(batch["cost"]) == (Decimal("0.25") + Decimal("0.0004")) / 2
    assert batch["price_ref"] == (
        "user:self-hosted/acme-classifier-v2@2025-08-01T00:00Z|user:self-hosted/acme-classifier-v2[batch]x0.5@2025-08-01"
    )
    assert batch["effective_to"] == "2026-03-01T00:00:00+00:00"
    priority = price_json(prices, "acme-classifier-v2", "priority", "2025-09-01", *usage)
    # Rates the tier table leaves out are the entry's own.
    assert Decimal(priority["cost"]) == Decimal("0.08") + Decimal("0.20") + Decimal("0.0004")
    assert priority["price_ref"] == "user:self-hosted/acme-classifier-v2[priority]@2025-08-01T00:00Z"
    # The next entry declares no tiers: its batch calls are unpriced, naming that entry.
    later = price_json(prices, "acme-classifier-v2", "batch", "2026-04-01", *usage, code=1)
    assert "[[price]] #4 (at line 31)" in later["unpriced_reason"]


def test_discounts_stack_on_the_tier_of_your_price(tmp_path: Path) -> None:
    prices = write(
        tmp_path,
        NEGOTIATED
        + """
[[discount]]
provider = "openai"
percent = 10
from = 2026-10-15T12:00:00Z
source = "EA 2026"

[[discount]]
model = "gpt-4o"
percent = 20
from = 2026-10-01
source = "gpt-4o volume tier"
""",
    )
    data = price_json(prices, "gpt-4o", "batch", AFTER_LIST_TIERS, "--input", str(M))
    assert Decimal(data["cost"]) == Decimal("2.00") * Decimal("0.5") * Decimal("0.9") * Decimal("0.8")
    # A discount from noon says so in the ref; one from midnight keeps the date alone.
    assert data["price_ref"].endswith(
        "|user:discount(openai -10%@2026-10-15T12:00Z)|user:discount(gpt-4o -20%@2026-10-01)"
    )
    morning = price_json(prices, "gpt-4o", "batch", "2026-10-15T11:59:00Z", "--input", str(M))
    assert Decimal(morning["cost"]) == Decimal("2.00") * Decimal("0.5") * Decimal("0.8")


def test_prices_show_lists_the_tiers_of_your_price_with_both_layers(tmp_path: Path) -> None:
    prices = write(tmp_path, NEGOTIATED)
    rows = json.loads(
        run("prices", "show", "gpt-4o", "--tier", "batch", "--prices", str(prices), "--format", "json")
    )
    current = [r for r in rows if r["from"] == "2026-01-01T00:00:00+00:00"]
    assert len(current) == 1
    assert current[0]["layer"] == "user + unitcost"
    assert current[0]["to"] is None  # not cut short where genai-prices' list batch price begins
    assert (current[0]["input"], current[0]["output"]) == ("1", "4")
    assert current[0]["source"] == "contract MSA-2026; https://help.openai.com/en/articles/9197833"


# ---------------------------------------------------------------------- ingestion


def test_ingested_tier_calls_cost_what_unitcost_price_says(tmp_path: Path) -> None:
    """The array engine (ingest, reprice) and `unitcost price` agree on every tier."""
    prices = write(tmp_path, CONTRACT)
    calls = [
        ("gpt-4o", None, "batch", AFTER_LIST_TIERS),
        ("gpt-4o", None, "priority", AFTER_LIST_TIERS),
        ("gpt-4o", None, "batch", "2025-09-01T00:00:00Z"),
        ("claude-sonnet-4-5", None, "batch", AFTER_LIST_TIERS),
        ("acme-classifier-v2", "self-hosted", "batch", "2025-09-01T00:00:00Z"),
        ("acme-classifier-v2", "self-hosted", "priority", "2025-09-01T00:00:00Z"),
        ("acme-classifier-v2", "self-hosted", "batch", "2026-04-01T00:00:00Z"),
        ("acme-classifier-v2", "self-hosted", "standard", "2026-04-01T00:00:00Z"),
    ]
    events = [
        {
            "event_id": f"e{i}",
            "ts": ts,
            "model": model,
            **({"provider": provider} if provider else {}),
            "service_tier": tier,
            "input_tokens": 250_000,
            "cache_read_tokens": 50_000,
            "output_tokens": 4_000,
        }
        for i, (model, provider, tier, ts) in enumerate(calls)
    ]
    path = tmp_path / "events.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in events))
    ledger = tmp_path / "ledger.duckdb"
    run("ingest", str(path), "--ledger", str(ledger), "--prices", str(prices))
    with duckdb.connect(str(ledger), read_only=True) as con:
        stored = {
            row[0]: row[1:]
            for row in con.execute("SELECT event_id, cost, price_ref, unpriced_reason FROM events").fetchall()
        }
    # gpt-4o at tier batch: half the negotiated $2 / $1 cached / $8, not the list batch price.
    assert stored["e0"][0] == (Decimal("0.4") + Decimal("0.05") + Decimal("0.032")) / 2
    for i, (model, provider, tier, ts) in enumerate(calls):
        usage = ("--input", "250000", "--cache-read", "50000", "--output", "4000")
        args = (*usage, *(("--provider", provider) if provider else ()))
        unpriced = i in (1, 6)
        one = price_json(prices, model, tier, ts, *args, code=1 if unpriced else 0)
        cost, ref, reason = stored[f"e{i}"]
        assert (cost, ref, reason) == (
            None if unpriced else Decimal(one["cost"]),
            one.get("price_ref"),
            one.get("unpriced_reason"),
        ), (model, tier, ts)


def test_the_array_engine_and_one_call_agree_on_every_tier_and_date(tmp_path: Path) -> None:
    book = PriceBook.load(write(tmp_path, CONTRACT))
    days = [
        "2025-06-01",
        "2025-09-01",
        "2026-01-01",
        "2026-02-28T23:59:59",
        "2026-03-01",
        "2026-10-13",
        "2026-11-02",
    ]
    models = [("gpt-4o", None), ("claude-sonnet-4-5", None), ("acme-classifier-v2", "self-hosted")]
    events = [
        {
            "event_id": f"{model}-{tier}-{day}",
            "ts": at(day if "T" in day else f"{day}T12:00:00Z"),
            "provider": provider,
            "model": model,
            "service_tier": tier,
            "input_tokens": 210_000,
            "output_tokens": 1_000,
        }
        for model, provider in models
        for tier in ("standard", "batch", "flex", "priority")
        for day in days
    ]
    columns = price_table(book, events_to_arrow(events)).columns
    pico, valid = arrow_to_pico(columns["cost"])
    refs = columns["price_ref"].to_pylist()
    reasons = columns["unpriced_reason"].to_pylist()
    for index, event in enumerate(events):
        one = book.price(
            event["model"],
            input_tokens=210_000,
            output_tokens=1_000,
            provider=event["provider"],
            at=event["ts"],
            tier=event["service_tier"],
        )
        got = pico_to_usd(int(pico[index])) if valid[index] else None
        assert (got, refs[index], reasons[index]) == (one.cost, one.price_ref, one.unpriced_reason)


# ---------------------------------------------------------------------- mistakes in the file


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '[[price]]\nprovider = "self-hosted"\nmodel = "m"\ninput_mtok = "1"\n'
            'batch = { factor = "0.5", input_mtok = "0.4" }\n',
            "[[price]] #1 batch: give either factor or the tier's own rates, not both (at line 1)",
        ),
        (
            '[[price]]\nprovider = "self-hosted"\nmodel = "m"\ninput_mtok = "1"\n[price.flex]\nfactr = "0.5"\n',
            """[[price]] #1 flex: unknown key 'factr' (did you mean "factor"?)""",
        ),
        (
            '[[price]]\nprovider = "self-hosted"\nmodel = "m"\ninput_mtok = "1"\nbatch = "0.5"\n',
            '[[price]] #1 batch: expected a table, e.g. batch = { factor = "0.5" }',
        ),
        (
            '[[price]]\nprovider = "self-hosted"\nmodel = "m"\ntier = "batch"\ninput_mtok = "1"\n'
            'priority = { factor = "2" }\n',
            "a batch price cannot hold tier tables",
        ),
        (
            '[[price]]\nprovider = "self-hosted"\nmodel = "m"\ninput_mtok = "1"\nbatch = { factor = "0.5" }\n'
            '[[price]]\nprovider = "self-hosted"\nmodel = "m"\ntier = "batch"\ninput_mtok = "0.4"\n',
            "prices for self-hosted/m [batch] overlap at the beginning (no 'from'): "
            "[[price]] #2 (at line 6) and [[price]] #1 batch (at line 1)",
        ),
        # A bare string was read letter by letter: `g`, `p`, `t` and `4` became names of the model.
        (
            '[[price]]\nprovider = "self-hosted"\nmodel = "m"\naliases = "gpt4"\ninput_mtok = "1"\n',
            "[[price]] #1: aliases must be a list of names",
        ),
        # A misspelt window key was reported as a missing `to`, or buried in 60 component names.
        (
            '[[price]]\nprovider = "self-hosted"\nmodel = "m"\ninput_mtok = "1"\n'
            '[[price.window]]\nfrom = "16:30"\nuntil = "00:30"\ninput_mtok = "0.5"\n',
            """[[price]] #1 window #1: unknown key 'until' (did you mean "to"?)""",
        ),
        (
            '[[price]]\nprovider = "self-hosted"\nmodel = "m"\ninput_mtok = "1"\n'
            '[[price.window]]\nfrom = "16:30"\nto = "00:30"\ninput = "0.5"\n',
            """[[price]] #1 window #1: unknown key 'input' (did you mean "input_mtok"?)""",
        ),
    ],
)
def test_mistakes_in_tier_tables_and_windows_are_named(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(PriceError) as caught:
        PriceBook.load(path)
    assert str(path) in str(caught.value)
    assert message in str(caught.value)
    out = " ".join(run("price", "gpt-4o", "--input", "1", "--prices", str(path), code=2).split())
    assert message in out


def test_a_rate_your_price_lacks_is_no_price_not_free_in_history_and_diff(tmp_path: Path) -> None:
    """Before: the pinned gpt-4o price (no web-search rate) showed web searches going $10 -> $0
    (-100 %), though a call with a web search is unpriced, not free."""
    prices = write(tmp_path, NEGOTIATED)
    rows = json.loads(
        run(
            "prices",
            "diff",
            "--from",
            "2025-12-01",
            "--to",
            "2026-02-01",
            "--provider",
            "openai",
            "--model",
            "gpt-4o",
            "--tier",
            "standard",
            "--prices",
            str(prices),
            "--format",
            "json",
        )
    )
    searches = [r for r in rows if r["model"] == "openai/gpt-4o" and r["component"] == "web_searches"]
    assert [(s["old"], s["new"], s["change_pct"]) for s in searches] == [("10", None, None)]
    call = price_json(
        prices, "gpt-4o", "standard", "2026-02-01", "--input", "10", "--web-searches", "1", code=1
    )
    assert "has no price for web_searches" in call["unpriced_reason"]
    rerank = write(
        tmp_path,
        '[[price]]\nprovider = "self-hosted"\nmodel = "rerank-v1"\ninput_mtok = "0.01"\nrequests_kcount = "0.5"\n',
    )
    shown = json.loads(run("prices", "show", "rerank-v1", "--prices", str(rerank), "--format", "json"))
    assert [(r["input"], r["output"], r["reasoning"]) for r in shown] == [("0.01", None, None)]
