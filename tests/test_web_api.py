"""The JSON API of `unitcost serve`: the same numbers as the CLI, to the last digit, over a ledger
the server keeps writing. Real servers on 127.0.0.1 (the app of `unitcost serve` under uvicorn,
and the `unitcost serve` command itself), real DuckDB files, httpx as the client."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate as validate_openapi
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from fake_providers import serve_app
from otlp_payloads import genai_attributes, json_request, json_span
from unitcost.api import Ledger
from unitcost.cli import app as cli
from unitcost.config import Config, ConfigError, load_config
from unitcost.otlp.server import otlp_app
from unitcost.pricing.book import PriceBook

UNITCOST = str(Path(sys.executable).parent / "unitcost")
NOW = "2025-09-20T12:00:00Z"
WINDOW = {"since": "2025-09-01", "until": "2025-10-01"}
TOKEN_VAR = "UNITCOST_TEST_API_TOKEN"


def _events() -> list[dict[str, Any]]:
    """Two gpt-4o calls a day from 1 to 19 September (one with cached input), and three calls of a
    model nobody priced."""
    events = []
    for day in range(1, 20):
        for hour, team in ((0, "search"), (12, "support")):
            events.append(
                {
                    "event_id": f"c-{day}-{hour}",
                    "ts": f"2025-09-{day:02d}T{hour:02d}:10:00Z",
                    "model": "gpt-4o",
                    "provider": "openai",
                    "input_tokens": 1000 + 37 * day,
                    "cache_read_tokens": 0 if hour else 200,
                    "output_tokens": 100 + day,
                    "team": team,
                }
            )
    for n in range(3):
        events.append(
            {
                "event_id": f"u-{n}",
                "ts": f"2025-09-1{n}T08:00:00Z",
                "model": "acme-local-7b",
                "provider": "acme",
                "input_tokens": 500 + n,
                "output_tokens": 50,
                "team": "support",
            }
        )
    return events


@pytest.fixture
def world(tmp_path: Path) -> tuple[Path, Path]:
    return make_world(tmp_path)


def make_world(tmp_path: Path) -> tuple[Path, Path]:
    """(ledger, config): the events above, a monthly budget they spend most of, and the alerts a
    watch cycle at NOW opened."""
    from unitcost.watch.runner import Watcher
    from unitcost.watch.settings import load_watch_settings

    config = tmp_path / "unitcost.toml"
    config.write_text('[[budget]]\nname = "org"\namount = 0.25\nperiod = "month"\n')
    ledger = tmp_path / "ledger.duckdb"
    with Ledger(ledger, config=Config()) as opened:
        summary = opened.ingest_records(_events())
        assert (summary.accepted, summary.unpriced) == (41, 3)
        watcher = Watcher(opened.store, load_watch_settings(load_config(config)), sinks=[])
        watcher.run_once(now=datetime.fromisoformat(NOW))
        watcher.close()
    return ledger, config


@contextlib.contextmanager
def served(ledger: Path, config: Path, **kwargs: Any) -> Iterator[httpx.Client]:
    """The app `unitcost serve` runs, on a free port of 127.0.0.1, writing `ledger`."""
    application, _ = otlp_app(ledger, config=load_config(config), **kwargs)
    with serve_app(application) as url, httpx.Client(base_url=url, timeout=60) as client:
        yield client


def _cli_json(*args: str) -> Any:
    result = CliRunner().invoke(cli, [*args, "--format", "json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def _matches(document: dict[str, Any], schema: str, body: Any) -> None:
    """`body` is what the OpenAPI document says the answer is (its component `schema`)."""
    root = {"$ref": f"#/components/schemas/{schema}", "components": document["components"]}
    errors = sorted(Draft202012Validator(root).iter_errors(body), key=str)
    assert not errors, [f"{list(e.absolute_path)}: {e.message}" for e in errors[:5]]


def test_the_report_is_the_clis_to_the_last_digit(world: tuple[Path, Path]) -> None:
    ledger, config = world
    book = PriceBook()
    priced = [e for e in _events() if e["provider"] == "openai"]
    # The spend, summed here from the price book, call by call: not from the report's own code.
    usage_fields = ("input_tokens", "cache_read_tokens", "output_tokens")
    spend = Decimal(0)
    for e in priced:
        call = book.price(
            "gpt-4o", {k: e[k] for k in usage_fields}, provider="openai", at=datetime.fromisoformat(e["ts"])
        )
        assert call.breakdown is not None
        spend += call.breakdown.total
    args = ["--since", WINDOW["since"], "--until", WINDOW["until"], "-l", str(ledger)]
    by_team = _cli_json("report", *args, "--by", "team,model")
    search = _cli_json("report", *args, "--by", "model", "--where", "team=search", "--period", "day")
    with served(ledger, config) as api:
        answer = api.get("/api/v1/report", params={**WINDOW, "by": "team,model"})
        filtered = api.get(
            "/api/v1/report", params={**WINDOW, "by": "model", "where": "team=search", "period": "day"}
        )
        document = api.get("/api/v1/openapi.json").json()
    assert answer.status_code == 200, answer.text
    assert answer.json() == by_team
    assert filtered.json() == search
    headline = answer.json()["headline"]
    assert Decimal(headline["spend"]) == spend  # a decimal string, every digit
    assert isinstance(headline["spend"], str)
    assert (headline["calls"], headline["unpriced_calls"], headline["unpriced_tokens"]) == (
        41,
        3,
        3 * 550 + 3,
    )
    assert [(u["model"], u["calls"]) for u in answer.json()["unpriced"]] == [("acme-local-7b", 3)]
    _matches(document, "Report", answer.json())
    _matches(document, "Report", filtered.json())


def test_budgets_are_what_unitcost_budgets_says(world: tuple[Path, Path]) -> None:
    ledger, config = world
    expected = _cli_json("budgets", "-l", str(ledger), "--config", str(config), "--now", NOW)
    with served(ledger, config) as api:
        answer = api.get("/api/v1/budgets", params={"now": NOW})
        document = api.get("/api/v1/openapi.json").json()
    assert answer.status_code == 200, answer.text
    # Every column of `unitcost budgets --format json`, the same to the last digit (the API adds
    # the flags the CLI's table turns into words: over_budget, spend_started, daily_change).
    assert [{key: row[key] for key in expected[0]} for row in answer.json()["budgets"]] == expected
    (budget,) = answer.json()["budgets"]
    # A forecast with its interval: the month had 19 complete days at NOW.
    assert Decimal(budget["forecast_low"]) <= Decimal(budget["forecast"]) <= Decimal(budget["forecast_high"])
    assert budget["threshold_crossed"] == "50"
    _matches(document, "Budgets", answer.json())


def test_an_alert_acknowledged_through_the_api_is_acknowledged_for_the_cli(world: tuple[Path, Path]) -> None:
    ledger, config = world
    listed = _cli_json("alerts", "-l", str(ledger))
    with served(ledger, config) as api:
        alerts = api.get("/api/v1/alerts").json()
        budget_alerts = api.get("/api/v1/alerts", params={"detector": "budget", "state": "open"}).json()
        assert api.get("/api/v1/alerts", params={"since": "2025-09-21"}).json()["count"] == 0
        alert_id = budget_alerts["alerts"][0]["alert_id"]
        acked = api.post(
            f"/api/v1/alerts/{alert_id[:8]}/ack", json={"by": "oncall@example.com", "note": "raised"}
        )
        again = api.post(f"/api/v1/alerts/{alert_id}/ack", json={"by": "someone else"})
        document = api.get("/api/v1/openapi.json").json()
    assert [a["alert_id"] for a in alerts["alerts"]] == [a["alert_id"] for a in listed]
    assert {a["detector"] for a in budget_alerts["alerts"]} == {"budget"}
    assert acked.status_code == 200, acked.text
    assert acked.json()["acknowledged"] is True
    assert again.json()["acknowledged"] is False  # it keeps who acknowledged it first
    assert again.json()["alert"]["acked_by"] == "oncall@example.com"
    shown = _cli_json("alerts", "show", alert_id, "-l", str(ledger))
    assert (shown["status"], shown["acked_by"]) == ("acknowledged", "oncall@example.com")
    assert [h["message"] for h in shown["history"] if h["kind"] == "acknowledged"] == [
        "by oncall@example.com: raised"
    ]
    _matches(document, "Alerts", alerts)
    _matches(document, "AckResult", acked.json())


def test_prices_and_a_priced_call_are_the_clis(world: tuple[Path, Path]) -> None:
    ledger, config = world
    history = _cli_json("prices", "show", "openai/gpt-4o", "--tier", "standard")
    quote = _cli_json(
        "price", "gpt-4o", "--input", "1200", "--cache-read", "200", "--output", "80", "--at", "2025-09-10"
    )
    usage = {"input_tokens": 1200, "cache_read_tokens": 200, "output_tokens": 80}
    with served(ledger, config) as api:
        shown = api.get("/api/v1/prices/openai/gpt-4o", params={"tier": "standard"})
        priced = api.post("/api/v1/price", json={"model": "gpt-4o", "at": "2025-09-10", "usage": usage})
        no_batch = api.post(
            "/api/v1/price", json={"model": "gpt-4o", "at": "2024-01-01", "tier": "batch", "usage": usage}
        )
        document = api.get("/api/v1/openapi.json").json()
    assert shown.status_code == 200, shown.text
    assert [{key: row.get(key) for key in history[0]} for row in shown.json()["prices"]] == history
    assert all(row["source"] and row["layer"] for row in shown.json()["prices"])
    assert priced.json() == quote
    assert sum(Decimal(line["cost"]) for line in priced.json()["lines"]) == Decimal(priced.json()["cost"])
    # A model the book knows, with no price for that tier then: unknown cost, never $0.
    assert no_batch.status_code == 200
    assert no_batch.json()["cost"] is None and "no batch price" in no_batch.json()["unpriced_reason"]
    _matches(document, "PriceHistory", shown.json())
    _matches(document, "PriceAnswer", priced.json())
    _matches(document, "PriceAnswer", no_batch.json())


def test_mistakes_are_told_precisely_with_a_4xx(world: tuple[Path, Path]) -> None:
    ledger, config = world
    with served(ledger, config) as api:
        answers = {
            "bad date": api.get("/api/v1/report", params={"since": "2025-13-45"}),
            "unknown dimension": api.get("/api/v1/report", params={"by": "teem"}),
            "misspelt parameter": api.get("/api/v1/report", params={"sinec": "7d"}),
            "unknown state": api.get("/api/v1/alerts", params={"state": "closed"}),
            "unknown model": api.get("/api/v1/prices/gpt-4oo"),
            "unknown model priced": api.post("/api/v1/price", json={"model": "gpt-4oo", "usage": {}}),
            "parts over total": api.post(
                "/api/v1/price",
                json={"model": "gpt-4o", "usage": {"input_tokens": 10, "cache_read_tokens": 20}},
            ),
            "unknown alert": api.post("/api/v1/alerts/nope/ack", json={"by": "me"}),
            "nobody acks": api.post("/api/v1/alerts/nope/ack", json={"note": "x"}),
            "not json": api.post(
                "/api/v1/price", content=b"{model", headers={"content-type": "application/json"}
            ),
        }
        document = api.get("/api/v1/openapi.json").json()
    statuses = {name: answer.status_code for name, answer in answers.items()}
    assert statuses == {
        "bad date": 400,
        "unknown dimension": 400,
        "misspelt parameter": 400,
        "unknown state": 400,
        "unknown model": 404,
        "unknown model priced": 404,
        "parts over total": 400,
        "unknown alert": 404,
        "nobody acks": 400,
        "not json": 400,
    }
    errors = {name: answer.json()["error"] for name, answer in answers.items()}
    assert "'2025-13-45'" in errors["bad date"]
    assert "unknown dimension 'teem'" in errors["unknown dimension"]
    assert "sinec" in errors["misspelt parameter"] and "since" in errors["misspelt parameter"]
    assert "gpt-4o (openai)" in answers["unknown model"].json()["suggestions"]
    assert "gpt-4o (openai)" in answers["unknown model priced"].json()["suggestions"]
    assert "cache_read_tokens 20" in errors["parts over total"]
    assert "no alert with id 'nope'" in errors["unknown alert"]
    assert errors["nobody acks"] == "by: required"
    for answer in answers.values():
        _matches(document, "Error", answer.json())


def test_otlp_exports_sent_during_reads_are_all_recorded(world: tuple[Path, Path]) -> None:
    ledger, config = world
    start = int(datetime(2025, 9, 19, 10, tzinfo=UTC).timestamp() * 1e9)
    now = int((datetime.now(UTC) - timedelta(seconds=5)).timestamp() * 1e9)
    reads: list[int] = []
    done = threading.Event()
    with served(ledger, config) as api:
        before = api.get("/api/v1/report", params=WINDOW).json()["headline"]

        def read() -> None:
            with httpx.Client(base_url=str(api.base_url), timeout=60) as reader:
                for _ in range(200):  # bounded: stops with the exports or after 200 reads
                    if done.is_set():
                        return
                    reads.append(reader.get("/api/v1/report", params={**WINDOW, "by": "team"}).status_code)
                    reads.append(reader.get("/api/v1/budgets").status_code)

        readers = [threading.Thread(target=read) for _ in range(2)]
        for thread in readers:
            thread.start()
        try:
            exports = []
            for _ in range(10):
                spans = [
                    json_span(
                        genai_attributes(model="gpt-4o", input_tokens=900, output_tokens=90), start_ns=start
                    ),
                    json_span(genai_attributes(model="acme-local-7b", provider="acme"), start_ns=start),
                ]
                exports.append(api.post("/v1/traces", json=json_request(spans)).status_code)
            # Spend of this month, for the budget gauge below.
            this_month = json_span(genai_attributes(model="gpt-4o"), start_ns=now)
            exports.append(api.post("/v1/traces", json=json_request([this_month])).status_code)
        finally:
            done.set()
            for thread in readers:
                thread.join(120)
        after = api.get("/api/v1/report", params=WINDOW).json()["headline"]
        stats = api.get("/v1/traces/stats").json()
        budgets = api.get("/api/v1/budgets").json()["budgets"]
        scraped = api.get("/metrics")
        metrics = _metrics(scraped.text)
    assert exports == [200] * 11
    # The text format the gateway answers with too, without a `_created` twin of every counter.
    assert scraped.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert not [name for name, _ in metrics if name.endswith("_created")]
    assert reads and set(reads) == {200}
    assert after["calls"] == before["calls"] + 20
    assert after["unpriced_calls"] == before["unpriced_calls"] + 10
    assert stats["spans_accepted"] == 21
    assert metrics[("unitcost_otlp_spans_total", (("outcome", "accepted"),))] == 21
    assert metrics[("unitcost_otlp_spans_received_total", ())] == 21
    assert metrics[("unitcost_events_unpriced_total", ())] == 10
    assert metrics[("unitcost_ledger_read_ok", ())] == 1
    (budget,) = budgets
    key = (("budget", "org"), ("period", "month"), ("scope", "org"))
    assert budget["spent"] != "0"
    assert metrics[("unitcost_budget_spent_usd", key)] == float(Decimal(budget["spent"]))
    assert metrics[("unitcost_budget_amount_usd", key)] == 0.25
    assert metrics[("unitcost_budget_used_ratio", key)] == budget["used"]


def _metrics(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_metrics_count_open_alerts_and_watch_cycles(world: tuple[Path, Path]) -> None:
    from unitcost.watch.settings import load_watch_settings

    ledger, config = world
    with Ledger(ledger, config=Config(), read_only=True) as opened:
        unresolved = opened.store.fetch(
            "SELECT detector, severity, status, count(*) AS n FROM alerts WHERE status <> 'resolved' "
            "GROUP BY ALL"
        ).to_pylist()
    assert unresolved
    settings = load_watch_settings(load_config(config))
    settings.interval_s = 3600  # the first cycle runs at start, the next one not during this test
    with served(ledger, config, watch=settings) as api:
        for _ in range(600):  # the first cycle runs as the server starts
            metrics = _metrics(api.get("/metrics").text)
            if metrics[("unitcost_watch_cycles_total", ())] >= 1:
                break
            time.sleep(0.05)
        open_now = api.get("/api/v1/alerts", params={"limit": 1000}).json()["alerts"]
    assert metrics[("unitcost_watch_cycles_total", ())] == 1
    assert metrics[("unitcost_watch_cycle_seconds_count", ())] == 1
    gauges = {key: value for key, value in metrics.items() if key[0] == "unitcost_alerts_open"}
    expected: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for alert in open_now:
        if alert["status"] == "resolved":
            continue
        key = (
            "unitcost_alerts_open",
            (("detector", alert["detector"]), ("severity", alert["severity"]), ("status", alert["status"])),
        )
        expected[key] = expected.get(key, 0) + 1
    assert gauges == expected


def test_a_token_protects_the_api_and_the_metrics(
    world: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger, config = world
    config.write_text(config.read_text() + f'\n[api]\ntoken_env = "{TOKEN_VAR}"\n')
    monkeypatch.delenv(TOKEN_VAR, raising=False)
    with pytest.raises(ConfigError, match=TOKEN_VAR):  # never served open by mistake
        otlp_app(ledger, config=load_config(config))
    monkeypatch.setenv(TOKEN_VAR, "s3cret-token")
    with served(ledger, config) as api:
        anonymous = api.get("/api/v1/report")
        wrong = api.get("/api/v1/budgets", headers={"Authorization": "Bearer nope"})
        metrics = api.get("/metrics")
        right = api.get("/api/v1/report", headers={"Authorization": "Bearer s3cret-token"})
        right_metrics = api.get("/metrics", headers={"Authorization": "Bearer s3cret-token"})
        ack = api.post("/api/v1/alerts/x/ack", json={"by": "me"})
        document = api.get("/api/v1/openapi.json")
        health = api.get("/healthz")
    assert (anonymous.status_code, wrong.status_code, metrics.status_code, ack.status_code) == (401,) * 4
    assert anonymous.headers["www-authenticate"].startswith("Bearer")
    assert "s3cret" not in anonymous.text + wrong.text
    assert (right.status_code, right_metrics.status_code) == (200, 200)
    assert (document.status_code, health.status_code) == (200, 200)  # no cost data in either


def test_the_openapi_document_validates_and_lists_every_route_served(world: tuple[Path, Path]) -> None:
    ledger, config = world
    application, _ = otlp_app(ledger, config=load_config(config))
    served_routes = {
        (method, re.sub(r"\{(\w+):\w+\}", r"{\1}", route.path))
        for route in application.routes
        for method in getattr(route, "methods", None) or ()
        # The browser's pages (docs/dashboard.md) and `/`, which sends a browser to them: not an API.
        if method != "HEAD" and not route.path.startswith("/dashboard") and route.path != "/"
    }
    with serve_app(application) as url:
        document = httpx.get(f"{url}/api/v1/openapi.json").json()
        page = httpx.get(f"{url}/api/docs")
    validate_openapi(document)
    documented = {(method.upper(), path) for path, ops in document["paths"].items() for method in ops}
    assert documented == served_routes
    assert {"/api/v1/report", "/api/v1/budgets", "/api/v1/alerts", "/api/v1/price", "/metrics"} <= {
        path for _, path in served_routes
    }
    assert page.status_code == 200 and "/api/v1/alerts/{alert_id}/ack" in page.text
    assert "<script" not in page.text and "http" not in page.text.replace("/api/v1/openapi.json", "")


def test_unitcost_serve_answers_while_it_writes_and_the_cli_still_gets_in(
    world: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The command itself: the token from the environment, the report equal to the CLI's computed
    before, an acknowledgement through the API that `unitcost alerts` sees while the server runs."""
    ledger, config = world
    config.write_text(config.read_text() + f'\n[api]\ntoken_env = "{TOKEN_VAR}"\n')
    expected = _cli_json("report", "--since", WINDOW["since"], "--until", WINDOW["until"], "-l", str(ledger))
    alert_id = _cli_json("alerts", "-l", str(ledger), "--detector", "budget")[0]["alert_id"]
    server = subprocess.Popen(
        [
            UNITCOST,
            "serve",
            "--port",
            "0",
            "--decode-workers",
            "0",
            "--no-watch",
            "-l",
            str(ledger),
            "--config",
            str(config),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, TOKEN_VAR: "tok-123", "COLUMNS": "300"},
    )
    try:
        assert server.stdout is not None
        banner = server.stdout.readline() + server.stdout.readline()
        match = re.search(r"http://127\.0\.0\.1:(\d+)/api/v1 ", banner)
        assert match, banner
        base = f"http://127.0.0.1:{match.group(1)}"
        auth = {"Authorization": "Bearer tok-123"}
        with httpx.Client(base_url=base, headers=auth, timeout=60) as api:
            report = api.get("/api/v1/report", params=WINDOW)
            acked = api.post(f"/api/v1/alerts/{alert_id}/ack", json={"by": "api-user"})
            span = json_span(
                genai_attributes(model="gpt-4o"),
                start_ns=int(datetime(2025, 9, 19, tzinfo=UTC).timestamp() * 1e9),
            )
            exported = api.post("/v1/traces", json=json_request([span]))
            # `unitcost alerts` opens the ledger the server holds: the server gives it up between writes.
            listed = subprocess.run(
                [UNITCOST, "alerts", "-l", str(ledger), "--format", "json"],
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            after = api.get("/api/v1/report", params=WINDOW)
    finally:
        server.send_signal(signal.SIGINT)
        server.communicate(timeout=60)
    assert report.status_code == 200, report.text
    assert report.json() == expected
    assert acked.status_code == 200 and acked.json()["acknowledged"] is True
    assert exported.status_code == 200
    assert listed.returncode == 0, listed.stdout + listed.stderr
    mine = [a for a in json.loads(listed.stdout) if a["alert_id"] == alert_id]
    assert [(a["status"], a["acked_by"]) for a in mine] == [("acknowledged", "api-user")]
    assert after.json()["headline"]["calls"] == expected["headline"]["calls"] + 1


def test_a_clickhouse_ledger_is_served_with_the_same_numbers() -> None:
    """The API reads through the same functions on ClickHouse (chDB in-process here)."""
    pytest.importorskip(
        "chdb", reason="the chdb package (pip install -e '.[dev]') runs ClickHouse in-process"
    )
    import uuid

    from unitcost.analytics.report import report_document
    from unitcost.cli.output import to_json

    # In-memory chdb ledgers of one process share one engine: a database of its own keeps this apart.
    opened = Ledger(f"chdb://?database=t_{uuid.uuid4().hex}", config=Config())
    opened.ingest_records(_events())
    expected = json.loads(to_json(report_document(opened.report_sections(**WINDOW, by="team"))))
    application, _ = otlp_app(opened, config=Config())  # the app takes the ledger over and closes it
    with serve_app(application) as url:
        answer = httpx.get(f"{url}/api/v1/report", params={**WINDOW, "by": "team"}, timeout=60)
        alerts = httpx.get(f"{url}/api/v1/alerts", timeout=60)
    assert answer.json() == expected
    assert answer.json()["headline"]["unpriced_calls"] == 3
    assert alerts.json() == {"alerts": [], "count": 0}
