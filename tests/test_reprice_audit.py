"""The reprice audit a finance team can sign: who changed stored costs, why, and for each
event its cost and price before and after.

Before, a reprice recorded when it ran, its window, the price layers and totals per model,
but not who ran it nor why, and no event's own old cost: once September's costs were
corrected, nobody could show what a given call had cost on the closed invoice."""

from __future__ import annotations

import json
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest

from unitcost.api import Ledger
from unitcost.config import Config
from unitcost.ledger.schema import SCHEMA_VERSION

UNITCOST = str(Path(sys.executable).parent / "unitcost")

EVENTS = [
    {"event_id": "oa-1", "ts": "2025-09-10T10:00:00Z", "provider": "openai", "model": "gpt-4o",
     "input_tokens": 12000, "cache_read_tokens": 8000, "output_tokens": 900, "team": "search"},
    {"event_id": "oa-2", "ts": "2025-09-11T10:00:00Z", "provider": "openai", "model": "gpt-4o-mini",
     "input_tokens": 3000, "output_tokens": 200, "team": "support"},
    {"event_id": "an-1", "ts": "2025-09-12T10:00:00Z", "provider": "anthropic", "model": "claude-sonnet-4-0",
     "input_tokens": 5000, "output_tokens": 700, "team": "legal"},
    {"event_id": "acme-1", "ts": "2025-09-12T11:00:00Z", "provider": "acme", "model": "acme-9000",
     "input_tokens": 100, "output_tokens": 10, "team": "lab"},
]  # fmt: skip

DISCOUNT = """
[[discount]]
provider = "openai"
percent = 10
from = 2025-09-01
note = "MSA 2025"
"""


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([UNITCOST, *args], capture_output=True, text=True, timeout=300, check=False)


@pytest.fixture
def ledger_path(tmp_path: Path) -> Path:
    path = tmp_path / "costs.duckdb"
    with Ledger(path, config=Config()) as ledger:
        ledger.ingest_records(EVENTS)
    return path


def test_a_reprice_records_who_why_and_each_changed_event(tmp_path: Path, ledger_path: Path) -> None:
    prices = tmp_path / "prices.toml"
    prices.write_text(DISCOUNT)
    with duckdb.connect(str(ledger_path), read_only=True) as con:
        before = dict(con.execute("SELECT event_id, cost FROM events").fetchall())
    done = _cli(
        "reprice", "--since", "2025-09-01", "--until", "2025-10-01", "--ledger", str(ledger_path),
        "--prices", str(prices), "--reason", "MSA 2025: 10 % off OpenAI", "--by", "jane@finance",
        "--format", "json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert (out["reason"], out["actor"], out["events_changed"]) == (
        "MSA 2025: 10 % off OpenAI",
        "jane@finance",
        2,
    )

    with duckdb.connect(str(ledger_path), read_only=True) as con:
        (run,) = con.execute(
            "SELECT run_id, reason, actor, old_total, new_total FROM reprice_runs"
        ).fetchall()
        rows = con.execute(
            "SELECT run_id, event_id, provider, model, old_cost, new_cost, old_price_ref, new_price_ref "
            "FROM reprice_events ORDER BY event_id"
        ).fetchall()
        after = dict(con.execute("SELECT event_id, cost FROM events").fetchall())
    assert run[1:3] == ("MSA 2025: 10 % off OpenAI", "jane@finance")
    # Only the OpenAI calls changed; each appears once, with the cost it had and has.
    assert [r[1] for r in rows] == ["oa-1", "oa-2"]
    for run_id, event_id, provider, _model, old, new, old_ref, new_ref in rows:
        assert run_id == run[0] and provider == "openai"
        assert old == before[event_id] and new == after[event_id]
        assert new == (old * Decimal("0.9")).quantize(Decimal("1e-12"))
        assert "discount" not in old_ref and "discount(openai -10%" in new_ref
    # The events' changes add up to the run's, to the last digit.
    assert sum(r[5] - r[4] for r in rows) == run[4] - run[3]


def test_the_audit_defaults_to_the_system_user_and_a_dry_run_records_nothing(
    tmp_path: Path, ledger_path: Path
) -> None:
    import getpass

    prices = tmp_path / "prices.toml"
    prices.write_text(DISCOUNT)
    dry = _cli(
        "reprice", "--since", "2025-09-01", "--ledger", str(ledger_path), "--prices", str(prices), "--dry-run"
    )
    assert dry.returncode == 0, dry.stderr
    with duckdb.connect(str(ledger_path), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM reprice_events").fetchone() == (0,)
        assert con.execute("SELECT count(*) FROM reprice_runs").fetchone() == (0,)
    done = _cli("reprice", "--since", "2025-09-01", "--ledger", str(ledger_path), "--prices", str(prices))
    assert done.returncode == 0, done.stderr
    assert f"by {getpass.getuser()}" in " ".join(done.stdout.split())
    with duckdb.connect(str(ledger_path), read_only=True) as con:
        assert con.execute("SELECT reason, actor FROM reprice_runs").fetchall() == [(None, getpass.getuser())]


def test_a_ledger_of_the_previous_schema_is_migrated_and_keeps_its_audit(ledger_path: Path) -> None:
    """A ledger written by the previous version (schema 5: no reason, actor or per-event audit)."""
    with Ledger(ledger_path, config=Config()) as ledger:
        ledger.reprice("2025-09-01", "2025-10-01")
    with duckdb.connect(str(ledger_path)) as con:
        con.execute("ALTER TABLE reprice_runs DROP COLUMN reason")
        con.execute("ALTER TABLE reprice_runs DROP COLUMN actor")
        con.execute("DROP TABLE reprice_events")
        con.execute("UPDATE meta SET value = '5' WHERE key = 'schema_version'")
    with Ledger(ledger_path, config=Config()) as ledger:
        assert ledger.store.schema_version() == SCHEMA_VERSION
        result = ledger.reprice("2025-09-01", "2025-10-01", reason="after the upgrade", actor="ops")
        runs = ledger.sql('SELECT reason, actor, events_seen FROM reprice_runs ORDER BY "at"').to_dict(
            "records"
        )
    assert result.events_seen == 4
    assert runs == [
        {"reason": None, "actor": None, "events_seen": 4},
        {"reason": "after the upgrade", "actor": "ops", "events_seen": 4},
    ]


def test_an_event_priced_again_after_being_unpriced_is_traced_too(tmp_path: Path, ledger_path: Path) -> None:
    """An unknown model given a price later: its old cost is NULL with its reason, never $0."""
    prices = tmp_path / "prices.toml"
    prices.write_text(
        '[[price]]\nprovider = "acme"\nmodel = "acme-9000"\nfrom = 2025-01-01\nsource = "acme rate card"\n'
        'input_mtok = "1.00"\noutput_mtok = "2.00"\n'
    )
    with Ledger(ledger_path, config=Config(), prices=prices) as ledger:
        ledger.reprice("2025-09-01", "2025-10-01", reason="acme priced")
        (row,) = ledger.sql(
            "SELECT event_id, old_cost, new_cost, old_unpriced_reason, new_unpriced_reason FROM reprice_events"
        ).to_dict("records")
    assert row["event_id"] == "acme-1"
    assert row["old_cost"] is None and row["old_unpriced_reason"]
    assert row["new_cost"] == Decimal("0.000120") and row["new_unpriced_reason"] is None
