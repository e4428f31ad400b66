"""Every read command gives the same output on a ClickHouse ledger as on the DuckDB file.

docs/scale-out.md promises "the same numbers to the last pico-dollar" with the same
commands. One small but rich workload (cached and reasoning tokens, Anthropic 1-hour cache
writes, long-context tiers, batch, an unpriced model, errors, retries, units and outcomes,
tags, two months across DeepSeek's 2025-09-05 price change, exact ties) is ingested through
the CLI into a DuckDB file and into ClickHouse (the real engine, in-process through chDB),
and every read command's JSON or CSV output is compared character for character.

The opening errors of a ClickHouse ledger (a missing database, somebody else's table, a bad
URL) are checked at the end.
"""

from __future__ import annotations

import json
import re
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

pytest.importorskip("chdb", reason="the chdb package (pip install -e '.[dev]') runs ClickHouse in-process")

from typer.testing import CliRunner

from unitcost.api import Ledger
from unitcost.cli import app
from unitcost.config import Config
from unitcost.ledger.base import LedgerUnreachableError
from unitcost.ledger.clickhouse_store import ClickHouseStore

TWO_MONTHS = ["--since", "2025-08-01", "--until", "2025-10-01"]

CONFIG = """
[watch]
backfill_hours = 72

[[budget]]
name = "support-monthly"
scope = { team = "support" }
amount = 5
period = "month"
timezone = "Europe/Paris"

[[budget]]
name = "eu-daily"
scope = { tags = { region = "eu" } }
amount = 0.5
period = "day"
timezone = "America/New_York"

[[budget]]
name = "org-weekly"
amount = 3
period = "week"
"""

# A negotiated discount from mid-September and a price for the model nobody priced.
PRICES = """
[[discount]]
provider = "openai"
percent = 10
from = 2025-09-10

[[price]]
provider = "acme"
model = "acme-9000"
from = 2025-08-15
source = "finance sheet"
input_mtok = "0.3"
output_mtok = "1.1"
"""

CALLS: list[dict[str, Any]] = [
    # cached input
    {"provider": "openai", "model": "gpt-4o", "input_tokens": 5000, "cache_read_tokens": 2048, "output_tokens": 300},
    # reasoning
    {"provider": "openai", "model": "o3", "input_tokens": 3000, "output_tokens": 4000, "reasoning_tokens": 3500},
    # Anthropic cache writes of both durations and a cache read
    {"provider": "anthropic", "model": "claude-sonnet-4-5", "input_tokens": 40000, "cache_write_1h_tokens": 20000,
     "cache_write_5m_tokens": 5000, "cache_read_tokens": 10000, "output_tokens": 1000},
    # long-context tier (more than 200k prompt tokens)
    {"provider": "anthropic", "model": "claude-sonnet-4-20250514", "input_tokens": 250000, "output_tokens": 2000},
    # batch tier
    {"provider": "openai", "model": "gpt-4o-mini", "service_tier": "batch", "input_tokens": 10000,
     "output_tokens": 500},
    # no price anywhere: NULL cost and a reason, counted
    {"provider": "acme", "model": "acme-9000", "input_tokens": 1200, "output_tokens": 300},
    # DeepSeek changed its price on 2025-09-05 16:00 UTC
    {"provider": "deepseek", "model": "deepseek-chat", "input_tokens": 8000, "cache_read_tokens": 4000,
     "output_tokens": 700},
    # failed attempt
    {"provider": "openai", "model": "gpt-4o", "input_tokens": 2000, "status": "error", "http_status": 500},
    # a timeout
    {"provider": "openai", "model": "gpt-4o", "input_tokens": 2000, "status": "timeout"},
    # long-context Gemini with reasoning and a cost the source reported
    {"provider": "google", "model": "gemini-2.5-pro", "input_tokens": 210000, "output_tokens": 900,
     "reasoning_tokens": 400, "billed_cost": "0.30"},
]  # fmt: skip

TEAMS = ["search", "support", "eng", "o'brien"]


