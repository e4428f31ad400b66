"""A model with no price is one standing incident, not one per burst of its calls.

Before, `unpriced_model` incidents resolved after `resolve_after_hours` (3 h) with no new finding,
like a cost spike's, and opened again at the model's next call: a self-hosted model called every
four or five hours opened and resolved all day (17 times in a month of `unitcost demo --scale
0.1`) for one problem, a model nobody priced. Now the incident stays open while the model is
unpriced, and resolves when its calls are priced and repriced, or after a day with no unpriced
call of it.

Everything goes through the real parts: events ingested into a DuckDB ledger through `Ledger`,
the watch cycle (`Watcher.run_once`) run hour by hour over simulated time, a price added in an
overrides file and `Ledger.reprice`.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from unitcost.api import Ledger
from unitcost.config import Config
from unitcost.watch.incidents import Notification, alert_history, list_alerts
from unitcost.watch.runner import Watcher
from unitcost.watch.settings import WatchSettings

T0 = datetime(2025, 9, 1, tzinfo=UTC)
HOUR = timedelta(hours=1)

ACME_PRICE = (
    '[[price]]\nprovider = "acme"\nmodel = "acme-local-7b"\nfrom = 2025-01-01\n'
    'source = "GPU cost model"\ninput_mtok = "0.50"\noutput_mtok = "1.50"\n'
)


def _priced_call(at: datetime, n: int) -> dict[str, Any]:
    """The ordinary traffic around it: a priced model, every hour."""
    return {
        "event_id": f"oa-{at:%d%H}-{n}",
        "ts": (at + timedelta(minutes=5 + n)).isoformat(),
        "provider": "openai",
        "model": "gpt-4o-mini",
        "input_tokens": 2000,
        "output_tokens": 150,
        "team": "search",
        "feature": "answer",
    }


def _acme_call(at: datetime, n: int = 0) -> dict[str, Any]:
    """A self-hosted model the price book does not know: stored with no cost."""
    return {
        "event_id": f"acme-{at:%d%H%M}-{n}",
        "ts": at.isoformat(),
        "provider": "acme",
        "model": "acme-local-7b",
        "input_tokens": 800,
        "output_tokens": 60,
        "team": "ops",
        "feature": "log-classifier",
    }


class Clock:
    """Simulated time: each hour's events are ingested as they happen, and the watch judges the
    hour once it is complete, as `unitcost watch` does."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.hour = T0
        self.sent: list[Notification] = []
        self.prices: Path | None = None

    def ledger(self) -> Ledger:
        return Ledger(self.path, config=Config(), prices=self.prices)

    def run(self, until: datetime, acme: dict[datetime, int]) -> None:
        """Hour after hour up to `until`: ordinary traffic every hour, `acme[t]` calls of the
        unpriced model at each instant `t` given, then a watch cycle 5 minutes after the hour."""
        with self.ledger() as ledger:
            watcher = Watcher(ledger.store, WatchSettings(), sinks=[])
            try:
                while self.hour < until:
                    records = [_priced_call(self.hour, n) for n in range(3)]
                    for at, n in acme.items():
                        if self.hour <= at < self.hour + HOUR:
                            records += [_acme_call(at, i) for i in range(n)]
                    assert ledger.ingest_records(records, source="test").accepted == len(records)
                    self.hour += HOUR
                    report = watcher.run_once(now=self.hour + timedelta(minutes=5))
                    self.sent += [n for n in report.notifications if n.detector == "unpriced_model"]
            finally:
                watcher.close(flush_timeout=0)

    def kinds(self) -> list[tuple[str, datetime]]:
        return [(n.kind, n.at) for n in self.sent]


@pytest.fixture
def clock(tmp_path: Path) -> Iterator[Clock]:
    yield Clock(tmp_path / "ledger.duckdb")


def _unpriced_alerts(path: Path) -> list[dict[str, Any]]:
    with Ledger(path, config=Config(), read_only=True) as ledger:
        return list_alerts(ledger.store, detector="unpriced_model")


