"""`unitcost export focus`: the ledger as a FinOps FOCUS 1.2 file a finance team can load.

What a finance team relies on: the file's BilledCost adds up to the ledger's spend to the
last digit; each component row holds the tokens and the cost the per-call pricer gives;
ListCost is the public price (the negotiated discount undone, a self-hosted model at its
own price); the columns FOCUS requires are filled with its allowed values; and a call with
no price never reads as $0 (the export stops, or leaves it out and says so).
"""

from __future__ import annotations

import csv
import io
import json
from collections import defaultdict
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from unitcost.analytics.focus import FOCUS_COLUMNS, FocusError, export_focus
from unitcost.api import Ledger
from unitcost.cli import app
from unitcost.config import Config
from unitcost.pricing.book import PriceBook

PRICES = """
[[discount]]
provider = "openai"
percent = 10
from = 2025-09-01
source = "contract MSA-2025-014"

[[price]]
provider = "self-hosted"
model = "acme-classifier-v2"
from = 2025-01-01
source = "GPU cost model"
input_mtok = "0.05"
output_mtok = "0.20"
"""

# Usage as each provider reports it, converted to the event schema (totals with subsets).
EVENTS: list[dict[str, Any]] = [
    # OpenAI: 8,000 of 12,000 prompt tokens cached (prompt_tokens_details.cached_tokens).
    {"event_id": "a", "ts": "2025-09-10T10:00:00Z", "provider": "openai", "model": "gpt-4o",
     "input_tokens": 12000, "cache_read_tokens": 8000, "output_tokens": 900, "team": "search", "feature": "answer"},
    {"event_id": "b", "ts": "2025-09-10T11:00:00Z", "provider": "openai", "model": "gpt-4o",
     "input_tokens": 3000, "output_tokens": 100, "team": "search", "feature": "answer"},
    # o3 with reasoning tokens inside its completion tokens.
    {"event_id": "c", "ts": "2025-09-10T12:00:00Z", "provider": "openai", "model": "o3",
     "input_tokens": 1000, "output_tokens": 3000, "reasoning_tokens": 2000, "team": "legal"},
    # Anthropic: 25,000 tokens written to the 1-hour cache, 5,000 uncached.
    {"event_id": "d", "ts": "2025-09-11T09:00:00Z", "provider": "anthropic", "model": "claude-sonnet-4-5",
     "input_tokens": 30000, "cache_write_1h_tokens": 25000, "output_tokens": 800, "team": "support"},
    # Audio input: its cost is in the `other` component.
    {"event_id": "e", "ts": "2025-09-11T10:00:00Z", "provider": "openai", "model": "gpt-4o-audio-preview",
     "input_tokens": 1000, "input_audio_tokens": 600, "output_tokens": 100, "team": "support"},
    # Priced by the overrides file only.
    {"event_id": "f", "ts": "2025-09-11T11:00:00Z", "provider": "self-hosted", "model": "acme-classifier-v2",
     "input_tokens": 40000, "output_tokens": 50, "team": "eng"},
    # No price anywhere.
    {"event_id": "g", "ts": "2025-09-11T12:00:00Z", "provider": "self-hosted", "model": "mystery-7b",
     "input_tokens": 700, "output_tokens": 70, "team": "eng"},
    # Served from unitcost's own response cache: no provider charge.
    {"event_id": "h", "ts": "2025-09-11T13:00:00Z", "provider": "openai", "model": "gpt-4o",
     "input_tokens": 12000, "output_tokens": 900, "cache_hit": True, "team": "search", "feature": "answer"},
    # Outside the window.
    {"event_id": "i", "ts": "2025-10-01T00:00:00Z", "provider": "openai", "model": "gpt-4o",
     "input_tokens": 5, "output_tokens": 5, "team": "search"},
]  # fmt: skip
WINDOW = {"since": "2025-09-01", "until": "2025-10-01"}
USAGE_KEYS = ("input_tokens", "cache_read_tokens", "cache_write_1h_tokens", "output_tokens", "reasoning_tokens",
              "input_audio_tokens")  # fmt: skip


