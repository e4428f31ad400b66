"""A receiver that refuses an alert for good is not asked twelve times; one that says "later"
is asked when it said; email reaches servers that speak TLS from the first byte (port 465)."""

from __future__ import annotations

import shutil
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from gateway_support import free_port
from smtp_support import Mailbox
from unitcost.config import ConfigError
from unitcost.watch.incidents import Notification
from unitcost.watch.settings import load_watch_settings
from unitcost.watch.sinks import Dispatcher, EmailSink, WebhookSink, retry_after_seconds


def _notification(alert_id: str = "r1") -> Notification:
    return Notification(
        alert_id=alert_id,
        kind="opened",
        key=f"cost_per_hour:team=search:{alert_id}",
        detector="cost_per_hour",
        scope={"team": "search"},
        severity="warning",
        title="Cost per hour +80 % on team=search",
        message="Cost per hour +80 % on team=search",
        details={},
        at=datetime(2025, 9, 17, 10, tzinfo=UTC),
    )


class ScriptedReceiver:
    """A real HTTP server answering each POST with the next (status, headers) of its script,
    then 200; it notes when each request arrived."""

    def __init__(self, script: list[tuple[int, dict[str, str]]]) -> None:
        self.script = list(script)
        self.arrivals: list[float] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers["Content-Length"]))
                receiver.arrivals.append(time.monotonic())
                status, headers = receiver.script.pop(0) if receiver.script else (200, {})
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


Outcomes = list[tuple[bool, str]]


def _dispatch(sink: Any, **timing: float) -> tuple[Dispatcher, Outcomes]:
    outcomes: Outcomes = []
    dispatcher = Dispatcher(
        [sink], on_result=lambda n, name, ok, why: outcomes.append((ok, why)), max_attempts=5, **timing
    )
    dispatcher.submit([_notification()])
    return dispatcher, outcomes


def _webhook_run(
    script: list[tuple[int, dict[str, str]]], **timing: float
) -> tuple[ScriptedReceiver, Dispatcher, Outcomes]:
    """One alert delivered to a receiver answering `script`, until it succeeded or gave up."""
    receiver = ScriptedReceiver(script)
    try:
        dispatcher, outcomes = _dispatch(WebhookSink("hook", receiver.url), **timing)
        assert dispatcher.flush(timeout=20)
        dispatcher.close()
    finally:
        receiver.close()
    return receiver, dispatcher, outcomes


@pytest.mark.parametrize("status", [400, 401, 403, 404, 410])
def test_a_webhook_that_refuses_the_alert_is_not_asked_again(status: int) -> None:
    """A revoked Slack webhook (404) or a wrong token (401/403) would refuse every retry: the
    alert log says so at once and names what to fix, instead of twelve failures over an hour."""
    receiver, dispatcher, outcomes = _webhook_run([(status, {})] * 5, base_delay=0.01)
    assert len(receiver.arrivals) == 1
    ((ok, why),) = outcomes
    assert not ok
    assert f"HTTP {status}" in why and "not retried" in why
    assert dispatcher.failed == 1


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503])
def test_a_webhook_that_says_later_is_retried(status: int) -> None:
    receiver, _, outcomes = _webhook_run([(status, {})], base_delay=0.01)
    assert len(receiver.arrivals) == 2
    assert [ok for ok, _ in outcomes] == [False, True]
    assert "retry in" in outcomes[0][1]


def test_retry_after_is_respected() -> None:
    """A rate-limited receiver (429 with Retry-After: 2) is asked again no sooner than it said,
    even though the backoff alone would have retried after 10 ms."""
    receiver, _, outcomes = _webhook_run([(429, {"Retry-After": "2"})], base_delay=0.01)
    first, second = receiver.arrivals
    # A lower bound only: a busy machine can make the retry later, never earlier.
    assert second - first >= 2.0
    assert "retry in 2.0 s" in outcomes[0][1]
    assert outcomes[1][0]


def test_retry_after_is_capped_by_the_longest_backoff() -> None:
    receiver, _, outcomes = _webhook_run([(503, {"Retry-After": "86400"})], base_delay=0.01, max_delay=0.3)
    assert len(receiver.arrivals) == 2
    assert "retry in 0.3 s" in outcomes[0][1]