def test_sparse_unpriced_calls_are_one_incident_until_the_model_is_priced_and_repriced(
    clock: Clock, tmp_path: Path
) -> None:
    day = T0
    # Calls 4 to 6 hours apart all day: every gap longer than the 3 h quiet spell.
    bursts = {day + timedelta(hours=h, minutes=10): 2 for h in (1, 5, 10, 16, 21)}
    clock.run(day + timedelta(hours=23), bursts)

    assert clock.kinds() == [("opened", day + timedelta(hours=2))]  # one incident, not five
    (alert,) = _unpriced_alerts(clock.path)
    assert alert["status"] == "open"
    assert alert["since"] == day + timedelta(hours=1)
    assert alert["last_seen"] == day + timedelta(hours=22)
    assert alert["updates"] == 4  # each later burst updated it

    # FinOps adds the model's price and reprices the day: no unpriced call of it is left.
    prices = tmp_path / "prices.toml"
    prices.write_text(ACME_PRICE)
    clock.prices = prices
    with clock.ledger() as ledger:
        result = ledger.reprice("2025-09-01", "2025-09-02", reason="acme priced")
        assert result.events_changed == 10
        left = ledger.sql(
            "SELECT count(*) AS n FROM events WHERE model = 'acme-local-7b' AND cost IS NULL"
        ).to_dict("records")
        assert left == [{"n": 0}]

    # The first hour judged after the reprice resolves it; its later calls, priced, open nothing.
    clock.run(
        day + timedelta(days=2), {day + timedelta(hours=23, minutes=30): 1, day + timedelta(hours=30): 3}
    )
    resolved_at = day + timedelta(hours=24)
    assert clock.kinds() == [("opened", day + timedelta(hours=2)), ("resolved", resolved_at)]
    (alert,) = _unpriced_alerts(clock.path)
    assert alert["status"] == "resolved" and alert["resolved_at"] == resolved_at
    with Ledger(clock.path, config=Config(), read_only=True) as ledger:
        history = alert_history(ledger.store, alert["alert_id"])
    assert [h["kind"] for h in history] == ["opened"] + ["updated"] * 4 + ["resolved"]
    assert history[-1]["message"] == (
        "acme/acme-local-7b is priced: none of its calls since 2025-08-31 23:00 UTC is left with no cost"
    )


def test_a_day_without_unpriced_calls_resolves_it_and_a_later_call_opens_a_new_one(
    clock: Clock, tmp_path: Path
) -> None:
    first = T0 + timedelta(hours=3, minutes=20)
    clock.run(first + timedelta(hours=12), {first: 1})
    # Twelve quiet hours: still open (it resolved three hours after the call before).
    assert clock.kinds() == [("opened", first.replace(minute=0) + HOUR)]
    assert [a["status"] for a in _unpriced_alerts(clock.path)] == ["open"]

    # A price added but no reprice: new calls come priced, the stored one stays unpriced, so
    # the incident resolves a day after the last unpriced call, not at once.
    prices = tmp_path / "prices.toml"
    prices.write_text(ACME_PRICE)
    clock.prices = prices
    last_seen = first.replace(minute=0) + HOUR
    clock.run(last_seen + timedelta(hours=23), {first + timedelta(hours=15): 2})
    assert [a["status"] for a in _unpriced_alerts(clock.path)] == ["open"]
    clock.run(last_seen + timedelta(hours=26), {})
    assert clock.kinds() == [("opened", last_seen), ("resolved", last_seen + timedelta(hours=24))]
    (alert,) = _unpriced_alerts(clock.path)
    with Ledger(clock.path, config=Config(), read_only=True) as ledger:
        history = alert_history(ledger.store, alert["alert_id"])
    assert history[-1]["kind"] == "resolved" and history[-1]["message"] == "no new finding for 24 h"

    # The price dropped from the overrides: an unpriced call the hour after is a new incident.
    clock.prices = None
    again = last_seen + timedelta(hours=26, minutes=40)
    clock.run(again + timedelta(hours=2), {again: 1})
    assert clock.kinds()[-1] == ("opened", again.replace(minute=0) + HOUR)
    alerts = _unpriced_alerts(clock.path)
    assert [a["status"] for a in alerts] == ["open", "resolved"]
    assert alerts[0]["since"] == again.replace(minute=0)  # its own start, not the first call's
