"""Where alerts go: a JSON webhook, a Slack-compatible webhook, email over SMTP, the log.

Delivery happens on a background thread with its own queue, so a slow or dead receiver
never holds up detection. A failed delivery is retried with exponential backoff (with
jitter, capped) until it succeeds or `max_attempts` is reached; every outcome is reported
through `on_result`, which the watcher records in the ledger's alert log.

A webhook URL is a secret (Slack's holds the token in its path), so no failure reason or
log line names more of it than scheme://host[:port]/…; the sink's name tells sinks apart.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import random
import smtplib
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx

from ..retry_after import retry_after_seconds
from .incidents import Notification
from .settings import SinkConfig

log = logging.getLogger("unitcost.alerts")

_ICON = {"opened": ":rotating_light:", "updated": ":arrow_up:", "resolved": ":white_check_mark:"}


class Sink(Protocol):
    name: str

    def send(self, notification: Notification) -> None:
        """Deliver, or raise with the reason."""


class DeliveryError(Exception):
    """A receiver's refusal or a transport failure, worded without the sink's secrets.

    `permanent`: sending the same notification again would be refused again (a webhook that
    answers 400, 401, 403 or 404, an SMTP server that refuses the sender or every recipient
    with a 5xx code), so it is not retried. `retry_after`: seconds the receiver asked us to
    wait (HTTP `Retry-After`), which the next attempt respects."""

    def __init__(self, message: str, *, permanent: bool = False, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.retry_after = retry_after


# HTTP statuses that say "later" rather than "never": a timeout, too early, too many requests.
_TRANSIENT_CLIENT_ERRORS = frozenset({408, 425, 429})


def redact_url(url: str) -> str:
    """scheme://host[:port], then `/…` if the URL had anything more (path, query, credentials)."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    rest = parts.path not in ("", "/") or parts.query or parts.fragment or "@" in parts.netloc
    return f"{parts.scheme}://{host}" + ("/…" if rest else "")


