"""A ledger written by a later unitcost is refused with one line that says what to do
(upgrade unitcost), never a traceback or advice to migrate it."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest
from typer.testing import CliRunner

from unitcost.cli import app
from unitcost.ledger.base import LedgerVersionError
from unitcost.ledger.duckdb_store import DuckDBStore
from unitcost.ledger.version import SCHEMA_VERSION


def _ledger_at(tmp_path: Path, version: int) -> Path:
    path = tmp_path / "costs.duckdb"
    DuckDBStore(path).close()
    con = duckdb.connect(str(path))
    con.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", [str(version)])
    con.close()
    return path


@pytest.mark.parametrize("command", [["report"], ["ingest", "-"], ["alerts"]])
def test_a_ledger_from_a_later_unitcost_is_refused_in_one_line(tmp_path: Path, command: list[str]) -> None:
    path = _ledger_at(tmp_path, SCHEMA_VERSION + 1)
    result = CliRunner().invoke(app, [*command, "--ledger", str(path)], input="")
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert (
        f"schema version {SCHEMA_VERSION + 1}, newer than this unitcost reads ({SCHEMA_VERSION})"
        in result.output
    )
    assert "upgrade unitcost" in result.output


def test_reading_a_newer_ledger_read_only_says_upgrade_not_migrate(tmp_path: Path) -> None:
    path = _ledger_at(tmp_path, SCHEMA_VERSION + 1)
    with pytest.raises(LedgerVersionError, match="upgrade unitcost") as caught:
        DuckDBStore(path, read_only=True)
    assert "migrate" not in str(caught.value)