@pytest.fixture
def prices(tmp_path: Path) -> Path:
    path = tmp_path / "prices.toml"
    path.write_text(PRICES)
    return path


@pytest.fixture
def ledger_file(tmp_path: Path, prices: Path) -> Path:
    path = tmp_path / "ledger.duckdb"
    with Ledger(str(path), config=Config(), prices=prices) as ledger:
        summary = ledger.ingest_records(EVENTS)
    assert summary.accepted == len(EVENTS)
    return path


def _price(book: PriceBook, event: dict[str, Any]) -> dict[str, Decimal]:
    usage = {k: event[k] for k in USAGE_KEYS if k in event}
    call = book.price(
        event["model"], usage, provider=event["provider"], at=datetime.fromisoformat(event["ts"])
    )
    assert call.breakdown is not None, event
    return call.breakdown.as_dict()


def _rows(export: Any, sku_end: str, resource: str) -> list[dict[str, Any]]:
    return [r for r in export.rows if r["ResourceId"] == resource and r["SkuId"].endswith(sku_end)]


def test_unpriced_calls_stop_the_export_with_their_model_and_count(ledger_file: Path, prices: Path) -> None:
    with (
        Ledger(str(ledger_file), config=Config(), prices=prices, read_only=True) as ledger,
        pytest.raises(FocusError, match=r"1 calls in the window have no price \(self-hosted/mystery-7b: 1\)"),
    ):
        export_focus(ledger, **WINDOW)


