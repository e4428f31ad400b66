"""Numbers a FinOps user acts on, right after the facts change under them.

- The runaway detector keeps its per-feature trace norms for a day. A reprice rebuilds the
  watch's trace rollups of the hours it changed, but the cached norms kept the old costs: after
  finance corrected a self-hosted model's price typed ten times too high, a runaway agent
  spending 20 times its feature's (corrected) norm read as under half the (stale) limit, and
  nobody was paged until the next day. A rebuild now records the hours it rewrote, and the
  detector recomputes norms whose week holds one of them.
- A budget was reported to count its burn rate from the first day of the period when the
  ledger's data begins later: it does not (nor does the forecast); the check stays here.

Through the real parts: `Ledger` ingestion priced by a user overrides file (a self-hosted
model's GPU cost, the user's own number, not a provider price), `Watcher.run_once`,
`Ledger.reprice`, `budget_status`; on DuckDB and ClickHouse (in-process, chDB).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from unitcost.api import Ledger
from unitcost.config import Config
from unitcost.pricing.book import PriceBook
from unitcost.watch import rollup
from unitcost.watch.budgets import Budget, budget_status
from unitcost.watch.detectors.runaway import RunawayTrace
from unitcost.watch.runner import Watcher
from unitcost.watch.scope import Scope
from unitcost.watch.settings import WatchSettings
from unitcost.watch.state import WatchState

HOUR = timedelta(hours=1)
TODAY = datetime(2025, 9, 10, tzinfo=UTC)

# The user's own cost of a self-hosted model (its GPUs), as finance writes it: first typed ten
# times too high, then corrected. Not a provider's list price.
_PRICE = (
    '[[price]]\nprovider = "acme"\nmodel = "acme-local-7b"\nfrom = 2025-01-01\n'
    'source = "GPU cost model"\ninput_mtok = "{input}"\noutput_mtok = "{output}"\n'
)
TYPO = _PRICE.format(input="5.00", output="15.00")
CORRECTED = _PRICE.format(input="0.50", output="1.50")


def _call(trace: str, at: datetime, input_tokens: int, output_tokens: int) -> dict[str, Any]:
    return {
        "event_id": f"{trace}-{at:%Y%m%d%H%M%S}",
        "ts": at.isoformat(),
        "provider": "acme",
        "model": "acme-local-7b",
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "team": "support",
        "feature": "triage",
        "trace_id": trace,
    }


def _trace(trace: str, at: datetime) -> list[dict[str, Any]]:
    """An ordinary triage run: 4 calls of 50k tokens in, 500 out ($0.103 at the corrected price)."""
    return [_call(trace, at + timedelta(minutes=i), 50_000, 500) for i in range(4)]


def _runaway(at: datetime) -> list[dict[str, Any]]:
    """An agent looping on a huge context: 30 calls of 150k tokens in ($2.295 corrected), 20 times
    the ordinary run, over the $2 floor, and under the 50 calls that would flag it on calls."""
    return [_call("agent-loop", at + timedelta(minutes=i), 150_000, 1_000) for i in range(30)]


@pytest.fixture(params=["duckdb", "clickhouse"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "clickhouse":
        pytest.importorskip("chdb", reason="the chdb package runs ClickHouse in-process")
        return f"chdb://?database=nb_{uuid.uuid4().hex}"
    return str(tmp_path / "ledger.duckdb")


@pytest.fixture
def prices(tmp_path: Path) -> tuple[Path, Path]:
    typo, corrected = tmp_path / "typo.toml", tmp_path / "corrected.toml"
    typo.write_text(TYPO)
    corrected.write_text(CORRECTED)
    return typo, corrected


@pytest.fixture
def watched(target: str, prices: tuple[Path, Path]) -> Iterator[tuple[Ledger, Watcher]]:
    """A week of triage runs (16 a day: with over 100 in a week, one runaway does not move their
    99th percentile) priced with the typo, judged by a cycle at 00:05 today: the runaway norms
    are computed then, from the week's rollups, and cached for the day."""
    with Ledger(target, config=Config(), prices=prices[0]) as ledger:
        records = [
            record
            for day in range(7, 0, -1)
            for n in range(16)
            for record in _trace(f"run-{day}-{n}", TODAY - timedelta(days=day) + (8 + n) * HOUR)
        ]
        assert ledger.ingest_records(records, source="app").accepted == 448
        watcher = Watcher(ledger.store, WatchSettings(detectors=[RunawayTrace()]), sinks=[])
        try:
            watcher.run_once(now=TODAY + timedelta(minutes=5), backfill_hours=1)
            yield ledger, watcher
        finally:
            watcher.close(flush_timeout=0)


