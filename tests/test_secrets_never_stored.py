"""Provider keys and other credentials never land in the ledger, a stored tag or an error message,
whichever way an event arrives; prompts and answers are not stored unless the user turns that on.
The usage numbers of a call that carried a secret are kept whole."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import unitcost
from fake_providers import chat_completion, serve_app
from otlp_payloads import genai_attributes, json_request, json_span, ledger_rows
from unitcost.api import Ledger
from unitcost.config import Config
from unitcost.connectors.importers import import_file
from unitcost.connectors.recorder import Recorder
from unitcost.gateway.records import Attempt, attribution
from unitcost.otlp.mapping import AttributeMapping
from unitcost.otlp.server import otlp_app
from unitcost.redact import REDACTED, redact_text, secret_name, tag_value

# Shapes of real credentials (random bodies, made up here).
OPENAI_KEY = "sk-proj-Q3vT9xLm2RkZpA7bYc4dNf8GhJ1sWe6U"
ANTHROPIC_KEY = "sk-ant-api03-Zx8Kq2Lm9PvT4rBn7YcW1dFg5HjS3eAu"
GEMINI_KEY = "AIzaSyD4kq9Lm2XvT8rBn7YcW1dFg5HjS3eAu0p"
AZURE_KEY = "3f9c2a7b1e8d4c6fa0b5e9d2c7f1a4b8"  # 32 hex, no prefix: only its name gives it away
PASSWORD = "hunter2-correct-horse"
SECRETS = (OPENAI_KEY, ANTHROPIC_KEY, GEMINI_KEY, AZURE_KEY, PASSWORD)


def assert_no_secret(where: str, text: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"{where} holds a credential: {text}"


# --------------------------------------------------------------------------- the rule


@pytest.mark.parametrize(
    "name",
    ["api_key", "x-api-key", "apiKey", "openai_api_key", "http.request.header.authorization", "password",
     "client_secret", "access_token", "hf_token", "cookie", "proxy-authorization"],
)  # fmt: skip
def test_names_of_credentials(name: str) -> None:
    assert secret_name(name)
    assert tag_value(name, "anything") == REDACTED


@pytest.mark.parametrize(
    "name",
    ["max_tokens", "gen_ai.usage.input_tokens", "llm.token_count.prompt", "token_type", "api_key_id",
     "key", "key_alias", "user_api_key_alias", "region", "session.id", "api_version"],
)  # fmt: skip
def test_token_counts_and_key_names_are_not_credentials(name: str) -> None:
    """`key` is the gateway's virtual-key NAME tag, `api_key_id` OpenAI's key id: both are kept."""
    assert not secret_name(name)
    assert tag_value(name, "eu-west-1") == "eu-west-1"


@pytest.mark.parametrize(
    ("value", "kept"),
    [
        (f"https://bob:{PASSWORD}@gw.example.com/v1beta/models/g:generateContent?key={GEMINI_KEY}&alt=sse",
         "https://REDACTED:REDACTED@gw.example.com/v1beta/models/g:generateContent?key=REDACTED&alt=sse"),
        (f"{{'Authorization': 'Bearer {OPENAI_KEY}'}}", "{'Authorization': 'REDACTED'}"),
        (json.dumps({"temperature": 0.2, "api_key": AZURE_KEY}), '{"temperature": 0.2, "api_key": "REDACTED"}'),
        (f"prod,Bearer {AZURE_KEY}", "prod,Bearer REDACTED"),
        ("Authorization: Bearer abcdefghij", "Authorization: REDACTED"),
        (f"x-api-key: {AZURE_KEY}, accept: json", "x-api-key: REDACTED, accept: json"),
        (f"key is {ANTHROPIC_KEY}.", "key is REDACTED."),
        ("https://hooks.slack.com/services/T0AB12CD/B0EF34GH/Xy9Zq8Wv7Ut6", "https://hooks.slack.com/REDACTED"),
        # Not credentials: left alone.
        ("basic subscription plan", "basic subscription plan"),
        ("uc-berkeley-research-group-2024", "uc-berkeley-research-group-2024"),
        ("gpt-4o-2024-08-06", "gpt-4o-2024-08-06"),
        ("https://api.openai.com/v1", "https://api.openai.com/v1"),
        ("2025-09-10T10:00:00Z", "2025-09-10T10:00:00Z"),
    ],
)  # fmt: skip
def test_credentials_inside_values_are_replaced_and_the_rest_kept(value: str, kept: str) -> None:
    assert redact_text(value) == kept


def test_long_values_are_read_in_one_pass() -> None:
    """A client chooses its tags' length: a pattern that backtracks over a long run would hold the
    receiver for minutes on a 400 KB value (these finish at once when the rule is linear)."""
    for value in ("a" * 400_000, "a-" * 200_000, "a-" * 200_000 + "://", f"sk-{'a' * 400_000}"):
        assert redact_text(value) == value
    assert redact_text("x" * 400_000 + f" api_key={AZURE_KEY}").endswith("api_key=REDACTED")


# --------------------------------------------------------------------------- OTLP receiver


@pytest.fixture
def mapped_receiver(tmp_path: Path) -> Iterator[tuple[str, Any, Path]]:
    """A receiver whose config maps attributes that carry URLs, header dumps and parameters."""
    config = Config(
        raw={
            "otlp": {
                "attributes": {
                    "url.full": "tag:url",
                    "gen_ai.openai.api_base": "tag:api_base",
                    "llm.headers": "tag:headers",
                    "llm.invocation_parameters": "tag:params",
                }
            }
        }
    )
    path = tmp_path / "otlp.duckdb"
    app, receiver = otlp_app(path, config=config)
    with serve_app(app) as url:
        yield url, receiver, path


def test_otlp_spans_carrying_credentials_are_stored_without_them(
    mapped_receiver: tuple[str, Any, Path],
) -> None:
    url, receiver, path = mapped_receiver
    attributes = genai_attributes(
        "gpt-4o",
        1200,
        300,
        **{
            "url.full": f"https://bob:{PASSWORD}@gw.example.com/v1beta/models/gemini:generateContent?key={GEMINI_KEY}",
            "gen_ai.openai.api_base": f"https://admin:{PASSWORD}@my.openai.azure.com/",
            # OpenLLMetry's header dump and OpenInference's parameters, as the instrumentations write them.
            "llm.headers": str({"Authorization": f"Bearer {OPENAI_KEY}"}),
            "llm.invocation_parameters": json.dumps({"temperature": 0.2, "api_key": AZURE_KEY}),
            "http.request.header.authorization": [f"Bearer {OPENAI_KEY}"],  # not mapped: never read
            "gen_ai.prompt": f"my password is {PASSWORD}",  # not mapped: never read
            "unitcost.tag.api_key": ANTHROPIC_KEY,
            "unitcost.tag.db_password": PASSWORD,
            "unitcost.tag.region": "eu",
            "unitcost.tag.max_tokens": "4096",
        },
    )
    response = httpx.post(url + "/v1/traces", json=json_request([json_span(attributes)]))
    assert response.status_code == 200 and response.json() == {}
    receiver.writer.close()
    (row,) = ledger_rows(path)
    assert_no_secret("the ledger row", repr(row))
    tags = dict(row["tags"])
    assert (
        tags["url"]
        == "https://REDACTED:REDACTED@gw.example.com/v1beta/models/gemini:generateContent?key=REDACTED"
    )
    assert tags["api_base"] == "https://REDACTED:REDACTED@my.openai.azure.com/"
    assert tags["headers"] == "{'Authorization': 'REDACTED'}"
    assert json.loads(tags["params"]) == {"temperature": 0.2, "api_key": REDACTED}
    assert (tags["api_key"], tags["db_password"]) == (REDACTED, REDACTED)
    # What is not a credential stays, and the call is priced from its whole usage.
    assert (tags["region"], tags["max_tokens"]) == ("eu", "4096")
    assert (row["input_tokens"], row["output_tokens"], row["model"]) == (1200, 300, "gpt-4o")
    assert row["cost"] is not None and row["cost"] > 0


def test_a_rejected_span_is_named_without_quoting_its_credential(
    mapped_receiver: tuple[str, Any, Path],
) -> None:
    """An exporter logs the partial-success message: it must not carry the header it quotes."""
    url, _, _ = mapped_receiver
    span = json_span(genai_attributes("gpt-4o", 10, 5))
    span["attributes"].append(
        {"key": "http.request.header.authorization", "value": {"intValue": f"Bearer {OPENAI_KEY}"}}
    )
    bad_count = json_span(genai_attributes("gpt-4o", 10, 5))
    bad_count["attributes"].append(
        {"key": "gen_ai.usage.output_tokens", "value": {"stringValue": f"Bearer {AZURE_KEY}"}}
    )
    response = httpx.post(url + "/v1/traces", json=json_request([span, bad_count]))
    message = response.json()["partialSuccess"]["errorMessage"]
    assert response.json()["partialSuccess"]["rejectedSpans"] == "2"
    assert "http.request.header.authorization" in message and "gen_ai.usage.output_tokens" in message
    assert_no_secret("the partial-success message", message)


def test_a_mapping_may_not_name_a_credential_nor_store_prompts_unasked() -> None:
    with pytest.raises(ValueError, match="names a credential"):
        AttributeMapping.from_config({"attributes": {"http.request.header.authorization": "tag:auth"}})
    with pytest.raises(ValueError, match="names a credential"):
        AttributeMapping.from_config({"attributes": {"http.request.header.x-api-key": "team"}})
    with pytest.raises(ValueError, match="store_bodies = true"):
        AttributeMapping.from_config({"attributes": {"gen_ai.input.messages": "tag:prompt"}})
    with pytest.raises(ValueError, match="store_bodies = true"):
        AttributeMapping.from_config({"attributes": {"llm.input_messages.0.message.content": "tag:q"}})
    # Turned on, the prompt may be mapped, and a key inside it is still replaced.
    mapping = AttributeMapping.from_config({"store_bodies": True, "attributes": {"input.value": "tag:input"}})
    tags: dict[str, str] = {}
    mapping.apply({"input.value": f"use key {OPENAI_KEY} please"}, {}, tags)
    assert tags == {"input": "use key REDACTED please"}


# --------------------------------------------------------------------------- unitcost.tags / record


def test_tags_block_never_stores_the_keys_an_app_passes(tmp_path: Path) -> None:
    path = tmp_path / "sdk.duckdb"
    recorder = Recorder(path)
    with unitcost.tags(
        team="search",
        api_key=OPENAI_KEY,
        headers={"Authorization": f"Bearer {AZURE_KEY}", "x-goog-api-key": GEMINI_KEY},
        base_url=f"https://user:{PASSWORD}@proxy.internal/v1",
        tags={"password": PASSWORD, "region": "eu"},
        max_tokens=512,
    ):
        recorder.record(chat_completion("gpt-4o-mini"), event_id="e-1")
    recorder.close()
    with Ledger(path, config=Config(), read_only=True) as ledger:
        (row,) = ledger.store.fetch("SELECT * FROM events").to_pylist()
    assert_no_secret("the ledger row", repr(row))
    tags = dict(row["tags"])
    assert (tags["api_key"], tags["password"]) == (REDACTED, REDACTED)
    assert tags["base_url"] == "https://REDACTED:REDACTED@proxy.internal/v1"
    assert (row["team"], tags["region"], tags["max_tokens"]) == ("search", "eu", "512")
    assert row["input_tokens"] > 0 and row["cost"] is not None


def test_record_keywords_never_store_the_keys_an_app_passes(tmp_path: Path) -> None:
    """`unitcost.record(response, api_key=...)`: unknown keywords become tags, and were stored as given."""
    path = tmp_path / "sdk.duckdb"
    recorder = Recorder(path)
    recorder.record(
        chat_completion("gpt-4o-mini"),
        event_id="e-1",
        api_key=OPENAI_KEY,
        endpoint=f"https://user:{PASSWORD}@proxy.internal/v1",
        tags={"authorization": f"Bearer {AZURE_KEY}", "region": "eu"},
    )
    recorder.close()
    with Ledger(path, config=Config(), read_only=True) as ledger:
        (row,) = ledger.store.fetch("SELECT * FROM events").to_pylist()
    assert_no_secret("the ledger row", repr(row))
    tags = dict(row["tags"])
    assert (tags["api_key"], tags["authorization"], tags["region"]) == (REDACTED, REDACTED, "eu")
    assert tags["endpoint"] == "https://REDACTED:REDACTED@proxy.internal/v1"
    assert row["cost"] is not None


# --------------------------------------------------------------------------- gateway


def test_gateway_tags_header_never_carries_a_key_into_the_event() -> None:
    headers = {
        "x-unitcost-tags": f"feature=search,api_key={OPENAI_KEY},auth=Bearer {AZURE_KEY},"
        f"callback=https://u:{PASSWORD}@hooks.example.com/x?token={AZURE_KEY}"
    }
    attrs = attribution(headers, None, None)
    record = Attempt("openai", "gpt-4o-mini", "chat", usage={"input_tokens": 10}).record(attrs, "gpt-4o-mini")
    assert_no_secret("the gateway record", repr(record))
    assert record["feature"] == "search"
    assert record["tags"] == {
        "api_key": REDACTED,
        "auth": "Bearer REDACTED",
        "callback": "https://REDACTED:REDACTED@hooks.example.com/x?token=REDACTED",
    }
    assert record["input_tokens"] == 10


# --------------------------------------------------------------------------- importers


def test_litellm_import_keeps_usage_and_none_of_the_keys_bodies_or_headers(
    ledger: Ledger, tmp_path: Path
) -> None:
    """A LiteLLM_SpendLogs row as the proxy writes it: the hashed key, the request and response
    bodies, the client's headers in metadata, and tags sent by the client."""
    row: dict[str, Any] = {
        "request_id": "chatcmpl-7f3a",
        "call_type": "acompletion",
        "api_key": "88dc28d0f030c55ed4ab77ed8faf098196cb1c05df778539800c9f1243fe6b4b",
        "spend": 0.000123,
        "prompt_tokens": 20,
        "completion_tokens": 10,
        "total_tokens": 30,
        "startTime": "2025-09-10T10:00:00Z",
        "endTime": "2025-09-10T10:00:01Z",
        "model": "gpt-4o-mini",
        "custom_llm_provider": "openai",
        "api_base": f"https://user:{PASSWORD}@api.openai.com/v1",
        "user": "u-1",
        "team_id": "search",
        "metadata": {
            "user_api_key_alias": "search-prod",
            "headers": {"authorization": f"Bearer {OPENAI_KEY}"},
            "usage_object": {"prompt_tokens": 20, "completion_tokens": 10},
        },
        "request_tags": ["prod", f"Bearer {AZURE_KEY}"],
        "messages": [{"role": "user", "content": f"my password is {PASSWORD}"}],
        "response": {"choices": [{"message": {"content": f"noted: {PASSWORD}"}}]},
        "proxy_server_request": {"headers": {"authorization": f"Bearer {OPENAI_KEY}"}},
        "status": "success",
    }
    file = tmp_path / "spend.json"
    file.write_text(json.dumps([row]))
    result = import_file(ledger, "litellm", file)
    assert result.accepted == 1
    (stored,) = ledger.store.fetch("SELECT * FROM events").to_pylist()
    assert_no_secret("the imported event", repr(stored))
    assert "88dc28d0f030c55ed4ab77ed" not in repr(stored)
    assert dict(stored["tags"]) == {"request_tags": "prod,Bearer REDACTED"}
    assert (stored["input_tokens"], stored["output_tokens"], stored["team"]) == (20, 10, "search")