def workload() -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    for month in (8, 9):
        for i in range(50):
            call = CALLS[i % len(CALLS)]
            day, hour, second = 1 + (i * 3) % 28, (i * 5) % 24, (i * 17) % 60
            event = {
                "event_id": f"m{month}-{i}",
                "ts": f"2025-{month:02d}-{day:02d}T{hour:02d}:{(i * 13) % 60:02d}:{second:02d}.{i * 1237:06d}Z",
                "team": TEAMS[i % 4],
                "feature": ["chat", "summary", "agent"][i % 3],
                "customer": f"c{i % 5}",
                "user": f"u{i % 7}",
                "unit": "ticket" if i % 6 else "document",
                "unit_id": f"T-{month}-{i % 9}",
                "trace_id": f"tr-{month}-{i % 12}",
                "latency_ms": 100.0 + (i * 37) % 900 + i / 7,
                "tags": {"region": ["eu", "us", "apac"][i % 3], "path": "a\\b" if i % 8 == 0 else "plain"},
                **call,
            }
            if i % 11 == 10:  # a retry of the call before
                event.update(attempt=2, retry_of=f"m{month}-{i - 1}")
            events.append(event)
    # Three teams of exactly equal spend: their order must not depend on the engine.
    for team in ("alpha", "beta", "gamma"):
        events.append(
            {"event_id": f"tie-{team}", "ts": "2025-09-15T12:00:00Z", "provider": "openai", "model": "gpt-4o-mini",
             "input_tokens": 1000, "output_tokens": 100, "team": team, "customer": f"tie-{team}"}
        )  # fmt: skip
    # Calls on the edges of the months and of an hour, an empty tag value.
    events += [
        {"event_id": "edge-1", "ts": "2025-09-01T00:00:00Z", "model": "gpt-4o", "input_tokens": 100, "team": "eng"},
        {"event_id": "edge-2", "ts": "2025-08-31T23:59:59.999999Z", "model": "gpt-4o", "input_tokens": 100},
        {"event_id": "edge-3", "ts": "2025-09-10T10:30:00Z", "model": "gpt-4o", "input_tokens": 100,
         "tags": {"region": ""}},
    ]  # fmt: skip
    return events


OUTCOMES = "unit,unit_id,success,score\n" + "".join(
    f"ticket,T-{month}-{k},{'true' if k % 3 else 'false'},{k / 10}\n" for month in (8, 9) for k in range(9)
)


@dataclass
class Pair:
    duckdb: str
    clickhouse: str
    folder: Path

    def run(self, target: str, args: list[str]) -> tuple[int, str]:
        done = CliRunner().invoke(
            app,
            [*args, "--ledger", target, "--config", str(self.folder / "unitcost.toml")],
            env={"COLUMNS": "200"},
        )
        if done.exception is not None and not isinstance(done.exception, SystemExit):
            raise done.exception
        # What differs by construction: where the ledger is, and the time a cycle took.
        output = done.output.replace(target, "<ledger>")
        return done.exit_code, re.sub(r"in \d+\.\d+ s", "in <t> s", output)

    def both(self, args: list[str]) -> tuple[str, str]:
        (code_a, a), (code_b, b) = self.run(self.duckdb, args), self.run(self.clickhouse, args)
        assert code_a == code_b == 0, (args, a, b)
        return a, b


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    folder = tmp_path_factory.mktemp("parity")
    (folder / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in workload()))
    (folder / "outcomes.csv").write_text(OUTCOMES)
    (folder / "unitcost.toml").write_text(CONFIG)
    (folder / "prices.toml").write_text(PRICES)
    # An in-memory chDB database lives while a client has it open: this one keeps it for the
    # commands, which open and close their own.
    url = f"chdb://?database=parity_{uuid.uuid4().hex}"
    keeper = Ledger(url, config=Config())
    pair = Pair(str(folder / "ledger.duckdb"), url, folder)
    try:
        ingested = pair.both(["ingest", str(folder / "events.jsonl")])
        assert (
            ingested[0] == ingested[1]
            and "106 accepted" in ingested[0]
            and "10 without a price" in ingested[0]
        )
        judged = pair.both(["outcomes", str(folder / "outcomes.csv")])
        assert judged[0] == judged[1] and "18 outcomes recorded" in judged[0]
        yield pair
    finally:
        keeper.close()