def _norms(ledger: Ledger) -> dict[str, Any]:
    _, state = WatchState(ledger.store).get(RunawayTrace.name)
    norms: dict[str, Any] = state["norms"]
    return norms


def _trace_cost(ledger: Ledger, trace: str) -> float:
    rows = ledger.store.fetch("SELECT sum(cost) AS cost FROM events WHERE trace_id = ?", [trace]).to_pylist()
    return float(rows[0]["cost"])


def test_a_reprice_of_the_norms_week_recomputes_them_and_the_runaway_is_caught(
    watched: tuple[Ledger, Watcher], prices: tuple[Path, Path]
) -> None:
    ledger, watcher = watched
    (stale,) = _norms(ledger)["rows"]
    assert stale["traces"] == 112 and stale["p99_cost"] == pytest.approx(_trace_cost(ledger, "run-1-0"))

    # Today: ordinary runs, and at 09:00 an agent that loops.
    today = [r for n in range(3) for r in _trace(f"run-0-{n}", TODAY + (6 + n) * HOUR)] + _runaway(
        TODAY + 9 * HOUR
    )
    assert ledger.ingest_records(today, source="app").accepted == 42
    # Finance finds the typo and reprices from the start of the week, today included.
    result = ledger.reprice(
        TODAY - timedelta(days=7), TODAY + timedelta(days=1), book=PriceBook.load(prices[1])
    )
    assert result.events_changed == 490
    corrected = _trace_cost(ledger, "run-1-0")
    assert corrected == pytest.approx(stale["p99_cost"] / 10)
    runaway = _trace_cost(ledger, "agent-loop")
    # Over the $2 floor and 5 times the corrected norm; under 5 times the stale one.
    assert 5 * corrected < 2 < runaway < 5 * stale["p99_cost"]

    report = watcher.run_once(now=TODAY + 10 * HOUR + timedelta(minutes=5))
    (finding,) = [f for f in report.findings if f.detector == "runaway_trace"]
    assert finding.subject == "trace=agent-loop"
    assert finding.observed == pytest.approx(runaway)
    assert finding.expected == pytest.approx(corrected)  # the corrected norm, not the typo's
    assert finding.at == TODAY + 10 * HOUR
    norms = _norms(ledger)
    assert norms["at"] == (TODAY + 10 * HOUR).isoformat() and norms["seen"] == 1


def test_norms_are_kept_through_a_reprice_of_hours_outside_their_week(
    watched: tuple[Ledger, Watcher], prices: tuple[Path, Path]
) -> None:
    """No work for a reprice that does not touch the norms' week: today's hours after the cycle
    that computed them (they were not in it) are rebuilt, and the norms stay as they were."""
    ledger, watcher = watched
    cached = _norms(ledger)
    today = [r for n in range(3) for r in _trace(f"run-0-{n}", TODAY + (6 + n) * HOUR)]
    assert ledger.ingest_records(today, source="app").accepted == 12
    watcher.run_once(now=TODAY + 9 * HOUR + timedelta(minutes=5))
    assert _norms(ledger)["at"] == cached["at"]  # within the day: reused
    assert (
        ledger.reprice(TODAY, TODAY + timedelta(days=1), book=PriceBook.load(prices[1])).events_changed == 12
    )
    assert rollup.rebuilt_since(ledger.store, 0) == (1, [(TODAY + 6 * HOUR, TODAY + 9 * HOUR)])

    watcher.run_once(now=TODAY + 10 * HOUR + timedelta(minutes=5))
    kept = _norms(ledger)
    assert kept["at"] == cached["at"] and kept["rows"] == cached["rows"]
    assert kept["seen"] == 1  # looked at once: the next cycles do not ask again
    assert rollup.rebuilt_since(ledger.store, 1) == (1, [])


