"""Alerts as an on-call FinOps engineer lives with them: a forecast hovering around a budget is
one incident, webhook headers come from the environment, sink mistakes are named at start,
`unitcost alerts` lists, filters and acknowledges precisely, and what reaches Slack and email
is what those receivers accept and people can act on."""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from gateway_support import free_port
from smtp_support import Mailbox
from unitcost.cli import app
from unitcost.config import Config, ConfigError
from unitcost.watch.budgets import Budget
from unitcost.watch.incidents import alert_history, list_alerts
from unitcost.watch.runner import Watcher
from unitcost.watch.scope import Scope
from unitcost.watch.settings import WatchSettings, load_watch_settings
from unitcost.watch.sinks import build_sinks

CALL = Decimal("0.021")
"""What one call below costs: 100k input tokens and 10k output tokens of gpt-4o-mini."""

runner = CliRunner()


def _call(day: int, hour: int = 12, n: int = 0) -> dict[str, Any]:
    return {
        "event_id": f"f-{day}-{hour}-{n}",
        "ts": f"2025-09-{day:02d}T{hour:02d}:00:00Z",
        "model": "gpt-4o-mini",
        "provider": "openai",
        "input_tokens": 100_000,
        "output_tokens": 10_000,
        "team": "search",
    }


def _at(day: int, hour: int) -> datetime:
    return datetime(2025, 9, day, hour, tzinfo=UTC)


def _forecast_watcher(ledger: Any, **budget: Any) -> Watcher:
    """A monthly budget of 30 days of one call a day: the forecast is under it each morning
    (today's call not made yet) and over it each afternoon (made, and the day not over)."""
    spec = Budget("search", Scope.of(team="search"), amount=CALL * 30, period="month", **budget)
    return Watcher(ledger.store, WatchSettings(detectors=[], budgets=[spec]), sinks=[])


def _forecast_notes(watcher: Watcher, day: int, hour: int) -> list[tuple[str, str]]:
    notes = watcher.run_once(_at(day, hour)).notifications
    return [(n.kind, n.title) for n in notes if "forecast" in n.title or n.kind == "resolved"]


def test_a_forecast_hovering_around_the_budget_is_one_incident(ledger: Any) -> None:
    """Each afternoon the forecast read $0.64 for a $0.63 budget, each morning $0.62: the alert
    opened, resolved and opened again every day, each time notifying people."""
    records = [_call(day) for day in range(1, 16)]  # 1 to 15 Sept, then nothing
    assert ledger.ingest_records(records, source="t").accepted == len(records)
    watcher = _forecast_watcher(ledger)
    sent: list[tuple[str, str]] = []
    for day in range(11, 16):
        sent += _forecast_notes(watcher, day, 6)  # 29.75 calls forecast: under, by 0.8 %
        sent += _forecast_notes(watcher, day, 13)  # 30.46 calls forecast: over
    assert sent == [("opened", "Budget search: forecast $0.64 exceeds $0.63")]
    (alert,) = [a for a in list_alerts(ledger.store) if "forecast" in a["title"]]
    assert alert["status"] == "open"
    # The morning readings are in the history, said as what they are.
    assert alert["title"] == "Budget search: forecast $0.64 exceeds $0.63"
    history = [r["message"] for r in alert_history(ledger.store, alert["alert_id"])]
    assert "Budget search: forecast $0.62 back under $0.63 (alert kept until under $0.60)" in history
    # Spend stops: on 17 Sept the forecast is 27.9 calls, clearly under (more than 5 %): resolved, once.
    assert _forecast_notes(watcher, 16, 6) == []  # 29.75: still inside the margin
    assert _forecast_notes(watcher, 17, 6) == [("resolved", "Budget search: forecast $0.62 back under $0.63 "
                                                             "(alert kept until under $0.60)")]  # fmt: skip
    assert _forecast_notes(watcher, 18, 6) == []
    watcher.close(0)


