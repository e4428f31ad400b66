"""The commands a user types, run through the real CLI entry point."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import duckdb
import pytest
from typer.testing import CliRunner

from unitcost.cli import app
from unitcost.ledger.schema import SCHEMA_VERSION

runner = CliRunner()


def run(*args: str, code: int = 0) -> str:
    result = runner.invoke(app, list(args), catch_exceptions=False)
    assert result.exit_code == code, result.output
    return result.output


def test_price_prints_the_breakdown_with_source_and_date() -> None:
    out = run(
        "price", "gpt-4o", "--input", "12000", "--cache-read", "8000", "--output", "900", "--at", "2025-06-01"
    )
    # 4,000 × $2.50/M + 8,000 × $1.25/M + 900 × $10/M = $0.01 + $0.01 + $0.009
    assert "$0.029" in out
    assert "cache read" in out
    assert "genai-prices" in out


def test_price_json_is_exact_decimal_text() -> None:
    out = run(
        "price",
        "gpt-4o",
        "--input",
        "1000000",
        "--output",
        "1000000",
        "--at",
        "2025-06-01",
        "--format",
        "json",
    )
    data = json.loads(out)
    assert Decimal(data["cost"]) == Decimal("12.5")
    assert data["price_ref"] == "genai-prices:openai/gpt-4o"
    assert Decimal(data["rates_usd_per_mtok"]["output_text"]) == Decimal("10")
    # $10 per thousand web searches is not $10 per million tokens of anything.
    assert "web_searches" not in data["rates_usd_per_mtok"]
    assert Decimal(data["rates_usd_per_thousand"]["web_searches"]) == Decimal("10")


def test_price_of_an_unknown_model_is_unpriced_not_zero() -> None:
    out = run("price", "no-such-model-xyz", "--input", "10", code=1)
    assert "no price" in out.lower() or "unknown model" in out.lower()
    assert "$0.00" not in out


def test_prices_show_lists_the_deepseek_periods() -> None:
    out = run("prices", "show", "deepseek-chat", "--format", "csv")
    lines = out.strip().splitlines()
    header = lines[0].split(",")
    assert "from" in header[0] or "from" in header
    assert any("2025-09-05" in line for line in lines)
    assert any("2025-09-29" in line for line in lines)


def test_prices_diff_between_two_dates() -> None:
    out = run(
        "prices",
        "diff",
        "--from",
        "2025-09-20",
        "--to",
        "2025-10-05",
        "--model",
        "deepseek-chat",
        "--format",
        "json",
    )
    changes = json.loads(out)
    assert changes, "V3.2-Exp changed deepseek-chat's prices on 2025-09-29"
    chat = [c for c in changes if c["model"] == "deepseek/deepseek-chat"]
    assert {c["component"] for c in chat} == {"input", "cache_read", "output"}
    assert all("deepseek-chat" in c["model"] for c in changes)


def _write_events(path: Path) -> None:
    lines = [
        {
            "event_id": "a",
            "ts": "2025-09-10T10:00:00Z",
            "model": "gpt-4o",
            "input_tokens": 1000,
            "output_tokens": 10,
        },
        {
            "event_id": "b",
            "ts": "2025-09-10T10:01:00Z",
            "model": "gpt-4o",
            "input_tokens": -5,
            "output_tokens": 10,
        },
        {
            "event_id": "c",
            "ts": "2025-09-10T10:02:00Z",
            "model": "gpt-4o",
            "input_tokens": 10,
            "output_tokens": 1,
        },
    ]
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n")


def _ingested(tmp_path: Path, name: str = "l.duckdb") -> Path:
    """A ledger holding `_write_events`' calls (its line with negative tokens is rejected)."""
    events, ledger = tmp_path / "e.jsonl", tmp_path / name
    _write_events(events)
    run("ingest", str(events), "--ledger", str(ledger), code=1)
    return ledger


def _report_json(ledger: Path, *options: str) -> dict:
    return json.loads(run("report", "--ledger", str(ledger), *options, "--format", "json"))


def test_ingest_names_the_bad_record_keeps_the_rest_and_exits_1(tmp_path: Path) -> None:
    events, ledger = tmp_path / "e.jsonl", tmp_path / "l.duckdb"
    _write_events(events)
    out = run("ingest", str(events), "--ledger", str(ledger), "--format", "json", code=1)
    summary = json.loads(out)
    assert (summary["accepted"], summary["rejected"]) == (2, 1)
    assert summary["rejections"][0]["record"] == 2
    assert summary["rejections"][0]["field"] == "input_tokens"
    again = json.loads(run("ingest", str(events), "--ledger", str(ledger), "--format", "json", code=1))
    assert (again["accepted"], again["duplicates"]) == (0, 2)


