"""Imports from LiteLLM, Langfuse and OpenAI's usage export; reconciliation of computed vs billed cost."""

from __future__ import annotations

import csv
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from unitcost.api import Ledger
from unitcost.cli import app
from unitcost.connectors.importers import ImportFileError, import_file, map_items, read_items
from unitcost.connectors.reconcile import reconcile

LITELLM_ROWS: list[dict[str, Any]] = [
    {
        "request_id": "chatcmpl-2b0e8c1a-1",
        "call_type": "acompletion",
        "api_key": "88dc28d0f030c55ed4ab77ed8faf098196cb1c05df778539800c9f1243fe6b4b",
        "spend": 0.0076,
        "total_tokens": 2246,
        "prompt_tokens": 1834,
        "completion_tokens": 412,
        "startTime": "2025-09-16T10:00:00.000Z",
        "endTime": "2025-09-16T10:00:02.500Z",
        "model": "gpt-4o",
        "model_group": "gpt-4o",
        "custom_llm_provider": "openai",
        "user": "default_user_id",
        "metadata": json.dumps(
            {
                "user_api_key_team_id": "team-search",
                "usage_object": {
                    "prompt_tokens": 1834,
                    "completion_tokens": 412,
                    "total_tokens": 2246,
                    "prompt_tokens_details": {"cached_tokens": 1024, "audio_tokens": None},
                    "completion_tokens_details": {"reasoning_tokens": 0},
                },
            }
        ),
        "cache_hit": "False",
        "request_tags": '["prod", "search"]',
        "team_id": "team-search",
        "end_user": "customer-7",
        "status": "success",
    },
    {
        "request_id": "chatcmpl-2b0e8c1a-2",
        "call_type": "acompletion",
        "spend": 0.05,
        "prompt_tokens": 310,
        "completion_tokens": 733,
        "startTime": "2025-09-16T11:00:00Z",
        "endTime": "2025-09-16T11:00:09Z",
        "model": "claude-sonnet-4-6",
        "custom_llm_provider": "anthropic",
        "metadata": json.dumps(
            {
                "usage_object": {
                    "prompt_tokens": 310,
                    "completion_tokens": 733,
                    "cache_creation_input_tokens": 2500,
                    "cache_read_input_tokens": 12000,
                }
            }
        ),
        "team_id": "team-support",
        "status": "success",
    },
    {"request_id": "bad-1", "model": "gpt-4o", "startTime": "2025-09-16T11:00:00Z", "prompt_tokens": -4},
    {"request_id": "bad-2", "model": "gpt-4o", "startTime": "yesterday", "prompt_tokens": 4},
]

LANGFUSE_OBSERVATIONS: list[dict[str, Any]] = [
    {
        "id": "obs-1",
        "trace_id": "trace-1",
        "type": "GENERATION",
        "name": "reply-draft",
        "start_time": "2025-09-16T10:00:00.000Z",
        "end_time": "2025-09-16T10:00:01.200Z",
        "completion_start_time": "2025-09-16T10:00:00.300Z",
        "provided_model_name": "gpt-4o-mini",
        "usage_details": {
            "input": 800,
            "input_cached_tokens": 1200,
            "output": 100,
            "output_reasoning_tokens": 0,
            "total": 2100,
        },
        "cost_details": {
            "input": 0.00012,
            "input_cached_tokens": 0.00009,
            "output": 0.00006,
            "total": 0.00027,
        },
        "environment": "production",
        "level": "DEFAULT",
    },
    {
        "id": "obs-2",
        "trace_id": "trace-1",
        "type": "SPAN",
        "name": "retrieve",
        "start_time": "2025-09-16T10:00:00Z",
    },
    {
        "id": "obs-3",
        "type": "GENERATION",
        "start_time": "2025-09-16T10:00:00Z",
        "usage_details": {"input": 5},
    },
    {
        "id": "obs-4",
        "type": "GENERATION",
        "start_time": "2025-09-16T10:05:00Z",
        "provided_model_name": "claude-haiku-4-5",
        "usage_details": {
            "input": 10,
            "cache_read_input_tokens": 300,
            "cache_creation_input_tokens": 50,
            "output": 20,
        },
        "cost_details": {"total": 0.5},
    },
]

