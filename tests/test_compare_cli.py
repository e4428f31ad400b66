"""`unitcost whatif`, `levers`, `explain-price-change` from the command line: every format, every chart."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from unitcost.cli import app


@pytest.fixture
def small_ledger(ledger, ledger_path: Path) -> str:
    ledger.ingest_records(
        [
            {
                "event_id": f"c{i}",
                "ts": f"2025-09-{1 + i % 28:02d}T{i % 24:02d}:00:00Z",
                "provider": "deepseek" if i % 2 else "openai",
                "model": "deepseek-chat" if i % 2 else "gpt-5",
                "input_tokens": 12_000,
                "cache_read_tokens": 4_000,
                "output_tokens": 900,
                "reasoning_tokens": 0 if i % 2 else 300,
                "feature": "support" if i % 3 else "search",
                "unit": "ticket",
                "unit_id": f"t{i // 2}",
            }
            for i in range(60)
        ]
        + [
            {
                "event_id": "u1",
                "ts": "2025-09-03T00:00:00Z",
                "provider": "acme",
                "model": "acme-7b",
                "input_tokens": 5,
            }
        ]
    )
    ledger.record_outcome(unit="ticket", unit_id="t1", success=True)
    ledger.close()
    return str(ledger_path)


def run(*args: str) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


WINDOW = ("--since", "2025-09-01", "--until", "2025-10-01")


def test_whatif_json_has_every_scenario_and_component(small_ledger: str) -> None:
    out = run(
        "whatif",
        "-l",
        small_ledger,
        *WINDOW,
        "--where",
        "feature=support",
        "--as",
        "anthropic:claude-sonnet-4-5",
        "--as",
        "deepseek-chat@2025-10-05",
        "--format",
        "json",
    )
    data = json.loads(out)
    assert [s["scenario"] for s in data["scenarios"]] == [
        "as recorded",
        "anthropic:claude-sonnet-4-5",
        "deepseek-chat@2025-10-05",
    ]
    assert data["excluded_unpriced"] == {} and data["units"] > 0 and data["successes"] == 1
    for key in (
        "input",
        "cache_read",
        "cache_write",
        "output",
        "reasoning",
        "delta_output",
        "cost_per_unit",
        "cost_per_success",
    ):
        assert key in data["scenarios"][1]


def test_whatif_csv_markdown_table_and_charts(small_ledger: str, tmp_path: Path) -> None:
    rows = list(
        csv.DictReader(
            io.StringIO(run("whatif", "-l", small_ledger, *WINDOW, "--tier", "batch", "--format", "csv"))
        )
    )
    assert (
        rows[1]["scenario"] == "same models, batch tier" and int(rows[1]["unpriced_calls"]) == 30
    )  # DeepSeek has no batch
    md = run(
        "whatif",
        "-l",
        small_ledger,
        *WINDOW,
        "--as",
        "openai:gpt-5-mini",
        "--cache",
        "prefix",
        "--format",
        "markdown",
    )
    assert "| scenario |" in md and "openai rule: prefix >= 1024" in md
    out = run("whatif", "-l", small_ledger, *WINDOW, "--as", "openai:gpt-5-mini")
    assert "1 selected calls have no recorded price" in out
    for suffix in ("png", "svg", "html"):
        chart = tmp_path / f"w.{suffix}"
        run("whatif", "-l", small_ledger, *WINDOW, "--as", "openai:gpt-5-mini", "--chart", str(chart))
        assert chart.stat().st_size > 1000
    html = (tmp_path / "w.html").read_text()
    # plotly.js is embedded, not loaded from a CDN: the page works offline
    assert "<script src=" not in html and "Plotly.newPlot" in html


def test_whatif_needs_something_to_compare(small_ledger: str) -> None:
    result = CliRunner().invoke(app, ["whatif", "-l", small_ledger, *WINDOW])
    assert result.exit_code == 2 and "--as" in result.output


def test_levers_table_and_json(small_ledger: str, tmp_path: Path) -> None:
    out = run("levers", "-l", small_ledger, *WINDOW, "--set", "batch_share=0.4", "--format", "json")
    data = json.loads(out)
    names = [r["lever"] for r in data["levers"]]
    assert names[-1] == "combined" and "light-by-default routing" in names and len(names) == 9
    assert data["settings"]["batch_share"] == "0.4"
    table = run("levers", "-l", small_ledger, *WINDOW, "--chart", str(tmp_path / "l.png"))
    assert "what it would need to be true" in table and (tmp_path / "l.png").exists()


def test_explain_price_change_on_the_ledger_and_on_examples(small_ledger: str, tmp_path: Path) -> None:
    out = run(
        "explain-price-change",
        "-l",
        small_ledger,
        "--model",
        "deepseek-chat",
        "--from",
        "2025-09-01..2025-09-05",
        "--to",
        "2025-09-29..2025-10-01",
        "--format",
        "json",
    )
    data = json.loads(out)[0]
    total = sum(float(r["contribution"]) for r in data["contributions"])
    before, after = (float(p["cost"]) for p in data["periods"])
    assert abs(total - (after - before)) < 1e-9
    md = run(
        "explain-price-change",
        "--model",
        "deepseek:deepseek-chat",
        "--from",
        "2025-09-20",
        "--to",
        "2025-10-05",
        "--example",
        "cache-heavy",
        "--example",
        "cache-miss-heavy",
        "--format",
        "markdown",
        "--chart",
        str(tmp_path / "wf.svg"),
    )
    assert "-58.4%" in md and "-53.3%" in md and "headline list-price change (cache-miss input): -50.0%" in md
    assert (tmp_path / "wf.svg").read_text().lstrip().startswith("<?xml")
    csv_out = run(
        "explain-price-change",
        "-l",
        small_ledger,
        "--model",
        "deepseek-chat",
        "--from",
        "2025-09-20",
        "--to",
        "2025-10-05",
        "--format",
        "csv",
    )
    assert csv_out.splitlines()[0].startswith("workload,factor,before,after,contribution,points")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["whatif", "--as", "openai:gpt-4o-mini", "--token-ratio", "-1"],
            "--token-ratio must be a number above 0",
        ),
        (
            ["whatif", "--as", "openai:gpt-4o-mini", "--token-ratio", "0"],
            "--token-ratio must be a number above 0",
        ),
        (
            ["whatif", "--as", "openai:gpt-4o-mini", "--reasoning-multiplier", "-2"],
            "--reasoning-multiplier must be 0 or more",
        ),
        (["whatif", "--tier", "bogus"], "unknown service tier 'bogus'"),
        (["whatif", "--as", "openai:gpt-4o-mini/nosuchtier"], "unknown service tier 'nosuchtier'"),
        (["levers", "--set", "utilisation=0"], "utilisation must be above 0"),
        (["levers", "--set", "tokens_per_second=0"], "tokens_per_second must be above 0"),
        (["levers", "--set", "summarise_every=0"], "summarise_every must be at least 1"),
        (["levers", "--set", "prefix_reuse=0"], "prefix_reuse must be at least 1"),
        (["levers", "--set", "self_hosted_usd_per_mtok=-1"], "self_hosted_usd_per_mtok cannot be negative"),
        (["levers", "--set", "gpu_hour_usd=-5"], "gpu_hour_usd cannot be negative"),
    ],
)
def test_assumptions_that_make_no_sense_are_refused(small_ledger: str, args: list[str], message: str) -> None:
    result = CliRunner().invoke(app, [*args, "-l", small_ledger, *WINDOW, "-f", "csv"])
    assert result.exit_code == 2, result.output
    assert "error:" in result.output and message in " ".join(result.output.split())