def test_ledger_from_the_environment_and_report_formats(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events, ledger = tmp_path / "e.jsonl", tmp_path / "env.duckdb"
    _write_events(events)
    monkeypatch.setenv("UNITCOST_LEDGER", str(ledger))
    run("ingest", str(events), code=1)
    assert ledger.exists()
    window = ("--since", "2025-09-10", "--until", "2025-09-11")
    data = json.loads(run("report", *window, "--format", "json"))
    assert data["headline"]["calls"] == 2
    # 1,010 input tokens at $2.50/M and 11 output at $10/M
    assert Decimal(data["headline"]["spend"]) == Decimal("0.002635")
    csv_out = run("report", *window, "--by", "model", "--format", "csv")
    assert csv_out.splitlines()[0].startswith("model,calls,spend")
    markdown = run("report", *window, "--format", "markdown")
    assert "| model |" in markdown


def test_report_on_a_window_with_no_calls_counts_zero(tmp_path: Path) -> None:
    # The default window (the last 30 days) of a ledger of older calls is empty: the report
    # says so with zeros, and the unpriced count is 0, not unknown.
    ledger = _ingested(tmp_path)
    out = run("report", "--ledger", str(ledger))
    assert "0 calls" in out
    assert "unpriced: 0 calls, 0 tokens" in out
    # --until is exclusive: the hint names the day after the last call, and its window holds them all.
    assert "try --since 2025-09-10 --until 2025-09-11" in out
    hinted = _report_json(ledger, "--since", "2025-09-10", "--until", "2025-09-11")
    everything = _report_json(ledger, "--since", "2000-01-01")
    assert hinted["headline"]["calls"] == everything["headline"]["calls"] > 0
    # The hint goes to stderr: stdout stays parseable JSON.
    result = runner.invoke(app, ["report", "--ledger", str(ledger), "--format", "json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert (data["headline"]["calls"], data["headline"]["unpriced_calls"]) == (0, 0)
    assert "try --since" in result.stderr


def test_whatif_and_levers_on_an_empty_window_say_where_the_calls_are(tmp_path: Path) -> None:
    ledger = _ingested(tmp_path)
    for command in (["whatif", "--as", "openai:gpt-4o-mini"], ["levers"]):
        out = " ".join(run(*command, "--ledger", str(ledger), code=2).split())
        assert "no priced calls" in out
        assert "try --since 2025-09-10 --until 2025-09-11" in out


def test_an_empty_ledger_says_to_ingest_first(tmp_path: Path) -> None:
    ledger = tmp_path / "l.duckdb"
    events = tmp_path / "e.jsonl"
    events.write_text("")
    run("ingest", str(events), "--ledger", str(ledger))
    result = runner.invoke(app, ["report", "--ledger", str(ledger)])
    assert result.exit_code == 0, result.output
    hint = " ".join(result.stderr.split())
    assert "The ledger has no events yet: run `unitcost ingest FILE`" in hint


def test_an_error_naming_a_toml_table_prints_it_as_written(tmp_path: Path) -> None:
    # "[[price]]" in an error is text: printed as markup it would read "[]".
    prices = tmp_path / "prices.toml"
    prices.write_text('[[price]]\nprovider = "x"\nmodel = "m"\ninput_mtok = "abc"\n')
    out = run("price", "m", "--input", "10", "--output", "1", "--prices", str(prices), code=2)
    assert "prices.toml [[price]] #1: input_mtok: expected a number, got 'abc'" in " ".join(out.split())


def test_report_on_a_missing_ledger_says_what_to_do(tmp_path: Path) -> None:
    out = run("report", "--ledger", str(tmp_path / "none.duckdb"), code=2)
    assert "unitcost demo" in out


def test_a_new_ledger_is_at_the_current_schema_version(tmp_path: Path) -> None:
    ledger = _ingested(tmp_path)
    con = duckdb.connect(str(ledger), read_only=True)
    try:
        version = con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchall()[0]
    finally:
        con.close()
    assert version == (str(SCHEMA_VERSION),)


def test_reprice_after_a_correction_audits_old_and_new(tmp_path: Path) -> None:
    events, ledger, prices = tmp_path / "e.jsonl", tmp_path / "l.duckdb", tmp_path / "prices.toml"
    events.write_text(
        json.dumps(
            {
                "event_id": "s1",
                "ts": "2025-09-10T10:00:00Z",
                "provider": "self-hosted",
                "model": "acme-x",
                "input_tokens": 1_000_000,
                "output_tokens": 1_000_000,
            }
        )
        + "\n"
    )
    run("ingest", str(events), "--ledger", str(ledger))
    prices.write_text(
        '[[price]]\nprovider = "self-hosted"\nmodel = "acme-x"\nfrom = "2025-01-01"\n'
        'source = "our GPU cost model, 2025-09"\ninput_mtok = "0.20"\noutput_mtok = "0.60"\n'
    )
    out = run(
        "reprice",
        "--since",
        "2025-09-01",
        "--ledger",
        str(ledger),
        "--prices",
        str(prices),
        "--format",
        "json",
    )
    audit = json.loads(out)
    assert audit["events_changed"] == 1
    assert (audit["old_unpriced"], audit["new_unpriced"]) == (1, 0)
    assert Decimal(audit["new_total"]) == Decimal("0.80")
    # Before the correction the model had no price: its old total is unknown, not $0.
    [model] = audit["models"]
    assert (model["old_total"], Decimal(model["new_total"]), model["delta"]) == (None, Decimal("0.80"), None)
    con = duckdb.connect(str(ledger), read_only=True)
    try:
        [(cost, ref)] = con.execute("SELECT cost, price_ref FROM events").fetchall()
        runs = con.execute("SELECT events_changed, new_total FROM reprice_runs").fetchall()
    finally:
        con.close()
    assert cost == Decimal("0.8")
    assert "user" in ref
    assert runs == [(1, Decimal("0.8"))]
    # The stored audit agrees: no old total where no event had a price (it said $0).
    con = duckdb.connect(str(ledger), read_only=True)
    try:
        stored = con.execute("SELECT old_total, old_unpriced FROM reprice_runs").fetchall()
        changes = con.execute("SELECT old_total, new_total, old_unpriced FROM reprice_changes").fetchall()
    finally:
        con.close()
    assert stored == [(None, 1)]
    assert changes == [(None, Decimal("0.8"), 1)]


def test_reprice_refuses_a_missing_ledger_and_a_window_that_ends_before_it_starts(tmp_path: Path) -> None:
    typo = tmp_path / "ledgr.duckdb"
    out = " ".join(run("reprice", "--since", "2025-09-01", "--ledger", str(typo), code=2).split())
    assert f"no ledger at {typo}" in out
    assert not typo.exists()  # it made a new, empty ledger and reported "0 events changed"
    ledger = _ingested(tmp_path)
    out = run("reprice", "--since", "2025-10-01", "--until", "2025-09-01", "--ledger", str(ledger), code=2)
    assert "--until (2025-09-01 00:00) must be after --since (2025-10-01 00:00)" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["diff", "--from", "2025-09-01", "--to", "2025-10-01", "--provider", "deepsek"],
            'did you mean "deepseek"',
        ),
        (
            ["diff", "--from", "2025-09-01", "--to", "2025-10-01", "--model", "deepseek-chatt"],
            "no model id contains",
        ),
        (
            ["diff", "--from", "2025-09-01", "--to", "2025-10-01", "--tier", "batchx"],
            "unknown service tier 'batchx'",
        ),
        (["show", "gpt-4o", "--tier", "batchx"], "unknown service tier 'batchx'"),
    ],
)
def test_a_misspelt_price_filter_is_named_not_answered_with_nothing(args: list[str], message: str) -> None:
    """Each of these printed "No price changed in that interval." or an empty table, exit 0."""
    out = " ".join(run("prices", *args, code=2).split())
    assert message in out


