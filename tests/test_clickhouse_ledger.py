"""The ClickHouse ledger (real engine, in-process through chDB) answers exactly as the DuckDB one.

Every test ingests through the one ingest path into both engines and compares what users
see: every KPI of every report section, ingest summaries, reprice results and audits.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pyarrow as pa
import pytest

pytest.importorskip("chdb", reason="the chdb package (pip install -e '.[dev]') runs ClickHouse in-process")

from unitcost.api import Ledger
from unitcost.config import Config
from unitcost.demo.generator import generate
from unitcost.ledger.clickhouse_schema import aux_ddl, aux_keys, event_columns
from unitcost.ledger.clickhouse_store import ClickHouseStore, bind, redact
from unitcost.ledger.schema import AUX_TABLES, SCHEMA_VERSION
from unitcost.pricing.book import PriceBook

SEPTEMBER = {"since": "2025-09-01", "until": "2025-10-01"}
REPORTS: list[dict[str, Any]] = [
    {},
    {"by": "team,model"},
    {"by": "provider,priced_model,status"},
    {"by": "tag:region"},
    {"by": "feature", "period": "day"},
    {"by": "team", "period": "week", "where": ["provider!=openai"]},
    {"period": "month", "where": ["team=support,search"]},
    {"by": "unit", "top": 3},
    {"since": "2025-09-17", "until": "2025-09-18", "by": "trace_id", "top": 5},
    {"since": "2024-01-01", "until": "2024-02-01"},  # an empty window
]

EXTRA_EVENTS = [
    # A model no price layer knows: stored with NULL cost and a reason, counted, never $0.
    {"event_id": "x-unpriced-1", "ts": "2025-09-10T10:00:00Z", "provider": "acme", "model": "acme-9000",
     "input_tokens": 1200, "output_tokens": 300, "team": "lab", "tags": {"region": "eu"}},
    {"event_id": "x-unpriced-2", "ts": "2025-09-11T10:00:00Z", "provider": "acme", "model": "acme-9000",
     "input_tokens": 800, "output_tokens": 100, "team": "lab", "status": "error", "attempt": 2},
    # A provider-reported bill and a cache write of each duration.
    {"event_id": "x-billed-1", "ts": "2025-09-12T08:30:00Z", "provider": "anthropic",
     "model": "claude-sonnet-4-5", "input_tokens": 50_000, "cache_write_1h_tokens": 20_000,
     "cache_write_5m_tokens": 10_000, "cache_read_tokens": 5_000, "output_tokens": 2_000,
     "billed_cost": "0.15", "team": "lab", "unit": "ticket", "unit_id": "T-1"},
]  # fmt: skip


@pytest.fixture(scope="module")
def demo_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("demo")
    month = generate(seed=11, scale=0.005)
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


def chdb_url() -> str:
    # In-memory chdb ledgers open at once share one engine: one database each keeps them apart.
    return f"chdb://?database=t_{uuid.uuid4().hex}"


def open_pair(tmp_path: Path, book: PriceBook) -> tuple[Ledger, Ledger]:
    return (
        Ledger(tmp_path / "ledger.duckdb", book=book, config=Config()),
        Ledger(chdb_url(), book=book, config=Config()),
    )


@pytest.fixture(scope="module")
def pair(
    demo_files: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Ledger, Ledger]]:
    events, outcomes = demo_files
    duck, house = open_pair(tmp_path_factory.mktemp("pair"), PriceBook())
    for ledger in (duck, house):
        summary = ledger.ingest(events)
        assert summary.rejected == 0 and summary.accepted > 2500
        assert ledger.import_outcomes(outcomes).recorded > 500
    yield duck, house
    duck.close()
    house.close()


def assert_same_report(duck: Ledger, house: Ledger, **args: Any) -> None:
    args = {**SEPTEMBER, **args}
    a, b = duck.report_sections(**args), house.report_sections(**args)
    for section in ("headline", "rows", "periods", "units", "unpriced"):
        left, right = getattr(a, section), getattr(b, section)
        assert left == right, f"{section} differs for {args}"
    assert a.table().equals(b.table())


@pytest.mark.parametrize(
    "args", REPORTS, ids=lambda a: ",".join(f"{k}={v}" for k, v in a.items()) or "default"
)
def test_every_kpi_of_every_report_is_the_same_on_clickhouse(pair: tuple[Ledger, Ledger], args: Any) -> None:
    duck, house = pair
    assert_same_report(duck, house, **args)


def test_the_comparison_has_something_to_compare(pair: tuple[Ledger, Ledger]) -> None:
    _, house = pair
    report = house.report_sections(**SEPTEMBER, by="team")
    head = report.headline
    assert head["spend"] > Decimal(0) and isinstance(head["spend"], Decimal)
    assert head["unpriced_calls"] >= 2 and head["successes"] and head["judged"]
    assert head["latency_p95_ms"] and head["cache_savings"] and head["retry_cost"]
    assert head["billed_calls"] == 1 and head["billed_cost"] == Decimal("0.15")
    assert any(row["model"] == "acme-9000" for row in report.unpriced)
    logs = [
        ledger.sql('SELECT source, accepted, rejected, unpriced FROM ingest_runs ORDER BY "at"')
        for ledger in pair
    ]
    assert logs[0].to_dict("records")[:1] == logs[1].to_dict("records")[:1]
    assert len(report.periods) == 30 and report.units


def test_reingest_changes_nothing(pair: tuple[Ledger, Ledger], demo_files: tuple[Path, Path]) -> None:
    duck, house = pair
    before = house.report_sections(**SEPTEMBER, by="team,model")
    again = [ledger.ingest(demo_files[0]) for ledger in pair]
    assert again[0].accepted == again[1].accepted == 0
    assert again[0].duplicates == again[1].duplicates == duck.count() == house.count()
    after = house.report_sections(**SEPTEMBER, by="team,model")
    assert before.headline == after.headline and before.rows == after.rows
    # Re-importing the outcomes replaces them: successes are not counted twice.
    house.import_outcomes(demo_files[1])
    duck.import_outcomes(demo_files[1])
    assert house.report_sections(**SEPTEMBER).headline == before.headline
    assert_same_report(duck, house, by="unit")


def test_append_counts_duplicates_exactly(tmp_path: Path, book: PriceBook) -> None:
    duck, house = open_pair(tmp_path, book)
    with duck, house:
        first = [{"event_id": f"e{i}", "ts": "2025-09-02T00:00:00Z", "model": "gpt-4o", "input_tokens": i}
                 for i in range(5)]  # fmt: skip
        for ledger in (duck, house):
            assert ledger.ingest_records(first).accepted == 5
        # Two already stored, one repeated inside the batch, two new.
        batch = [first[0], first[1], {**first[1], "event_id": "e9"}, {**first[1], "event_id": "e9"}, {
            **first[2], "event_id": "e10"}]  # fmt: skip
        results = [ledger.ingest_records(batch) for ledger in (duck, house)]
        for summary in results:
            assert (summary.accepted, summary.duplicates) == (2, 3)
        assert duck.count() == house.count() == 7
        # The store answers the same at its own level.
        table = duck.store.fetch("SELECT * FROM events ORDER BY event_id")
        result = house.store.append(table)
        assert (result.inserted, result.duplicates, result.in_batch_duplicates) == (0, 7, 0)


def test_outcome_upsert_keeps_one_row_per_key(tmp_path: Path, book: PriceBook) -> None:
    _, house = open_pair(tmp_path, book)
    with house:
        house.record_outcome(unit="ticket", unit_id="T-1", success=False)
        house.record_outcome(unit="ticket", unit_id="T-1", success=True, feedback="solved")
        house.record_outcome(trace_id="tr-1", score=0.5)
        rows = house.sql("SELECT key_kind, key, success, feedback FROM outcomes ORDER BY key").to_dict(
            "records"
        )
        assert [(r["key"], r["success"], r["feedback"]) for r in rows] == [
            ("T-1", True, "solved"),
            ("tr-1", None, None),
        ]


def test_reprice_after_a_correction_matches_and_is_audited(
    tmp_path: Path, demo_files: tuple[Path, Path], book: PriceBook
) -> None:
    duck, house = open_pair(tmp_path, book)
    overrides = tmp_path / "prices.toml"
    overrides.write_text('[[discount]]\nprovider = "openai"\npercent = 15\nfrom = 2025-09-10\n')
    discounted = PriceBook.load(overrides)
    head = tmp_path / "head.jsonl"
    head.write_text("".join(demo_files[0].read_text().splitlines(keepends=True)[:1500]))
    with duck, house:
        results = []
        for ledger in (duck, house):
            ledger.ingest(head)
            results.append(ledger.reprice("2025-09-01", "2025-10-01", book=discounted))
        a, b = results
        assert a.events_changed == b.events_changed > 0
        assert (a.old_total, a.new_total) == (b.old_total, b.new_total)
        assert b.new_total < b.old_total
        by_model = lambda r: sorted((vars(c) for c in r.changes), key=lambda c: (c["provider"], c["model"]))  # noqa: E731
        assert by_model(a) == by_model(b)
        for ledger in (duck, house):
            runs = ledger.sql("SELECT run_id, events_changed, old_total, new_total FROM reprice_runs")
            assert runs.to_dict("records") == [
                {
                    "run_id": (ledger is duck and a.run_id) or b.run_id,
                    "events_changed": a.events_changed,
                    "old_total": a.old_total,
                    "new_total": a.new_total,
                }
            ]
            changes = ledger.sql("SELECT sum(new_total) AS t FROM reprice_changes")
            assert changes["t"][0] == a.new_total
        assert_same_report(duck, house, by="provider,model")
        assert house.report_sections(**SEPTEMBER).headline["spend"] == b.new_total
        # Running it again finds nothing left to change.
        assert house.reprice("2025-09-01", "2025-10-01", book=discounted).events_changed == 0


def test_a_fresh_ledger_is_migrated_from_fields_and_aux_tables(tmp_path: Path, book: PriceBook) -> None:
    _, house = open_pair(tmp_path, book)
    with house:
        store = house.store
        assert isinstance(store, ClickHouseStore)
        assert store.schema_version() == SCHEMA_VERSION
        assert (store.meta("migrated_by") or "").startswith("unitcost ")
        assert list(event_columns()) == store._columns("events")
        for name, schema in AUX_TABLES.items():
            assert store._columns(name) == schema.names
        engine = store.fetch("SELECT engine, sorting_key FROM system.tables WHERE name = 'events' AND "
                             "database = currentDatabase()").to_pylist()  # fmt: skip
        assert engine == [{"engine": "ReplacingMergeTree", "sorting_key": "(event_id)"}]


def test_transactions_are_best_effort_writes_before_an_error_stay(tmp_path: Path, book: PriceBook) -> None:
    _, house = open_pair(tmp_path, book)
    with house:
        store = house.store
        assert isinstance(store, ClickHouseStore)
        with pytest.raises(ZeroDivisionError), store.transaction():
            store.insert_meta("note", "written")
            _ = 1 / 0
        assert store.meta("note") == "written"  # documented: no rollback on ClickHouse


def test_an_older_ledger_gets_missing_columns_and_a_newer_one_is_refused(
    tmp_path: Path, book: PriceBook
) -> None:
    _, house = open_pair(tmp_path, book)
    with house:
        store = house.store
        assert isinstance(store, ClickHouseStore)
        house.record(
            {"event_id": "old-1", "ts": "2025-09-02T00:00:00Z", "model": "gpt-4o", "input_tokens": 10}
        )
        store.client.command("ALTER TABLE events DROP COLUMN billed_cost")
        store.insert_meta("schema_version", "0")
        assert store.migrate() == SCHEMA_VERSION
        assert "billed_cost" in store._columns("events") and house.count() == 1
        store.insert_meta("schema_version", str(SCHEMA_VERSION + 1))
        with pytest.raises(RuntimeError, match="newer than this unitcost"):
            store.migrate()


def test_an_on_disk_chdb_ledger_keeps_its_events(tmp_path: Path) -> None:
    # chdb allows one engine path per process (this one may hold an in-memory engine), so the
    # ledger is written, closed and reopened in a child process.
    script = (
        "import sys\n"
        "from unitcost.api import Ledger\nfrom unitcost.config import Config\n"
        "for _ in range(2):\n"
        "    with Ledger(sys.argv[1], config=Config()) as l:\n"
        "        s = l.ingest_records([{'event_id': 'd1', 'ts': '2025-09-02T00:00:00Z', 'model': 'gpt-4o', "
        "'input_tokens': 1000}])\n"
        "        print(s.accepted, s.duplicates, l.count(), l.store.schema_version())\n"
    )
    url = f"chdb://{tmp_path / 'ledger.chdb'}"
    run = subprocess.run([sys.executable, "-c", script, url], capture_output=True, text=True, check=True)
    assert run.stdout == f"1 0 1 {SCHEMA_VERSION}\n0 1 1 {SCHEMA_VERSION}\n"


def test_aux_table_ddl_comes_from_arrow_and_keys_from_the_duckdb_migrations() -> None:
    assert aux_keys()["outcomes"] == ("key_kind", "unit", "key")
    schema = pa.schema(
        [
            pa.field("id", pa.string(), nullable=False),
            pa.field("n", pa.int64()),
            pa.field("x", pa.float64()),
            pa.field("ok", pa.bool_()),
            pa.field("at", pa.timestamp("us", tz="UTC")),
            pa.field("amount", pa.decimal128(18, 12)),
            pa.field("labels", pa.map_(pa.string(), pa.string())),
        ]
    )
    ddl = aux_ddl("budgets_test", schema)
    assert "`id` String," in ddl and "`n` Nullable(Int64)" in ddl and "`x` Nullable(Float64)" in ddl
    assert "`ok` Nullable(Bool)" in ddl and "`at` Nullable(DateTime64(6, 'UTC'))" in ddl
    assert "`amount` Nullable(Decimal(18, 12))" in ddl and "`labels` Map(String, String)" in ddl
    assert "ENGINE = MergeTree ORDER BY tuple()" in ddl
    assert "ReplacingMergeTree ORDER BY (`key_kind`, `unit`, `key`)" in aux_ddl(
        "outcomes", AUX_TABLES["outcomes"]
    )
    with pytest.raises(TypeError, match="no ClickHouse type"):
        aux_ddl("bad", pa.schema([pa.field("t", pa.time32("s"))]))


def test_parameters_are_bound_outside_string_literals() -> None:
    sql = "SELECT '?' AS q, 'it''s ?' AS r FROM meta WHERE key = ? AND n > ?"
    assert bind(sql, ["a'b", 3]) == "SELECT '?' AS q, 'it''s ?' AS r FROM meta WHERE key = 'a\\'b' AND n > 3"
    with pytest.raises(ValueError, match="more parameters"):
        bind("SELECT ?", [1, 2])
    with pytest.raises(ValueError, match="more \\? placeholders"):
        bind("SELECT ?, ?", [1])


def test_server_urls_reach_clickhouse_connect_without_leaking_the_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import clickhouse_connect

    calls: list[dict[str, Any]] = []

    class StopConnectError(Exception):
        pass

    def fake_client(**kwargs: Any) -> Any:
        calls.append(kwargs)
        raise StopConnectError

    monkeypatch.setattr(clickhouse_connect, "get_client", fake_client)
    monkeypatch.setenv("UNITCOST_CLICKHOUSE_PASSWORD", "from-env")
    with pytest.raises(StopConnectError):
        ClickHouseStore.from_url("clickhouses://alice:s%40cret@ch.example:9440/costs?max_threads=4")
    with pytest.raises(StopConnectError):
        ClickHouseStore.from_url("clickhouse://bob@localhost/costs")
    first, second = calls
    assert (first["host"], first["port"], first["username"], first["password"], first["secure"]) == (
        "ch.example",
        9440,
        "alice",
        "s@cret",
        True,
    )
    assert first["settings"]["max_threads"] == "4" and first["settings"]["join_use_nulls"] == 1
    assert (second["port"], second["password"], second["secure"]) == (8123, "from-env", False)
    assert redact("clickhouse://alice:s3cret@host/db") == "clickhouse://alice:***@host/db"


def test_watch_rolls_up_every_new_event_and_judges_runaways_on_clickhouse(
    demo_files: tuple[Path, Path], tmp_path: Path
) -> None:
    """`max(ingested_at)` as the upper bound must keep its microseconds when bound (it used
    to be cut to the second on ClickHouse: 0 rows rolled up, watermark moved anyway), and
    the runaway norms must use a quantile ClickHouse has."""
    from types import SimpleNamespace

    from unitcost.watch.detectors.runaway import RunawayTrace
    from unitcost.watch.rollup import roll_up

    events, _ = demo_files
    duck, house = open_pair(tmp_path, PriceBook())
    try:
        results = []
        for ledger in (duck, house):
            ledger.ingest(events)
            result = roll_up(ledger.store)
            hourly = ledger.store.fetch(
                "SELECT CAST(sum(calls) AS BIGINT) AS calls, CAST(sum(cost) AS DECIMAL(38, 12)) AS cost, "
                "CAST(sum(waste_calls) AS BIGINT) AS waste FROM watch_hourly"
            ).to_pylist()
            traces = ledger.store.fetch("SELECT count(*) AS n FROM watch_traces").to_pylist()[0]["n"]
            norms = RunawayTrace._norms(
                SimpleNamespace(store=ledger.store, state={}),  # type: ignore[arg-type]
                datetime(2025, 9, 1, tzinfo=UTC),
                datetime(2025, 10, 1, tzinfo=UTC),
                30,
            )
            norms = norms.sort_values(["key_kind", "feature"]).reset_index(drop=True)
            results.append((result.events, result.hourly_rows, result.trace_rows, hourly, traces, norms))
        (d_events, d_hourly, d_traces, d_sums, d_n, d_norms) = results[0]
        (c_events, c_hourly, c_traces, c_sums, c_n, c_norms) = results[1]
        assert d_hourly > 0 and d_traces > 0 and len(d_norms) > 0
        assert (c_events, c_hourly, c_traces, c_sums, c_n) == (d_events, d_hourly, d_traces, d_sums, d_n)
        assert c_sums[0]["calls"] == d_events
        pd.testing.assert_frame_equal(d_norms, c_norms, check_dtype=False, atol=1e-9, rtol=0)
    finally:
        duck.close()
        house.close()


def test_budget_status_is_the_same_on_clickhouse(pair: tuple[Ledger, Ledger]) -> None:
    from unitcost.watch.budgets import budget_status, parse_budgets, unmatched_scope_note

    budgets = parse_budgets(
        [
            {"name": "paris", "scope": {"team": "support"}, "amount": 2, "period": "month",
             "timezone": "Europe/Paris"},
            {"name": "week", "amount": 1, "period": "week"},
            {"name": "eu", "scope": {"tags": {"region": "eu"}}, "amount": 0.05, "period": "day",
             "timezone": "America/New_York"},
            {"name": "nobody", "scope": {"team": "no-such-team"}, "amount": 1, "period": "day"},
        ]
    )  # fmt: skip
    now = datetime(2025, 9, 20, 12, 30, tzinfo=UTC)
    duck, house = pair
    for budget in budgets:
        left, right = budget_status(duck.store, budget, now), budget_status(house.store, budget, now)
        assert left == right, budget.name
        assert unmatched_scope_note(duck.store, budget) == unmatched_scope_note(house.store, budget)
    assert budget_status(duck.store, budgets[0], now).spent > 0
    assert budget_status(duck.store, budgets[2], now).daily_days


def test_gateway_budgets_are_restored_the_same_from_clickhouse(tmp_path: Path, book: PriceBook) -> None:
    from unitcost.gateway.budgets import MemoryBudgetState
    from unitcost.gateway.config import Budget
    from unitcost.gateway.restore import restore_budgets

    now = datetime.now(UTC).replace(microsecond=0)
    base = {"ts": now.isoformat(), "provider": "openai", "model": "gpt-4o-mini", "input_tokens": 1000,
            "output_tokens": 100, "team": "search", "attempt": 1,
            "http_status": 200, "latency_ms": 120.0}  # fmt: skip
    rows = [
        {**base, "event_id": "g1", "tags": {"key": "k1"}},
        {**base, "event_id": "g2", "tags": {"key": "k1"}, "attempt": 2},
        {**base, "event_id": "g3", "tags": {"blocked_by_budget": "b"}, "http_status": 429, "latency_ms": None,
         "input_tokens": 0, "output_tokens": 0},
        {**base, "event_id": "g4", "tags": {"key": "k2"}, "cache_hit": True},
        {**base, "event_id": "g5", "team": "lab"},
    ]  # fmt: skip
    budgets = [
        Budget(name="all", scope="global", limit_usd=Decimal(10), period="day", max_calls=100),
        Budget(name="teams", scope="team", limit_usd=Decimal(10), period="month", max_calls=100),
        Budget(name="keys", scope="key", limit_usd=Decimal(10), period="day", max_calls=100),
    ]
    duck, house = open_pair(tmp_path, book)
    try:
        seeded = []
        for ledger in (duck, house):
            assert ledger.ingest_records(rows, source="gateway").accepted == len(rows)
            state = MemoryBudgetState()
            n = restore_budgets(ledger.store, budgets, state, "uc")
            seeded.append((n, dict(state._counters)))
        assert seeded[0] == seeded[1]
        assert seeded[0][0] > 0
    finally:
        duck.close()
        house.close()


def test_alerts_are_found_by_id_prefix_and_acknowledged_on_clickhouse(
    tmp_path: Path, book: PriceBook
) -> None:
    """`unitcost alerts show/ack ID` take an id prefix: the lookup is spelt for each engine, and a
    prefix holding LIKE wildcards matches only itself."""
    from unitcost.watch.detectors.base import Finding
    from unitcost.watch.incidents import Incidents, acknowledge, find_alert
    from unitcost.watch.scope import Scope

    at = datetime(2025, 9, 17, 10, tzinfo=UTC)
    finding = Finding("cost_per_hour", Scope.of(team="eng"), at, at, "Cost up", 10.0, 5.0, "$/hour")
    for ledger in open_pair(tmp_path, book):
        with ledger:
            incidents = Incidents(
                ledger.store, cooldown=pd.Timedelta(hours=1), resolve_after=pd.Timedelta(hours=3)
            )
            (opened,) = incidents.apply([finding], at)
            assert find_alert(ledger.store, opened.alert_id[:6])["alert_id"] == opened.alert_id
            with pytest.raises(ValueError, match="no alert with id"):
                find_alert(ledger.store, "%")
            assert acknowledge(ledger.store, opened.alert_id[:6], "oncall", at)["status"] == "acknowledged"


def test_the_ledger_target_shown_in_messages_has_no_password(monkeypatch: pytest.MonkeyPatch) -> None:
    """`unitcost ingest` prints "already in <target>" and -f json a "ledger" field; the watch and
    serve banners print it too: a ClickHouse URL's password must not be in any of them."""
    import unitcost.api

    opened: list[str] = []

    def fake_store(target: str, **_: Any) -> Any:
        opened.append(target)
        return ClickHouseStore.from_url(chdb_url())

    monkeypatch.setattr(unitcost.api, "open_store", fake_store)
    ledger = Ledger("clickhouse://alice:s3cr3t@ch.example:8123/costs", config=Config())
    try:
        assert ledger.target == "clickhouse://alice:***@ch.example:8123/costs"
        assert opened == ["clickhouse://alice:s3cr3t@ch.example:8123/costs"]  # the store gets it whole
    finally:
        ledger.close()


def test_a_misspelt_chdb_path_or_a_server_that_is_down_is_one_line(tmp_path: Path) -> None:
    """A read command must not create an empty chDB ledger at a misspelt path (DuckDB says "no
    ledger"), and a ClickHouse server that is down or refuses the password is one red line that
    never shows the password, not a traceback."""
    import socket

    from typer.testing import CliRunner

    from unitcost.cli import app

    runner = CliRunner()
    missing = tmp_path / "no-such-dir" / "ledger.chdb"
    done = runner.invoke(app, ["report", "--ledger", f"chdb://{missing}"])
    assert done.exit_code == 2 and "no ledger" in done.output, done.output
    assert not missing.exists()
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    done = runner.invoke(app, ["report", "--ledger", f"clickhouse://alice:s3cr3t@127.0.0.1:{port}/costs"])
    assert done.exit_code == 2, done.output
    assert f"cannot open the ClickHouse ledger clickhouse://alice:***@127.0.0.1:{port}/costs" in done.output
    assert "s3cr3t" not in done.output and "Traceback" not in done.output
