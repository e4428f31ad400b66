"""The ClickHouse ledger where a platform team scaling out would push it.

- A password written in the URL's query (`?password=`) is masked wherever the URL is shown,
  and reaches the server as a credential, never as a setting in every request's URL.
- `Ledger.sql` answers a query in the same types and values on both engines (truth values,
  counts, timestamps, money, maps, NULLs).
- Two writers storing the same new events at the same instant leave one copy, and every
  report counts each event once at once, not after ClickHouse's next merge.
- A ClickHouse account that may only read (`readonly=2`) can run the read commands.

ClickHouse runs for real, in-process through chDB; servers are real sockets on 127.0.0.1.
"""

from __future__ import annotations

import base64
import logging
import socket
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pandas as pd
import pyarrow as pa
import pytest

pytest.importorskip("chdb", reason="the chdb package (pip install -e '.[dev]') runs ClickHouse in-process")

from typer.testing import CliRunner

from unitcost.api import Ledger
from unitcost.cli import app
from unitcost.config import Config
from unitcost.ledger.base import LedgerUnreachableError
from unitcost.ledger.clickhouse_store import ClickHouseStore, redact

SECRET = "s3cr3t-Pa55"
SEPTEMBER = {"since": "2025-09-01", "until": "2025-10-01"}

EVENTS: list[dict[str, Any]] = [
    {"event_id": "e-1", "ts": "2025-09-10T10:00:00.123456Z", "provider": "openai", "model": "gpt-4o",
     "input_tokens": 1200, "cache_read_tokens": 200, "output_tokens": 300, "team": "search",
     "tags": {"region": "eu"}, "latency_ms": 812.0, "unit": "ticket", "unit_id": "T-1"},
    {"event_id": "e-2", "ts": "2025-09-10T11:30:00Z", "provider": "anthropic", "model": "claude-sonnet-4-5",
     "input_tokens": 50_000, "cache_write_1h_tokens": 20_000, "output_tokens": 2_000, "team": "support",
     "tags": {"region": "us", "tier": "gold"}, "cache_hit": True},
    {"event_id": "e-3", "ts": "2025-09-11T08:00:00Z", "provider": "acme", "model": "acme-9000",
     "input_tokens": 800, "output_tokens": 100, "team": "lab", "status": "error", "attempt": 2},
    {"event_id": "e-4", "ts": "2025-09-12T09:15:00Z", "provider": "openai", "model": "gpt-4o-mini",
     "input_tokens": 4000, "output_tokens": 900, "team": "search", "billed_cost": "0.0012"},
]  # fmt: skip


def chdb_url(database: str | None = None) -> str:
    return f"chdb://?database={database or 't_' + uuid.uuid4().hex}"


def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[Ledger, Ledger]]:
    duck = Ledger(tmp_path / "ledger.duckdb", config=Config())
    house = Ledger(chdb_url(), config=Config())
    for ledger in (duck, house):
        assert ledger.ingest_records(EVENTS).accepted == len(EVENTS)
    yield duck, house
    duck.close()
    house.close()


# ---------------------------------------------------------------------- a password in the query


@pytest.mark.parametrize(
    "query",
    [f"?password={SECRET}", f"?user=finops&password={SECRET}", f"?max_threads=4&password={SECRET}"],
)
def test_a_password_in_the_query_is_masked_when_the_server_is_unreachable(
    query: str, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"clickhouse://127.0.0.1:{unused_port()}/costs{query}"
    caplog.set_level(logging.DEBUG)
    with pytest.raises(LedgerUnreachableError) as caught:
        Ledger(url, config=Config())
    message = str(caught.value)
    assert SECRET not in message
    assert "password=***" in message and "Connection refused" in message
    assert not [r for r in caplog.records if SECRET in r.getMessage()]


def test_the_cli_names_the_unreachable_ledger_without_its_password() -> None:
    url = f"clickhouse://127.0.0.1:{unused_port()}/costs?user=finops&password={SECRET}"
    done = CliRunner().invoke(app, ["report", "--ledger", url])
    assert done.exit_code == 2
    assert SECRET not in done.output
    assert "user=finops&password=***" in done.output


def test_redact_masks_every_credential_of_a_ledger_url_and_keeps_the_rest() -> None:
    assert redact(f"clickhouse://ch:8123/db?user=x&password={SECRET}&max_threads=8") == (
        "clickhouse://ch:8123/db?user=x&password=***&max_threads=8"
    )
    assert redact(f"clickhouses://alice:{SECRET}@ch:8443/db") == "clickhouses://alice:***@ch:8443/db"
    assert redact("clickhouse://alice@ch:8123/db") == "clickhouse://alice@ch:8123/db"
    assert redact("clickhouse://[::1:8123/db?password=x") == "clickhouse://***"  # unreadable: nothing shown


class RefusingClickHouse(BaseHTTPRequestHandler):
    """Answers every request as a ClickHouse server refusing the credentials, and keeps them."""

    seen: ClassVar[list[tuple[str, str]]] = []

    def _refuse(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        self.seen.append((self.path, self.headers.get("Authorization", "")))
        body = (
            b"Code: 516. DB::Exception: finops: Authentication failed: password is incorrect, or there "
            b"is no user with such name. (AUTHENTICATION_FAILED) (version 25.8.1.1)\n"
        )
        self.send_response(403)
        self.send_header("X-ClickHouse-Exception-Code", "516")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # the name http.server calls
        self._refuse()

    def do_POST(self) -> None:
        self._refuse()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def refusing_server() -> Iterator[tuple[int, list[tuple[str, str]]]]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), RefusingClickHouse)
    RefusingClickHouse.seen = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1], RefusingClickHouse.seen
    server.shutdown()
    server.server_close()