def test_billed_cost_adds_up_to_the_ledger_and_each_row_to_the_per_call_price(
    ledger_file: Path, prices: Path
) -> None:
    contracted, public = PriceBook.load(prices), PriceBook()
    with Ledger(str(ledger_file), config=Config(), prices=prices, read_only=True) as ledger:
        export = export_focus(ledger, **WINDOW, include_unpriced=True)
        stored = ledger.sql(
            "SELECT sum(cost) AS s FROM events WHERE ts >= '2025-09-01' AND ts < '2025-10-01'"
        )["s"].iloc[0]
        report_spend = ledger.report(since="2025-09-01", until="2025-10-01", by=["team"])["spend"].sum()

    # The money: the file's total is the ledger's and the report's, exactly.
    assert export.billed == Decimal(stored) == sum(r["BilledCost"] for r in export.rows)
    assert Decimal(str(report_spend)).quantize(Decimal("0.000001")) == export.billed.quantize(
        Decimal("0.000001")
    )
    assert export.calls == 6  # 9 events: one unpriced, one cache hit, one outside the window
    assert (export.unpriced.calls, export.unpriced.tokens) == (1, 770)
    assert export.unpriced.by_model == {"self-hosted/mystery-7b": 1}
    assert export.cache_hits == 1
    assert not [r for r in export.rows if "mystery" in r["ResourceId"]]

    # One day of gpt-4o for search/answer: events a and b in one group, split by component.
    a, b = EVENTS[0], EVENTS[1]
    billed_a, billed_b = _price(contracted, a), _price(contracted, b)
    list_a, list_b = _price(public, a), _price(public, b)
    (inp,) = _rows(export, "/standard/input", "openai/gpt-4o")
    assert inp["ConsumedQuantity"] == inp["PricingQuantity"] == (12000 - 8000) + 3000
    assert inp["ConsumedUnit"] == inp["PricingUnit"] == "Tokens"
    assert inp["BilledCost"] == billed_a["input"] + billed_b["input"]
    assert inp["ListCost"] == list_a["input"] + list_b["input"]
    assert inp["ListCost"] * Decimal("0.9") == inp["BilledCost"]  # the 10 % discount undone
    (read,) = _rows(export, "/standard/cache_read", "openai/gpt-4o")
    assert read["ConsumedQuantity"] == 8000 and read["BilledCost"] == billed_a["cache_read"]
    assert json.loads(inp["Tags"]) == {"team": "search", "feature": "answer"}
    assert inp["x_Calls"] == 2
    assert "|user:discount(openai -10%@2025-09-01)" in inp["SkuPriceId"]

    # Reasoning tokens are their own charge, at o3's output price; output holds the rest.
    c = EVENTS[2]
    (reasoning,) = _rows(export, "/reasoning", "openai/o3")
    (output,) = _rows(export, "/output", "openai/o3")
    assert (reasoning["ConsumedQuantity"], output["ConsumedQuantity"]) == (2000, 1000)
    assert reasoning["BilledCost"] == _price(contracted, c)["reasoning"]
    assert reasoning["ListCost"] == _price(public, c)["reasoning"]

    # Anthropic's 1-hour cache write at its own rate; no discount: list is billed.
    d = EVENTS[3]
    (write,) = _rows(export, "/cache_write_1h", "anthropic/claude-sonnet-4-5")
    assert write["ConsumedQuantity"] == 25000
    assert write["BilledCost"] == write["ListCost"] == _price(contracted, d)["cache_write_1h"] > 0
    assert write["SkuMeter"] == "Cache write tokens (1 hour)"
    assert not _rows(export, "/cache_write_5m", "anthropic/claude-sonnet-4-5")

    # Audio: the `other` component, counted in calls, its quantities spelled out.
    e = EVENTS[4]
    (other,) = _rows(export, "/other", "openai/gpt-4o-audio-preview")
    assert other["BilledCost"] == _price(contracted, e)["other"] > 0
    assert (other["PricingQuantity"], other["PricingUnit"]) == (1, "Requests")
    assert json.loads(other["x_OtherQuantities"]) == {"input_audio": 600}

    # A model only the overrides file prices has no public price: its list cost is its own.
    f = EVENTS[5]
    acme = _rows(export, "", "self-hosted/acme-classifier-v2")
    assert {r["SkuId"].rsplit("/", 1)[1] for r in acme} == {"input", "output"}
    assert (
        sum(r["ListCost"] for r in acme)
        == sum(r["BilledCost"] for r in acme)
        == _price(contracted, f)["total"]
    )

    assert export.listed == sum(r["ListCost"] for r in export.rows) > export.billed


def test_rows_fill_what_focus_requires_with_its_allowed_values(ledger_file: Path, prices: Path) -> None:
    with Ledger(str(ledger_file), config=Config(), prices=prices, read_only=True) as ledger:
        export = export_focus(ledger, **WINDOW, include_unpriced=True, billing_account="org-42")
    required = ("BilledCost", "BillingAccountId", "BillingCurrency", "BillingPeriodEnd", "BillingPeriodStart",
                "ChargeCategory", "ChargePeriodEnd", "ChargePeriodStart", "ContractedCost", "EffectiveCost",
                "InvoiceIssuerName", "ListCost", "ProviderName", "PublisherName", "ServiceCategory", "ServiceName",
                "PricingQuantity", "PricingUnit", "ChargeDescription")  # fmt: skip
    by_day: dict[datetime, int] = defaultdict(int)
    for row in export.rows:
        assert set(row) == set(FOCUS_COLUMNS)
        assert all(row[c] is not None for c in required), row
        assert row["ChargeCategory"] == "Usage" and row["ChargeClass"] is None
        assert row["ChargeFrequency"] == "Usage-Based" and row["PricingCategory"] == "Standard"
        assert row["ServiceCategory"] == "AI and Machine Learning"
        assert row["BillingCurrency"] == "USD" and row["BillingAccountId"] == "org-42"
        start, end = row["ChargePeriodStart"], row["ChargePeriodEnd"]
        assert (end - start).days == 1 and start.tzinfo is not None and start.hour == 0
        assert row["BillingPeriodStart"] == datetime(2025, 9, 1, tzinfo=UTC) <= start
        assert end <= row["BillingPeriodEnd"] == datetime(2025, 10, 1, tzinfo=UTC)
        by_day[start] += 1
    assert {d.day for d in by_day} == {10, 11}
    names = {(r["ResourceId"].split("/")[0], r["ProviderName"]) for r in export.rows}
    assert ("openai", "OpenAI") in names and ("anthropic", "Anthropic") in names


