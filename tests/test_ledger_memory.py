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
