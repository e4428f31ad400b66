"""What a demanding FinOps user tries on `whatif`, `levers`, `explain-price-change` and `demo`:
typos, provider/model spellings, outputs a program parses, charts that cannot be written."""

from __future__ import annotations

import csv
import io
import json
from decimal import Decimal
from pathlib import Path

import pytest
from typer.testing import CliRunner

from unitcost.cli import app

WINDOW = ("--since", "2025-09-01", "--until", "2025-10-01")


@pytest.fixture
def small_ledger(ledger, ledger_path: Path) -> str:
    records: list[dict[str, object]] = [
        {
            "event_id": f"c{i}",
            "ts": f"2025-09-{1 + i % 28:02d}T{i % 24:02d}:00:00Z",
            "provider": "deepseek" if i % 2 else "openai",
            "model": "deepseek-chat" if i % 2 else "gpt-4o",
            "input_tokens": 12_000,
            "cache_read_tokens": 4_000,
            "output_tokens": 900,
            "feature": "support",
        }
        for i in range(40)
    ]
    # DeepSeek calls a fraction of a second either side of the V3.1 change (2025-09-05 16:00
    # UTC) and of the off-peak window's edges (16:30 and 00:30 UTC).
    edges = ["15:59:59.900", "16:00:00", "16:29:59.999", "16:30:00"]
    records += [
        {
            "event_id": f"edge{i}",
            "ts": f"2025-09-05T{t}Z",
            "provider": "deepseek",
            "model": "deepseek-chat",
            "input_tokens": 10_000 + i,
            "cache_read_tokens": 3_000,
            "output_tokens": 700 + i,
            "feature": "edges",
        }
        for i, t in enumerate(edges)
    ]
    records.append(
        {
            "event_id": "u1",
            "ts": "2025-09-03T00:00:00Z",
            "provider": "acme",
            "model": "acme-7b",
            "input_tokens": 5,
        }
    )
    ledger.ingest_records(records)
    ledger.close()
    return str(ledger_path)


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, " ".join(result.output.split())


def ok(*args: str) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def whatif_json(ledger: str, *args: str) -> dict[str, object]:
    return json.loads(ok("whatif", "-l", ledger, *WINDOW, *args, "-f", "json"))


# --------------------------------------------------------------------------- names


@pytest.mark.parametrize(
    ("spec", "expected"),
    [("openai:gpt5", "did you mean gpt-5 (openai)"), ("opneai:gpt-4o", "did you mean gpt-4o (openai)")],
)
def test_a_mistyped_whatif_model_or_provider_names_the_close_matches(
    small_ledger: str, spec: str, expected: str
) -> None:
    code, out = invoke("whatif", "-l", small_ledger, *WINDOW, "--as", spec)
    assert code == 2 and "error:" in out and f"--as {spec}" in out and expected in out


def test_provider_slash_model_is_a_model_not_a_tier(small_ledger: str) -> None:
    """`openai/gpt-4o` is how LiteLLM and gateways spell it; `unitcost price` accepts it too."""
    colon = whatif_json(small_ledger, "--as", "openai:gpt-4o")["scenarios"]
    slash = whatif_json(small_ledger, "--as", "openai/gpt-4o", "--as", "openrouter:openai/gpt-4o")[
        "scenarios"
    ]
    assert slash[1]["total"] == colon[1]["total"] and slash[1]["unpriced_calls"] == 0  # type: ignore[index]
    assert slash[2]["total"] is not None  # type: ignore[index]


def test_a_vertex_model_version_after_an_at_sign_is_part_of_the_name_not_a_date(small_ledger: str) -> None:
    """Vertex AI names its versions `claude-3-5-sonnet-v2@20241022` and `gemini-1.5-pro@002`:
    `--as` prices them as `unitcost price` does, while `@2025-09-05` still dates the alternative."""
    vertex = "google:claude-3-5-sonnet-v2@20241022"
    scenarios = whatif_json(
        small_ledger, "--as", vertex, "--as", f"{vertex}@2025-09-05", "--as", "gemini-1.5-pro@002"
    )["scenarios"]
    named, dated, gemini = scenarios[1:]  # type: ignore[misc]
    assert named["scenario"] == vertex and named["unpriced_calls"] == 0 and named["total"] is not None
    assert dated["total"] == named["total"] and "2025-09-05" in dated["assumptions"]
    assert gemini["unpriced_calls"] == 0 and gemini["total"] is not None


