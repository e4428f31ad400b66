"""A reprice as finance runs it after a negotiated discount: batch after batch, all or nothing,
and an audit that says which version of the discount file produced the new totals.

Before, a reprice kept every changed row (new costs and audit rows) in memory until the end;
its audit named the overrides file by path only, so an edited file could not be told from the
one that was used; a ClickHouse reprice interrupted half-way left updated costs with no audit
row at all; events that gained and lost a price netted out in the counts; and `--since` in the
future blamed an `--until` the user never gave."""

from __future__ import annotations

import gc
import hashlib
import json
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pytest

from unitcost.api import Ledger
from unitcost.config import Config
from unitcost.ledger.duckdb_store import DuckDBStore
from unitcost.ledger.schema import REPRICE_EVENT_SCHEMA, SCHEMA_VERSION
from unitcost.pricing.book import PriceBook

UNITCOST = str(Path(sys.executable).parent / "unitcost")

EVENTS = [
    {"event_id": f"oa-{i}", "ts": f"2025-09-{10 + i:02d}T10:00:00Z", "provider": "openai", "model": "gpt-4o",
     "input_tokens": 1000 + i, "output_tokens": 100, "team": "search"}
    for i in range(6)
] + [
    {"event_id": "acme-1", "ts": "2025-09-12T11:00:00Z", "provider": "acme", "model": "acme-9000",
     "input_tokens": 100, "output_tokens": 10, "team": "lab"},
    {"event_id": "acme-2", "ts": "2025-09-13T11:00:00Z", "provider": "acme", "model": "acme-2000",
     "input_tokens": 100, "output_tokens": 10, "team": "lab"},
]  # fmt: skip

DISCOUNT = '[[discount]]\nprovider = "openai"\npercent = 10\nfrom = 2025-09-01\nnote = "MSA 2025"\n'
ACME = (
    '[[price]]\nprovider = "acme"\nmodel = "acme-9000"\nfrom = 2025-01-01\nsource = "acme rate card"\n'
    'input_mtok = "1.00"\noutput_mtok = "2.00"\n'
)
SEPTEMBER = ("2025-09-01", "2025-10-01")


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([UNITCOST, *args], capture_output=True, text=True, timeout=300, check=False)


