"""Budgets and their alerts checked with a calculator: weekly and monthly budgets in Los Angeles
and Kolkata across a clock change, to the last digit; titles that do not round a share up to a
threshold; a resolution dated when the cycle looked; and an acknowledged budget that passes a
higher threshold reaching a real webhook."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from unitcost.watch.budgets import Budget, budget_findings, budget_status
from unitcost.watch.incidents import acknowledge, alert_history, list_alerts
from unitcost.watch.runner import Watcher
from unitcost.watch.scope import Scope
from unitcost.watch.settings import WatchSettings
from unitcost.watch.sinks import WebhookSink

CALL = Decimal("0.021")
"""What one call below costs: 100k input tokens and 10k output tokens of gpt-4o-mini."""
DAY = CALL * 24
"""One call an hour, round the clock: $0.504 a day."""


def _utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def _call(at: datetime, n: int = 0) -> dict[str, Any]:
    return {
        "event_id": f"p9-{at:%Y%m%d%H%M}-{n}",
        "ts": at.isoformat(),
        "model": "gpt-4o-mini",
        "provider": "openai",
        "input_tokens": 100_000,
        "output_tokens": 10_000,
        "team": "search",
    }


def _hourly(ledger: Any, first: str, last: str) -> None:
    """One call at the start of every UTC hour from `first` up to `last`."""
    hour, stop, records = _utc(first), _utc(last), []
    while hour < stop:
        records.append(_call(hour))
        hour += timedelta(hours=1)
    assert ledger.ingest_records(records, source="t").accepted == len(records)


@pytest.mark.parametrize(
    ("zone", "period", "now", "spent_calls", "hours_elapsed", "forecast_calls", "runs_out"),
    [
        # Los Angeles, the week of the clock change (Sunday 2 Nov has 25 hours): 00:00 PDT on
        # Monday 27 Oct is 07:00 UTC; the week ends at 00:00 PST on 3 Nov, 08:00 UTC (169 hours).
        # ($3 is 142.86 calls: at $0.504 a day, (3 - 2.373) / 0.504 = 1.24 days after 17:00 PDT
        # on Friday 31 Oct is 22:51 PDT on Saturday 1 Nov.)
        ("America/Los_Angeles", "week", "2025-11-01T00:00", 113, 113, 169, date(2025, 11, 1)),
        # Its last day: 149 calls spent, $3.00 reached by the 143rd, at 22:00 PDT on Saturday.
        ("America/Los_Angeles", "week", "2025-11-02T12:00", 149, 149, 169, date(2025, 11, 1)),
        # November in Los Angeles has 721 hours; at its first instant, the last 7 days' pace (the
        # one-hour floor of the burn rate's time), and $3 gone 5.95 days on, at 21:51 PST on 6 Nov.
        ("America/Los_Angeles", "month", "2025-11-01T07:00", 0, 1, 721, date(2025, 11, 6)),
        # Kolkata (UTC+5:30): the month began at 18:30 UTC on 31 Oct; calls fall at :30 local.
        # (3 - 0.861) / 0.504 = 4.24 days after 12:00 UTC on 2 Nov: 23:21 IST on 6 Nov.
        (
            "Asia/Kolkata",
            "month",
            "2025-11-02T12:00",
            41,
            Decimal("41.5"),
            Decimal("719.5"),
            date(2025, 11, 6),
        ),
        # Its week, early on Monday: 19:00 UTC is the week's one call so far, 1.5 hours in.
        ("Asia/Kolkata", "week", "2025-11-09T20:00", 1, Decimal("1.5"), Decimal("167.5"), date(2025, 11, 15)),
    ],
)
def test_weekly_and_monthly_budgets_away_from_utc_read_as_a_calculator_does(
    ledger: Any,
    zone: str,
    period: str,
    now: str,
    spent_calls: int,
    hours_elapsed: Decimal,
    forecast_calls: Decimal,
    runs_out: date | None,
) -> None:
    """Round-the-clock traffic from 1 October: spend, burn rate, forecast and run-out day are the
    call counts an hour-by-hour tally gives (the forecast: the calls so far plus one an hour
    until the period ends). The burn rate is exact: it went through a float and read
    $0.5040000000000000356814159292 a day."""
    _hourly(ledger, "2025-10-01T00:00", "2025-11-20T00:00")
    budget = Budget("b", Scope(), Decimal(3), period, zone)
    status = budget_status(ledger.store, budget, _utc(now))
    assert status.spent == CALL * spent_calls
    assert status.burn_rate == CALL * spent_calls * 24 / hours_elapsed
    assert status.forecast == pytest.approx(CALL * forecast_calls, abs=Decimal("1e-6"))
    assert status.runs_out == runs_out


@pytest.mark.parametrize(
    ("spent_calls", "amount_calls", "thresholds", "title"),
    [
        (249, 250, (85, 100), "99% used (85 % threshold crossed)"),  # 99.6 %: not "100% used"
        (249, 250, (50, 85), "99% used (85 % threshold crossed)"),  # nor "100%" with no 100 % threshold
        (423, 500, (50, 85), "84% used (50 % threshold crossed)"),  # 84.6 %: not "85% used"
        (10, 15, (50, 85), "67% used (50 % threshold crossed)"),  # 66.7 %: rounded as usual
        (169, 200, (50, 84.5), "84.5% used (84.5 % threshold crossed)"),
    ],
)
def test_a_share_used_is_never_rounded_up_to_a_threshold_not_crossed(
    ledger: Any, spent_calls: int, amount_calls: int, thresholds: tuple[float, ...], title: str
) -> None:
    """$5.229 of $5.25 is 99.6 %: the alert said "100% used (85 % threshold crossed)", which reads
    as a 100 % threshold that was crossed and not announced."""
    records = [_call(_utc("2025-09-10T00:00") + timedelta(minutes=i)) for i in range(spent_calls)]
    assert ledger.ingest_records(records, source="t").accepted == spent_calls
    budget = Budget(
        "b", Scope(), CALL * amount_calls, "month", thresholds=tuple(Decimal(str(t)) for t in thresholds)
    )
    status = budget_status(ledger.store, budget, _utc("2025-09-10T23:00"))
    (finding,) = [f for f in budget_findings(status) if "threshold" in f.title]
    assert finding.title == f"Budget b: {title}"
    assert f"({title.split(' used', maxsplit=1)[0]})" in finding.message()


def test_a_budget_alert_is_resolved_when_the_cycle_looked_not_at_the_top_of_its_hour(ledger: Any) -> None:
    """Seen at 16:10, gone at 16:50 (the budget taken out of the config): the alert read "resolved
    at 16:00", before it was opened, and the webhook was told the same."""
    _hourly(ledger, "2025-09-10T00:00", "2025-09-10T16:00")
    budget = Budget("b", Scope(), CALL * 20, "day")  # 16 calls: 80 %, the 50 % threshold
    first = Watcher(ledger.store, WatchSettings(detectors=[], budgets=[budget]), sinks=[])
    (opened,) = first.run_once(_utc("2025-09-10T16:10")).notifications
    first.close(0)
    assert opened.kind == "opened" and opened.at == _utc("2025-09-10T16:10")
    second = Watcher(ledger.store, WatchSettings(detectors=[], budgets=[]), sinks=[])
    (resolved,) = second.run_once(_utc("2025-09-10T16:50")).notifications
    second.close(0)
    assert (resolved.kind, resolved.at) == ("resolved", _utc("2025-09-10T16:50"))
    (row,) = list_alerts(ledger.store)
    assert row["resolved_at"] == _utc("2025-09-10T16:50")
    history = [(h["kind"], h["at"]) for h in alert_history(ledger.store, row["alert_id"])]
    assert history == [("opened", _utc("2025-09-10T16:10")), ("resolved", _utc("2025-09-10T16:50"))]