def test_a_slash_then_an_unknown_word_after_a_known_model_is_still_a_tier_error(small_ledger: str) -> None:
    code, out = invoke("whatif", "-l", small_ledger, *WINDOW, "--as", "gpt-4o/bacth")
    assert code == 2 and "unknown service tier 'bacth'" in out


def test_an_alternative_naming_a_provider_but_no_model_is_refused(small_ledger: str) -> None:
    """`--as openai:` used to run as the recorded models under the label `openai:`."""
    code, out = invoke("whatif", "-l", small_ledger, *WINDOW, "--as", "openai:")
    assert code == 2 and "names no model" in out


def test_a_mistyped_price_change_model_names_the_close_matches(small_ledger: str) -> None:
    code, out = invoke(
        "explain-price-change",
        "-l",
        small_ledger,
        "--model",
        "deepseek-chta",
        "--from",
        "2025-09-01",
        "--to",
        "2025-09-20",
    )
    assert code == 2 and "did you mean deepseek-chat (deepseek)" in out


def test_a_mistyped_light_model_names_the_close_matches(small_ledger: str) -> None:
    code, out = invoke("levers", "-l", small_ledger, *WINDOW, "--set", "light.openai=gpt-4o-mnii")
    assert code == 2 and "light.openai" in out and "did you mean gpt-4o-mini (openai)" in out


# --------------------------------------------------------------------------- machine-readable output


def test_whatif_json_rows_keep_every_key_with_null_money_and_reasons_when_unpriced(small_ledger: str) -> None:
    """DeepSeek has no batch tier: the scenario is NULL (never $0), counted, and says why."""
    data = whatif_json(small_ledger, "--as", "deepseek-chat/batch")
    recorded, batch = data["scenarios"]  # type: ignore[misc]
    assert list(batch) == list(recorded)
    assert batch["total"] is None and batch["delta"] is None and batch["input"] is None
    assert batch["unpriced_calls"] == batch["calls"] > 0
    assert sum(batch["unpriced_reasons"].values()) == batch["unpriced_calls"]
    assert any("no batch price" in reason for reason in batch["unpriced_reasons"])


def test_whatif_csv_counts_the_calls_with_no_recorded_price(small_ledger: str) -> None:
    rows = list(
        csv.DictReader(io.StringIO(ok("whatif", "-l", small_ledger, *WINDOW, "--as", "gpt-4o", "-f", "csv")))
    )
    assert [r["excluded_unpriced_calls"] for r in rows] == ["1", "1"]
    assert Decimal(rows[0]["total"]) > 0


def test_levers_csv_counts_the_calls_left_out_of_the_spend(small_ledger: str) -> None:
    rows = list(csv.DictReader(io.StringIO(ok("levers", "-l", small_ledger, *WINDOW, "-f", "csv"))))
    assert rows and all(r["excluded_unpriced_calls"] == "1" and r["not_repriced_calls"] == "0" for r in rows)


def test_explain_csv_gives_each_factor_as_a_number_with_its_unit(small_ledger: str) -> None:
    out = ok(
        "explain-price-change",
        "-l",
        small_ledger,
        "--model",
        "deepseek-chat",
        "--from",
        "2025-09-01..2025-09-05T16:00",
        "--to",
        "2025-09-05T16:00..2025-10-01",
        "-f",
        "csv",
    )
    rows = {r["factor"]: r for r in csv.DictReader(io.StringIO(out))}
    calls = rows["volume: calls"]
    assert calls["unit"] == "calls" and Decimal(calls["before_value"]) >= 1
    price = rows["price: input"]
    assert price["unit"] == "USD/Mtok" and Decimal(price["after_value"]) == Decimal("0.56")
    assert rows["price: cache write"]["before_value"] == ""  # unused: no price, not $0


def test_explain_with_empty_periods_points_to_periods_not_a_since_window(small_ledger: str) -> None:
    code, out = invoke(
        "explain-price-change",
        "-l",
        small_ledger,
        "--model",
        "gpt-4o",
        "--from",
        "2024-01-01",
        "--to",
        "2024-02-01",
    )
    assert code == 2 and "2024-01-01..2024-01-08" in out and "--from" in out and "--since" not in out


