"""Imports of the export shapes other tools really write: their cache and reasoning parts, their
file encodings, and the groupings that tell two results apart."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from unitcost.api import Ledger
from unitcost.cli import app
from unitcost.connectors.importers import import_file, map_items


def one_event(kind: str, item: dict[str, Any]) -> dict[str, Any]:
    events, _, rejections, _ = map_items(kind, [item])
    assert rejections == []
    (event,) = events
    return event


def rows(ledger: Ledger) -> dict[str, dict[str, Any]]:
    return {r["event_id"]: r for r in ledger.store.fetch("SELECT * FROM events").to_pylist()}


# --------------------------------------------------------------------------- LiteLLM

# One Claude call with 310 uncached prompt tokens, 12,000 read from the cache and 2,500 written
# to a 1-hour cache, as LiteLLM releases logged it in SpendLogs.metadata.usage_object.
CLAUDE_CALL = {
    "request_id": "chatcmpl-claude-1",
    "call_type": "acompletion",
    "model": "claude-sonnet-4-5-20250929",
    "model_group": "claude-sonnet",
    "custom_llm_provider": "anthropic",
    "startTime": "2025-09-16T10:00:00Z",
    "endTime": "2025-09-16T10:00:04Z",
    "completion_tokens": 733,
    "spend": 0.02,
    "status": "success",
}


def test_litellm_releases_that_added_only_the_cache_reads_are_not_counted_twice() -> None:
    # Some 2025 releases added cache_read_input_tokens to prompt_tokens but not the cache
    # creation: 310 + 12,000. The prompt is 14,810 tokens, not 26,810.
    usage = {
        "prompt_tokens": 12310,
        "completion_tokens": 733,
        "total_tokens": 13043,
        "prompt_tokens_details": {"cached_tokens": 12000},
        "cache_creation_input_tokens": 2500,
        "cache_read_input_tokens": 12000,
    }
    event = one_event(
        "litellm", {**CLAUDE_CALL, "prompt_tokens": 12310, "metadata": json.dumps({"usage_object": usage})}
    )
    assert (event["input_tokens"], event["cache_read_tokens"], event["cache_write_5m_tokens"]) == (
        14810,
        12000,
        2500,
    )


def test_litellm_one_hour_cache_writes_are_priced_as_such(ledger: Ledger, tmp_path: Path) -> None:
    # Recent releases: prompt_tokens is the whole prompt and the TTL split is in the details.
    usage = {
        "prompt_tokens": 14810,
        "completion_tokens": 733,
        "total_tokens": 15543,
        "prompt_tokens_details": {
            "cached_tokens": 12000,
            "cache_creation_tokens": 2500,
            "text_tokens": 310,
            "cache_creation_token_details": {
                "ephemeral_5m_input_tokens": 0,
                "ephemeral_1h_input_tokens": 2500,
            },
        },
        "cache_creation_input_tokens": 2500,
        "cache_read_input_tokens": 12000,
        "completion_tokens_details": {"reasoning_tokens": 0, "text_tokens": 733},
    }
    path = tmp_path / "spend.json"
    path.write_text(
        json.dumps([{**CLAUDE_CALL, "prompt_tokens": 14810, "metadata": {"usage_object": usage}}])
    )
    assert import_file(ledger, "litellm", path).accepted == 1
    row = rows(ledger)["litellm:chatcmpl-claude-1"]
    assert (row["input_tokens"], row["cache_read_tokens"]) == (14810, 12000)
    assert (row["cache_write_5m_tokens"], row["cache_write_1h_tokens"]) == (0, 2500)
    assert row["cost_cache_write_5m"] == 0
    assert row["cost_cache_write_1h"] > 0


# --------------------------------------------------------------------------- Langfuse


def test_langfuse_usage_types_are_read_by_the_words_in_their_names() -> None:
    # Langfuse counts every usage type whose name contains "input" as input; SDKs name the cache
    # writes differently (Mastra's exporter: cache_write_input_tokens).
    event = one_event(
        "langfuse",
        {
            "id": "obs-mastra",
            "type": "GENERATION",
            "startTime": "2025-09-16T10:00:00.000Z",
            "model": "claude-sonnet-4-5",
            "usageDetails": {
                "input": 100,
                "output": 50,
                "cache_read_input_tokens": 1000,
                "cache_write_input_tokens": 400,
                "total": 1550,
            },
        },
    )
    assert (event["input_tokens"], event["cache_read_tokens"], event["cache_write_5m_tokens"]) == (
        1500,
        1000,
        400,
    )
    assert event["output_tokens"] == 50


# --------------------------------------------------------------------------- OpenAI usage export


def usage_result(**fields: Any) -> dict[str, Any]:
    return {
        "object": "organization.usage.completions.result",
        "input_tokens": 0,
        "output_tokens": 0,
        "num_model_requests": 0,
        "project_id": None,
        "user_id": None,
        "api_key_id": None,
        "model": "gpt-4o-2024-08-06",
        "batch": None,
        "service_tier": None,
        **fields,
    }


def test_openai_usage_grouped_by_api_source_keeps_both_results(ledger: Ledger, tmp_path: Path) -> None:
    page = {
        "object": "page",
        "data": [
            {
                "object": "bucket",
                "start_time": 1758067200,
                "end_time": 1758153600,
                "results": [
                    usage_result(
                        input_tokens=1000, output_tokens=100, num_model_requests=4, api_source="agents_api"
                    ),
                    usage_result(
                        input_tokens=3000, output_tokens=300, num_model_requests=9, api_source="unlabeled"
                    ),
                ],
            }
        ],
        "has_more": False,
        "next_page": None,
    }
    path = tmp_path / "usage.json"
    path.write_text(json.dumps(page))
    result = import_file(ledger, "openai-usage", path)
    assert (result.accepted, result.duplicates) == (2, 0)
    found = sorted(
        (r["requests"], r["input_tokens"], dict(r["tags"])["api_source"]) for r in rows(ledger).values()
    )
    assert found == [(4, 1000, "agents_api"), (9, 3000, "unlabeled")]
    assert import_file(ledger, "openai-usage", path).duplicates == 2


def test_openai_usage_cache_writes_and_cached_audio_are_kept() -> None:
    event = one_event(
        "openai-usage",
        usage_result(
            start_time=1758067200,
            model="gpt-realtime",
            input_tokens=10_000,
            input_cached_tokens=4_000,
            input_cache_write_tokens=1_500,
            input_cache_write_12h_tokens=500,
            input_audio_tokens=2_000,  # uncached audio
            input_cached_audio_tokens=1_000,
            input_text_tokens=3_000,
            output_tokens=800,
            output_audio_tokens=600,
            num_model_requests=12,
        ),
    )
    assert (event["cache_write_5m_tokens"], event["cache_write_1h_tokens"]) == (1_500, 500)
    assert (event["input_audio_tokens"], event["cache_audio_read_tokens"]) == (3_000, 1_000)
    assert event["cache_read_tokens"] == 4_000


# --------------------------------------------------------------------------- files

SPEND_ROW = {
    "request_id": "req-bom-1",
    "model": "gpt-4o",
    "custom_llm_provider": "openai",
    "startTime": "2025-09-16T10:00:00Z",
    "prompt_tokens": 120,
    "completion_tokens": 30,
    "spend": 0.0006,
}


def test_a_json_export_with_a_byte_order_mark_is_read_not_silently_empty(
    ledger: Ledger, tmp_path: Path
) -> None:
    path = tmp_path / "spend.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps([SPEND_ROW]).encode())
    result = import_file(ledger, "litellm", path)
    assert (result.read, result.accepted) == (1, 1)


def test_gzipped_and_empty_exports(ledger: Ledger, tmp_path: Path) -> None:
    gz = tmp_path / "spend.jsonl.gz"
    gz.write_bytes(gzip.compress((json.dumps(SPEND_ROW) + "\n").encode()))
    assert import_file(ledger, "litellm", gz).accepted == 1
    empty = tmp_path / "spend-2025-09-17.jsonl"  # a day without calls
    empty.write_text("")
    result = CliRunner().invoke(
        app, ["import", "litellm", str(empty), "--ledger", str(tmp_path / "cli.duckdb")]
    )
    assert result.exit_code == 0, result.output
    assert "0 items read" in result.output