def test_the_forecast_alert_notifies_again_only_a_margin_higher(ledger: Any) -> None:
    """An overage of 1.5 % growing to 4.6 % was notified as "worse" (by more than a quarter);
    what is news is the forecast passing another 5 % of the amount."""
    records = [_call(day) for day in range(1, 12)]
    assert ledger.ingest_records(records, source="t").accepted == len(records)
    watcher = _forecast_watcher(ledger)
    assert [k for k, _ in _forecast_notes(watcher, 11, 13)] == ["opened"]  # 30.46 calls: +1.5 %
    assert ledger.ingest_records([_call(11, 14, 1)], source="t").accepted == 1
    assert _forecast_notes(watcher, 11, 15) == []  # 31.4 calls: +4.6 %, two hours later
    burst = [_call(11, 21, n) for n in range(2, 4)]
    assert ledger.ingest_records(burst, source="t").accepted == 2
    # 33.1 calls: +10 %, notified at once.
    assert _forecast_notes(watcher, 11, 22) == [("updated", "Budget search: forecast $0.69 exceeds $0.63")]
    watcher.close(0)


def test_a_margin_is_a_budget_setting_checked_like_the_others() -> None:
    raw = {"budget": [{"name": "s", "amount": 10, "forecast_margin_pct": 10}]}
    (budget,) = load_watch_settings(Config(raw=raw)).budgets
    assert budget.forecast_margin_pct == Decimal(10)
    for bad in (-1, 100, "5%"):
        raw = {"budget": [{"name": "s", "amount": 10, "forecast_margin_pct": bad}]}
        with pytest.raises(ConfigError, match=r"\[\[budget\]\] #1 \(s\): forecast_margin_pct"):
            load_watch_settings(Config(raw=raw))