READS: list[list[str]] = [
    ["report", *TWO_MONTHS, "-f", "json"],
    ["report", *TWO_MONTHS, "--by", "team,model", "-f", "json"],
    ["report", *TWO_MONTHS, "--by", "tag:region", "-f", "json"],
    ["report", *TWO_MONTHS, "--by", "tag:path,team", "-w", "tag:path=a\\b", "-f", "json"],
    ["report", *TWO_MONTHS, "--by", "unit", "-f", "json"],
    ["report", *TWO_MONTHS, "--by", "customer", "--top", "3", "-f", "json"],
    ["report", *TWO_MONTHS, "--by", "provider,priced_model,service_tier,status", "-f", "json"],
    ["report", *TWO_MONTHS, "--by", "team", "--period", "day", "-f", "json"],
    ["report", *TWO_MONTHS, "--by", "feature", "--period", "week", "-f", "json"],
    ["report", *TWO_MONTHS, "--by", "model", "--period", "month", "--top", "2", "-f", "json"],
    ["report", *TWO_MONTHS, "--by", "model", "-w", "provider!=openai", "-w", "team=support,o'brien", "-f", "json"],
    ["report", *TWO_MONTHS, "--by", "team", "-w", "team=alpha,beta,gamma", "--top", "2", "-f", "json"],
    ["report", *TWO_MONTHS, "--by", "team", "-w", "tag:region=", "-f", "json"],  # no tag, or an empty one
    ["report", *TWO_MONTHS, "--by", "tag:region", "-w", "tag:region!=", "-w", "customer!=", "-f", "json"],
    ["report", "--since", "2025-08-15T10:30:00Z", "--until", "2025-09-20T07:45:00Z", "--by", "trace_id", "-f", "json"],
    ["report", "--since", "2025-09-10T10:00:00Z", "--until", "2025-09-10T11:00:00Z", "--period", "hour", "-f", "json"],
    ["report", "--since", "2024-01-01", "--until", "2024-02-01", "-f", "json"],
    ["report", *TWO_MONTHS, "--reconcile", "-f", "json"],
    ["report", *TWO_MONTHS, "--by", "team,tag:region", "-f", "csv"],
    ["report", *TWO_MONTHS, "--by", "unit", "--period", "week", "-f", "csv"],
    ["whatif", *TWO_MONTHS, "--as", "anthropic:claude-sonnet-4-5", "--as", "openai:gpt-4o-mini/batch", "-f", "json"],
    ["whatif", *TWO_MONTHS, "--as", "deepseek:deepseek-chat", "--cache", "prefix", "-w", "tag:region=eu", "-f", "csv"],
    ["levers", *TWO_MONTHS, "-f", "json"],
    ["explain-price-change", "--from", "2025-08-01..2025-09-01", "--to", "2025-09-01..2025-10-01",
     "--model", "deepseek:deepseek-chat", "-f", "json"],
    ["explain-price-change", "--from", "2025-08-01..2025-09-01", "--to", "2025-09-01..2025-10-01", "-f", "csv"],
    ["reconcile", *TWO_MONTHS, "--all", "-f", "json"],
    ["budgets", "--now", "2025-09-20T12:30:00Z", "-f", "json"],
    ["export", "focus", "-", *TWO_MONTHS, "--unpriced", "exclude", "--tags", "team,feature,tag:region"],
]  # fmt: skip


@pytest.mark.parametrize("args", READS, ids=" ".join)
def test_every_read_command_prints_the_same_on_clickhouse(pair: Pair, args: list[str]) -> None:
    on_duckdb, on_clickhouse = pair.both(args)
    assert on_duckdb == on_clickhouse


def test_the_workload_exercises_what_it_claims(pair: Pair) -> None:
    """The comparison above is only worth something if the numbers it compares are not empty."""
    report = json.loads(pair.both(["report", *TWO_MONTHS, "--by", "model", "-f", "json"])[0])
    head, rows = report["headline"], {r["model"]: r for r in report["rows"]}
    assert head["unpriced_calls"] == 10 and head["billed_calls"] == 10 and head["successes"]
    assert float(head["retry_cost"]) > 0 and float(head["failed_cost"]) > 0
    assert float(rows["o3"]["reasoning_share"]) > 0.5
    assert rows["acme-9000"]["spend"] is None  # unpriced is unknown, never $0
    dry_run = ["reprice", *TWO_MONTHS, "--dry-run", "-f", "json"]
    dry = json.loads(pair.both(dry_run)[0])
    assert dry["events_changed"] == 0  # the stored prices are today's book: nothing to correct


def test_the_python_report_is_the_same_frame_on_clickhouse(pair: Pair) -> None:
    frames = []
    for target in (pair.duckdb, pair.clickhouse):
        with Ledger(target, config=Config(), read_only=True) as ledger:
            frames.append(
                ledger.report(
                    since="2025-08-01", until="2025-10-01", by=["team", "tag:region"], period="month"
                )
            )
    pd.testing.assert_frame_equal(frames[0], frames[1], check_exact=True)
    assert len(frames[0]) > 10


