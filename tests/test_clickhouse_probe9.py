"""A platform engineer moving from DuckDB to ClickHouse: every command answers the same.

One file with what real files hold (malformed lines, an event twice, a model nobody prices,
calls a microsecond either side of midnight and of the DST changes in Paris, unicode names and
tags, a team that is NULL and one that is empty) goes through `unitcost ingest` into a DuckDB
file and a ClickHouse ledger (the real engine, in-process through chDB); the ingest summaries,
reports, budgets, a reprice and its audit, and a watch cycle must then agree to the character.

Then what ClickHouse's `ReplacingMergeTree` leaves to chance: an event stored twice by a writer
stopped before it settled the race (copies dated in two months never merge; a merge keeps the
copy written last where DuckDB keeps the first), `deduplicate()` on tables whose equal rows are
two facts, and money bound as a `?` parameter (it became a Float64).
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pytest

pytest.importorskip("chdb", reason="the chdb package (pip install -e '.[dev]') runs ClickHouse in-process")

from typer.testing import CliRunner

from unitcost.api import Ledger
from unitcost.cli import app
from unitcost.config import Config
from unitcost.ledger.clickhouse_store import ClickHouseStore
from unitcost.watch.tables import HOURLY_SCHEMA

WINDOW = ["--since", "2025-03-01", "--until", "2025-11-01"]

CONFIG = """
[[budget]]
name = "paris-daily"
amount = 0.001
period = "day"
timezone = "Europe/Paris"

[[budget]]
name = "summer-weekly"
scope = { tags = { "région" = "été" } }
amount = 0.001
period = "week"
timezone = "Europe/Paris"

[[budget]]
name = "search-monthly"
scope = { team = "search" }
amount = 1
period = "month"
timezone = "America/New_York"
"""

PRICES = """
[[discount]]
provider = "openai"
percent = 7
from = 2025-03-15