class _Prices(BaseHTTPRequestHandler):
    payload = b""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(self.payload)))
        self.end_headers()
        self.wfile.write(self.payload)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def price_server() -> Iterator[str]:
    """A price feed in genai-prices' data format where gpt-4o costs $1/$2 per million."""
    feed = [
        {
            "id": "openai",
            "name": "OpenAI",
            "api_pattern": "https://api\\.openai\\.com",
            "pricing_urls": ["https://example.test/pricing"],
            "models": [
                {"id": "gpt-4o", "match": {"equals": "gpt-4o"}, "prices": {"input_mtok": 1, "output_mtok": 2}}
            ],
        }
    ]
    _Prices.payload = json.dumps(feed).encode()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Prices)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/data.json"
    server.shutdown()


def test_prices_update_is_explicit_and_reversible(
    price_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("UNITCOST_PRICES_DIR", str(tmp_path / "prices"))
    before = json.loads(run("price", "gpt-4o", "--input", "1000000", "--format", "json"))
    out = run("prices", "update", "--url", price_server)
    assert "Fetched" in out
    after = json.loads(run("price", "gpt-4o", "--input", "1000000", "--format", "json"))
    assert Decimal(after["cost"]) == Decimal("1")
    assert Decimal(before["cost"]) == Decimal("2.5")
    run("prices", "update", "--bundled")
    reverted = json.loads(run("price", "gpt-4o", "--input", "1000000", "--format", "json"))
    assert reverted["cost"] == before["cost"]


def test_a_report_on_a_ledger_from_an_older_unitcost_migrates_it_first(tmp_path: Path) -> None:
    ledger = _ingested(tmp_path, "old.duckdb")
    con = duckdb.connect(str(ledger))
    con.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")  # as an older release left it
    con.close()
    data = _report_json(ledger, "--since", "2025-09-10", "--until", "2025-09-11")
    assert data["headline"]["calls"] == 2


def test_report_loads_neither_pandas_nor_arrow_nor_the_price_book(tmp_path: Path) -> None:
    # What `unitcost report` imports is most of its run time on a large ledger (the query reads
    # rollups): it must stay out of the ingest path, pricing and the data-frame libraries.
    ledger = _ingested(tmp_path)
    script = (
        "import sys\n"
        "from unitcost.cli import main\n"
        "sys.argv = ['unitcost', 'report', '--ledger', sys.argv[1], '--since', '2025-09-10', "
        "'--until', '2025-09-11', '--format', 'json']\n"
        "try:\n"
        "    main()\n"
        "except SystemExit as exc:\n"
        "    assert not exc.code, exc.code\n"
        "heavy = ('pandas', 'pyarrow', 'numpy', 'genai_prices', 'unitcost.pricing.book', 'unitcost.ingest.pipeline')\n"
        "print('LOADED', [name for name in heavy if name in sys.modules])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(ledger)], capture_output=True, text=True, check=True
    )
    report, loaded = done.stdout.rsplit("LOADED", 1)
    assert json.loads(report)["headline"]["calls"] == 2
    assert loaded.strip() == "[]"


def test_the_public_api_is_imported_on_first_use() -> None:
    script = (
        "import sys\n"
        "import unitcost\n"
        "assert 'unitcost.api' not in sys.modules and 'pyarrow' not in sys.modules\n"
        "from unitcost import Ledger, PriceBook, record\n"
        "assert unitcost.Ledger is Ledger and callable(record) and PriceBook.__name__ == 'PriceBook'\n"
        "assert set(unitcost.__all__) <= set(dir(unitcost))\n"
        "try:\n"
        "    unitcost.no_such_name\n"
        "except AttributeError as exc:\n"
        "    print(exc)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert "no attribute 'no_such_name'" in done.stdout


@pytest.mark.parametrize("command", ["report", "whatif"])
@pytest.mark.parametrize("kind", ["text file", "directory"])
def test_a_ledger_that_is_no_duckdb_file_is_one_error_line(tmp_path: Path, command: str, kind: str) -> None:
    target = tmp_path / "notdb.duckdb"
    if kind == "directory":
        target.mkdir()
    else:
        target.write_text("this is not a database\n")
    extra = ["--tier", "batch"] if command == "whatif" else []
    result = runner.invoke(app, [command, "-l", str(target), *extra])
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "error:" in result.output and "not a unitcost ledger (DuckDB database file)" in result.output
    assert ("is a directory" in result.output) == (kind == "directory")


def test_help_shows_config_sections_in_brackets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "250")
    monkeypatch.setenv("TERMINAL_WIDTH", "250")
    assert "then [pricing] overrides in the config file" in run("whatif", "--help")
    gateway = run("gateway", "--help")
    assert "Default: [gateway] host, 127.0.0.1." in gateway
    assert "Default: [gateway] port, 4000." in gateway


def test_an_unknown_file_format_names_each_commands_option(tmp_path: Path) -> None:
    (tmp_path / "x.txt").write_text("{}\n")
    ledger = _ingested(tmp_path)
    ingest = run("ingest", str(tmp_path / "x.txt"), "-l", str(ledger), code=2)
    assert "(or pass --input-format)" in ingest and "--format)" not in ingest
    outcomes = run("outcomes", str(tmp_path / "x.txt"), "-l", str(ledger), code=2)
    assert "pass --" not in outcomes and ".jsonl or .csv" in outcomes


def test_a_server_socket_accepts_connections_as_soon_as_the_banner_names_it() -> None:
    """`unitcost serve` and `unitcost gateway` print their address before the server starts
    serving (it opens the ledger first): a client that connects at once must wait in the
    backlog, not be refused (test_otlp_watch saw `Connection refused` once)."""
    import socket

    from unitcost.cli.app import listening_socket

    sock = listening_socket("127.0.0.1", 0, "test")
    try:
        with socket.create_connection(sock.getsockname(), timeout=5):
            pass  # refused on a socket that is only bound
    finally:
        sock.close()
