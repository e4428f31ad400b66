"""Alerts reach a real local HTTP receiver and a real local SMTP server; a receiver that is
down gets the alert once it is back; a hung receiver never holds up detection."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
from aiosmtpd.controller import Controller

from gateway_support import free_port
from smtp_support import Mailbox
from unitcost.ledger.duckdb_store import DuckDBStore
from unitcost.watch.incidents import Notification
from unitcost.watch.settings import SinkConfig
from unitcost.watch.sinks import Dispatcher, EmailSink, SlackSink, WebhookSink, build_sinks, redact_url


def _notification(alert_id: str = "a1b2c3", kind: str = "opened") -> Notification:
    return Notification(
        alert_id=alert_id,
        kind=kind,
        key="runaway_trace:feature=agent:trace=t-1",
        detector="runaway_trace",
        scope={"feature": "agent"},
        severity="critical",
        title="Runaway trace t-1: $160.18 spent, far above its feature's norm",
        message="Runaway trace t-1 [feature=agent]\nwhat changed: $ per trace 160 against 1.26 expected",
        details={"observed": 160.18, "expected": 1.26},
        at=datetime(2025, 9, 17, 10, tzinfo=UTC),
    )


class Receiver:
    """A real HTTP server on 127.0.0.1 that records JSON bodies (and can be told to hang)."""

    def __init__(self, port: int = 0) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.release = threading.Event()
        self.release.set()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                receiver.release.wait(30)
                length = int(self.headers["Content-Length"])
                receiver.bodies.append(json.loads(self.rfile.read(length)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def test_json_webhook_gets_the_whole_alert(receiver: Receiver) -> None:
    dispatcher = Dispatcher([WebhookSink("hook", receiver.url)])
    dispatcher.submit([_notification()])
    assert dispatcher.flush(timeout=10)
    dispatcher.close()
    (body,) = receiver.bodies
    assert body["alert_id"] == "a1b2c3"
    assert body["event"] == "opened"
    assert body["detector"] == "runaway_trace"
    assert body["scope"] == {"feature": "agent"}
    assert body["details"]["observed"] == 160.18


def test_slack_webhook_gets_text_and_blocks(receiver: Receiver) -> None:
    dispatcher = Dispatcher([SlackSink("slack", receiver.url)])
    dispatcher.submit([_notification()])
    assert dispatcher.flush(timeout=10)
    dispatcher.close()
    (body,) = receiver.bodies
    assert "OPENED" in body["text"] and "Runaway trace t-1" in body["text"]
    assert body["blocks"][0]["type"] == "section"
    assert "a1b2c3" in json.dumps(body["blocks"])


def test_email_reaches_a_real_smtp_server() -> None:
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
        dispatcher.close()
    finally:
        controller.stop()
    (envelope,) = mailbox.messages
    assert envelope.rcpt_tos == ["finops@example.org"]
    text = envelope.content.decode()
    assert "Subject: [unitcost critical] opened: Runaway trace t-1" in text
    assert "what changed" in text and "alert id: a1b2c3" in text


def test_a_sink_that_is_down_gets_the_alert_when_it_comes_back(tmp_path: Path) -> None:
    """Deliveries are retried with backoff; every attempt is recorded in the ledger's alert log."""
    from unitcost.watch.runner import Watcher
    from unitcost.watch.settings import WatchSettings

    port = free_port()
    store = DuckDBStore(tmp_path / "l.duckdb")
    sink = WebhookSink("hook", f"http://127.0.0.1:{port}/hook", timeout=2)
    watcher = Watcher(store, WatchSettings(), sinks=[sink])
    watcher.dispatcher.close(0)
    watcher.dispatcher = Dispatcher([sink], on_result=watcher._record_delivery, base_delay=0.2, max_delay=0.5)
    watcher.dispatcher.submit([_notification("down1")])
    failed = threading.Event()

    def wait_for_failures() -> None:
        for _ in range(200):
            rows = store.fetch("SELECT count(*) AS n FROM alert_log WHERE kind = 'failed'").to_pylist()
            if rows[0]["n"] >= 2:
                failed.set()
                return
            threading.Event().wait(0.05)

    wait_for_failures()
    assert failed.is_set(), "the down receiver should have been tried at least twice"
    receiver = Receiver(port)  # the receiver comes back on the same port
    try:
        assert watcher.dispatcher.flush(timeout=15)
    finally:
        receiver.close()
        watcher.close(0)
    assert [b["alert_id"] for b in receiver.bodies] == ["down1"]
    log = store.fetch(
        """SELECT kind, sink, message FROM alert_log WHERE alert_id = 'down1' ORDER BY "at" """
    ).to_pylist()
    assert [r["kind"] for r in log][-1] == "delivered"
    assert all(r["sink"] == "hook" for r in log)
    assert "ConnectError" in log[0]["message"] and "retry in" in log[0]["message"]
    store.close()


