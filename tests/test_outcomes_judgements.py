"""Judgements over time: which one of a key is kept, those whose calls are not (yet) in the
ledger, and the cost per unit and per success they give, checked by hand."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from unitcost.cli import app

# A price of our own, so every cost below can be worked out by hand: $1 per million input
# tokens, $2 per million output tokens.
PRICES = """
[[price]]
provider = "self-hosted"
model = "acme"
from = 2025-08-01
source = "test sheet"
input_mtok = "1.00"
output_mtok = "2.00"
"""


def _jsonl(path: Path, *records: dict[str, Any]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def _call(event_id: str, unit_id: str, input_tokens: int, output_tokens: int, **extra: Any) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "ts": "2025-09-10T10:00:00Z",
        "provider": "self-hosted",
        "model": "acme",
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "unit": "ticket",
        "unit_id": unit_id,
        **extra,
    }


def _judgements(ledger: Any) -> dict[str, tuple[bool, str]]:
    rows = ledger.sql("SELECT unit, key, success, ts FROM outcomes").to_dict("records")
    return {f"{r['unit']} {r['key']}": (r["success"], r["ts"].isoformat()) for r in rows}


def test_importing_an_older_file_again_does_not_undo_a_later_judgement(ledger, tmp_path: Path) -> None:
    """A ticket re-judged as solved on 09-12, then last week's file replayed: the 09-10 failure
    overwrote the later verdict, and the cost per success changed with it."""
    ledger.record_outcome(unit="ticket", unit_id="T-1", success=True, ts="2025-09-12T09:00:00Z")
    old_file = _jsonl(
        tmp_path / "week-36.jsonl",
        {"unit": "ticket", "unit_id": "T-1", "success": False, "ts": "2025-09-10T09:00:00Z"},
        {"unit": "ticket", "unit_id": "T-2", "success": True, "ts": "2025-09-10T09:00:00Z"},
    )
    summary = ledger.import_outcomes(old_file)
    assert (summary.recorded, summary.rejected, summary.superseded) == (1, 0, 1)
    assert _judgements(ledger)["ticket T-1"] == (True, "2025-09-12T09:00:00+00:00")
    # A later judgement still replaces the one recorded.
    ledger.record_outcome(unit="ticket", unit_id="T-1", success=False, ts="2025-09-13T09:00:00Z")
    assert _judgements(ledger)["ticket T-1"][0] is False


def test_in_a_file_the_later_judged_row_wins_whatever_its_line(ledger, tmp_path: Path) -> None:
    path = _jsonl(
        tmp_path / "unsorted.jsonl",
        {"unit": "ticket", "unit_id": "T-1", "success": True, "ts": "2025-09-12T09:00:00Z"},
        {"unit": "ticket", "unit_id": "T-1", "success": False, "ts": "2025-09-10T09:00:00Z"},
    )
    summary = ledger.import_outcomes(path)
    assert (summary.recorded, summary.superseded) == (1, 1)
    assert _judgements(ledger)["ticket T-1"] == (True, "2025-09-12T09:00:00+00:00")


def test_judged_at_is_compared_across_time_zones(ledger, tmp_path: Path) -> None:
    """10:00 in Paris (08:00 UTC) is before 09:00 UTC: the Paris judgement is the older one."""
    assert ledger.record_outcome(unit="ticket", unit_id="T-1", success=True, ts="2025-09-11T09:00:00Z")
    assert not ledger.record_outcome(
        unit="ticket", unit_id="T-1", success=False, ts="2025-09-11T10:00:00+02:00"
    )
    path = _jsonl(
        tmp_path / "paris.jsonl",
        {"unit": "ticket", "unit_id": "T-1", "success": False, "ts": "2025-09-11T10:00:00+02:00"},
    )
    assert ledger.import_outcomes(path).superseded == 1
    assert _judgements(ledger)["ticket T-1"] == (True, "2025-09-11T09:00:00+00:00")
    # A judgement of the same instant, recorded later, is a correction: it wins.
    assert ledger.record_outcome(unit="ticket", unit_id="T-1", success=False, ts="2025-09-11T11:00:00+02:00")
    assert _judgements(ledger)["ticket T-1"][0] is False


def test_the_same_file_imported_twice_changes_nothing(ledger, tmp_path: Path) -> None:
    path = _jsonl(
        tmp_path / "o.jsonl",
        {"unit": "ticket", "unit_id": "T-1", "success": True, "ts": "2025-09-11T09:00:00Z"},
        {"trace_id": "tr-1", "score": 0.5, "ts": "2025-09-11T09:00:00Z"},
    )
    first = ledger.import_outcomes(path)
    before = _judgements(ledger)
    again = ledger.import_outcomes(path)
    assert (first.recorded, again.recorded, again.superseded) == (2, 2, 0)
    assert _judgements(ledger) == before
    assert ledger.sql("SELECT count(*) AS n FROM outcomes")["n"][0] == 2


def test_judgements_of_units_with_no_call_are_kept_and_named(ledger, tmp_path: Path) -> None:
    """A misspelt unit kind (`tickets`) was recorded without a word and counted in no report."""
    ledger.ingest_records([_call("e1", "T-1", 1000, 500), {**_call("e2", "T-2", 10, 5), "trace_id": "tr-2"}])
    path = _jsonl(
        tmp_path / "o.jsonl",
        {"unit": "ticket", "unit_id": "T-1", "success": True},
        {"unit": "tickets", "unit_id": "T-2", "success": True},
        {"trace_id": "tr-2", "success": True},
        {"trace_id": "tr-9", "success": True},
        {"event_id": "e1", "score": 0.9},
        {"event_id": "e404", "score": 0.1},
    )
    summary = ledger.import_outcomes(path)
    assert summary.recorded == 6
    assert summary.unmatched == 3
    assert summary.unmatched_keys == ["event e404", "trace tr-9", "tickets T-2"]
    # They are kept: the calls may come later, and then count.
    ledger.ingest_records([{**_call("e3", "T-2", 10, 5), "unit": "tickets"}])
    assert ledger.import_outcomes(path).unmatched == 2


def test_the_cli_says_what_was_superseded_and_what_matches_no_call(tmp_path: Path) -> None:
    ledger_path = tmp_path / "l.duckdb"
    runner = CliRunner()
    ledger_file = _jsonl(tmp_path / "calls.jsonl", _call("e1", "T-1", 1000, 500))
    assert runner.invoke(app, ["ingest", str(ledger_file), "--ledger", str(ledger_path)]).exit_code == 0
    path = _jsonl(
        tmp_path / "o.jsonl",
        {"unit": "ticket", "unit_id": "T-1", "success": False, "ts": "2025-09-10T09:00:00Z"},
        {"unit": "ticket", "unit_id": "T-1", "success": True, "ts": "2025-09-11T09:00:00Z"},
        {"unit": "tickets", "unit_id": "T-1", "success": True},
    )
    result = runner.invoke(app, ["outcomes", str(path), "--ledger", str(ledger_path)])
    assert result.exit_code == 0, result.output
    assert "2 outcomes recorded, 0 rejected, 1 superseded" in result.output
    assert "1 of them matches no call in the ledger yet (tickets T-1)" in result.output


def test_cost_per_unit_and_per_success_by_hand(tmp_path: Path) -> None:
    """Several calls per ticket, a failed attempt and its retry, judgements recorded before
    their calls and one for a ticket with no call: worked out by hand with Decimal."""
    from unitcost.api import Ledger
    from unitcost.config import Config

    prices = tmp_path / "prices.toml"
    prices.write_text(PRICES)
    with Ledger(tmp_path / "l.duckdb", prices=prices, config=Config()) as ledger:
        # The judgements come first: the calls are not in yet.
        outcomes = _jsonl(
            tmp_path / "o.jsonl",
            {"unit": "ticket", "unit_id": "T-1", "success": True, "ts": "2025-09-11T10:00:00+02:00"},
            {"unit": "ticket", "unit_id": "T-2", "success": False, "ts": "2025-09-11T08:00:00Z"},
            {"unit": "ticket", "unit_id": "T-4", "success": True, "ts": "2025-09-11T08:00:00Z"},
        )
        assert ledger.import_outcomes(outcomes).unmatched == 3
        ledger.ingest_records(
            [
                _call("a1", "T-1", 1000, 500, status="error"),
                _call("a2", "T-1", 1000, 500, retry_of="a1", attempt=2),
                _call("a3", "T-1", 3000, 1000),
                _call("b1", "T-2", 500, 250),
                _call("c1", "T-3", 2000, 0),
            ]
        )
        headline = ledger.report_sections("2025-09-01", "2025-10-01").headline

    def cost(input_tokens: int, output_tokens: int) -> Decimal:
        return (
            Decimal(input_tokens) * Decimal("1.00") / 10**6 + Decimal(output_tokens) * Decimal("2.00") / 10**6
        )

    t1 = cost(1000, 500) * 2 + cost(3000, 1000)  # every attempt of the ticket, the failed one too
    t2, t3 = cost(500, 250), cost(2000, 0)
    assert headline["spend"] == t1 + t2 + t3 == Decimal("0.012")
    assert headline["units"] == 3
    assert headline["cost_per_unit"] == Decimal("0.004")
    # Judged: T-1 (solved) and T-2 (not); T-3 is unjudged, T-4 has no call.
    assert (headline["judged"], headline["successes"]) == (2, 1)
    assert headline["cost_per_success"] == (t1 + t2) / 1 == Decimal("0.010")
    assert headline["retry_cost"] == cost(1000, 500)


def test_a_verdict_in_the_score_field_is_rejected_and_the_rest_kept(ledger, tmp_path: Path) -> None:
    """`"score": true` was stored as a score of 1.0: a perfect score nobody gave."""
    path = _jsonl(
        tmp_path / "o.jsonl",
        {"unit": "ticket", "unit_id": "T-1", "score": True},
        {"unit": "ticket", "unit_id": "T-2", "score": 0.25},
    )
    summary = ledger.import_outcomes(path)
    assert (summary.recorded, summary.rejected) == (1, 1)
    (rejection,) = summary.rejections
    assert (rejection.record, rejection.field) == (1, "score")
    assert "true/false goes in success" in rejection.reason


def test_a_csv_rejection_names_the_line_after_a_multiline_feedback(ledger, tmp_path: Path) -> None:
    """Feedback written over several lines (quoted, as spreadsheets export it) shifted every
    later line number: the bad row was reported on line 3 where it is on line 5."""
    path = tmp_path / "o.csv"
    path.write_text(
        'unit,unit_id,success,feedback\nticket,T-1,true,"Solved.\nCustomer happy.\nClosed."\nticket,T-2,maybe,\n'
    )
    summary = ledger.import_outcomes(path)
    assert (summary.recorded, summary.rejected) == (1, 1)
    (rejection,) = summary.rejections
    assert (rejection.record, rejection.field) == (5, "success")