def test_a_reprice_and_the_reports_after_it_are_the_same(pair: Pair) -> None:
    reprice = ["reprice", *TWO_MONTHS, "--prices", str(pair.folder / "prices.toml")]
    a, b = pair.both([*reprice, "-f", "json"])
    run_id = re.compile(r'"run_id": "[0-9a-f]{32}"')
    assert run_id.sub("<run>", a) == run_id.sub("<run>", b)
    result = json.loads(a)
    assert result["events_changed"] > 0 and result["new_unpriced"] == 0  # acme got its price
    for args in (["--by", "model"], ["--by", "team", "--period", "month"], ["--by", "tag:region,customer"]):
        after_a, after_b = pair.both(["report", *TWO_MONTHS, *args, "-f", "json"])
        assert after_a == after_b


def test_watch_alerts_and_budgets_are_the_same_on_clickhouse(pair: Pair) -> None:
    cycle = ["watch", "--once", "--now", "2025-09-30T00:00:00Z"]
    a, b = pair.both(cycle)
    alert_id = re.compile(r"\b[0-9a-f]{12}\b")  # random per ledger
    # Alerts opened in one cycle share their instants: `alerts` lists ties in no set order
    # (on either engine), so the lines are compared as sets.
    assert sorted(alert_id.sub("<id>", a).splitlines()) == sorted(alert_id.sub("<id>", b).splitlines())
    assert "Budget support-monthly" in a
    listed = [json.loads(pair.run(t, ["alerts", "-f", "json"])[1]) for t in (pair.duckdb, pair.clickhouse)]
    by_title = [{r["title"]: r for r in rows} for rows in listed]
    assert len(by_title[0]) == len(listed[0]) > 0
    assert by_title[0].keys() == by_title[1].keys()
    for title, on_duckdb in by_title[0].items():
        on_clickhouse = by_title[1][title]
        assert {**on_duckdb, "alert_id": ""} == {**on_clickhouse, "alert_id": ""}
        shown = [
            pair.run(target, ["alerts", "show", row["alert_id"], "-f", "json"])[1].replace(
                row["alert_id"], "<id>"
            )
            for target, row in ((pair.duckdb, on_duckdb), (pair.clickhouse, on_clickhouse))
        ]
        assert shown[0] == shown[1]
    again = pair.both(["budgets", "--now", "2025-09-30T00:00:00Z", "-f", "csv"])
    assert again[0] == again[1]


# ---------------------------------------------------------------------- opening errors


def chdb_url(database: str | None = None) -> str:
    return f"chdb://?database={database or 'parity_' + uuid.uuid4().hex}"


def test_a_read_of_a_database_that_does_not_exist_is_no_ledger_not_an_empty_one() -> None:
    """A misspelt database must not become a new, empty ledger whose report says $0 was spent
    (a missing DuckDB file is "no ledger" too); a write still creates it."""
    keeper = ClickHouseStore.from_url(chdb_url())  # keeps the in-memory engine up
    try:
        typo = "parity_typo_" + uuid.uuid4().hex
        with pytest.raises(
            FileNotFoundError, match=f"no ledger at chdb://.*the database '{typo}' does not exist"
        ):
            ClickHouseStore.from_url(chdb_url(typo), read_only=True)
        assert not keeper.client.command(f"SELECT count() FROM system.databases WHERE name = '{typo}'")
        empty = "parity_empty_" + uuid.uuid4().hex
        keeper.client.command(f"CREATE DATABASE {empty}")
        with pytest.raises(FileNotFoundError, match=f"the database '{empty}' holds no unitcost ledger"):
            ClickHouseStore.from_url(chdb_url(empty), read_only=True)
        assert not keeper.client.command(f"SELECT count() FROM system.tables WHERE database = '{empty}'")
        written = ClickHouseStore.from_url(chdb_url(typo))
        written.close()
        ClickHouseStore.from_url(chdb_url(typo), read_only=True).close()
    finally:
        keeper.close()