class _Receiver:
    """A webhook receiver on 127.0.0.1 that keeps what it is sent."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        bodies = self.bodies

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[_Receiver]:
    r = _Receiver()
    yield r
    r.close()


def test_an_acknowledged_budget_passing_a_higher_threshold_reaches_the_webhook(
    ledger: Any, receiver: _Receiver
) -> None:
    """The acknowledgement covered 85 %: passing 100 % is delivered, and more spend under the same
    threshold after a second acknowledgement is not."""
    _hourly(ledger, "2025-09-10T00:00", "2025-09-10T09:00")  # 9 calls of a 10-call day
    budget = Budget("b", Scope(), CALL * 10, "day")
    settings = WatchSettings(detectors=[], budgets=[budget])
    watcher = Watcher(ledger.store, settings, sinks=[WebhookSink("hook", receiver.url)])
    try:
        (opened,) = watcher.run_once(_utc("2025-09-10T09:10")).notifications
        acknowledge(ledger.store, opened.alert_id, "finops")
        _hourly(ledger, "2025-09-10T09:00", "2025-09-10T11:00")  # 11 calls: 110 %
        assert [n.kind for n in watcher.run_once(_utc("2025-09-10T11:10")).notifications] == ["updated"]
        acknowledge(ledger.store, opened.alert_id, "finops")
        _hourly(ledger, "2025-09-10T11:00", "2025-09-10T14:00")  # 14 calls: 140 %, still 100 %
        assert watcher.run_once(_utc("2025-09-10T14:10")).notifications == []
        assert watcher.dispatcher.flush(timeout=10)
    finally:
        watcher.close(0)
    sent = [(b["event"], b["alert_id"], b["title"], b["severity"]) for b in receiver.bodies]
    assert sent == [
        ("opened", opened.alert_id, "Budget b: 90% used (85 % threshold crossed)", "warning"),
        ("updated", opened.alert_id, "Budget b: 110% used (100 % threshold crossed)", "critical"),
    ]