class _RedactSinkUrls(logging.Filter):
    """httpx logs every request's full URL at INFO. A host that logs at INFO (`unitcost serve`,
    any program running the watch loop) would write the webhook tokens to its log, so the URL of
    a sink is replaced by its redacted form on httpx's own logger, whoever configures logging."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: dict[str, str] = {}

    def add(self, url: str) -> None:
        for form in _spellings(url):
            self.urls[form] = redact_url(url)

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and any(str(a) in self.urls for a in record.args):
            record.args = tuple(self.urls.get(str(a), a) for a in record.args)
        return True


def _spellings(url: str) -> list[str]:
    """The URL as configured and as httpx prints it (it normalises case, ports, encoding)."""
    try:
        return list(dict.fromkeys([url, str(httpx.URL(url))]))
    except httpx.InvalidURL:
        return [url]


_SINK_URLS = _RedactSinkUrls()
logging.getLogger("httpx").addFilter(_SINK_URLS)


class WebhookSink:
    """POST the alert as JSON (`Notification.payload`) to any URL."""

    def __init__(
        self, name: str, url: str, headers: dict[str, str] | None = None, timeout: float = 10.0
    ) -> None:
        self.name, self.url, self.headers, self.timeout = name, url, headers or {}, timeout
        _SINK_URLS.add(url)

    def send(self, notification: Notification) -> None:
        self._post(notification.payload())

    def _post(self, payload: dict[str, Any]) -> None:
        where = redact_url(self.url)
        try:
            response = httpx.post(self.url, json=payload, headers=self.headers, timeout=self.timeout)
        except httpx.HTTPError as exc:
            # Some httpx errors quote the URL; `from None` keeps it out of any traceback too.
            reason = str(exc)
            for form in _spellings(self.url):
                reason = reason.replace(form, where)
            raise DeliveryError(f"{type(exc).__name__}: {reason} ({where})") from None
        if not response.is_success:
            # Not raise_for_status(): its message quotes the whole URL.
            status = response.status_code
            permanent = 400 <= status < 500 and status not in _TRANSIENT_CLIENT_ERRORS
            raise DeliveryError(
                f"HTTP {status} {response.reason_phrase} from {where}",
                permanent=permanent,
                retry_after=retry_after_seconds(response.headers.get("Retry-After")),
            )


class SlackSink(WebhookSink):
    """Slack incoming-webhook shape (`text` plus blocks); Mattermost and Rocket.Chat accept it too."""

    def send(self, notification: Notification) -> None:
        self._post(slack_payload(notification))


SLACK_SECTION_LIMIT = 3000
"""Slack refuses a section block whose text is longer (HTTP 400 invalid_blocks), and would refuse
it again at every retry: the alert would never arrive."""


def slack_payload(notification: Notification) -> dict[str, Any]:
    """`text` (what the phone notification shows) plus `blocks`: the title, the explanation as a
    code block, and the alert id with the commands to act on it. Text is escaped as Slack asks
    (&, <, >), so a scope or title is never read as a link or a mention."""
    title = _slack_escape(notification.title)
    head = f"{_ICON.get(notification.kind, '')} *{notification.kind.upper()}* {title}"
    lines = notification.message.split("\n", 1)
    body = _slack_escape(lines[1] if len(lines) > 1 else notification.message)
    code = _clip(body, SLACK_SECTION_LIMIT - 6)
    context = (
        f"alert `{notification.alert_id}` · {notification.severity} · {notification.detector} · "
        f"`unitcost alerts ack {notification.alert_id}`"
    )
    return {
        "text": f"{head}\n{body}",
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": _clip(head, SLACK_SECTION_LIMIT)}},
            {"type": "section", "text": {"type": "mrkdwn", "text": f"```{code}```"}},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": context}]},
        ],
    }


def _slack_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


class EmailSink:
    """One email per notification; the updates and the resolution of an incident reply to the
    email that opened it (`In-Reply-To`, `References`), so a mail client shows one thread."""

    def __init__(
        self,
        name: str,
        *,
        host: str,
        port: int,
        sender: str,
        to: Sequence[str],
        username: str | None = None,
        password: str | None = None,
        starttls: bool = False,
        tls: bool = False,
        timeout: float = 10.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.name, self.host, self.port, self.sender, self.to = name, host, port, sender, list(to)
        self.username, self.password, self.starttls, self.timeout = username, password, starttls, timeout
        # `tls`: the connection is TLS from its first byte (SMTPS, port 465), as many providers
        # require; `starttls` upgrades a plain connection (submission, port 587).
        self.tls = tls
        self.ssl_context = ssl_context

    def send(self, notification: Notification) -> None:
        message = email_message(notification, self.sender, self.to)
        try:
            with self._connect() as smtp:
                if self.starttls:
                    smtp.starttls(context=self._context())
                if self.username and self.password:
                    smtp.login(self.username, self.password)
                smtp.send_message(message)
        except smtplib.SMTPResponseException as exc:
            # 5xx is the server's final word (bad sender, bad credentials); 4xx means try later.
            # The server's text is kept: it says which address or what it wants.
            text = (
                exc.smtp_error.decode("utf-8", "replace")
                if isinstance(exc.smtp_error, bytes)
                else str(exc.smtp_error)
            )
            raise DeliveryError(
                f"SMTP {exc.smtp_code} {text} from {self.host}:{self.port}", permanent=exc.smtp_code >= 500
            ) from None
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [code for code, _ in exc.recipients.values()]
            raise DeliveryError(
                f"SMTP refused every recipient ({', '.join(sorted(exc.recipients))}) at {self.host}:{self.port}",
                permanent=all(code >= 500 for code in codes),
            ) from None

    def _context(self) -> ssl.SSLContext:
        return self.ssl_context or ssl.create_default_context()

    def _connect(self) -> smtplib.SMTP:
        if self.tls:
            return smtplib.SMTP_SSL(self.host, self.port, timeout=self.timeout, context=self._context())
        return smtplib.SMTP(self.host, self.port, timeout=self.timeout)


def email_message(notification: Notification, sender: str, to: Sequence[str]) -> EmailMessage:
    """The email of one notification: what happened in the subject, the explanation and the
    commands to act on it in the body, the alert id in `X-Unitcost-Alert`."""
    n = notification
    domain = sender.rpartition("@")[2] or "unitcost.invalid"
    thread = f"<unitcost.{n.alert_id}@{domain}>"
    message = EmailMessage()
    message["Subject"] = f"[unitcost {n.severity}] {n.kind}: {n.title}"
    message["From"] = sender
    message["To"] = ", ".join(to)
    message["Date"] = formatdate(localtime=False)
    message["X-Unitcost-Alert"] = n.alert_id
    if n.kind == "opened":
        message["Message-ID"] = thread
    else:
        message["Message-ID"] = make_msgid(idstring=f"{n.alert_id}.{n.kind}", domain=domain)
        message["In-Reply-To"] = thread
        message["References"] = thread
    message.set_content(
        f"{n.kind} at {n.at:%Y-%m-%d %H:%M} UTC · {n.severity} · {n.detector}\n\n"
        f"{n.message}\n\n"
        f"alert id: {n.alert_id}\n"
        f"history:      unitcost alerts show {n.alert_id}\n"
        f"acknowledge:  unitcost alerts ack {n.alert_id} --by <you>\n"
    )
    return message


class LogSink:
    def __init__(self, name: str = "log") -> None:
        self.name = name

    def send(self, notification: Notification) -> None:
        level = logging.ERROR if notification.severity == "critical" else logging.WARNING
        log.log(level, "%s %s: %s", notification.kind, notification.alert_id, notification.message)


def build_sinks(configs: Sequence[SinkConfig]) -> list[Sink]:
    """The sinks, with their secrets read from the environment now: a variable that is not set
    stops the start, naming the sink and the variable (never a value)."""
    sinks: list[Sink] = []
    for cfg in configs:
        o = cfg.options
        if cfg.kind in ("webhook", "slack"):
            url = cfg.secret("url")
            if not url:
                raise ValueError(f"sink {cfg.name}: url (or url_env naming a set variable) is required")
            cls = SlackSink if cfg.kind == "slack" else WebhookSink
            sinks.append(cls(cfg.name, url, cfg.headers(), float(o.get("timeout", 10))))
        elif cfg.kind == "email":
            to = o.get("to", [])
            if not o.get("host") or not to or not o.get("from"):
                raise ValueError(f"sink {cfg.name}: email needs host, from and to")
            sinks.append(
                EmailSink(
                    cfg.name,
                    host=str(o["host"]),
                    port=int(o.get("port", 25)),
                    sender=str(o["from"]),
                    to=[to] if isinstance(to, str) else [str(t) for t in to],
                    username=cfg.secret("username"),
                    password=cfg.secret("password"),
                    starttls=bool(o.get("starttls", False)),
                    tls=bool(o.get("tls", False)),
                    timeout=float(o.get("timeout", 10)),
                )
            )
        else:
            sinks.append(LogSink(cfg.name))
    return sinks


@dataclass(order=True)
class _Delivery:
    due: float
    seq: int
    sink: Sink = field(compare=False)
    notification: Notification = field(compare=False)
    attempt: int = field(default=0, compare=False)


def _order_key(delivery: _Delivery) -> tuple[int, str]:
    return id(delivery.sink), delivery.notification.alert_id


ResultCallback = Callable[[Notification, str, bool, str], None]


class Dispatcher:
    """Delivers notifications to every sink on a background thread, retrying with backoff."""

    def __init__(
        self,
        sinks: Sequence[Sink],
        *,
        on_result: ResultCallback | None = None,
        base_delay: float = 1.0,
        max_delay: float = 300.0,
        max_attempts: int = 12,
    ) -> None:
        self.sinks = list(sinks)
        self.on_result = on_result
        self.base_delay, self.max_delay, self.max_attempts = base_delay, max_delay, max_attempts
        self._queue: list[_Delivery] = []
        self._seq = itertools.count()
        self._cv = threading.Condition()
        self._busy = 0
        # An incident's notifications reach each sink in order: "resolved" must not overtake an
        # "opened" still being retried, or the receiving side (a pager, a ticket) stays open. The
        # later ones wait here, by (sink, alert), until the one under way succeeds or gives up.
        self._behind: dict[tuple[int, str], list[_Delivery]] = {}
        self._closed = False
        self.delivered = 0
        self.failed = 0
        self._thread = threading.Thread(target=self._run, name="unitcost-alert-delivery", daemon=True)
        self._thread.start()

    def submit(self, notifications: Sequence[Notification]) -> None:
        with self._cv:
            for notification in notifications:
                for sink in self.sinks:
                    delivery = _Delivery(time.monotonic(), next(self._seq), sink, notification)
                    waiting = self._behind.get(_order_key(delivery))
                    if waiting is not None:
                        waiting.append(delivery)
                        continue
                    self._behind[_order_key(delivery)] = []
                    heapq.heappush(self._queue, delivery)
            self._cv.notify()

    @property
    def pending(self) -> int:
        with self._cv:
            return len(self._queue) + self._busy + sum(len(w) for w in self._behind.values())

    def flush(self, timeout: float) -> bool:
        """Wait until every queued delivery succeeded or gave up; False if time ran out first."""
        deadline = time.monotonic() + timeout
        with self._cv:
            while self._queue or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cv.wait(min(left, 0.1))
        return True

    def close(self, timeout: float = 5.0) -> bool:
        """Wait up to `timeout` seconds in all for the queued deliveries, then stop delivering.
        True if every delivery succeeded or gave up. Closing again returns at once: `watch --once`
        waits its bounded time and then still closes on its way out."""
        deadline = time.monotonic() + timeout
        with self._cv:
            if self._closed:
                return not (self._queue or self._busy)
        done = self.flush(timeout)
        with self._cv:
            self._closed = True
            self._cv.notify_all()
        # A send still in flight (up to its sink's timeout) is not waited for past the deadline:
        # the thread is a daemon.
        self._thread.join(timeout=max(deadline - time.monotonic(), 0.0))
        return done

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._closed and (not self._queue or self._queue[0].due > time.monotonic()):
                    wait = (self._queue[0].due - time.monotonic()) if self._queue else None
                    self._cv.wait(wait if wait is None else max(wait, 0.0))
                if self._closed:
                    return
                delivery = heapq.heappop(self._queue)
                self._busy += 1
            try:
                self._deliver(delivery)
            finally:
                with self._cv:
                    self._busy -= 1
                    self._cv.notify_all()

    def _deliver(self, delivery: _Delivery) -> None:
        delivery.attempt += 1
        try:
            delivery.sink.send(delivery.notification)
        except Exception as exc:  # any failure of a receiver is retried, never raised into detection
            why = str(exc) if isinstance(exc, DeliveryError) else f"{type(exc).__name__}: {exc}"
            reason = f"attempt {delivery.attempt}: {why}"
            permanent = isinstance(exc, DeliveryError) and exc.permanent
            if permanent or delivery.attempt >= self.max_attempts:
                self.failed += 1
                given_up = (
                    " (not retried: the receiver refuses it; fix the sink)" if permanent else " (giving up)"
                )
                self._report(delivery, False, reason + given_up)
                self._next_in_order(delivery)
                return
            delay = min(self.max_delay, self.base_delay * 2 ** (delivery.attempt - 1))
            wait = delay * random.uniform(0.8, 1.2)
            asked = exc.retry_after if isinstance(exc, DeliveryError) else None
            if asked is not None:
                # The receiver said when to come back (a rate limit): sooner would be refused again.
                delay = wait = min(max(wait, asked), self.max_delay)
            delivery.due = time.monotonic() + wait
            self._report(delivery, False, reason + f" (retry in {delay:.1f} s)")
            with self._cv:
                heapq.heappush(self._queue, delivery)
            return
        self.delivered += 1
        self._report(delivery, True, f"attempt {delivery.attempt}")
        self._next_in_order(delivery)

    def _next_in_order(self, done: _Delivery) -> None:
        """The delivery of the incident's next notification to the same sink, now due."""
        with self._cv:
            waiting = self._behind.get(_order_key(done))
            if not waiting:
                self._behind.pop(_order_key(done), None)
                return
            following = waiting.pop(0)
            following.due = time.monotonic()
            heapq.heappush(self._queue, following)
            self._cv.notify_all()

    def _report(self, delivery: _Delivery, ok: bool, message: str) -> None:
        if self.on_result is None or self._closed:
            # Past close() the ledger the outcome would be written to may be closed already.
            return
        try:
            self.on_result(delivery.notification, delivery.sink.name, ok, message)
        except Exception:  # recording the outcome must not kill the delivery thread
            log.exception("could not record the delivery of alert %s", delivery.notification.alert_id)