class Receiver:
    """A real HTTP server on 127.0.0.1 that answers 401 unless the expected Authorization header
    comes, and keeps what it was sent."""

    def __init__(self, token: str, port: int = 0) -> None:
        self.requests: list[tuple[dict[str, str], dict[str, Any]]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                receiver.requests.append((dict(self.headers), body))
                self.send_response(200 if self.headers.get("Authorization") == token else 401)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


TOKEN = "Bearer s3cr3t-hook-token-0123456789"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver(TOKEN)
    yield r
    r.close()


def _budget_ledger(ledger: Any) -> Any:
    records = [_call(day) for day in range(1, 11)]
    assert ledger.ingest_records(records, source="t").accepted == len(records)
    return ledger


def _settings(ledger: Any, sink: dict[str, Any], tmp_path: Path) -> WatchSettings:
    raw = {
        "watch": {"detectors": ["unpriced_model"], "sink": [sink]},
        "budget": [{"name": "search", "scope": {"team": "search"}, "amount": 0.15}],
    }
    return load_watch_settings(Config(raw=raw, path=tmp_path / "unitcost.toml"))


def test_a_webhook_header_can_come_from_the_environment(
    ledger: Any, receiver: Receiver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    """`headers = { Authorization_env = "HOOK_TOKEN" }`: the token stays out of the config file."""
    monkeypatch.setenv("HOOK_TOKEN", TOKEN)
    sink = {
        "type": "webhook",
        "url": receiver.url,
        "headers": {"Authorization_env": "HOOK_TOKEN", "X-Team": "finops"},
    }
    watcher = Watcher(_budget_ledger(ledger).store, _settings(ledger, sink, tmp_path))
    with caplog.at_level(logging.DEBUG):
        opened = watcher.run_once(_at(10, 15)).notifications
        assert watcher.close(10)
    assert {n.kind for n in opened} == {"opened"}
    assert [headers["Authorization"] for headers, _ in receiver.requests] == [TOKEN] * len(opened)
    assert all(headers["X-Team"] == "finops" for headers, _ in receiver.requests)
    assert "Authorization_env" not in json.dumps([h for h, _ in receiver.requests])
    log = ledger.store.fetch("SELECT kind, message FROM alert_log WHERE sink IS NOT NULL").to_pylist()
    assert [r["kind"] for r in log] == ["delivered"] * len(opened)
    assert "s3cr3t" not in caplog.text


def test_a_refused_token_is_retried_and_never_written_anywhere(
    ledger: Any, receiver: Receiver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    monkeypatch.setenv("HOOK_TOKEN", "Bearer s3cr3t-but-revoked")
    sink = {"type": "webhook", "url": receiver.url, "headers": {"Authorization_env": "HOOK_TOKEN"}}
    settings = _settings(ledger, sink, tmp_path)
    (built,) = build_sinks(settings.sinks)
    from unitcost.watch.sinks import Dispatcher

    watcher = Watcher(_budget_ledger(ledger).store, settings, sinks=[built])
    watcher.dispatcher.close(0)
    watcher.dispatcher = Dispatcher(
        [built], on_result=watcher._record_delivery, base_delay=0.05, max_attempts=2
    )
    with caplog.at_level(logging.DEBUG):
        assert watcher.run_once(_at(10, 15)).notifications
        assert watcher.close(10)
    assert {headers["Authorization"] for headers, _ in receiver.requests} == {"Bearer s3cr3t-but-revoked"}
    rows = ledger.store.fetch("SELECT message FROM alert_log WHERE kind = 'failed'").to_pylist()
    assert rows and all("HTTP 401 Unauthorized from http://127.0.0.1:" in r["message"] for r in rows)
    assert "s3cr3t" not in json.dumps(rows) + caplog.text


def test_a_header_variable_that_is_not_set_stops_the_start(
    ledger: Any, ledger_path: Path, tmp_path: Path
) -> None:
    os.environ.pop("UNITCOST_TEST_UNSET_TOKEN", None)
    ledger.close()
    config = tmp_path / "unitcost.toml"
    config.write_text(
        '[[watch.sink]]\ntype = "webhook"\nname = "pager"\nurl = "https://ops.example.org/h"\n'
        'headers = { Authorization_env = "UNITCOST_TEST_UNSET_TOKEN" }\n'
    )
    result = runner.invoke(app, ["watch", "-l", str(ledger_path), "--config", str(config), "--once"])
    assert result.exit_code == 2
    assert result.output.startswith(
        "error: sink pager: headers.Authorization_env names the environment variable "
        "UNITCOST_TEST_UNSET_TOKEN, which is not set"
    )


HOOK = {"type": "webhook", "url": "https://h.example.org/x"}
MAIL = {"type": "email", "host": "smtp.example.org", "from": "u@example.org", "to": ["f@example.org"]}
TYPES = "type must be one of webhook, slack, email, log"


@pytest.mark.parametrize(
    ("sink", "message"),
    [
        ({**HOOK, "type": "slak"}, f"{TYPES}; got 'slak' (did you mean \"slack\"?)"),
        ({"url": "https://h.example.org/x"}, f"[[watch.sink]] #1: {TYPES}; it is missing"),
        ({"type": "webhook"}, "#1 (webhook-1): url is required (or url_env"),
        (
            {"type": "slack", "url": "hooks.slack.com/services/T0/B0/SECRETPATH"},
            "url: expected an http:// or https://",
        ),
        (
            {**HOOK, "url": "https://hooks.example.org:99999/SECRETPATH"},
            "url: expected an http:// or https://",
        ),
        (
            {"type": "webhook", "urll": "https://h.example.org/x"},
            "unknown setting(s) urll; known: headers, name",
        ),
        (
            {**HOOK, "headers": {"Authorization": "a", "Authorization_env": "T"}},
            "headers: Authorization is given both in clear and as Authorization_env",
        ),
        ({**HOOK, "headers": {"X-Retry": 3}}, "headers.X-Retry: expected a non-empty string"),
        ({**HOOK, "timeout": 0}, "timeout: expected a positive number"),
        ({**MAIL, "port": "587"}, "#1 (email-1): port: expected a port number from 1 to 65535, got '587'"),
        ({**MAIL, "port": 70000}, "port: expected a port number from 1 to 65535, got 70000"),
        ({**MAIL, "to": []}, "to: expected an address or a list"),
        ({k: v for k, v in MAIL.items() if k != "host"}, "host: required"),
        ({**MAIL, "starttls": "yes"}, "starttls: expected true or false"),
        ({**MAIL, "username_env": "U"}, "username and password go together"),
    ],
)
def test_sink_mistakes_are_named_before_the_first_cycle(sink: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_watch_settings(Config(raw={"watch": {"sink": [sink]}}, path=Path("unitcost.toml")))
    assert str(caught.value).startswith("unitcost.toml: [[watch.sink]] #1")
    assert message in str(caught.value)
    assert "SECRETPATH" not in str(caught.value)  # a webhook URL holds its token


def test_two_sinks_cannot_share_a_name() -> None:
    sinks = [{"type": "log", "name": "ops"}, {"type": "log", "name": "ops"}]
    with pytest.raises(ConfigError, match=r"#2 \(ops\): name: another sink is already named 'ops'"):
        load_watch_settings(Config(raw={"watch": {"sink": sinks}}))


def _notification(kind: str = "opened", message_lines: int = 4) -> Any:
    from unitcost.watch.incidents import Notification

    notes = "\n".join(
        f"note {i}: contributor feature=search-{i} +$12.30 (+41%)" for i in range(message_lines)
    )
    return Notification(
        alert_id="c0ffee123456",
        kind=kind,
        key="cost_per_hour:team=R&D",
        detector="cost_per_hour",
        scope={"team": "R&D"},
        severity="warning",
        title="Cost per hour up 41% for team R&D <eu>",
        message=(
            "Cost per hour up 41% for team R&D <eu> [team=R&D]\n"
            f"what changed: $ per hour 42.10 against 29.80\n{notes}"
        ),
        details={"observed": 42.1, "expected": 29.8},
        at=datetime(2025, 9, 17, 10, tzinfo=UTC),
    )


def test_slack_gets_escaped_text_and_blocks_it_accepts(receiver: Receiver) -> None:
    """Slack reads <…> as links and mentions and refuses a section over 3000 characters (HTTP 400,
    again at every retry): a team named "R&D <eu>" or a long explanation never arrived."""
    from unitcost.watch.sinks import Dispatcher, SlackSink

    dispatcher = Dispatcher([SlackSink("slack", receiver.url, {"Authorization": TOKEN})])
    dispatcher.submit([_notification(), _notification("updated", message_lines=200)])
    assert dispatcher.flush(timeout=10)
    dispatcher.close()
    (short, long) = [body for _, body in receiver.requests]
    assert short["text"].startswith(
        ":rotating_light: *OPENED* Cost per hour up 41% for team R&amp;D &lt;eu&gt;"
    )
    assert "<eu>" not in json.dumps(short)
    head, code, context = short["blocks"]
    assert head == {"type": "section", "text": {"type": "mrkdwn", "text": short["text"].split("\n")[0]}}
    assert code["text"]["text"].startswith("```what changed: $ per hour 42.10")
    assert code["text"]["text"].endswith("```")
    assert (
        context["type"] == "context" and "unitcost alerts ack c0ffee123456" in context["elements"][0]["text"]
    )
    assert all(len(block["text"]["text"]) <= 3000 for block in long["blocks"][:2])
    assert long["blocks"][1]["text"]["text"].endswith("…```")


def test_an_incident_is_one_email_thread_people_can_act_on() -> None:
    """Emails had no Date and no Message-ID (spam filters mark such mail), every update started
    a thread of its own, and the body did not say how to acknowledge."""
    from email import message_from_bytes

    from aiosmtpd.controller import Controller

    from unitcost.watch.sinks import Dispatcher, EmailSink

    mailbox = Mailbox()
    port = free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        sink = EmailSink(
            "mail", host="127.0.0.1", port=port, sender="unitcost@example.org", to=["finops@example.org"]
        )
        dispatcher = Dispatcher([sink])
        dispatcher.submit([_notification()])
        assert dispatcher.flush(timeout=10)
        dispatcher.submit([_notification("resolved")])
        assert dispatcher.flush(timeout=10)
        dispatcher.close()
    finally:
        controller.stop()
    opened, resolved = (message_from_bytes(m.content) for m in mailbox.messages)
    assert opened["Subject"] == "[unitcost warning] opened: Cost per hour up 41% for team R&D <eu>"
    assert opened["Date"] and opened["Message-ID"] == "<unitcost.c0ffee123456@example.org>"
    assert resolved["In-Reply-To"] == resolved["References"] == opened["Message-ID"]
    assert resolved["Message-ID"] != opened["Message-ID"]
    body = opened.get_payload(decode=True).decode().replace("\r\n", "\n")
    assert body.startswith("opened at 2025-09-17 10:00 UTC · warning · cost_per_hour\n\nCost per hour up")
    assert "acknowledge:  unitcost alerts ack c0ffee123456 --by <you>" in body


def _invoke(*args: str) -> Any:
    return runner.invoke(app, list(args), catch_exceptions=False)


@pytest.fixture
def watched(ledger: Any, ledger_path: Path, tmp_path: Path) -> tuple[str, dict[str, str]]:
    """A ledger after `unitcost watch --once`: two open budget alerts and a resolved one for a model
    nobody priced (one call on 3 Sept, none since). Returns the ledger and {kind: alert id}."""
    records = [_call(day) for day in range(1, 11)]
    unpriced = {**_call(3, 15), "event_id": "f-new", "model": "acme-local-7b", "provider": "acme"}
    assert ledger.ingest_records([*records, unpriced], source="t").accepted == 11
    ledger.close()
    config = tmp_path / "unitcost.toml"
    config.write_text(
        '[watch]\ndetectors = ["unpriced_model"]\n\n[[watch.sink]]\ntype = "log"\n\n'
        '[[budget]]\nname = "search"\nscope = { team = "search" }\namount = 0.15\n'
    )
    lp = str(ledger_path)
    now = "2025-09-10T15:00:00Z"
    result = _invoke(
        "watch", "-l", lp, "--config", str(config), "--once", "--now", now, "--backfill-hours", "240"
    )
    assert result.exit_code == 0, result.output
    alerts = json.loads(_invoke("alerts", "-l", lp, "--format", "json").output)
    ids = {("forecast" if "forecast" in a["title"] else a["detector"]): a["alert_id"] for a in alerts}
    assert sorted(ids) == ["budget", "forecast", "unpriced_model"]
    return lp, ids


def test_json_and_csv_say_who_acknowledged_when_and_what_it_is(watched: tuple[str, dict[str, str]]) -> None:
    lp, ids = watched
    assert _invoke("alerts", "ack", ids["budget"][:6], "--by", "ana@finops", "-l", lp).exit_code == 0
    rows = {a["alert_id"]: a for a in json.loads(_invoke("alerts", "-l", lp, "--format", "json").output)}
    acked, resolved = rows[ids["budget"]], rows[ids["unpriced_model"]]
    assert acked["status"] == "acknowledged" and acked["acked_by"] == "ana@finops" and acked["acked_at"]
    assert acked["message"].startswith("Budget search: 140% used (100 % threshold crossed) [team=search]\n")
    assert acked["key"] == "budget:team=search:search:2025-09-01:thresholds"
    assert resolved["resolved_at"] == "2025-09-04T16:00:00+00:00" and resolved["acked_by"] is None
    header = _invoke("alerts", "-l", lp, "--format", "csv").output.splitlines()[0].split(",")
    assert {"acked_by", "acked_at", "resolved_at", "first_seen", "message"} <= set(header)
    table = _invoke("alerts", "-l", lp).output
    assert "3 alerts" in table and "acked_by" not in table  # the table stays narrow
    one = _invoke("alerts", "-l", lp, "--detector", "unpriced_model").output
    # The ledger may be named before the subcommand too, and is then the subcommand's.
    shown = _invoke("alerts", "-l", lp, "show", ids["budget"][:6])
    assert shown.exit_code == 0 and shown.output.startswith(ids["budget"]), shown.output
    acked = _invoke("alerts", "-l", lp, "ack", ids["forecast"][:6], "--by", "bo")
    assert acked.exit_code == 0 and acked.output.startswith(f"acknowledged {ids['forecast']}"), acked.output
    assert one.split()[:2] == ["1", "alert"] and "1 alerts" not in one


def test_alerts_filter_by_detector_and_refuse_one_that_does_not_exist(
    watched: tuple[str, dict[str, str]],
) -> None:
    lp, ids = watched
    budget = json.loads(_invoke("alerts", "-l", lp, "--detector", "budget", "--format", "json").output)
    assert sorted(a["alert_id"] for a in budget) == sorted([ids["budget"], ids["forecast"]])
    both = _invoke("alerts", "-l", lp, "--detector", "budget", "--status", "resolved", "--format", "json")
    assert json.loads(both.output) == []
    typo = _invoke("alerts", "-l", lp, "--detector", "budgets")
    assert (
        typo.exit_code == 2
        and "unknown detector 'budgets'; the detectors are billed_drift, budget" in typo.output
    )


def test_several_alerts_are_acknowledged_at_once_or_none_is(watched: tuple[str, dict[str, str]]) -> None:
    lp, ids = watched
    typo = _invoke("alerts", "ack", ids["budget"], ids["forecast"], "zzz", "-l", lp)
    assert typo.exit_code == 2
    assert typo.output.startswith(
        "error: no alert with id 'zzz': see `unitcost alerts`; no alert was acknowledged"
    )
    closed = _invoke("alerts", "ack", ids["budget"], ids["unpriced_model"][:5], "-l", lp)
    assert closed.exit_code == 2
    assert (
        f"alert {ids['unpriced_model']} is already resolved (at 2025-09-04 16:00 UTC); no alert was"
        in closed.output
    )
    statuses = {
        a["status"]
        for a in json.loads(_invoke("alerts", "-l", lp, "--detector", "budget", "--format", "json").output)
    }
    assert statuses == {"open"}  # nothing was half done

    acked = _invoke("alerts", "ack", ids["budget"], ids["forecast"][:4], "--by", "ana", "-l", lp)
    assert acked.exit_code == 0, acked.output
    assert acked.output.count("acknowledged ") == 2
    assert json.loads(_invoke("alerts", "-l", lp, "--status", "acknowledged", "--format", "json").output)


def test_acknowledging_again_keeps_who_did_it_first(watched: tuple[str, dict[str, str]]) -> None:
    """A second `ack` replaced the first acknowledger and logged another acknowledgement."""
    lp, ids = watched
    assert _invoke("alerts", "ack", ids["budget"], "--by", "ana", "-l", lp).exit_code == 0
    again = _invoke("alerts", "ack", ids["budget"], "--by", "bob", "-l", lp)
    assert again.exit_code == 0
    assert again.output.startswith(f"{ids['budget']} was already acknowledged by ana at ")
    shown = json.loads(_invoke("alerts", "show", ids["budget"], "-l", lp, "--format", "json").output)
    assert shown["acked_by"] == "ana"
    assert [h["message"] for h in shown["history"] if h["kind"] == "acknowledged"] == ["by ana"]


def test_an_acknowledgement_can_say_why(watched: tuple[str, dict[str, str]]) -> None:
    """The next person on call reads in the history what is being done, not only who took it."""
    lp, ids = watched
    note = "  raised the budget for the launch week, see FIN-212  "
    acked = _invoke("alerts", "ack", ids["budget"], "--by", "ana", "--note", note, "-l", lp)
    assert acked.exit_code == 0, acked.output
    shown = json.loads(_invoke("alerts", "show", ids["budget"], "-l", lp, "--format", "json").output)
    messages = [h["message"] for h in shown["history"] if h["kind"] == "acknowledged"]
    assert messages == ["by ana: raised the budget for the launch week, see FIN-212"]


def test_show_as_json_is_one_json_document(watched: tuple[str, dict[str, str]]) -> None:
    """`alerts show --format json` printed the text explanation before the JSON: no program could read it."""
    lp, ids = watched
    shown = json.loads(_invoke("alerts", "show", ids["unpriced_model"], "-l", lp, "--format", "json").output)
    assert shown["alert_id"] == ids["unpriced_model"] and shown["status"] == "resolved"
    assert shown["details"]["scope"] == {"provider": "acme", "model": "acme-local-7b"}
    assert [h["kind"] for h in shown["history"]][:2] == ["opened", "resolved"]
    assert shown["history"][1]["message"] == "no new finding for 24 h"
    csv_out = _invoke("alerts", "show", ids["unpriced_model"], "-l", lp, "--format", "csv").output
    assert csv_out.splitlines()[0] == "at,kind,sink,message"


def test_a_resolution_never_overtakes_the_opening_a_sink_is_still_retrying(tmp_path: Path) -> None:
    """The receiver was down when the incident opened and came back before its retry: the
    resolution, sent at once, arrived first, and a pager fed by the webhook kept the incident open."""
    from unitcost.watch.sinks import Dispatcher, WebhookSink

    port = free_port()
    sink = WebhookSink("hook", f"http://127.0.0.1:{port}/hook", {"Authorization": TOKEN}, timeout=5)
    results: list[tuple[str, bool]] = []
    failed = threading.Event()

    def record(notification: Any, sink_name: str, ok: bool, message: str) -> None:
        results.append((notification.kind, ok))
        failed.set()

    dispatcher = Dispatcher([sink], on_result=record, base_delay=2.0)
    dispatcher.submit([_notification("opened")])
    assert failed.wait(10)  # the first attempt failed: its retry is about 2 s away
    receiver = Receiver(TOKEN, port)  # back, before the retry
    try:
        dispatcher.submit([_notification("resolved")])
        assert dispatcher.flush(timeout=30)
    finally:
        dispatcher.close()
        receiver.close()
    assert [body["event"] for _, body in receiver.requests] == ["opened", "resolved"]
    assert results == [("opened", False), ("opened", True), ("resolved", True)]