def test_query_credentials_reach_the_server_as_credentials_not_as_settings(
    refusing_server: tuple[int, list[tuple[str, str]]],
) -> None:
    port, seen = refusing_server
    url = f"clickhouse://127.0.0.1:{port}/costs?user=finops&password={SECRET}"
    with pytest.raises(LedgerUnreachableError) as caught:
        Ledger(url, config=Config())
    assert SECRET not in str(caught.value)
    assert "Authentication failed" in str(caught.value)
    assert seen, "the server was asked"
    for path, authorization in seen:
        assert SECRET not in path  # not a setting in the request's URL (and its logs)
        assert base64.b64decode(authorization.split()[-1]).decode() == f"finops:{SECRET}"


def test_a_chdb_url_with_a_password_opens_and_shows_it_masked() -> None:
    with Ledger(chdb_url() + f"&password={SECRET}", config=Config()) as ledger:
        assert SECRET not in ledger.target and "password=***" in ledger.target
        assert ledger.count() == 0


@pytest.fixture
def silent_server() -> Iterator[int]:
    """Accepts connections and never answers (a hung server), closing each after a while so that
    nothing waits on it for ever."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def hold(connection: socket.socket) -> None:
        stop.wait(20)  # a guard against a hang, not a measurement
        connection.close()

    def accept() -> None:
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=hold, args=(connection,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    yield listener.getsockname()[1]
    stop.set()
    listener.close()


def test_a_hung_server_is_given_up_after_the_timeout_the_url_asks(silent_server: int) -> None:
    url = f"clickhouse://finops@127.0.0.1:{silent_server}/costs?send_receive_timeout=1&password={SECRET}"
    with pytest.raises(LedgerUnreachableError) as caught:
        Ledger(url, config=Config())
    assert str(caught.value) == (
        f"cannot open the ClickHouse ledger clickhouse://finops@127.0.0.1:{silent_server}/costs"
        f"?send_receive_timeout=1&password=***: cannot reach the server 127.0.0.1:{silent_server} (timed out)"
    )


def test_a_timeout_that_is_not_a_number_of_seconds_is_refused_before_connecting() -> None:
    url = f"clickhouse://127.0.0.1:{unused_port()}/costs?connect_timeout=soon"
    with pytest.raises(LedgerUnreachableError, match="connect_timeout must be a number of seconds above 0"):
        Ledger(url, config=Config())


# ---------------------------------------------------------------------- Ledger.sql parity

SAME_ANSWERS = [
    # truth values: comparisons, IS NULL, IN, LIKE, logic, CASE, aggregates of them, subqueries
    "SELECT event_id, cost IS NULL AS unpriced, input_tokens > 1000 AS big, team IN ('lab', 'search') AS mine,"
    " model LIKE 'gpt%' AS gpt, cache_hit AND team = 'support' AS both_, NOT cache_hit AS fresh,"
    " CASE WHEN cost IS NULL THEN true ELSE false END AS flagged FROM events ORDER BY event_id",
    "SELECT team, max(cost IS NULL) AS any_unpriced, count(*) > 1 AS several FROM events GROUP BY team ORDER BY team",
    "WITH t AS (SELECT event_id, status = 'error' AS failed FROM events) SELECT * FROM t ORDER BY event_id",
    "SELECT failed FROM (SELECT status = 'ok' AS failed FROM events WHERE event_id = 'e-1'"
    " UNION ALL SELECT 1 = 0 AS failed) ORDER BY failed",
    # counts, date parts, timestamps with their time zone and microseconds
    "SELECT count(*) AS n, count(cost) AS priced, count(DISTINCT model) AS models,"
    " count(*) - count(cost) AS unpriced FROM events",
    "SELECT event_id, ts, date_trunc('hour', ts) AS hour, CAST(ts AS DATE) AS day,"
    " extract(hour FROM ts) AS h, ingested_at > ts AS later FROM events ORDER BY event_id",
    "SELECT team, min(ts) AS first, max(ts) AS last FROM events GROUP BY team ORDER BY team",
    # exact money, NULL for an unpriced call, maps
    "SELECT event_id, cost, billed_cost, tags, tags['region'] AS region FROM events"
    " WHERE tags['region'] <> '' ORDER BY event_id",
    "SELECT team, count(*) AS calls, sum(cost) AS spend, max(cost) AS top FROM events GROUP BY team ORDER BY team",
    "SELECT * FROM events ORDER BY event_id",
]


@pytest.mark.parametrize("query", SAME_ANSWERS)
def test_ledger_sql_answers_the_same_types_and_values_on_both_engines(
    pair: tuple[Ledger, Ledger], query: str
) -> None:
    duck, house = pair
    expected, got = duck.sql(query), house.sql(query)
    # `ingested_at` is when each ledger stored the events: the one column allowed to differ.
    for frame in (expected, got):
        if "ingested_at" in frame:
            frame["ingested_at"] = frame["ingested_at"].notna()
    assert dict(got.dtypes) == dict(expected.dtypes)
    pd.testing.assert_frame_equal(got, expected)


def test_money_computed_in_sql_stays_exact_decimal_on_both_engines(pair: tuple[Ledger, Ledger]) -> None:
    # Each engine widens the precision of a Decimal sum by its own rule; the value and the
    # scale (pico-dollars) are the same, never a float.
    query = (
        "SELECT team, count(*) AS calls, sum(cost_input + cost_output) AS io "
        "FROM events GROUP BY team ORDER BY team"
    )
    expected, got = (ledger.sql(query) for ledger in pair)
    assert got["calls"].dtype == expected["calls"].dtype
    assert got["io"].dtype.pyarrow_dtype.scale == expected["io"].dtype.pyarrow_dtype.scale == 12
    assert got.to_dict("records") == expected.to_dict("records")


def test_a_truth_value_is_a_boolean_in_a_stream_too(pair: tuple[Ledger, Ledger]) -> None:
    _, house = pair
    batches = list(
        house.store.scan("SELECT event_id, cost IS NULL AS unpriced FROM events ORDER BY event_id")
    )
    table = pa.Table.from_batches(batches)
    assert table.schema.field("unpriced").type == pa.bool_()
    assert table.column("unpriced").to_pylist() == [False, False, True, False]


def test_a_small_number_is_not_taken_for_a_truth_value(pair: tuple[Ledger, Ledger]) -> None:
    _, house = pair
    frame = house.sql(
        "SELECT toUInt8(attempt) AS a, toHour(ts) AS h, attempt > 1 AS retried FROM events ORDER BY event_id"
    )
    assert [str(frame[c].dtype) for c in frame] == ["int64[pyarrow]", "int64[pyarrow]", "bool[pyarrow]"]
    assert frame.to_dict("list") == {
        "a": [1, 1, 2, 1],
        "h": [10, 11, 8, 9],
        "retried": [False, False, True, False],
    }


# ---------------------------------------------------------------------- writers racing


def race_at_insert(ledgers: list[Ledger]) -> None:
    """Make every ledger's next event insert wait for the others': all of them have then found
    the ids new, as two processes writing at the same instant do."""
    barrier = threading.Barrier(len(ledgers))
    for ledger in ledgers:
        store = ledger.store
        assert isinstance(store, ClickHouseStore)
        original = store.client.insert_arrow

        def insert_arrow(table: str, rows: pa.Table, *args: Any, _original: Any = original, **kw: Any) -> Any:
            if table == "events":
                barrier.wait(timeout=60)  # a guard against a hang, not a measurement
            return _original(table, rows, *args, **kw)

        store.client.insert_arrow = insert_arrow


def ingest_at_once(batches: dict[Ledger, list[dict[str, Any]]]) -> dict[Ledger, Any]:
    summaries: dict[Ledger, Any] = {}

    def ingest(ledger: Ledger, records: list[dict[str, Any]]) -> None:
        summaries[ledger] = ledger.ingest_records(records)

    threads = [threading.Thread(target=ingest, args=item) for item in batches.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(summaries) == len(batches), "a writer failed"
    return summaries


def many_events(ids: range) -> list[dict[str, Any]]:
    models = [("openai", "gpt-4o"), ("anthropic", "claude-sonnet-4-5"), ("acme", "acme-9000")]
    return [
        {"event_id": f"r-{i}", "ts": f"2025-09-{1 + i % 28:02d}T{i % 24:02d}:00:00Z",
         "provider": models[i % 3][0], "model": models[i % 3][1], "input_tokens": 1000 + i,
         "output_tokens": 100 + i, "team": ["search", "support"][i % 2]}
        for i in ids
    ]  # fmt: skip


def assert_reports_match(duck: Ledger, house: Ledger, **args: Any) -> None:
    a, b = duck.report_sections(**SEPTEMBER, **args), house.report_sections(**SEPTEMBER, **args)
    for section in ("headline", "rows", "units", "unpriced"):
        assert getattr(a, section) == getattr(b, section), section


def test_two_writers_storing_the_same_events_at_once_leave_one_copy(tmp_path: Path) -> None:
    database = f"t_{uuid.uuid4().hex}"
    first, second = Ledger(chdb_url(database), config=Config()), Ledger(chdb_url(database), config=Config())
    duck = Ledger(tmp_path / "ledger.duckdb", config=Config())
    try:
        events = many_events(range(300))
        race_at_insert([first, second])
        summaries = ingest_at_once({first: events, second: events})
        duck.ingest_records(events)

        # Each event stored once, at once: no merge was asked for.
        counted = first.sql("SELECT count(*) AS n, count(DISTINCT event_id) AS ids FROM events")
        assert counted["n"].tolist() == counted["ids"].tolist() == [300]
        # The ingest summaries add up: every event accepted by exactly one writer.
        assert sorted(s.accepted for s in summaries.values()) == [0, 300]
        assert sorted(s.duplicates for s in summaries.values()) == [0, 300]
        assert_reports_match(duck, first, by="team,model")
        assert first.report_sections(**SEPTEMBER).headline["unpriced_calls"] == 100
    finally:
        for ledger in (first, second, duck):
            ledger.close()


def test_overlapping_batches_of_racing_writers_count_each_event_once(tmp_path: Path) -> None:
    database = f"t_{uuid.uuid4().hex}"
    writers = [Ledger(chdb_url(database), config=Config()) for _ in range(3)]
    duck = Ledger(tmp_path / "ledger.duckdb", config=Config())
    try:
        batches = {writers[0]: many_events(range(0, 200)), writers[1]: many_events(range(100, 300)),
                   writers[2]: many_events(range(150, 250))}  # fmt: skip
        race_at_insert(writers)
        summaries = ingest_at_once(batches)
        duck.ingest_records(many_events(range(0, 300)))

        assert writers[0].count() == 300
        assert sum(s.accepted for s in summaries.values()) == 300
        assert sum(s.duplicates for s in summaries.values()) == 500 - 300
        assert_reports_match(duck, writers[1], by="team")
        assert_reports_match(duck, writers[2], by="model", where=["team=search"])
        # A later re-ingest of everything is all duplicates.
        again = writers[0].ingest_records(many_events(range(0, 300)))
        assert (again.accepted, again.duplicates) == (0, 300)
    finally:
        for ledger in (*writers, duck):
            ledger.close()


# ---------------------------------------------------------------------- a read-only account


def test_an_account_that_may_only_read_runs_the_read_commands(pair: tuple[Ledger, Ledger]) -> None:
    duck, house = pair
    database = house.store.database  # type: ignore[attr-defined]
    url = f"chdb://?database={database}&readonly=2"
    with Ledger(url, config=Config(), read_only=True) as reader:
        assert reader.count() == len(EVENTS)
        assert_reports_match(duck, reader, by="team")
    window = ["--since", SEPTEMBER["since"], "--until", SEPTEMBER["until"]]
    done = CliRunner().invoke(app, ["report", "--ledger", url, *window])
    assert done.exit_code == 0, done.output