# --------------------------------------------------------------------------- levers settings


def test_levers_summariser_may_be_a_bare_model_name(small_ledger: str) -> None:
    def summarisation(value: str) -> object:
        out = ok("levers", "-l", small_ledger, *WINDOW, "--set", f"summariser={value}", "-f", "json")
        return next(r["saving"] for r in json.loads(out)["levers"] if r["lever"] == "context summarisation")

    assert summarisation("gpt-4o-mini") == summarisation("openai:gpt-4o-mini")


def test_levers_prefix_reuse_must_be_whole_calls(small_ledger: str) -> None:
    """2.5 was shown as stated but simulated as 2."""
    code, out = invoke("levers", "-l", small_ledger, *WINDOW, "--set", "prefix_reuse=2.5")
    assert code == 2 and "prefix_reuse must be a whole number" in out


# --------------------------------------------------------------------------- charts


@pytest.mark.parametrize(
    "command",
    [
        ["whatif", *WINDOW, "--as", "gpt-4o"],
        ["levers", *WINDOW],
        ["explain-price-change", "--model", "deepseek-chat", "--from", "2025-09-01", "--to", "2025-09-20"],
    ],
)
def test_a_chart_into_a_missing_directory_fails_before_any_work(
    small_ledger: str, tmp_path: Path, command: list[str]
) -> None:
    target = tmp_path / "no" / "such" / "chart.png"
    code, out = invoke(command[0], "-l", small_ledger, *command[1:], "--chart", str(target))
    assert code == 2 and "does not exist" in out and "Errno" not in out
    assert "USD" not in out and "$" not in out  # nothing computed and printed first


def test_a_chart_path_that_is_a_directory_is_refused(small_ledger: str, tmp_path: Path) -> None:
    folder = tmp_path / "charts.png"
    folder.mkdir()
    code, out = invoke("whatif", "-l", small_ledger, *WINDOW, "--as", "gpt-4o", "--chart", str(folder))
    assert code == 2 and "is a directory" in out


def test_a_chart_marks_a_scenario_with_no_price_instead_of_drawing_it_free(
    small_ledger: str, tmp_path: Path
) -> None:
    chart = tmp_path / "w.html"
    ok(
        "whatif",
        "-l",
        small_ledger,
        *WINDOW,
        "--as",
        "deepseek-chat",
        "--tier",
        "batch",
        "--chart",
        str(chart),
    )
    assert '"deepseek-chat (no price)"' in chart.read_text(encoding="utf-8")


# --------------------------------------------------------------------------- money


def test_whatif_reprices_sub_second_calls_at_price_and_window_edges_exactly(small_ledger: str, book) -> None:
    """Each call priced alone by the PriceBook, summed: the what-if total to the last digit."""
    from unitcost.api import Ledger

    with Ledger(small_ledger, read_only=True) as ledger:
        calls = ledger.sql(
            "SELECT ts, input_tokens, cache_read_tokens, output_tokens, cost FROM events "
            "WHERE feature = 'edges'"
        )
    at_0910 = Decimal(0)
    for row in calls.itertuples():
        usage = {
            "input_tokens": int(row.input_tokens),
            "cache_read_tokens": int(row.cache_read_tokens),
            "output_tokens": int(row.output_tokens),
        }
        moved = row.ts.to_pydatetime().replace(day=3)  # 2025-09-03, same time of day: V3, off-peak
        at_0910 += book.price("deepseek-chat", usage, provider="deepseek", at=moved).breakdown.total
    data = whatif_json(
        small_ledger, "--where", "feature=edges", "--as", "same", "--as", "deepseek-chat@2025-09-03"
    )
    recorded, same, moved_day = data["scenarios"]  # type: ignore[misc]
    assert Decimal(same["total"]) == Decimal(recorded["total"]) == sum(Decimal(str(c)) for c in calls["cost"])
    assert Decimal(moved_day["total"]) == at_0910


# --------------------------------------------------------------------------- demo


def test_demo_refuses_an_unknown_report_dimension_before_generating(tmp_path: Path) -> None:
    target = tmp_path / "demo.duckdb"
    code, out = invoke("demo", "--ledger", str(target), "--scale", "0.001", "--by", "fetaure")
    assert code == 2 and "unknown dimension 'fetaure'" in out
    assert "Generated" not in out and not target.exists()
