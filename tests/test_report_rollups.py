"""Reports read hourly rollups of the DuckDB ledger, and say exactly what reading the events says.

Every test compares the report from the rollups with the report computed from the events
alone (`use_rollups=False`): every KPI of every section, to the last digit, through appends,
duplicates, reprices, events written behind the ledger's back and older ledgers.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest

from unitcost.analytics.latency import RELATIVE_ERROR
from unitcost.analytics.report import Report, ReportQuery, run_report
from unitcost.analytics.window import Window
from unitcost.api import Ledger
from unitcost.config import Config
from unitcost.demo.generator import generate
from unitcost.ledger import report_rollups
from unitcost.ledger.duckdb_store import DuckDBStore
from unitcost.pricing.book import PriceBook

SEPTEMBER = {"since": "2025-09-01", "until": "2025-10-01"}

EXTRA_EVENTS = [
    # A model no price layer knows: NULL cost with a reason, in its own rollup rows.
    {"event_id": "x-unpriced-1", "ts": "2025-09-10T10:00:00Z", "provider": "acme", "model": "acme-9000",
     "input_tokens": 1200, "output_tokens": 300, "team": "lab", "latency_ms": 0, "unit": "ticket",
     "unit_id": "T-1"},
    {"event_id": "x-unpriced-2", "ts": "2025-09-11T10:59:59.999999Z", "provider": "acme", "model": "acme-9000",
     "input_tokens": 800, "output_tokens": 100, "team": "lab", "status": "error", "attempt": 2},
    # A bill reported by the provider, cache writes of each duration, a served model.
    {"event_id": "x-billed-1", "ts": "2025-09-12T08:30:00Z", "provider": "anthropic",
     "model": "claude-sonnet-4-5", "served_model": "claude-sonnet-4-5-20250929", "input_tokens": 50_000,
     "cache_write_1h_tokens": 20_000, "cache_write_5m_tokens": 10_000, "cache_read_tokens": 5_000,
     "output_tokens": 2_000, "billed_cost": "0.15", "team": "lab", "unit": "ticket", "unit_id": "T-1"},
    # A response from unitcost's own cache: cost 0, with what it avoided.
    {"event_id": "x-cached-1", "ts": "2025-09-12T08:31:00Z", "provider": "openai", "model": "gpt-4o",
     "input_tokens": 5_000, "output_tokens": 100, "cache_hit": True, "team": "lab", "latency_ms": 3.5},
]  # fmt: skip

VIEWS: list[dict[str, Any]] = [
    {},
    {"by": "model"},
    {"by": "team,model"},
    {"by": "provider,priced_model,status"},
    {"by": "served_model,service_tier,operation"},
    {"by": "app,environment,source"},
    {"by": "feature", "period": "day"},
    {"by": "team", "period": "week", "where": ["provider!=openai"]},
    {"period": "month", "where": ["team=support,search"]},
    {"by": "model", "period": "hour", "since": "2025-09-12", "until": "2025-09-13"},
    {"by": "unit", "top": 3},
    # Windows that do not start or end on the hour: their edges are read from the events.
    {"by": "feature", "since": "2025-09-03T10:30:00Z", "until": "2025-09-20T05:15:00.5Z"},
    {"by": "team", "since": "2025-09-10T10:15:00Z", "until": "2025-09-10T10:45:00Z"},
    {"by": "team", "since": "2025-09-10T09:59:00Z", "until": "2025-09-10T11:01:00Z"},
    {"since": "2024-01-01", "until": "2024-02-01"},  # an empty window
]
NOT_ROLLED = [{"by": "customer"}, {"by": "tag:region"}, {"by": "model", "where": ["user=u-7"]}]


@pytest.fixture(scope="module")
def demo_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("demo")
    month = generate(seed=5, scale=0.01)
    events, outcomes = folder / "events.jsonl", folder / "outcomes.csv"
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.register("events", month.events)
    con.register("outcomes", month.outcomes)
    con.execute(f"COPY events TO '{events}' (FORMAT JSON)")
    con.execute(f"COPY outcomes TO '{outcomes}' (FORMAT CSV, HEADER)")
    con.close()
    with events.open("a", encoding="utf-8") as handle:
        for record in EXTRA_EVENTS:
            handle.write(json.dumps(record) + "\n")
    return events, outcomes


def open_ledger(path: Path, book: PriceBook, **kw: Any) -> Ledger:
    return Ledger(path, book=book, config=Config(), **kw)


@pytest.fixture
def filled(tmp_path: Path, demo_files: tuple[Path, Path], book: PriceBook) -> Iterator[Ledger]:
    events, outcomes = demo_files
    with open_ledger(tmp_path / "ledger.duckdb", book) as ledger:
        assert ledger.ingest(events).rejected == 0
        assert ledger.import_outcomes(outcomes).recorded > 100
        yield ledger


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory, demo_files: tuple[Path, Path]) -> Iterator[Ledger]:
    events, outcomes = demo_files
    with open_ledger(tmp_path_factory.mktemp("shared") / "ledger.duckdb", PriceBook()) as ledger:
        ledger.ingest(events)
        ledger.import_outcomes(outcomes)
        yield ledger


def query(**args: Any) -> ReportQuery:
    args = {**SEPTEMBER, **args}
    by = [b for b in args.get("by", "").split(",") if b]
    return ReportQuery(
        Window.parse(args["since"], args["until"]),
        by,
        args.get("period"),
        args.get("where", []),
        args.get("top"),
    )


def assert_same(ledger: Ledger, *, rolled: bool = True, **args: Any) -> Report:
    """The report from the rollups (when `rolled`) equals the one from the events, section by section."""
    q = query(**args)
    fast, slow = run_report(ledger.store, q), run_report(ledger.store, q, use_rollups=False)
    assert fast.from_rollups is rolled and not slow.from_rollups
    for section in ("headline", "rows", "periods", "units", "unpriced"):
        assert getattr(fast, section) == getattr(slow, section), f"{section} differs for {args}"
    assert fast.table().equals(slow.table())
    return fast


def watermark(ledger: Ledger) -> int | None:
    with ledger.store.snapshot() as fetch:
        return report_rollups.watermark(fetch)


def events_in(ledger: Ledger) -> int:
    return ledger.count()


@pytest.mark.parametrize("args", VIEWS, ids=lambda a: ",".join(f"{k}={v}" for k, v in a.items()) or "default")
def test_every_kpi_from_the_rollups_is_the_one_from_the_events(shared: Ledger, args: dict[str, Any]) -> None:
    assert watermark(shared) == events_in(shared)  # all rolled up: the report reads no event
    assert_same(shared, **args)


def test_the_comparison_has_something_to_compare(shared: Ledger) -> None:
    report = assert_same(shared, by="team")
    head = report.headline
    assert head["calls"] == events_in(shared) and head["unpriced_calls"] > 2
    assert head["units"] and head["successes"] and head["retry_cost"] and head["failed_cost"]
    assert head["billed_calls"] == 1 and head["response_cache_hits"] == 1 and head["avoided_cost"]
    assert head["latency_p50_ms"] and head["cache_savings"]
    assert ("acme-9000", 2) in [(r["model"], r["calls"]) for r in report.unpriced]
    assert len(report.periods) == 30 and len(report.units) >= 3


@pytest.mark.parametrize("args", NOT_ROLLED, ids=lambda a: ",".join(f"{k}={v}" for k, v in a.items()))
def test_views_on_dimensions_the_rollups_do_not_keep_read_the_events(
    shared: Ledger, args: dict[str, Any]
) -> None:
    assert_same(shared, rolled=False, **args)


def test_judgements_per_trace_are_joined_on_the_events_and_the_rest_still_rolled(filled: Ledger) -> None:
    trace = filled.sql("SELECT trace_id FROM events WHERE trace_id IS NOT NULL LIMIT 1")["trace_id"][0]
    filled.record_outcome(trace_id=trace, success=True)
    assert_same(filled, by="unit")
    assert_same(filled, by="team,feature")


def test_appends_are_reported_before_they_are_rolled_up_and_after(filled: Ledger) -> None:
    before = watermark(filled)
    assert before == events_in(filled)
    summary = filled.ingest_records(
        [
            # the same hour and group as rolled-up events, a new group, and a duplicate
            {"event_id": "late-1", "ts": "2025-09-10T10:20:00Z", "provider": "openai", "model": "gpt-4o",
             "input_tokens": 1000, "output_tokens": 10, "team": "lab", "latency_ms": 950, "unit": "ticket",
             "unit_id": "T-1"},
            {"event_id": "late-2", "ts": "2025-09-21T03:00:00Z", "provider": "openai", "model": "gpt-4o-mini",
             "input_tokens": 10, "team": "new-team", "feature": "new", "latency_ms": 12.5},
            {"event_id": "x-billed-1", "ts": "2025-09-12T08:30:00Z", "model": "gpt-4o"},
        ]
    )  # fmt: skip
    assert (summary.accepted, summary.duplicates) == (2, 1)
    assert watermark(filled) == before  # a few events wait for the next refresh
    for args in ({"by": "team"}, {"by": "unit"}, {"by": "model", "period": "day"}):
        assert_same(filled, **args)
    assert filled.store.refresh_rollups() == 2
    assert watermark(filled) == events_in(filled)
    for args in ({"by": "team"}, {"by": "unit"}, {"by": "model", "period": "day"}):
        assert_same(filled, **args)


def test_reingesting_a_file_changes_nothing(filled: Ledger, demo_files: tuple[Path, Path]) -> None:
    before = run_report(filled.store, query(by="team,model"))
    assert filled.ingest(demo_files[0]).accepted == 0
    after = assert_same(filled, by="team,model")
    assert after.rows == before.rows and after.headline == before.headline


def test_a_reprice_rebuilds_the_hours_it_changes(filled: Ledger, tmp_path: Path) -> None:
    overrides = tmp_path / "prices.toml"
    overrides.write_text('[[discount]]\nprovider = "openai"\npercent = 15\nfrom = 2025-09-10\n')
    before = run_report(filled.store, query()).headline["spend"]
    result = filled.reprice("2025-09-08", "2025-09-14T12:00:00Z", book=PriceBook.load(overrides))
    assert result.events_changed > 0
    report = assert_same(filled, by="provider,model", period="day")
    assert report.headline["spend"] == before - (result.old_total - result.new_total)
    assert_same(filled, by="team")


def test_a_failed_transaction_leaves_the_rollups_as_they_were(filled: Ledger) -> None:
    store = filled.store
    before = run_report(store, query(by="model"))
    one = store.fetch("SELECT event_id, cost * 2 AS cost FROM events WHERE cost > 0 LIMIT 1")
    with pytest.raises(RuntimeError), store.transaction():
        assert store.update_costs(one) == 1
        raise RuntimeError("the caller failed half way")
    after = assert_same(filled, by="model")
    assert after.rows == before.rows


def test_a_read_only_ledger_reports_events_written_behind_its_back(
    tmp_path: Path, demo_files: tuple[Path, Path], book: PriceBook
) -> None:
    path = tmp_path / "ledger.duckdb"
    with open_ledger(path, book) as ledger:
        ledger.ingest(demo_files[0])
        rolled = watermark(ledger)
    con = duckdb.connect(str(path))
    con.execute(
        "INSERT INTO events SELECT * REPLACE (event_id || '-copy' AS event_id, ts + INTERVAL 90 MINUTE AS ts) "
        "FROM events WHERE team = 'support' LIMIT 700"
    )
    con.close()
    with open_ledger(path, book, read_only=True) as ledger:
        assert watermark(ledger) == rolled and events_in(ledger) == rolled + 700
        report = assert_same(ledger, by="team")
        assert report.headline["calls"] == rolled + 700
        assert_same(ledger, by="feature", period="day", since="2025-09-02T12:34:00Z")
    with open_ledger(path, book) as ledger:  # the next writer rolls them up
        assert watermark(ledger) == rolled + 700
        assert_same(ledger, by="team")


def test_events_deleted_by_hand_switch_the_rollups_off_until_they_are_rebuilt(
    tmp_path: Path, demo_files: tuple[Path, Path], book: PriceBook
) -> None:
    path = tmp_path / "ledger.duckdb"
    with open_ledger(path, book) as ledger:
        ledger.ingest(demo_files[0])
    con = duckdb.connect(str(path))
    con.execute("DELETE FROM events WHERE team = 'lab'")
    con.close()
    with open_ledger(path, book, read_only=True) as ledger:
        assert watermark(ledger) is None
        assert_same(ledger, rolled=False, by="team")
    with open_ledger(path, book) as ledger:
        assert watermark(ledger) == events_in(ledger)
        assert_same(ledger, by="team")


def test_rollups_can_be_rebuilt_from_every_event(filled: Ledger) -> None:
    store = filled.store
    assert isinstance(store, DuckDBStore)
    before = run_report(store, query(by="team,model", period="day"))
    store.fetch("DELETE FROM report_units")  # damaged by hand
    assert store.rebuild_rollups() == events_in(filled)
    after = assert_same(filled, by="team,model", period="day")
    assert after.rows == before.rows and after.units == before.units


def test_an_older_ledger_gets_its_rollups_when_it_is_migrated(
    tmp_path: Path, demo_files: tuple[Path, Path], book: PriceBook
) -> None:
    path = tmp_path / "ledger.duckdb"
    with open_ledger(path, book) as ledger:
        ledger.ingest(demo_files[0])
    con = duckdb.connect(str(path))  # what a ledger of schema version 4 looks like
    for table in report_rollups.TABLES:
        con.execute(f"DROP TABLE {table}")
    con.execute("DELETE FROM meta WHERE key LIKE 'report_rollup%'")
    con.execute("UPDATE meta SET value = '4' WHERE key = 'schema_version'")
    con.close()
    with open_ledger(path, book, read_only=True) as ledger:
        assert watermark(ledger) == events_in(ledger)
        assert_same(ledger, by="team,model")


def test_rollups_of_another_format_are_read_around_then_rebuilt(
    tmp_path: Path, demo_files: tuple[Path, Path], book: PriceBook
) -> None:
    path = tmp_path / "ledger.duckdb"
    with open_ledger(path, book) as ledger:
        ledger.ingest(demo_files[0])
    con = duckdb.connect(str(path))
    con.execute("UPDATE meta SET value = 'old' WHERE key = 'report_rollup_version'")
    con.close()
    with open_ledger(path, book, read_only=True) as ledger:
        assert watermark(ledger) is None
        assert_same(ledger, rolled=False, by="model")
    with open_ledger(path, book) as ledger:
        assert watermark(ledger) == events_in(ledger)
        assert_same(ledger, by="model")


def rows_and_groups(ledger: Ledger) -> dict[str, tuple[int, int]]:
    counts = {}
    for table, (keys, _) in report_rollups.MERGE.items():
        row = ledger.store.fetch(
            f"SELECT count(*) AS n, (SELECT count(*) FROM (SELECT DISTINCT {keys} FROM {table})) AS g FROM {table}"
        ).to_pylist()[0]
        counts[table] = (row["n"], row["g"])
    return counts


def test_partial_rows_are_merged_and_still_add_up(
    tmp_path: Path, demo_files: tuple[Path, Path], book: PriceBook, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(report_rollups, "REFRESH_ROWS", 500)
    monkeypatch.setattr(report_rollups, "COMPACT_FLOOR", 0)
    lines = demo_files[0].read_text().splitlines()
    with open_ledger(tmp_path / "ledger.duckdb", book) as ledger:
        # Every 7th line: each batch covers the whole month, so every refresh adds partial rows
        # to hours that have rows already.
        for i in range(7):
            ledger.ingest_records([json.loads(line) for line in lines[i::7]], source="test")
        for table, (rows, groups) in rows_and_groups(ledger).items():
            assert groups < rows <= 2 * groups, table  # partial rows, merged once they doubled
        assert_same(ledger, by="team,model", period="day")
        ledger.store.refresh_rollups()  # what the end of an ingested file, or closing, does
        for table, (rows, groups) in rows_and_groups(ledger).items():
            assert rows == groups, table
        assert watermark(ledger) == events_in(ledger) == len(lines)
        assert_same(ledger, by="team,model", period="day")
        assert_same(ledger, by="unit")


def test_an_ingested_file_is_rolled_up_in_one_pass(
    tmp_path: Path, demo_files: tuple[Path, Path], book: PriceBook, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(report_rollups, "REFRESH_ROWS", 100)
    passes: list[int] = []
    real = report_rollups.refresh

    def counted(execute: Any, fetch: Any) -> tuple[int, list[Any]]:
        rolled, shared = real(execute, fetch)
        passes.append(rolled)
        return rolled, shared

    monkeypatch.setattr(report_rollups, "refresh", counted)
    with open_ledger(tmp_path / "ledger.duckdb", book) as ledger:
        ledger.ingestor().append_rows = 300  # twenty appends, each past REFRESH_ROWS
        passes.clear()
        ledger.ingest(demo_files[0])
        assert [n for n in passes if n] == [events_in(ledger)]
        assert all(rows == groups for rows, groups in rows_and_groups(ledger).values())
        assert_same(ledger, by="feature", period="day")


def test_a_hash_shared_by_two_combinations_switches_the_rollups_off(
    tmp_path: Path, demo_files: tuple[Path, Path], book: PriceBook, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(report_rollups, "DIM_HASH", "CAST(42 AS UBIGINT)")
    with open_ledger(tmp_path / "ledger.duckdb", book) as ledger:
        ledger.ingest(demo_files[0])
        assert watermark(ledger) is None
        assert_same(ledger, rolled=False, by="team")


def test_percentiles_are_within_the_documented_error_of_the_exact_ones(shared: Ledger) -> None:
    exact = shared.sql(
        "SELECT model, quantile_cont(latency_ms, 0.5) AS p50, quantile_cont(latency_ms, 0.95) AS p95 "
        "FROM events WHERE ts >= '2025-09-01' AND ts < '2025-10-01' GROUP BY model"
    ).to_dict("records")
    rows = {r["model"]: r for r in run_report(shared.store, query(by="model")).rows}
    assert len(exact) >= 5
    for row in exact:
        got = rows[row["model"]]
        assert got["latency_p50_ms"] == pytest.approx(row["p50"], rel=RELATIVE_ERROR, abs=1e-6)
        assert got["latency_p95_ms"] == pytest.approx(row["p95"], rel=RELATIVE_ERROR, abs=1e-6)
