"""`unitcost watch --once`, `unitcost alerts` (list, show, ack) and `unitcost budgets`, end to end
through the real ingest path."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from unitcost.cli import app

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
    # One call at 15:20 and none since: after three quiet hours the incident resolved itself.
    assert len(unpriced) == 1 and unpriced[0]["status"] == "resolved"
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