def _reprice_cli(ledger: Path, prices: Path, *more: str) -> dict[str, Any]:
    done = _cli(
        "reprice", "--since", SEPTEMBER[0], "--until", SEPTEMBER[1], "--ledger", str(ledger),
        "--prices", str(prices), "--format", "json", *more,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    out: dict[str, Any] = json.loads(done.stdout)
    return out


@pytest.fixture
def ledger_path(tmp_path: Path) -> Path:
    path = tmp_path / "costs.duckdb"
    with Ledger(path, config=Config()) as ledger:
        ledger.ingest_records(EVENTS)
    return path


def _costs(target: str | Path) -> dict[str, Decimal | None]:
    with Ledger(target, config=Config(), read_only=True) as ledger:
        rows = ledger.sql("SELECT event_id, cost FROM events").to_dict("records")
    return {r["event_id"]: r["cost"] for r in rows}


def _in_small_batches(ledger: Ledger, size: int = 2) -> list[str]:
    """Make the ledger's scans yield `size` rows at a time; returns a log of scans and updates."""
    log: list[str] = []
    scan, update = ledger.store.scan, ledger.store.update_costs

    def logged_scan(sql: str, params: Any = None, batch_size: int = 0) -> Iterator[pa.RecordBatch]:
        for batch in scan(sql, params, batch_size=size):
            log.append("read")
            yield batch
        log.append("scan done")

    def logged_update(table: pa.Table) -> int:
        log.append(f"update {table.num_rows}")
        return update(table)

    ledger.store.scan = logged_scan  # type: ignore[method-assign]
    ledger.store.update_costs = logged_update  # type: ignore[method-assign]
    return log


# ------------------------------------------------------------------ bounded batches


def test_a_reprice_writes_each_batch_before_reading_the_next(tmp_path: Path, ledger_path: Path) -> None:
    """Memory holds one batch: before, every update waited for the end of the scan."""
    prices = tmp_path / "prices.toml"
    prices.write_text(DISCOUNT)
    before = _costs(ledger_path)
    with Ledger(ledger_path, config=Config(), prices=prices) as ledger:
        log = _in_small_batches(ledger)
        result = ledger.reprice(*SEPTEMBER)
        run = ledger.sql("SELECT events_changed, old_total, new_total FROM reprice_runs").to_dict("records")
        audited = ledger.sql("SELECT sum(new_cost - old_cost) AS d, count(*) AS n FROM reprice_events")
    assert log.index("update 2") < log.index("scan done")
    assert max(int(e.split()[1]) for e in log if e.startswith("update")) <= 2
    # The totals over batches are exact, and the events' changes add up to the run's.
    assert result.events_changed == 6
    expected_old = sum(v for v in before.values() if v is not None)
    assert run == [{"events_changed": 6, "old_total": expected_old, "new_total": result.new_total}]
    assert audited["n"][0] == 6
    assert audited["d"][0] == result.new_total - result.old_total


def _fail_the_second_update(ledger: Ledger, message: str) -> Callable[[pa.Table], int]:
    """The store's second batch update raises `message`, as a disk or a connection would; returns
    the store's own update, to put back."""
    update = ledger.store.update_costs
    calls = 0

    def failing_second_update(table: pa.Table) -> int:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise RuntimeError(message)
        return update(table)

    ledger.store.update_costs = failing_second_update  # type: ignore[method-assign]
    return update


def test_a_reprice_that_fails_half_way_leaves_the_duckdb_ledger_and_audit_untouched(
    tmp_path: Path, ledger_path: Path
) -> None:
    prices = tmp_path / "prices.toml"
    prices.write_text(DISCOUNT)
    before = _costs(ledger_path)
    with Ledger(ledger_path, config=Config(), prices=prices) as ledger:
        log = _in_small_batches(ledger)
        _fail_the_second_update(ledger, "disk full")
        with pytest.raises(RuntimeError, match="disk full"):
            ledger.reprice(*SEPTEMBER)
        assert "update 2" in log  # the first batch was written, inside the transaction
        counts = ledger.sql(
            "SELECT (SELECT count(*) FROM reprice_runs) AS runs, (SELECT count(*) FROM reprice_events) AS ev"
        ).to_dict("records")
    assert counts == [{"runs": 0, "ev": 0}]
    assert _costs(ledger_path) == before


def test_an_interrupted_clickhouse_reprice_audits_every_event_it_changed(tmp_path: Path) -> None:
    """ClickHouse has no multi-statement transaction: the updated events must be in the audit,
    and no run row may claim totals for a run that did not finish."""
    prices = tmp_path / "prices.toml"
    prices.write_text(DISCOUNT)
    url = f"chdb://?database=p9_{uuid.uuid4().hex}"
    with Ledger(url, config=Config()) as ledger:
        ledger.ingest_records(EVENTS)
        book = PriceBook.load(prices)
        before = {
            r["event_id"]: r["cost"]
            for r in ledger.sql("SELECT event_id, cost FROM events").to_dict("records")
        }
        _in_small_batches(ledger)
        update = _fail_the_second_update(ledger, "connection reset")
        with pytest.raises(RuntimeError, match="connection reset"):
            ledger.reprice(*SEPTEMBER, book=book)
        after = {
            r["event_id"]: r["cost"]
            for r in ledger.sql("SELECT event_id, cost FROM events").to_dict("records")
        }
        audited = {
            r["event_id"]: (r["old_cost"], r["new_cost"])
            for r in ledger.sql("SELECT event_id, old_cost, new_cost FROM reprice_events").to_dict("records")
        }
        runs = ledger.sql("SELECT count() AS n FROM reprice_runs").to_dict("records")
        changed = {k for k in before if before[k] != after[k]}
        assert changed  # the first batch was updated
        assert {k: audited[k] for k in changed} == {k: (before[k], after[k]) for k in changed}
        assert runs == [{"n": 0}]
        # Run again, it finishes the job and its run row accounts for what was left.
        _in_small_batches(ledger)
        ledger.store.update_costs = update  # type: ignore[method-assign]
        again = ledger.reprice(*SEPTEMBER, book=book)
        assert again.events_changed == 6 - len(changed)


def test_the_duckdb_writes_of_a_transaction_do_not_keep_their_arrow_tables(tmp_path: Path) -> None:
    """`register` inside a transaction kept every batch's Arrow table alive until the commit."""
    store = DuckDBStore(tmp_path / "l.duckdb")
    try:
        rows = 200_000
        with store.transaction():
            gc.collect()
            start = pa.total_allocated_bytes()
            for batch in range(4):
                table = pa.table(
                    {
                        "run_id": pa.array([f"r{batch}"] * rows),
                        "event_id": pa.array([f"e{batch}-{i}" for i in range(rows)]),
                    }
                ).cast(
                    pa.schema([REPRICE_EVENT_SCHEMA.field("run_id"), REPRICE_EVENT_SCHEMA.field("event_id")])
                )
                one = table.nbytes
                store.insert("reprice_events", table)
                del table
                gc.collect()
            kept = pa.total_allocated_bytes() - start
        assert kept < one, f"{kept:,} bytes of Arrow data still held (one batch is {one:,})"
    finally:
        store.close()


# ------------------------------------------------------------------ which file, exactly


def test_the_audit_and_output_carry_the_sha256_of_the_overrides_file_used(
    tmp_path: Path, ledger_path: Path
) -> None:
    prices = tmp_path / "prices.toml"
    prices.write_text(DISCOUNT)
    first = _reprice_cli(ledger_path, prices, "--reason", "MSA v1")
    digest = hashlib.sha256(prices.read_bytes()).hexdigest()
    assert {"layer": "user", "path": str(prices), "sha256": digest} in first["price_files"]

    prices.write_text(DISCOUNT.replace("percent = 10", "percent = 12"))  # same path, new terms
    second = _reprice_cli(ledger_path, prices, "--reason", "MSA v2")
    digest2 = hashlib.sha256(prices.read_bytes()).hexdigest()
    assert (
        digest2 != digest
        and {"layer": "user", "path": str(prices), "sha256": digest2} in second["price_files"]
    )

    with duckdb.connect(str(ledger_path), read_only=True) as con:
        runs = con.execute('SELECT reason, price_files FROM reprice_runs ORDER BY "at"').fetchall()
    assert [r[0] for r in runs] == ["MSA v1", "MSA v2"]
    assert f"user={prices} sha256:{digest}" in runs[0][1]
    assert f"user={prices} sha256:{digest2}" in runs[1][1]

    table = _cli(
        "reprice", "--since", SEPTEMBER[0], "--until", SEPTEMBER[1], "--ledger", str(ledger_path),
        "--prices", str(prices), "--dry-run",
    )  # fmt: skip
    assert table.returncode == 0, table.stderr
    assert f"sha256 {digest2}" in " ".join(table.stdout.split())


def test_a_ledger_of_schema_6_is_migrated_and_keeps_its_runs(tmp_path: Path, ledger_path: Path) -> None:
    with Ledger(ledger_path, config=Config()) as ledger:
        ledger.reprice(*SEPTEMBER, reason="before the upgrade")
    with duckdb.connect(str(ledger_path)) as con:
        for column in ("price_files", "newly_priced", "newly_unpriced"):
            con.execute(f"ALTER TABLE reprice_runs DROP COLUMN {column}")
        con.execute("UPDATE meta SET value = '6' WHERE key = 'schema_version'")
    prices = tmp_path / "prices.toml"
    prices.write_text(ACME)
    with Ledger(ledger_path, config=Config(), prices=prices) as ledger:
        assert ledger.store.schema_version() == SCHEMA_VERSION
        ledger.reprice(*SEPTEMBER, reason="after")
        runs = ledger.sql(
            'SELECT reason, price_files IS NULL AS no_files, newly_priced FROM reprice_runs ORDER BY "at"'
        ).to_dict("records")
    assert runs == [
        {"reason": "before the upgrade", "no_files": True, "newly_priced": None},
        {"reason": "after", "no_files": False, "newly_priced": 1},
    ]


def test_a_clickhouse_ledger_stores_the_hash_too(tmp_path: Path) -> None:
    prices = tmp_path / "prices.toml"
    prices.write_text(DISCOUNT)
    with Ledger(f"chdb://?database=p9_{uuid.uuid4().hex}", config=Config()) as ledger:
        ledger.ingest_records(EVENTS)
        ledger.reprice(*SEPTEMBER, book=PriceBook.load(prices))
        (files,) = ledger.sql("SELECT price_files FROM reprice_runs")["price_files"]
    assert f"user={prices} sha256:{hashlib.sha256(prices.read_bytes()).hexdigest()}" in files


# ------------------------------------------------------------------ edges


def test_since_in_the_future_says_so_without_naming_an_until_never_given(ledger_path: Path) -> None:
    done = _cli("reprice", "--since", "2099-01-01", "--ledger", str(ledger_path))
    assert done.returncode != 0
    said = " ".join((done.stdout + done.stderr).split())
    assert "in the future" in said and "--until" not in said and "Traceback" not in said


def test_a_second_identical_reprice_changes_nothing_and_says_so(tmp_path: Path, ledger_path: Path) -> None:
    prices = tmp_path / "prices.toml"
    prices.write_text(DISCOUNT)
    first = _reprice_cli(ledger_path, prices)
    after_first = _costs(ledger_path)
    second = _reprice_cli(ledger_path, prices)
    assert first["events_changed"] == 6 and second["events_changed"] == 0
    assert second["old_total"] == second["new_total"] == first["new_total"]
    assert _costs(ledger_path) == after_first
    with duckdb.connect(str(ledger_path), read_only=True) as con:
        runs = con.execute('SELECT events_changed FROM reprice_runs ORDER BY "at"').fetchall()
        events = con.execute("SELECT run_id, count(*) FROM reprice_events GROUP BY run_id").fetchall()
    assert runs == [(6,), (0,)]  # the check that found nothing is on record too
    assert events == [(first["run_id"], 6)]


def test_events_that_gain_and_lose_a_price_are_both_counted(tmp_path: Path, ledger_path: Path) -> None:
    """One run prices acme-2000 and drops acme-9000's price (a rate card that replaced a model):
    1 unpriced call before and 1 after, which alone reads as "nothing moved"."""
    first = tmp_path / "acme-9000.toml"
    first.write_text(ACME)
    out = _reprice_cli(ledger_path, first)
    assert (out["newly_priced"], out["newly_unpriced"]) == (1, 0)
    assert (out["old_unpriced"], out["new_unpriced"]) == (2, 1)

    swapped = tmp_path / "acme-2000.toml"
    swapped.write_text(ACME.replace("acme-9000", "acme-2000"))
    out = _reprice_cli(ledger_path, swapped)
    assert (out["old_unpriced"], out["new_unpriced"]) == (1, 1)
    assert (out["newly_priced"], out["newly_unpriced"]) == (1, 1)
    with duckdb.connect(str(ledger_path), read_only=True) as con:
        runs = con.execute('SELECT newly_priced, newly_unpriced FROM reprice_runs ORDER BY "at"').fetchall()
    assert runs == [(1, 0), (1, 1)]
    done = _cli(
        "reprice", "--since", SEPTEMBER[0], "--until", SEPTEMBER[1], "--ledger", str(ledger_path),
        "--prices", str(first),
    )  # fmt: skip
    assert "1 newly priced, 1 newly unpriced" in " ".join(done.stdout.split())


BIG = (
    '[[price]]\nprovider = "acme"\nmodel = "acme-9000"\nfrom = 2025-01-01\nsource = "acme rate card"\n'
    'input_mtok = "100000"\noutput_mtok = "0"\n'
)


@pytest.mark.parametrize("engine", ["duckdb", "clickhouse"])
def test_a_reprice_of_more_than_a_million_dollars_is_audited_exactly(tmp_path: Path, engine: str) -> None:
    """One call's cost is a DECIMAL(18, 12), below $1M; a reprice's totals add many calls and
    passed it: the audit tables overflowed and the reprice failed for an organisation's month."""
    calls = [
        {"event_id": f"big-{i}", "ts": f"2025-09-{10 + i:02d}T10:00:00Z", "provider": "acme",
         "model": "acme-9000", "input_tokens": 4_000_000, "output_tokens": 1}
        for i in range(3)
    ]  # fmt: skip
    list_price, negotiated = tmp_path / "list.toml", tmp_path / "negotiated.toml"
    list_price.write_text(BIG)
    negotiated.write_text(BIG + '\n[[discount]]\nprovider = "acme"\npercent = 10\nfrom = 2025-09-01\n')
    url = f"chdb://?database=big_{uuid.uuid4().hex}" if engine == "clickhouse" else str(tmp_path / "l.duckdb")
    with Ledger(url, config=Config(), prices=list_price) as ledger:  # chDB in memory: one session
        ledger.ingest_records(calls)
        result = ledger.reprice(*SEPTEMBER, book=PriceBook.load(negotiated))
        runs = ledger.sql("SELECT old_total, new_total FROM reprice_runs").to_dict("records")
        changes = ledger.sql("SELECT old_total, new_total FROM reprice_changes").to_dict("records")
    assert (result.old_total, result.new_total) == (Decimal("1200000"), Decimal("1080000"))
    for rows in (runs, changes):
        assert [(Decimal(r["old_total"]), Decimal(r["new_total"])) for r in rows] == [
            (Decimal("1200000"), Decimal("1080000"))
        ]


def test_a_ledger_of_schema_7_gets_wide_audit_totals_and_keeps_its_runs(ledger_path: Path) -> None:
    with Ledger(ledger_path, config=Config()) as ledger:
        ledger.reprice(*SEPTEMBER, reason="before the upgrade")
    with duckdb.connect(str(ledger_path)) as con:
        for table in ("reprice_runs", "reprice_changes"):
            for column in ("old_total", "new_total"):
                con.execute(f'ALTER TABLE {table} ALTER COLUMN "{column}" SET DATA TYPE DECIMAL(18, 12)')
        con.execute("UPDATE meta SET value = '7' WHERE key = 'schema_version'")
    with Ledger(ledger_path, config=Config()) as ledger:
        types = ledger.sql(
            "SELECT table_name, column_name, data_type FROM information_schema.columns "
            "WHERE table_name IN ('reprice_runs', 'reprice_changes') AND column_name LIKE '%_total'"
        ).to_dict("records")
        reasons = ledger.sql("SELECT reason FROM reprice_runs").to_dict("records")
    assert {r["data_type"] for r in types} == {"DECIMAL(38,12)"} and len(types) == 4
    assert reasons == [{"reason": "before the upgrade"}]


def test_a_clickhouse_ledger_of_schema_7_gets_wide_audit_totals() -> None:
    with Ledger(f"chdb://?database=w7_{uuid.uuid4().hex}", config=Config()) as ledger:
        store: Any = ledger.store
        for table in ("reprice_runs", "reprice_changes"):
            for column in ("old_total", "new_total"):
                store.client.command(f"ALTER TABLE {table} MODIFY COLUMN {column} Nullable(Decimal(18, 12))")
        store._set_meta("schema_version", "7")
        assert store.schema_version() == 7
        assert store.migrate() == SCHEMA_VERSION
        types = store.fetch(
            "SELECT table, name, type FROM system.columns WHERE database = ? "
            "AND table IN ('reprice_runs', 'reprice_changes') AND name LIKE '%_total'",
            [store.database],
        ).to_pylist()
    assert {t["type"] for t in types} == {"Nullable(Decimal(38, 12))"} and len(types) == 4
