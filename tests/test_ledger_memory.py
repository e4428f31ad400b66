"""The ledger's memory while a file streams in: a smaller buffer pool, then the usual one."""

from __future__ import annotations

from pathlib import Path

from unitcost.ledger.duckdb_store import DuckDBStore


def _limit(store: DuckDBStore) -> str:
    return str(store._con.sql("SELECT current_setting('memory_limit')").fetchall()[0][0])


def test_bulk_appends_run_with_a_smaller_buffer_pool_and_restore_the_default(tmp_path: Path) -> None:
    store = DuckDBStore(tmp_path / "l.duckdb")
    try:
        usual = _limit(store)
        with store.bulk():
            with store.bulk():  # nested blocks keep the bulk limit until the outer one ends
                assert _limit(store) == "512.0 MiB"
            assert _limit(store) == "512.0 MiB"
        assert _limit(store) == usual != "512.0 MiB"
    finally:
        store.close()


def test_a_limit_the_user_chose_is_kept_during_bulk_appends(tmp_path: Path) -> None:
    store = DuckDBStore(tmp_path / "l.duckdb", memory_limit="300MB")
    try:
        chosen = _limit(store)
        with store.bulk():
            assert _limit(store) == chosen
    finally:
        store.close()


def test_a_ledger_another_process_writes_says_what_to_do(tmp_path: Path, monkeypatch) -> None:
    """The message sent users to "that process's HTTP API", which `unitcost watch` has not."""
    import pytest

    from ledger_holder import ledger_held_by_another_process
    from unitcost.ledger import duckdb_store

    path = tmp_path / "busy.duckdb"
    DuckDBStore(path).close()
    with ledger_held_by_another_process(path):
        monkeypatch.setattr(duckdb_store, "_LOCK_WAIT_S", 0.2)
        with pytest.raises(duckdb_store.LedgerBusyError) as info:
            DuckDBStore(path, read_only=True)
    message = str(info.value)
    assert "HTTP API" not in message
    assert "one writer at a time" in message and "stop it" in message