def test_somebody_elses_events_table_is_left_alone() -> None:
    """A shared server's database may hold another product's `events` table: unitcost used to
    add its sixty columns to it and report from its rows. Now it refuses, naming the table."""
    keeper = ClickHouseStore.from_url(chdb_url())
    try:
        other = "parity_analytics_" + uuid.uuid4().hex
        keeper.client.command(f"CREATE DATABASE {other}")
        keeper.client.command(
            f"CREATE TABLE {other}.events (uuid UUID, event String, properties String, timestamp DateTime64(6)) "
            "ENGINE = MergeTree ORDER BY timestamp"
        )
        keeper.client.command(
            f"INSERT INTO {other}.events VALUES (generateUUIDv4(), 'pageview', '{{}}', now64())"
        )
        for read_only in (False, True):
            with pytest.raises(
                ValueError, match=r"the table 'events' of database .* is not a unitcost table"
            ):
                ClickHouseStore.from_url(chdb_url(other), read_only=read_only)
        columns = keeper.fetch(
            "SELECT name FROM system.columns WHERE database = ? AND table = 'events' ORDER BY position",
            [other],
        ).column("name")
        assert columns.to_pylist() == ["uuid", "event", "properties", "timestamp"]
        meta = f"SELECT count() FROM system.tables WHERE database = '{other}' AND name = 'meta'"
        assert not keeper.client.command(meta)
        done = CliRunner().invoke(app, ["report", "--ledger", chdb_url(other)])
        said = " ".join(done.output.split())  # as one line, whatever the terminal's width
        assert done.exit_code == 2 and said.startswith("error: chdb://"), done.output
        assert "is not a unitcost table (it has the columns event, properties, timestamp, uuid)" in said
    finally:
        keeper.close()


def test_a_ledger_with_columns_its_owners_added_still_opens() -> None:
    """Once a database is a unitcost ledger, a column added by hand (a materialised column for a
    dashboard) is the owner's business: the ledger opens and ingests as before."""
    url = chdb_url()
    with Ledger(url, config=Config()) as ledger:
        assert isinstance(ledger.store, ClickHouseStore)
        ledger.store.client.command("ALTER TABLE events ADD COLUMN day Date MATERIALIZED toDate(ts)")
        ledger.store.insert_meta("schema_version", "4")  # an older ledger: migrated on open
        with Ledger(url, config=Config()) as again:
            summary = again.ingest_records(
                [{"event_id": "e1", "ts": "2025-09-02T00:00:00Z", "model": "gpt-4o", "input_tokens": 10}]
            )
            assert summary.accepted == 1 and again.count() == 1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("clickhouse://alice:s3cr3t@127.0.0.1:99999/costs", "its port is not valid (port out of range 0-65535)"),
        ("clickhouse://alice:s3cr3t@127.0.0.1:x8123/costs", "its port is not valid"),
        ("clickhouse://alice:s3cr3t@127.0.0.1:{free}/costs",
         "cannot reach the server 127.0.0.1:{free} (Connection refused)"),
        (chdb_url() + "&max_threds=8", "Unknown setting 'max_threds': Maybe you meant ['max_threads']"),
    ],
    ids=["port-out-of-range", "port-not-a-number", "server-down", "misspelt-setting"],
)  # fmt: skip
def test_a_bad_url_is_one_line_that_names_the_ledger(url: str, reason: str) -> None:
    """Before: a bare "Port out of range 0-65535" without the URL, a traceback for a misspelt
    setting, and for a server that is down a line of urllib3 internals with a query id."""
    keeper = ClickHouseStore.from_url(chdb_url())
    try:
        port = str(free_port())
        url, reason = url.replace("{free}", port), reason.replace("{free}", port)
        done = CliRunner().invoke(app, ["report", "--ledger", url])
        said = " ".join(done.output.split())  # as one line, whatever the terminal's width
        shown = url.replace("s3cr3t", "***")
        assert done.exit_code == 2, done.output
        assert said.startswith(f"error: cannot open the ClickHouse ledger {shown}: ") and reason in said, said
        assert "Traceback" not in said and said.count("error:") == 1
        assert "s3cr3t" not in done.output and "query_id" not in done.output
    finally:
        keeper.close()


def test_a_refused_password_says_what_the_server_said_without_the_wrapping(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import clickhouse_connect
    from clickhouse_connect.driver.exceptions import DatabaseError

    def refused(**_: Any) -> Any:
        raise DatabaseError(
            "Received ClickHouse exception, code: 516, server response: Code: 516. DB::Exception: alice: "
            "Authentication failed: password is incorrect, or there is no user with such name. "
            "(AUTHENTICATION_FAILED) (version 25.8.1.1) (for url http://ch.example:8123)"
        )

    monkeypatch.setattr(clickhouse_connect, "get_client", refused)
    with pytest.raises(LedgerUnreachableError) as caught:
        ClickHouseStore.from_url("clickhouse://alice:s3cr3t@ch.example:8123/costs")
    assert str(caught.value) == (
        "cannot open the ClickHouse ledger clickhouse://alice:***@ch.example:8123/costs: Code: 516. "
        "DB::Exception: alice: Authentication failed: password is incorrect, or there is no user with "
        "such name. (AUTHENTICATION_FAILED)"
    )