OPENAI_USAGE_PAGE: dict[str, Any] = {
    "object": "page",
    "data": [
        {
            "object": "bucket",
            "start_time": 1758067200,
            "end_time": 1758153600,
            "results": [
                {
                    "object": "organization.usage.completions.result",
                    "input_tokens": 1_000_000,
                    "output_tokens": 200_000,
                    "num_model_requests": 850,
                    "project_id": "proj_abc",
                    "user_id": None,
                    "api_key_id": None,
                    "model": "gpt-4o-mini-2024-07-18",
                    "batch": False,
                    "input_cached_tokens": 400_000,
                    "input_audio_tokens": 0,
                    "output_audio_tokens": 0,
                },
                {
                    "object": "organization.usage.completions.result",
                    "input_tokens": 50_000,
                    "output_tokens": 10_000,
                    "num_model_requests": 20,
                    "project_id": "proj_abc",
                    "model": "gpt-4o-2024-08-06",
                    "batch": True,
                    "input_cached_tokens": 0,
                },
                {
                    "object": "organization.usage.completions.result",
                    "input_tokens": 5,
                    "num_model_requests": 1,
                    "model": None,
                },
            ],
        }
    ],
    "has_more": False,
    "next_page": None,
}


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    names = sorted({k for r in rows for k in r})
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=names)
        writer.writeheader()
        writer.writerows(rows)


@pytest.mark.parametrize("fmt", ["json", "jsonl", "csv"])
def test_litellm_spend_logs(ledger: Ledger, tmp_path: Path, fmt: str) -> None:
    path = tmp_path / f"spend.{fmt}"
    if fmt == "json":
        path.write_text(json.dumps(LITELLM_ROWS))
    elif fmt == "jsonl":
        path.write_text("\n".join(json.dumps(r) for r in LITELLM_ROWS))
    else:
        write_csv(path, LITELLM_ROWS)
    result = import_file(ledger, "litellm", path)
    assert (result.read, result.accepted) == (4, 2)
    assert [(r.record, r.field) for r in result.rejections] == [(3, "prompt_tokens"), (4, "startTime")]
    assert "negative count -4" in result.rejections[0].reason
    rows = {r["event_id"]: r for r in ledger.store.fetch("SELECT * FROM events").to_pylist()}
    openai_row = rows["litellm:chatcmpl-2b0e8c1a-1"]
    assert (openai_row["input_tokens"], openai_row["cache_read_tokens"], openai_row["output_tokens"]) == (
        1834,
        1024,
        412,
    )
    assert openai_row["billed_cost"] == Decimal("0.0076")
    assert (openai_row["team"], openai_row["user"]) == ("team-search", "customer-7")
    assert openai_row["latency_ms"] == 2500.0
    assert dict(openai_row["tags"]) == {"request_tags": "prod,search"}
    assert "88dc28d0" not in str(rows)  # the (hashed) key is never stored
    claude = rows["litellm:chatcmpl-2b0e8c1a-2"]
    assert (claude["input_tokens"], claude["cache_read_tokens"], claude["cache_write_5m_tokens"]) == (
        14810,
        12000,
        2500,
    )
    again = import_file(ledger, "litellm", path)
    assert (again.accepted, again.duplicates) == (0, 2)