def test_every_rebuild_since_the_norms_were_computed_is_seen_not_only_the_last(
    watched: tuple[Ledger, Watcher], prices: tuple[Path, Path]
) -> None:
    """Two reprices between two cycles: the first corrects the norms' week, the second only
    today. The second must not hide the first."""
    ledger, _ = watched
    corrected = PriceBook.load(prices[1])
    assert ledger.reprice(TODAY - timedelta(days=7), TODAY, book=corrected).events_changed == 448
    today = _trace("run-0-0", TODAY + 6 * HOUR)
    assert ledger.ingest_records(today, source="app").accepted == 4
    rollup.roll_up(ledger.store)
    assert ledger.reprice(TODAY, TODAY + timedelta(days=1), book=corrected).events_changed == 4
    first_hour, last_hour = TODAY - timedelta(days=7) + 8 * HOUR, TODAY
    assert rollup.rebuilt_since(ledger.store, 0) == (
        2,
        [(first_hour, last_hour), (TODAY + 6 * HOUR, TODAY + 7 * HOUR)],
    )
    assert rollup.rebuilt_since(ledger.store, 1) == (2, [(TODAY + 6 * HOUR, TODAY + 7 * HOUR)])
    # A reader that never looked (norms cached before the marker existed) recomputes.
    assert rollup.rebuilt_since(ledger.store, None) == (2, None)


def test_a_reader_further_behind_than_the_spans_kept_recomputes(watched: tuple[Ledger, Watcher]) -> None:
    ledger, _ = watched
    spans = [[n, (TODAY + n * HOUR).isoformat(), (TODAY + (n + 1) * HOUR).isoformat()] for n in range(5, 9)]
    WatchState(ledger.store).put(rollup.REBUILT_STATE, TODAY, {"seq": 8, "spans": spans})
    assert rollup.rebuilt_since(ledger.store, 3) == (8, None)  # span 4 is gone: anything may have changed
    assert rollup.rebuilt_since(ledger.store, 9) == (8, None)  # a record lost and counting again
    assert rollup.rebuilt_since(ledger.store, 8) == (8, [])
    assert rollup.rebuilt_since(ledger.store, 4)[1] == [
        (TODAY + n * HOUR, TODAY + (n + 1) * HOUR) for n in range(5, 9)
    ]


# ---------------------------------------------------------------------------- burn rate


@pytest.fixture
def late_ledger(target: str, prices: tuple[Path, Path]) -> Iterator[Ledger]:
    """A ledger whose first event is at 00:00 on 20 September in New York (04:00 UTC), one
    ordinary triage call at the start of every hour from then on."""
    with Ledger(target, config=Config(), prices=prices[1]) as ledger:
        first = datetime(2025, 9, 20, 4, tzinfo=UTC)
        records = [_call("hourly", first + h * HOUR, 50_000, 500) for h in range(72)]
        assert ledger.ingest_records(records, source="app").accepted == 72
        yield ledger


def test_a_month_whose_ledger_begins_on_the_20th_burns_and_forecasts_from_the_20th(
    late_ledger: Ledger,
) -> None:
    """The case reported as "the burn rate counts the month from the 1st": it does not. Spend
    since the 20th over the 19 days before (which the ledger has no data for) would read 40
    calls over 20.67 days, 1.9 calls a day, for a pace of 24; neither the burn rate nor the
    forecast does that (documented in docs/watch.md, Budgets; it passed before this file too)."""
    call = Decimal(late_ledger.store.fetch("SELECT max(cost) AS c FROM events").to_pylist()[0]["c"])
    budget = Budget("support", Scope.of(team="support"), Decimal(100), "month", "America/New_York")
    now = datetime(2025, 9, 21, 20, tzinfo=UTC)  # 16:00 on the 21st in New York
    status = budget_status(late_ledger.store, budget, now)
    assert status.start == datetime(2025, 9, 1, 4, tzinfo=UTC)  # the month in New York
    assert status.spent == call * 40
    assert status.burn_rate == call * 24  # one call an hour is 24 calls a day, exactly
    assert status.forecast_basis == "mean of the period's 1 complete day; no interval before 2 days of data"
    assert status.forecast_pace == pytest.approx(float(call * 24))
    remaining = Decimal((status.end - now).total_seconds()) / 86400
    assert status.forecast == pytest.approx(call * 40 + call * 24 * remaining)
