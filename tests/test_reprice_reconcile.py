"""A price correction, the reprice that applies it, and the provider's bill it is checked
against: every amount worked out by hand with Decimal."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from unitcost.api import Ledger
from unitcost.cli import app
from unitcost.config import Config
from unitcost.connectors.reconcile import reconcile

WINDOW = ("--since", "2025-09-01", "--until", "2025-10-01")

# Our negotiated price for a self-hosted model: $1 per million input tokens, $2 per million
# output tokens; the correction (from the finance team) is $0.80 / $1.60 from 2025-09-15.
PRICE = """
[[price]]
provider = "self-hosted"
model = "acme"
from = 2025-08-01
source = "finance sheet v1"
input_mtok = "1.00"
output_mtok = "2.00"
"""
CORRECTION = """
[[price]]
provider = "self-hosted"
model = "acme"
from = 2025-09-15
source = "finance sheet v2"
input_mtok = "0.80"
output_mtok = "1.60"
"""


def per_mtok(tokens: int, rate: str) -> Decimal:
    return Decimal(tokens) * Decimal(rate) / 10**6


def _call(event_id: str, day: int, input_tokens: int, output_tokens: int, **extra: Any) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "ts": f"2025-09-{day:02d}T10:00:00Z",
        "provider": "self-hosted",
        "model": "acme",
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        **extra,
    }


def _ledger(tmp_path: Path, prices: str) -> Ledger:
    path = tmp_path / "prices.toml"
    path.write_text(prices)
    return Ledger(tmp_path / "l.duckdb", prices=path, config=Config())


def _write(tmp_path: Path, name: str, *records: dict[str, Any]) -> Path:
    path = tmp_path / name
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


# --------------------------------------------------------------------------- reconcile


def test_a_rounding_difference_within_the_tolerance_is_agreement(tmp_path: Path) -> None:
    """The provider bills each call rounded to the cent: $0.01 where unitcost computes $0.0055.
    As a percentage that is 45 % off; in money it is rounding."""
    with _ledger(tmp_path, PRICE) as ledger:
        # 2,500 in + 1,500 out = $0.0025 + $0.003 = $0.0055, billed $0.01 (rounded up).
        ledger.ingest_records([_call("b1", 10, 2500, 1500, billed_cost="0.01")])
        (row,) = reconcile(ledger, since="2025-09-01", until="2025-10-01")
        assert (row.computed, row.billed) == (Decimal("0.0055"), Decimal("0.01"))
        assert row.difference == Decimal("-0.0045")
        assert reconcile(ledger, since="2025-09-01", until="2025-10-01", tolerance="0.005") == []
        assert reconcile(ledger, since="2025-09-01", until="2025-10-01", tolerance=0.004) == [row]
        with pytest.raises(ValueError, match="tolerance"):
            reconcile(ledger, since="2025-09-01", until="2025-10-01", tolerance="-1")


def test_calls_missing_from_the_bill_are_counted(tmp_path: Path) -> None:
    """Three calls, two on the bill: the two agree, and the third was in neither sum without a word."""
    with _ledger(tmp_path, PRICE) as ledger:
        ledger.ingest_records(
            [
                _call("b1", 10, 1000, 500, billed_cost="0.002"),
                _call("b2", 11, 1000, 500, billed_cost="0.002"),
                _call("b3", 12, 1000, 500),
            ]
        )
        (row,) = reconcile(ledger, since="2025-09-01", until="2025-10-01", show_all=True)
        assert (row.calls, row.unbilled) == (2, 1)
        assert row.computed == row.billed == per_mtok(2000, "1.00") + per_mtok(1000, "2.00")
        assert row.as_row()["unbilled"] == 1


def test_the_cli_takes_a_tolerance_and_says_what_the_bill_leaves_out(tmp_path: Path) -> None:
    (tmp_path / "prices.toml").write_text(PRICE)
    calls = _write(
        tmp_path,
        "calls.jsonl",
        _call("b1", 10, 2500, 1500, billed_cost="0.01"),
        _call("b2", 11, 2500, 1500),
    )
    ledger = str(tmp_path / "l.duckdb")
    runner = CliRunner()
    ingest = runner.invoke(
        app, ["ingest", str(calls), "--ledger", ledger, "--prices", str(tmp_path / "prices.toml")]
    )
    assert ingest.exit_code == 0, ingest.output
    shown = runner.invoke(app, ["reconcile", *WINDOW, "--ledger", ledger])
    assert shown.exit_code == 0, shown.output
    assert "1 calls of these models carry no billed cost" in shown.output
    within = runner.invoke(app, ["reconcile", *WINDOW, "--tolerance", "0.01", "--ledger", ledger])
    assert within.exit_code == 0, within.output
    assert "no model with billed_cost differs by more than 5% and $0.01" in within.output
    as_json = runner.invoke(app, ["reconcile", *WINDOW, "--all", "--ledger", ledger, "-f", "json"])
    (row,) = json.loads(as_json.output)
    assert (row["calls"], row["unbilled"], Decimal(row["difference"])) == (1, 1, Decimal("-0.0045"))
    refused = runner.invoke(app, ["reconcile", *WINDOW, "--tolerance", "a cent", "--ledger", ledger])
    assert refused.exit_code == 2 and "--tolerance: not an amount in USD" in refused.output


# --------------------------------------------------------------------------- reprice


def test_a_price_correction_repriced_agrees_with_the_bill_and_is_audited(tmp_path: Path) -> None:
    calls = [
        _call("a1", 10, 1000, 500, billed_cost="0.002"),  # before the correction: the old price
        _call("a2", 16, 1000, 500, billed_cost="0.0016"),  # after it: billed at the new price
        _call("a3", 20, 3000, 1000, billed_cost="0.004"),
    ]
    with _ledger(tmp_path, PRICE) as ledger:
        ledger.ingest_records(calls)
        (before,) = reconcile(ledger, since="2025-09-01", until="2025-10-01")
        # Old price everywhere: 0.002 + 0.002 + 0.005 against 0.002 + 0.0016 + 0.004.
        assert (before.computed, before.billed) == (Decimal("0.009"), Decimal("0.0076"))
    with _ledger(tmp_path, PRICE + CORRECTION) as ledger:
        result = ledger.reprice("2025-09-01", "2025-10-01")
        new_a2 = per_mtok(1000, "0.80") + per_mtok(500, "1.60")
        new_a3 = per_mtok(3000, "0.80") + per_mtok(1000, "1.60")
        assert (new_a2, new_a3) == (Decimal("0.0016"), Decimal("0.004"))
        assert (result.events_seen, result.events_changed) == (3, 2)
        assert (result.old_total, result.new_total) == (Decimal("0.009"), Decimal("0.002") + new_a2 + new_a3)
        # The call before the correction keeps the old price and says so.
        refs = dict(ledger.sql("SELECT event_id, price_ref FROM events").itertuples(index=False))
        assert refs["a1"].endswith("@2025-08-01T00:00Z") and refs["a2"].endswith("@2025-09-15T00:00Z")
        (run,) = ledger.sql("SELECT * FROM reprice_runs").to_dict("records")
        assert (run["old_total"], run["new_total"], run["events_changed"]) == (
            Decimal("0.009"),
            Decimal("0.0076"),
            2,
        )
        # The bill and the ledger now agree to the pico-dollar, and the report says the same.
        (after,) = reconcile(ledger, since="2025-09-01", until="2025-10-01", show_all=True)
        assert after.difference == 0
        assert ledger.report_sections("2025-09-01", "2025-10-01").headline["spend"] == Decimal("0.0076")
        # Run again: nothing changes, and the run is still audited.
        again = ledger.reprice("2025-09-01", "2025-10-01")
        assert (again.events_changed, again.new_total) == (0, Decimal("0.0076"))
        assert len(ledger.sql("SELECT run_id FROM reprice_runs")) == 2


def test_reprice_output_never_shows_an_unknown_total_as_zero(tmp_path: Path) -> None:
    """Every call of the window unpriced before the reprice: the totals said "$0.000000 → ..."
    and JSON `"old_total": "0"`, a cost of zero where it was unknown."""
    (tmp_path / "none.toml").write_text("")
    (tmp_path / "prices.toml").write_text(PRICE)
    ledger = str(tmp_path / "l.duckdb")
    runner = CliRunner()
    calls = _write(tmp_path, "calls.jsonl", _call("a1", 10, 1000, 500))
    ingest = runner.invoke(
        app, ["ingest", str(calls), "--ledger", ledger, "--prices", str(tmp_path / "none.toml")]
    )
    assert ingest.exit_code == 0, ingest.output
    args = ["reprice", *WINDOW, "--ledger", ledger, "--prices", str(tmp_path / "prices.toml"), "--dry-run"]
    as_json = json.loads(runner.invoke(app, [*args, "-f", "json"]).output)
    assert as_json["old_total"] is None and Decimal(as_json["new_total"]) == Decimal("0.002")
    text = runner.invoke(app, args).output
    assert "Total unknown → $0.002" in text


def test_reprice_warns_when_calls_lose_their_price(tmp_path: Path) -> None:
    """Run without the overrides file the calls were priced with: their costs become unknown.
    The output said so only in a column of the table."""
    (tmp_path / "prices.toml").write_text(PRICE)
    (tmp_path / "none.toml").write_text("")
    ledger = str(tmp_path / "l.duckdb")
    runner = CliRunner()
    calls = _write(tmp_path, "calls.jsonl", _call("a1", 10, 1000, 500), _call("a2", 11, 1000, 500))
    prices = str(tmp_path / "prices.toml")
    assert runner.invoke(app, ["ingest", str(calls), "--ledger", ledger, "--prices", prices]).exit_code == 0
    forgot = runner.invoke(
        app, ["reprice", *WINDOW, "--ledger", ledger, "--prices", str(tmp_path / "none.toml"), "--dry-run"]
    )
    assert forgot.exit_code == 0, forgot.output
    assert "warning: 2 more events without a price than before" in forgot.output
    same = runner.invoke(app, ["reprice", *WINDOW, "--ledger", ledger, "--prices", prices, "--dry-run"])
    assert "warning" not in same.output