def test_retry_after_reads_seconds_and_http_dates() -> None:
    now = datetime(2025, 9, 17, 10, tzinfo=UTC)
    later = format_datetime(now + timedelta(seconds=90), usegmt=True)
    assert retry_after_seconds("120") == 120.0
    assert retry_after_seconds(later, now=now.timestamp()) == 90.0
    past = format_datetime(now - timedelta(seconds=5), usegmt=True)
    assert retry_after_seconds(past, now=now.timestamp()) == 0.0
    assert retry_after_seconds("soon") is None
    assert retry_after_seconds(None) is None


class RefusingMailbox(Mailbox):
    """An SMTP server that refuses recipients with the given reply."""

    def __init__(self, reply: str) -> None:
        super().__init__()
        self.reply = reply
        self.attempts = 0

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        self.attempts += 1
        return self.reply


def _mail_sink(port: int, **options: Any) -> EmailSink:
    return EmailSink(
        "mail", host="127.0.0.1", port=port, sender="unitcost@example.org", to=["x@example.org"], **options
    )


def test_an_smtp_server_refusing_the_recipient_for_good_is_not_asked_again() -> None:
    mailbox = RefusingMailbox("550 5.1.1 no such user")
    port = free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        dispatcher, outcomes = _dispatch(_mail_sink(port), base_delay=0.01)
        assert dispatcher.flush(timeout=20)
        dispatcher.close()
    finally:
        controller.stop()
    assert mailbox.attempts == 1
    ((ok, why),) = outcomes
    assert not ok and "x@example.org" in why and "not retried" in why


def test_an_smtp_server_deferring_the_recipient_is_asked_again() -> None:
    mailbox = RefusingMailbox("451 4.7.1 greylisted, try later")
    port = free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        dispatcher, outcomes = _dispatch(_mail_sink(port), base_delay=0.01, max_delay=0.05)
        assert dispatcher.flush(timeout=20)
        dispatcher.close()
    finally:
        controller.stop()
    assert mailbox.attempts == 5  # every attempt, then giving up
    assert all("retry in" in why for _, why in outcomes[:-1])
    assert "giving up" in outcomes[-1][1]


@pytest.fixture
def self_signed(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    yield cert, key


def test_email_over_implicit_tls_port_465(self_signed: tuple[Path, Path]) -> None:
    """Providers that only offer SMTPS (TLS from the first byte) get the alert; the server's
    certificate is verified (here against the test's own authority)."""
    cert, key = self_signed
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert, key)
    mailbox = Mailbox()
    port = free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port, ssl_context=server_context)
    controller.start()
    try:
        client_context = ssl.create_default_context(cafile=str(cert))
        dispatcher, outcomes = _dispatch(
            _mail_sink(port, tls=True, ssl_context=client_context), base_delay=0.01
        )
        assert dispatcher.flush(timeout=20)
        dispatcher.close()
        # Without trusting that certificate, the connection is refused, not made in the clear.
        untrusted, refused = _dispatch(_mail_sink(port, tls=True), base_delay=0.01)
        untrusted.flush(timeout=5)
        untrusted.close(0)
    finally:
        controller.stop()
    assert [ok for ok, _ in outcomes] == [True]
    (envelope,) = mailbox.messages
    assert "Cost per hour +80 %" in envelope.content.decode()
    assert refused and not refused[0][0] and "CERTIFICATE_VERIFY_FAILED" in refused[0][1]


def _settings(tmp_path: Path, sink: str) -> Any:
    from unitcost.config import load_config

    path = tmp_path / "unitcost.toml"
    path.write_text(
        '[[watch.sink]]\ntype = "email"\nhost = "smtp.example.org"\nfrom = "u@example.org"\n'
        f'to = ["f@example.org"]\n{sink}\n'
    )
    return load_watch_settings(load_config(path))


def test_tls_is_a_checked_email_setting(tmp_path: Path) -> None:
    (sink,) = _settings(tmp_path, "port = 465\ntls = true").sinks
    assert sink.options["tls"] is True
    with pytest.raises(ConfigError, match="tls: expected true or false"):
        _settings(tmp_path, 'tls = "yes"')
    with pytest.raises(ConfigError, match="starttls and tls exclude each other"):
        _settings(tmp_path, "tls = true\nstarttls = true")