def test_langfuse_observations(ledger: Ledger, tmp_path: Path) -> None:
    path = tmp_path / "observations.json"
    path.write_text(json.dumps({"data": LANGFUSE_OBSERVATIONS, "meta": {"page": 1}}))
    result = import_file(ledger, "langfuse", path)
    assert (result.read, result.accepted, result.skipped) == (4, 2, 1)
    assert [(r.record, r.field) for r in result.rejections] == [(3, "model")]
    rows = {r["event_id"]: r for r in ledger.store.fetch("SELECT * FROM events").to_pylist()}
    first = rows["langfuse:obs-1"]
    # Langfuse usage types are disjoint: the prompt total is input + cached.
    assert (first["input_tokens"], first["cache_read_tokens"], first["output_tokens"]) == (2000, 1200, 100)
    assert first["billed_cost"] == Decimal("0.00027")
    assert (first["trace_id"], first["environment"], first["ttft_ms"], first["latency_ms"]) == (
        "trace-1",
        "production",
        300.0,
        1200.0,
    )
    claude = rows["langfuse:obs-4"]
    assert (claude["input_tokens"], claude["cache_read_tokens"], claude["cache_write_5m_tokens"]) == (
        360,
        300,
        50,
    )


def test_openai_usage_export(ledger: Ledger, tmp_path: Path) -> None:
    path = tmp_path / "usage.json"
    path.write_text(json.dumps(OPENAI_USAGE_PAGE))
    result = import_file(ledger, "openai-usage", path)
    assert result.accepted == 2
    assert [(r.record, r.field) for r in result.rejections] == [(3, "model")]
    assert "group_by=model" in result.rejections[0].reason
    rows = {r["model"]: r for r in ledger.store.fetch("SELECT * FROM events").to_pylist()}
    mini = rows["gpt-4o-mini-2024-07-18"]
    assert (mini["input_tokens"], mini["cache_read_tokens"], mini["requests"]) == (1_000_000, 400_000, 850)
    assert dict(mini["tags"]) == {"project_id": "proj_abc"}
    assert rows["gpt-4o-2024-08-06"]["service_tier"] == "batch"
    assert import_file(ledger, "openai-usage", path).duplicates == 2


def test_unreadable_files_write_nothing(ledger: Ledger, tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text('[{"request_id": "x", ')
    with pytest.raises(ImportFileError, match="not valid JSON"):
        import_file(ledger, "litellm", path)
    assert ledger.count() == 0


def test_reconcile_shows_models_whose_source_cost_disagrees(ledger: Ledger, tmp_path: Path) -> None:
    path = tmp_path / "spend.json"
    path.write_text(json.dumps(LITELLM_ROWS[:2]))
    import_file(ledger, "litellm", path)
    found = {r.model: r for r in reconcile(ledger, since="2025-09-01", until="2025-10-01", threshold_pct=5)}
    # LiteLLM's 0.05 for the Claude call is far from the price book's cost; the GPT-4o one is close.
    claude = found["claude-sonnet-4-6"]
    assert claude.billed == Decimal("0.05") and claude.computed > 0
    assert abs(claude.difference_pct or 0) > 5
    computed_4o = ledger.sql("SELECT cost FROM events WHERE model = 'gpt-4o'")["cost"].iloc[0]
    assert ("gpt-4o" in found) == (
        abs(Decimal(computed_4o) - Decimal("0.0076")) / Decimal("0.0076") > Decimal("0.05")
    )
    every = reconcile(ledger, since="2025-09-01", until="2025-10-01", show_all=True)
    assert {r.model for r in every} == {"gpt-4o", "claude-sonnet-4-6"}


def test_reconcile_shows_an_unpriced_model_as_unknown_beside_its_bill(tmp_path: Path) -> None:
    """A model unitcost has no price for showed $0 computed against $0 billed: the $0.50 the
    source billed for it vanished, and the unknown cost read as zero."""
    base = {"ts": "2025-09-10T10:00:00Z", "provider": "openai", "input_tokens": 1000, "output_tokens": 100}
    path = tmp_path / "bill.jsonl"
    path.write_text(
        json.dumps({**base, "event_id": "b1", "model": "gpt-4o", "billed_cost": "0.0035"})
        + "\n"
        + json.dumps({**base, "event_id": "b2", "model": "mystery-y", "billed_cost": "0.50"})
        + "\n"
    )
    runner = CliRunner()
    ledger = str(tmp_path / "bill.duckdb")
    assert runner.invoke(app, ["ingest", str(path), "--ledger", ledger]).exit_code == 0
    args = ["--since", "2025-09-01", "--until", "2025-10-01", "--all", "--ledger", ledger, "-f", "json"]
    result = runner.invoke(app, ["reconcile", *args])
    assert result.exit_code == 0, result.output
    rows = {row["model"]: row for row in json.loads(result.output)}
    mystery = rows["mystery-y"]
    assert (mystery["computed"], mystery["billed"], mystery["difference"]) == (None, None, None)
    assert (mystery["unpriced"], Decimal(mystery["billed_unpriced"])) == (1, Decimal("0.50"))
    assert (
        Decimal(rows["gpt-4o"]["billed"]) == Decimal("0.0035") and rows["gpt-4o"]["billed_unpriced"] is None
    )


def test_cli_import_and_report_reconcile(tmp_path: Path) -> None:
    runner = CliRunner()
    path = tmp_path / "spend.json"
    path.write_text(json.dumps(LITELLM_ROWS))
    ledger = str(tmp_path / "cli.duckdb")
    result = runner.invoke(app, ["import", "litellm", str(path), "--ledger", ledger])
    assert result.exit_code == 1, result.output  # two items were rejected
    assert "2 events accepted" in result.output and "item 3: prompt_tokens" in result.output
    report = runner.invoke(
        app,
        [
            "report",
            "--reconcile",
            "--since",
            "2025-09-01",
            "--until",
            "2025-10-01",
            "--ledger",
            ledger,
            "-f",
            "json",
        ],
    )
    assert report.exit_code == 0, report.output
    assert "claude-sonnet-4-6" in report.output
    direct = runner.invoke(
        app,
        [
            "reconcile",
            "--since",
            "2025-09-01",
            "--until",
            "2025-10-01",
            "--all",
            "--ledger",
            ledger,
            "-f",
            "csv",
        ],
    )
    assert direct.exit_code == 0 and "gpt-4o" in direct.output


# --------------------------------------------------------------------------- fuzzing

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True)
    | st.text(max_size=12),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)