def test_a_hung_receiver_does_not_hold_up_detection(receiver: Receiver, tmp_path: Path) -> None:
    from unitcost.watch.detectors.base import Finding
    from unitcost.watch.incidents import Incidents
    from unitcost.watch.scope import Scope

    receiver.release.clear()  # the receiver accepts the connection and then says nothing
    store = DuckDBStore(tmp_path / "l.duckdb")
    dispatcher = Dispatcher([WebhookSink("hook", receiver.url, timeout=30)])
    incidents = Incidents(store, cooldown=timedelta(hours=1), resolve_after=timedelta(hours=3))
    at = datetime(2025, 9, 17, 10, tzinfo=UTC)
    finding = Finding("cost_per_hour", Scope.of(team="eng"), at, at, "Cost up", 10.0, 5.0, "$/hour")
    dispatcher.submit(incidents.apply([finding], at))
    # Detection carries on while the delivery is stuck: the next cycle is folded and recorded.
    later = Finding(
        "cost_per_hour", Scope.of(team="eng"), at.replace(hour=11), at, "Cost up", 11.0, 5.0, "$/hour"
    )
    incidents.apply([later], at.replace(hour=11))
    assert dispatcher.pending == 1 and receiver.bodies == []
    rows = store.fetch("SELECT updates FROM alerts").to_pylist()
    assert rows == [{"updates": 1}]
    receiver.release.set()
    assert dispatcher.flush(timeout=10)
    dispatcher.close()
    assert len(receiver.bodies) == 1
    store.close()


class _Refusing(BaseHTTPRequestHandler):
    paths: ClassVar[list[str]] = []

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        _Refusing.paths.append(self.path)
        self.send_response(500)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def test_a_webhook_url_never_reaches_the_logs_or_the_alert_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A Slack URL holds its token in the path: a receiver answering 500 must not get it written
    to the ledger's alert log (which `unitcost alerts show` prints) nor to any log line."""
    from unitcost.watch.runner import Watcher
    from unitcost.watch.settings import WatchSettings

    _Refusing.paths.clear()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Refusing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    monkeypatch.setenv("SLACK_WEBHOOK_URL", f"http://127.0.0.1:{port}/services/T000/B000/XOXSECRETTOKEN")
    # Whatever level the host gives these loggers (another test may have quietened httpx).
    for name in ("", "httpx", "httpcore"):
        caplog.set_level(logging.DEBUG, logger=name)
    (sink,) = build_sinks([SinkConfig("slack", "finops-slack", {"url_env": "SLACK_WEBHOOK_URL"})])
    store = DuckDBStore(tmp_path / "l.duckdb")
    watcher = Watcher(store, WatchSettings(), sinks=[sink])
    watcher.dispatcher.close(0)
    watcher.dispatcher = Dispatcher(
        [sink], on_result=watcher._record_delivery, base_delay=0.01, max_delay=0.01, max_attempts=2
    )
    try:
        watcher.dispatcher.submit([_notification("leak1")])
        assert watcher.dispatcher.flush(timeout=15)
    finally:
        watcher.close(0)
        server.shutdown()
        server.server_close()
    assert _Refusing.paths == ["/services/T000/B000/XOXSECRETTOKEN"] * 2  # the token was used
    rows = store.fetch('SELECT kind, sink, message FROM alert_log ORDER BY "at"').to_pylist()
    store.close()
    assert [(r["kind"], r["sink"]) for r in rows] == [("failed", "finops-slack")] * 2
    assert f"HTTP 500 Internal Server Error from http://127.0.0.1:{port}/…" in rows[0]["message"]
    assert any(r.name == "httpx" for r in caplog.records)  # httpx did log each request...
    for text in [caplog.text, *(r["message"] for r in rows)]:
        assert "XOXSECRETTOKEN" not in text and "T000" not in text  # ...without the path


def test_redacted_urls_keep_only_scheme_host_and_port() -> None:
    assert redact_url("https://hooks.slack.com/services/T0/B0/tok") == "https://hooks.slack.com/…"
    assert redact_url("https://user:pw@example.org:8443/x?key=1") == "https://example.org:8443/…"
    assert redact_url("http://127.0.0.1:8099") == "http://127.0.0.1:8099"


def test_a_delivery_that_ends_while_the_loop_has_the_ledger_closed_is_logged_at_the_next_cycle(
    receiver: Receiver, tmp_path: Path
) -> None:
    """The watch loop closes the ledger between cycles; the delivery thread may finish then. Its
    result is kept and written when the ledger is open again, not written to a closed store."""
    from unitcost.watch.runner import Watcher
    from unitcost.watch.settings import WatchSettings

    sink = WebhookSink("hook", receiver.url, timeout=5)
    first = DuckDBStore(tmp_path / "l.duckdb")
    watcher = Watcher(first, WatchSettings(), sinks=[sink])
    watcher.detach()
    first.close()
    watcher.dispatcher.submit([_notification("between1")])
    assert watcher.dispatcher.flush(timeout=15)
    assert watcher.unrecorded == 1
    second = DuckDBStore(tmp_path / "l.duckdb")
    watcher.attach(second)
    watcher.close(0)
    rows = second.fetch("SELECT alert_id, kind, sink FROM alert_log").to_pylist()
    second.close()
    assert rows == [{"alert_id": "between1", "kind": "delivered", "sink": "hook"}]
    assert watcher.unrecorded == 0 and [b["alert_id"] for b in receiver.bodies] == ["between1"]