[[price]]
provider = "acme"
model = "acme-x"
from = 2025-01-01
source = "finance sheet"
input_mtok = "0.333333333333"
output_mtok = "1.1"
"""


def _call(event_id: str, ts: str, **more: Any) -> dict[str, Any]:
    return {"event_id": event_id, "ts": ts, "provider": "openai", "model": "gpt-4o", "input_tokens": 1000,
            "output_tokens": 100, **more}  # fmt: skip


def events() -> list[dict[str, Any]]:
    found = [
        # A microsecond either side of midnight UTC, and of 01:00 UTC when Paris springs forward.
        _call("e-midnight-", "2025-03-29T23:59:59.999999Z", team=""),
        _call("e-midnight+", "2025-03-30T00:00:00Z", provider="acme", model="acme-x"),
        _call("e-dst-", "2025-03-30T00:59:59.999999Z", team="ünï-téam", tags={"région": "été", "k": "v"}),
        _call("e-dst+", "2025-03-30T01:00:00.000001Z", team=None, user="josé"),
        # Paris falls back at 01:00 UTC: the local hour 02:xx is lived twice.
        _call("e-fall-1", "2025-10-26T00:30:00.5Z", team="search", billed_cost="0.000000000001"),
        _call("e-fall-2", "2025-10-26T01:30:00.123456+02:00", team="search", user="josé"),
        _call("e-midnight-", "2025-03-29T23:59:59.999999Z", team="a second copy"),  # the first one wins
    ]
    for i in range(120):
        found.append(
            _call(f"m-{i}", f"2025-03-{1 + i % 28:02d}T{i % 24:02d}:00:00.{i:06d}Z", model="gpt-4o-mini",
                  input_tokens=7 + i, output_tokens=3 + i, cache_read_tokens=i % 5,
                  team=["a", None, "", "b"][i % 4], customer=["c", None][i % 2],
                  tags={"x": ["1", ""][i % 2]} if i % 3 else {})
        )  # fmt: skip
    return found


def jsonl() -> str:
    lines = [json.dumps(e) for e in events()]
    lines.insert(3, "{not json")
    lines.insert(5, json.dumps(_call("bad-tokens", "2025-03-01T00:00:00Z", input_tokens=-5)))
    lines.insert(7, json.dumps({"event_id": "no-ts", "model": "gpt-4o"}))
    return "\n".join(lines) + "\n"


class Pair:
    def __init__(self, folder: Path, clickhouse: str) -> None:
        self.folder, self.duckdb, self.clickhouse = folder, str(folder / "ledger.duckdb"), clickhouse
        self.ingested: list[dict[str, Any]] = []

    def run(self, target: str, args: list[str]) -> tuple[int, str]:
        done = CliRunner().invoke(
            app,
            [*args, "--ledger", target, "--config", str(self.folder / "unitcost.toml")],
            env={"COLUMNS": "200"},
        )
        if done.exception is not None and not isinstance(done.exception, SystemExit):
            raise done.exception
        # What differs by construction: where the ledger is, random ids, the time a cycle took.
        output = done.output.replace(target, "<ledger>")
        output = re.sub(r'"run_id": "[0-9a-f]{32}"', '"run_id": "<run>"', output)
        output = re.sub(r"\b[0-9a-f]{12}\b", "<alert>", output)
        return done.exit_code, re.sub(r"in \d+\.\d+ s", "in <t> s", output)

    def both(self, args: list[str]) -> str:
        on_duckdb, on_clickhouse = self.run(self.duckdb, args), self.run(self.clickhouse, args)
        assert on_duckdb == on_clickhouse, args
        return on_duckdb[1]

    def frames(self, sql: str) -> list[pd.DataFrame]:
        frames = []
        for target in (self.duckdb, self.clickhouse):
            with Ledger(target, config=Config(), read_only=True) as ledger:
                frames.append(ledger.sql(sql))
        return frames


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    folder = tmp_path_factory.mktemp("probe9")
    (folder / "events.jsonl").write_text(jsonl())
    (folder / "again.jsonl").write_text("".join(jsonl().splitlines(keepends=True)[:6]))
    (folder / "outcomes.csv").write_text(
        "key_kind,key,success\nevent,e-dst-,true\nevent,e-dst+,false\nevent,m-1,true\n"
    )
    (folder / "unitcost.toml").write_text(CONFIG)
    (folder / "prices.toml").write_text(PRICES)
    url = f"chdb://?database=p9_{uuid.uuid4().hex}"
    keeper = Ledger(url, config=Config())  # an in-memory chDB database lives while a client has it open
    pair = Pair(folder, url)
    try:
        # The file, the same file again, and some of its event ids in another file.
        for name in ("events.jsonl", "events.jsonl", "again.jsonl"):
            pair.ingested.append(json.loads(pair.both(["ingest", str(folder / name), "-f", "json"])))
        pair.both(["outcomes", str(folder / "outcomes.csv")])
        yield pair
    finally:
        keeper.close()


def test_ingest_counts_and_rejections_are_the_same_and_reingest_is_all_duplicates(pair: Pair) -> None:
    first, again, other = pair.ingested
    assert (first["accepted"], first["duplicates"], first["rejected"]) == (126, 1, 3)
    assert [r["field"] for r in first["rejections"]] == ["record", "input_tokens", "ts"]
    assert (again["accepted"], again["duplicates"]) == (0, 127)
    assert (other["accepted"], other["duplicates"]) == (0, 4)
    # Right after the duplicate ingests, with no merge: each event once.
    a, b = pair.frames(
        "SELECT count(*) AS n, count(DISTINCT event_id) AS ids, sum(cost) AS spend FROM events"
    )
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    assert a["n"][0] == a["ids"][0] == 126


READS: list[list[str]] = [
    ["report", *WINDOW, "-f", "json"],
    ["report", *WINDOW, "--by", "team,customer,tag:x", "-f", "json"],
    ["report", *WINDOW, "--by", "tag:région,user", "-w", "tag:région=été", "-f", "json"],
    ["report", *WINDOW, "--by", "team", "--period", "day", "-f", "json"],
    ["report", *WINDOW, "--by", "team", "--period", "week", "-f", "csv"],
    ["report", *WINDOW, "--by", "model", "--period", "hour", "-w", "team=", "-f", "json"],
    ["report", *WINDOW, "--by", "team", "-w", "team=ünï-téam,search", "-f", "json"],
    ["report", *WINDOW, "--by", "user", "-w", "user=josé", "--period", "month", "-f", "json"],
    ["report", *WINDOW, "--by", "team", "-w", "tag:x=", "-w", "customer!=", "-f", "json"],
    ["report", "--since", "2025-03-29T23:59:59.999999Z", "--until", "2025-03-30T00:00:00Z", "-f", "json"],
    [
        "report",
        "--since",
        "2025-03-30",
        "--until",
        "2025-03-30T01:00:00.000001Z",
        "--by",
        "team",
        "-f",
        "json",
    ],
    ["budgets", "--now", "2025-03-30T00:30:00Z", "-f", "json"],
    ["budgets", "--now", "2025-03-30T01:30:00Z", "-f", "json"],
    ["budgets", "--now", "2025-10-26T00:45:00Z", "-f", "json"],
    ["budgets", "--now", "2025-10-26T01:15:00Z", "-f", "json"],
]


@pytest.mark.parametrize("args", READS, ids=" ".join)
def test_reports_and_budgets_are_the_same(pair: Pair, args: list[str]) -> None:
    pair.both(args)


def test_the_no_team_bucket_holds_null_and_empty_teams_on_both(pair: Pair) -> None:
    report = json.loads(pair.both(["report", *WINDOW, "--by", "team", "-f", "json"]))
    teams = [row["team"] for row in report["rows"]]
    assert teams.count(None) == 1 and "" not in teams
    assert "ünï-téam" in teams


def test_microseconds_and_twelve_decimals_round_trip(pair: Pair) -> None:
    a, b = pair.frames(
        "SELECT event_id, ts, team, user, tags, cost, billed_cost FROM events "
        "WHERE event_id LIKE 'e-%' ORDER BY event_id"
    )
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    by_id = a.set_index("event_id")
    assert by_id.loc["e-dst-", "ts"] == pd.Timestamp("2025-03-30T00:59:59.999999Z")
    assert by_id.loc["e-fall-1", "billed_cost"] == Decimal("0.000000000001")
    assert by_id.loc["e-midnight-", "team"] is pd.NA  # the first copy, not "a second copy"


def test_a_reprice_its_audit_and_the_reports_after_it_are_the_same(pair: Pair) -> None:
    reprice = ["reprice", *WINDOW, "--prices", str(pair.folder / "prices.toml"), "-f", "json"]
    result = json.loads(pair.both(reprice))
    assert result["events_changed"] > 0 and result["newly_priced"] == 1
    assert json.loads(pair.both(reprice))["events_changed"] == 0  # the second run has nothing left to do
    for sql in (
        'SELECT events_seen, events_changed, old_total, new_total, newly_priced FROM reprice_runs ORDER BY "at"',
        "SELECT provider, model, events, old_total, new_total FROM reprice_changes "
        "WHERE old_total IS DISTINCT FROM new_total ORDER BY provider, model",
        "SELECT event_id, ts, old_cost, new_cost, new_price_ref FROM reprice_events ORDER BY event_id",
        "SELECT event_id, cost, cost_input, price_ref FROM events ORDER BY event_id",
    ):
        a, b = pair.frames(sql)
        pd.testing.assert_frame_equal(a, b, check_exact=True)
    pair.both(["report", *WINDOW, "--by", "team,model", "-f", "json"])


def test_a_watch_cycle_and_its_alerts_are_the_same(pair: Pair) -> None:
    pair.both(["watch", "--once", "--now", "2025-10-26T12:00:00Z"])
    assert pair.both(["alerts", "-f", "json"]) != "[]\n"


# ------------------------------------------------------------------ what merges leave to chance


def _priced_rows(records: list[dict[str, Any]]) -> pa.Table:
    """The ledger rows a writer builds for `records` (priced, stamped), as it would insert them."""
    with Ledger(f"chdb://?database=p9_{uuid.uuid4().hex}", config=Config()) as scratch:
        scratch.ingest_records(records)
        return scratch.store.fetch("SELECT * FROM events")


def test_deduplicate_keeps_the_first_copy_of_an_event_a_stopped_writer_left_in_any_month(
    tmp_path: Path,
) -> None:
    """A writer that looked its ids up before another stored them, inserted, and stopped before
    settling the race leaves a second copy. Merges never collapse copies dated in two months,
    and keep the last written in one month; DuckDB keeps the first."""
    first = [
        _call("r-1", "2025-03-31T23:59:59Z", team="first"),
        _call("r-2", "2025-03-15T00:00:00Z", team="first"),
    ]
    late = [
        _call("r-1", "2025-04-01T00:00:01Z", team="late", input_tokens=9000),
        _call("r-2", "2025-03-15T00:00:02Z", team="late", input_tokens=9000),
    ]
    with (
        Ledger(f"chdb://?database=p9_{uuid.uuid4().hex}", config=Config()) as house,
        Ledger(tmp_path / "l.duckdb", config=Config()) as duck,
    ):
        for ledger in (house, duck):
            ledger.ingest_records(first)
        duck.ingest_records(late)
        store = house.store
        assert isinstance(store, ClickHouseStore)
        store.client.insert_arrow("events", _priced_rows(late))
        assert house.count() == 4

        store.deduplicate()

        kept = house.sql("SELECT event_id, team FROM events ORDER BY event_id").to_dict("records")
        assert kept == [{"event_id": "r-1", "team": "first"}, {"event_id": "r-2", "team": "first"}]
        args = {"since": "2025-03-01", "until": "2025-05-01", "by": "team"}
        assert house.report_sections(**args).rows == duck.report_sections(**args).rows


def test_deduplicate_keeps_equal_rows_of_a_table_without_a_key() -> None:
    """Two watch cycles that each roll up one call of the same cron job in one hour write two
    equal rows: `OPTIMIZE ... DEDUPLICATE` made them one, and halved the hour's spend."""
    row = {"hour": datetime(2025, 3, 1, 10, tzinfo=UTC), "team": "cron", "calls": 1, "cost": Decimal("0.25")}
    with Ledger(f"chdb://?database=p9_{uuid.uuid4().hex}", config=Config()) as house:
        for _ in range(2):
            house.store.insert("watch_hourly", pa.Table.from_pylist([row], schema=HOURLY_SCHEMA))
        house.store.deduplicate()  # type: ignore[attr-defined]
        rolled = house.sql("SELECT count(*) AS n, sum(cost) AS cost FROM watch_hourly").to_dict("records")
    assert rolled == [{"n": 2, "cost": Decimal("0.500000000000")}]


@pytest.mark.parametrize(
    "value", [Decimal("0.000000000001"), Decimal("0.1"), Decimal("-2.5"), Decimal("1E+3")]
)
def test_money_bound_as_a_parameter_stays_an_exact_decimal(pair: Pair, value: Decimal) -> None:
    sql = "SELECT ? AS v, sum(cost * ?) AS scaled, count(*) AS over FROM events WHERE cost > ?"
    answers = []
    for target in (pair.duckdb, pair.clickhouse):
        with Ledger(target, config=Config(), read_only=True) as ledger:
            table = ledger.store.fetch(sql, [value, value, abs(value) / 1000])
        assert pa.types.is_decimal(table.schema.field("v").type), target
        assert pa.types.is_decimal(table.schema.field("scaled").type), target
        answers.append(table.to_pylist())
    assert answers[0] == answers[1]
    assert answers[0][0]["v"] == value