field_names = st.sampled_from(
    [
        "request_id", "model", "startTime", "endTime", "prompt_tokens", "completion_tokens", "spend", "metadata",
        "id", "type", "start_time", "usage_details", "cost_details", "provided_model_name", "level",
        "object", "input_tokens", "output_tokens", "num_model_requests", "input_cached_tokens", "batch", "results",
    ]
)  # fmt: skip
items = st.lists(st.dictionaries(field_names, json_values, max_size=8) | json_values, max_size=6)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kind=st.sampled_from(["litellm", "langfuse", "openai-usage"]), raw=items)
def test_fuzzed_items_never_crash_and_every_item_is_accounted_for(kind: str, raw: list[Any]) -> None:
    events, positions, rejections, skipped = map_items(kind, raw)
    assert len(events) == len(positions)
    assert all(r.field and r.reason for r in rejections)
    if kind != "openai-usage":  # buckets expand to their results
        assert len(events) + len(rejections) + skipped == len(raw)


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kind=st.sampled_from(["litellm", "langfuse"]), raw=items)
def test_fuzzed_files_import_all_or_name_each_rejection(
    kind: str, raw: list[Any], tmp_path_factory: Any
) -> None:
    directory = tmp_path_factory.mktemp("fuzz")
    path = directory / "in.json"
    path.write_bytes(json.dumps(raw, default=str).encode() if _jsonable(raw) else b"[")
    with Ledger(directory / "l.duckdb", config=__import__("unitcost.config").config.Config()) as ledger:
        try:
            result = import_file(ledger, kind, path)
        except ImportFileError:
            assert ledger.count() == 0
            return
        assert ledger.count() == result.accepted + 0
        assert result.accepted + result.duplicates + len(result.rejections) + result.skipped == len(
            read_items(path)
        )
        assert all(r.field and r.reason for r in result.rejections)


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value, allow_nan=False)
    except (ValueError, TypeError):
        return False
    return True
