"""`unitcost watch --once`, `unitcost alerts` (list, show, ack) and `unitcost budgets`, end to end
through the real ingest path."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from unitcost.api import Ledger
from unitcost.cli import app
from unitcost.config import Config

runner = CliRunner()


def _records() -> list[dict[str, Any]]:
    rows = []
    for day in range(1, 4):
        for hour in range(24):
            rows.append(
                {
                    "event_id": f"cli-{day}-{hour}",
                    "ts": f"2025-09-{day:02d}T{hour:02d}:10:00Z",
                    "model": "gpt-4o-mini",
                    "provider": "openai",
                    "input_tokens": 2000,
                    "output_tokens": 100,
                    "team": "search",
                    "feature": "answer",
                }
            )
    # A self-hosted model nobody priced appears on the third day.
    rows.append(
        {
            "event_id": "cli-new",
            "ts": "2025-09-03T15:20:00Z",
            "model": "acme-local-7b",
            "provider": "acme",
            "input_tokens": 10,
            "output_tokens": 5,
            "team": "search",
            "feature": "answer",
        }
    )
    return rows


def _invoke(*args: str) -> Any:
    result = runner.invoke(app, list(args), catch_exceptions=False)
    return result


def test_watch_once_then_list_show_and_acknowledge(ledger: Any, ledger_path: Path, tmp_path: Path) -> None:
    ledger.ingest_records(_records(), source="test")
    ledger.close()
    config = tmp_path / "unitcost.toml"
    config.write_text(
        '[[budget]]\nname = "search-month"\nscope = { team = "search" }\namount = 0.05\n'
        'period = "month"\ntimezone = "Europe/Paris"\n\n[[watch.sink]]\ntype = "log"\n'
    )
    lp, c = str(ledger_path), str(config)
    result = _invoke(
        "watch", "-l", lp, "--config", c, "--once", "--now", "2025-09-04T00:00:00Z", "--backfill-hours", "72"
    )
    assert result.exit_code == 0, result.output
    assert "Rolled up 73 new events" in result.output
    assert "New model with no price: acme/acme-local-7b" in result.output
    assert "Budget search-month" in result.output

    listed = _invoke("alerts", "-l", lp, "--format", "json")
    alerts = json.loads(listed.output)
    unpriced = [a for a in alerts if a["detector"] == "unpriced_model"]
    # One call at 15:20 and none since: a model with no price stays an open incident for a day.
    assert len(unpriced) == 1 and unpriced[0]["status"] == "open"
    budget = [a for a in alerts if a["detector"] == "budget" and "50 %" in a["title"]]
    assert len(budget) == 1 and budget[0]["status"] == "open"
    alert_id = budget[0]["alert_id"]

    shown = _invoke("alerts", "show", alert_id[:5], "-l", lp)
    assert shown.exit_code == 0 and "opened" in shown.output and "delivered" in shown.output

    acked = _invoke("alerts", "ack", alert_id[:5], "--by", "finops", "-l", lp)
    assert acked.exit_code == 0 and "acknowledged" in acked.output
    still_open = _invoke("alerts", "-l", lp, "--status", "acknowledged", "--format", "csv")
    assert alert_id in still_open.output

    again = _invoke("watch", "-l", lp, "--config", c, "--once", "--now", "2025-09-04T00:00:00Z")
    assert "Rolled up 0 new events" in again.output  # nothing is read twice

    budgets = _invoke("budgets", "-l", lp, "--config", c, "--now", "2025-09-04T00:00:00Z", "--format", "json")
    (row,) = json.loads(budgets.output)
    assert row["budget"] == "search-month" and row["scope"] == "team=search"
    assert row["period"].startswith("month from 2025-09-01 (Europe/Paris)")
    assert row["unpriced_calls"] == 1


def test_budgets_without_config_says_how(ledger: Any, ledger_path: Path) -> None:
    ledger.close()
    result = _invoke("budgets", "-l", str(ledger_path))
    assert result.exit_code == 1 and "[[budget]]" in result.output


def test_bad_ack_is_one_red_line(ledger: Any, ledger_path: Path) -> None:
    ledger.close()
    result = _invoke("alerts", "ack", "nope", "-l", str(ledger_path))
    assert result.exit_code == 2 and "no alert with id" in result.output


def test_a_budget_config_mistake_is_one_error_line(ledger: Any, ledger_path: Path, tmp_path: Path) -> None:
    ledger.close()
    config = tmp_path / "unitcost.toml"
    for text, message in (
        ('[[budget]]\nname = "s"\namount = 10\nthresholds = 80\n', "thresholds: expected a list"),
        ('[budget]\nname = "s"\namount = 10\n', "write [[budget]]"),
        ('[[budget]]\nname = "s"\namount = 10\ntimzone = "Asia/Kolkata"\n', 'did you mean "timezone"'),
    ):
        config.write_text(text)
        result = _invoke("budgets", "-l", str(ledger_path), "--config", str(config))
        assert result.exit_code == 2, result.output
        assert result.output.startswith("error: ") and message in result.output


def test_alert_filters_and_ids_that_match_everything_are_refused(ledger: Any, ledger_path: Path) -> None:
    from unitcost.watch.detectors.base import Finding
    from unitcost.watch.incidents import Incidents, list_alerts
    from unitcost.watch.scope import Scope

    at = datetime(2025, 9, 17, 10, tzinfo=UTC)
    finding = Finding("cost_per_hour", Scope.of(team="eng"), at, at, "Cost up", 10.0, 5.0, "$/hour")
    Incidents(ledger.store, cooldown=timedelta(hours=1), resolve_after=timedelta(hours=3)).apply(
        [finding], at
    )
    ledger.close()
    lp = str(ledger_path)
    bogus = _invoke("alerts", "-l", lp, "--status", "bogus")
    assert bogus.exit_code == 2 and "the statuses are open, acknowledged, resolved" in bogus.output
    empty = _invoke("alerts", "ack", "", "-l", lp)
    assert empty.exit_code == 2 and "alert id" in empty.output
    with Ledger(ledger_path, config=Config()) as reopened:
        assert [r["status"] for r in list_alerts(reopened.store)] == ["open"]  # not acknowledged


def test_help_shows_config_tables_as_written() -> None:
    assert "Each [[budget]]:" in _invoke("budgets", "--help").output
    assert _invoke("watch", "--help").output.count("(default: [watch]") == 2


def test_watch_options_for_one_cycle(ledger: Any, ledger_path: Path, monkeypatch: Any) -> None:
    from unitcost.watch.runner import Watcher

    ledger.close()
    lp = str(ledger_path)
    looped: list[float] = []
    monkeypatch.setattr(
        Watcher, "run_forever", lambda self, stop, reopen: looped.append(self.settings.backfill_hours)
    )
    replay = _invoke("watch", "-l", lp, "--now", "2025-09-04T00:00:00Z")
    assert replay.exit_code == 2 and "--now replays one instant: use it with --once" in replay.output
    assert looped == []
    # --backfill-hours is not a --once option: the loop's first cycle judges that far back.
    assert _invoke("watch", "-l", lp, "--backfill-hours", "5").exit_code == 0
    assert looped == [5.0]


def test_an_interval_that_is_no_number_of_seconds_is_refused(ledger: Any, ledger_path: Path) -> None:
    """A negative interval looped without pause; inf and nan crashed the loop after its first cycle."""
    import subprocess
    import sys

    ledger.close()
    cli = [sys.executable, "-c", "from unitcost.cli import main; main()"]
    for bad in ("-1", "inf", "nan"):
        try:
            result = subprocess.run(
                [*cli, "watch", "-l", str(ledger_path), "--interval", bad],
                check=False,
                capture_output=True,
                text=True,
                timeout=60,
            )
        except subprocess.TimeoutExpired:
            raise AssertionError(f"--interval {bad} started a loop") from None
        assert result.returncode == 2, (bad, result.stdout + result.stderr)
        assert "--interval: expected a number of seconds >= 0" in result.stdout


def test_budgets_table_says_what_its_flags_are(ledger: Any, ledger_path: Path, tmp_path: Path) -> None:
    daily = [r for r in _records() if r["ts"].endswith("T12:10:00Z")]  # one call a day, 1 to 3 Sept
    ledger.ingest_records(
        daily + [{**daily[0], "event_id": f"d{d}", "ts": f"2025-09-{d:02d}T12:00:00Z"} for d in range(4, 10)],
        source="t",
    )
    ledger.close()
    config = tmp_path / "unitcost.toml"
    config.write_text(
        '[[budget]]\nname = "tight"\nscope = { team = "search" }\namount = 0.0001\n'
        '[[budget]]\nname = "ghost"\nscope = { team = "Search" }\namount = 10\n'
    )
    args = ("budgets", "-l", str(ledger_path), "--config", str(config), "--now", "2025-09-10T15:00:00Z")
    table = _invoke(*args, "--format", "markdown").output
    header, _, tight, ghost = table.splitlines()[2:6]
    # "> limit?" read as "over the budget's amount" next to a budget far over it that said "no".
    assert "> limit?" not in header and "| status |" in header and "| daily variation alarm |" in header
    assert "| OVER BUDGET |" in tight and "| +0.0% | no (≤ 3%) |" in tight
    assert "| no matching events |" in ghost
    assert table.rstrip().endswith(
        'Note: budget ghost: no event in the ledger matches team=Search (did you mean team = "search"?); '
        "it reads $0 until one does"
    )
    rows = {r["budget"]: r for r in json.loads(_invoke(*args, "--format", "json").output)}
    assert rows["tight"]["status"] == "OVER BUDGET" and rows["tight"]["note"] is None
    assert (
        rows["ghost"]["status"] == "no matching events" and "no event in the ledger" in rows["ghost"]["note"]
    )


def test_watch_once_waits_thirty_seconds_in_all_for_deliveries(
    ledger: Any, ledger_path: Path, tmp_path: Path, monkeypatch: Any
) -> None:
    """Each wait is recorded instead of spent: with dead sinks, waiting for the deliveries and
    then closing once waited 30 s and then 10 s more (and 1 s for the thread)."""
    from unitcost.watch.sinks import Dispatcher

    ledger.ingest_records(_records(), source="test")
    ledger.close()
    waits: list[float] = []

    def never_delivered(self: Dispatcher, timeout: float) -> bool:
        waits.append(timeout)
        return False

    monkeypatch.setattr(Dispatcher, "flush", never_delivered)
    monkeypatch.setattr(Dispatcher, "submit", lambda self, notifications: None)
    config = tmp_path / "unitcost.toml"
    config.write_text('[[watch.sink]]\ntype = "log"\n')
    result = _invoke(
        "watch", "-l", str(ledger_path), "--config", str(config), "--once", "--now", "2025-09-04T00:00:00Z"
    )
    assert result.exit_code == 0, result.output
    assert "still failing after 30 s" in result.output
    assert waits and sum(waits) <= 30


def test_no_budgets_is_said_on_stderr_so_json_on_stdout_stays_json(tmp_path: Path) -> None:
    config = tmp_path / "unitcost.toml"
    config.write_text("[watch]\ninterval_seconds = 60\n")
    result = CliRunner().invoke(app, ["budgets", "--config", str(config), "-f", "json"])
    assert result.exit_code == 1
    assert result.stdout == ""
    assert "No budgets" in result.stderr


def test_a_running_watch_leaves_the_ledger_to_ingest_and_ack_between_cycles(
    ledger: Any, ledger_path: Path, tmp_path: Path
) -> None:
    """`unitcost watch` runs for days; a cron `unitcost ingest` and an on-call `alerts ack` must be
    able to write to the ledger meanwhile (a DuckDB file has one writer process at a time), and the
    next cycle judges what the ingest brought."""
    import os
    import signal
    import subprocess
    import sys
    import time

    records = _records()
    ledger.ingest_records(records[:40], source="test")
    ledger.close()
    later = tmp_path / "later.jsonl"
    later.write_text("".join(json.dumps(r) + "\n" for r in records[40:]))
    env = {**os.environ, "UNITCOST_LOCK_WAIT": "20"}
    cli = [str(Path(sys.executable).with_name("unitcost"))]
    watch = subprocess.Popen(
        [*cli, "watch", "-l", str(ledger_path), "--interval", "0.2", "--backfill-hours", "0"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        assert watch.stdout is not None
        started = watch.stdout.readline()  # printed once the loop is about to start
        assert b"Watching" in started, started
        ingest = subprocess.run(
            [*cli, "ingest", "-l", str(ledger_path), str(later)],
            check=False,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert ingest.returncode == 0, ingest.stdout + ingest.stderr
        assert f"{len(records) - 40:,} accepted" in ingest.stdout
        rolled = 0
        for _ in range(300):  # the next cycles roll up what the ingest appended
            with Ledger(ledger_path, config=Config(), read_only=True) as reader:
                rolled = reader.store.fetch("SELECT sum(calls) AS n FROM watch_hourly").to_pylist()[0]["n"]
            if rolled == len(records):
                break
            time.sleep(0.1)
        assert rolled == len(records)
        assert watch.poll() is None, "the watch loop should still be running"
    finally:
        watch.send_signal(signal.SIGINT)
        out, _ = watch.communicate(timeout=60)
    assert watch.returncode == 0, out.decode()
    assert b"the ledger is held only while a cycle runs" in started