def test_cli_writes_csv_and_parquet_with_exact_money(ledger_file: Path, prices: Path, tmp_path: Path) -> None:
    base = ["export", "focus", "--since", "2025-09-01", "--until", "2025-10-01", "-l", str(ledger_file),
            "--prices", str(prices)]  # fmt: skip
    refused = CliRunner().invoke(app, [*base[:2], str(tmp_path / "f.csv"), *base[2:]])
    assert refused.exit_code == 2 and "self-hosted/mystery-7b: 1" in refused.output
    assert not (tmp_path / "f.csv").exists()

    csv_run = CliRunner().invoke(
        app, [*base[:2], str(tmp_path / "f.csv"), *base[2:], "--unpriced", "exclude"]
    )
    assert csv_run.exit_code == 0, csv_run.output
    assert "Left out: 1 calls with no price, 770 tokens (cost unknown, not zero)" in csv_run.output
    assert "1 responses served from unitcost's cache" in csv_run.output
    rows = list(csv.DictReader(io.StringIO((tmp_path / "f.csv").read_text())))
    assert tuple(rows[0]) == FOCUS_COLUMNS
    pq_run = CliRunner().invoke(
        app, [*base[:2], str(tmp_path / "f.parquet"), *base[2:], "--unpriced", "exclude"]
    )
    assert pq_run.exit_code == 0, pq_run.output
    table = pq.read_table(tmp_path / "f.parquet")
    assert str(table.schema.field("BilledCost").type) == "decimal128(38, 12)"

    with Ledger(str(ledger_file), config=Config(), read_only=True) as ledger:
        stored = Decimal(ledger.sql("SELECT sum(cost) AS s FROM events WHERE ts < '2025-10-01'")["s"].iloc[0])
    assert sum(Decimal(r["BilledCost"]) for r in rows) == stored
    assert sum(table.column("BilledCost").to_pylist()) == stored
    assert len(rows) == table.num_rows and rows[0]["ChargePeriodStart"].endswith("T00:00:00Z")
    assert all(r["ChargeClass"] == "" and "E" not in r["BilledCost"] for r in rows)
    assert f"${stored.quantize(Decimal('0.01')):,}" in csv_run.output

    to_stdout = CliRunner().invoke(
        app, [*base[:2], "-", *base[2:], "--unpriced", "exclude", "--tags", "team"]
    )
    assert to_stdout.exit_code == 0
    assert to_stdout.stdout.startswith("BilledCost,BillingAccountId,")
    assert "Wrote" not in to_stdout.stdout  # the summary is on stderr: the CSV stays clean
    assert '"{""team"": ""search""}"' in to_stdout.stdout


def test_cli_refuses_an_unknown_format_or_tag_dimension(ledger_file: Path, tmp_path: Path) -> None:
    wrong = CliRunner().invoke(app, ["export", "focus", str(tmp_path / "f.xlsx"), "-l", str(ledger_file)])
    assert wrong.exit_code == 2 and "write a .csv or a .parquet file" in wrong.output
    bad_dim = CliRunner().invoke(
        app,
        [
            "export",
            "focus",
            "-",
            "-l",
            str(ledger_file),
            "--tags",
            "teem",
            "--unpriced",
            "exclude",
            "--since",
            "2025-09",
        ],
    )
    assert bad_dim.exit_code == 2 and "unknown dimension 'teem'" in bad_dim.output
