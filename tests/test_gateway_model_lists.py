"""Model allow-lists of a team ([gateway.teams.<team>] models) and a key's list written by
`unitcost gateway-key --models`, through real gateway processes on 127.0.0.1 in front of the
fake upstream of fake_providers.py, with the official openai and anthropic SDKs as clients.

A call is allowed only when the name asked for matches the key's own `models` (when it has
one) and its team's (when the key's `team` has one). A refusal is a 403 `permission_error` in
the API's own shape that says which list refused it, quoting only that list: the caller's own
key's or its own team's, never another key's or team's.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest
from typer.testing import CliRunner

from fake_providers import RecordingUpstream, serve_app
from gateway_support import GATEWAY_KEY, OTHER_KEY, GatewayProcess, free_port, oa, unique, write_config
from unitcost.cli import app
from unitcost.config import ConfigError, load_config
from unitcost.gateway.config import load_gateway, parse_gateway
from unitcost.gateway.keys import hash_key

OPEN_KEY = "uc-test-key-intern-open-0123456789"  # team interns, no list of its own
NARROW_KEY = "uc-test-key-intern-narrow-0123456789"  # team interns, and a list of its own
INTERNS = ["gpt-4o-mini*", "fast", "claude-*-haiku*"]
NARROW = ["gpt-4o-mini", "gpt-4o", "fast"]
ADS = ["gpt-4o", "text-embedding-*"]  # another team's list: never quoted to an intern
EXTRA = f"""
[gateway.models.claude-fast]
upstream = "sim-anthropic"
model = "claude-3-5-haiku-20241022"

[gateway.teams.interns]
models = {INTERNS!r}

[gateway.teams.ads]
models = {ADS!r}

[[gateway.keys]]
name = "intern-open"
team = "interns"
sha256 = "{hash_key(OPEN_KEY)}"

[[gateway.keys]]
name = "intern-narrow"
team = "interns"
models = {NARROW!r}
sha256 = "{hash_key(NARROW_KEY)}"
"""


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GatewayProcess, RecordingUpstream]]:
    directory = tmp_path_factory.mktemp("gateway_team_models")
    upstream = RecordingUpstream()
    with serve_app(upstream) as url:
        port = free_port()
        config = write_config(directory, url, port, EXTRA)
        with GatewayProcess(config, port) as process:
            yield process, upstream


def openai_client(gw: GatewayProcess, key: str) -> openai.OpenAI:
    return oa(gw, key=key)


def anthropic_client(gw: GatewayProcess, key: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gw.url, api_key=key, max_retries=0)


def openai_refusal(exc: openai.PermissionDeniedError) -> str:
    assert exc.status_code == 403 and exc.response.headers["x-should-retry"] == "false"
    body = exc.response.json()
    assert body == {
        "error": {
            "message": body["error"]["message"],
            "type": "permission_error",
            "param": "model",
            "code": "model_not_allowed",
        }
    }
    return str(body["error"]["message"])


def anthropic_refusal(exc: anthropic.PermissionDeniedError) -> str:
    assert exc.status_code == 403
    body = exc.response.json()
    assert body == {
        "type": "error",
        "error": {"type": "permission_error", "message": body["error"]["message"]},
    }
    return str(body["error"]["message"])


def assert_no_leak(message: str, key: str) -> None:
    """Nothing of another key or team in a refusal, nor the caller's own secret or hash."""
    for secret in (key, hash_key(key), OPEN_KEY, NARROW_KEY, GATEWAY_KEY, OTHER_KEY):
        assert secret not in message and hash_key(secret) not in message
    assert "text-embedding" not in message and "'ads'" not in message and "search" not in message
    assert "intern-open" not in message or "intern-narrow" not in message


# ------------------------------------------------------------------ a team's list


def test_a_teams_list_binds_its_key_that_has_no_list_of_its_own(gateway) -> None:
    gw, upstream = gateway
    messages = [{"role": "user", "content": unique()}]
    client = openai_client(gw, OPEN_KEY)
    sent = len(upstream.seen)

    for call in (
        lambda: client.chat.completions.create(model="gpt-4o", messages=messages),
        lambda: client.chat.completions.create(model="gpt-4o", messages=messages, stream=True),
        lambda: client.responses.create(model="gpt-4o", input=unique()),
    ):
        with pytest.raises(openai.PermissionDeniedError) as refused:
            call()
        message = openai_refusal(refused.value)
        assert message == (
            "the unitcost virtual key 'intern-open' may not call the model `gpt-4o`: "
            "its team 'interns' may call only: gpt-4o-mini*, fast, claude-*-haiku*"
        )
        assert_no_leak(message, OPEN_KEY)

    claude = anthropic_client(gw, OPEN_KEY)
    claude_messages = [{"role": "user", "content": unique()}]
    for call in (
        lambda: claude.messages.create(model="claude-sonnet-4-5", max_tokens=64, messages=claude_messages),
        lambda: claude.messages.create(model="claude-fast", max_tokens=64, messages=claude_messages),
    ):
        with pytest.raises(anthropic.PermissionDeniedError) as refused:
            call()
        message = anthropic_refusal(refused.value)
        assert "its team 'interns' may call only: gpt-4o-mini*, fast, claude-*-haiku*" in message
        assert_no_leak(message, OPEN_KEY)
    assert len(upstream.seen) == sent  # no refused call went upstream

    # What the team's list matches goes through, on both APIs.
    assert client.chat.completions.create(model="gpt-4o-mini", messages=messages).model == "gpt-4o-mini"
    raw = client.chat.completions.with_raw_response.create(model="fast", messages=messages)
    assert raw.http_response.status_code == 200 and raw.headers["x-unitcost-model"] == "gpt-4o-mini"
    haiku = "claude-3-5-haiku-20241022"
    assert claude.messages.create(model=haiku, max_tokens=64, messages=claude_messages).model == haiku
    assert upstream.seen[sent:] == ["/v1/chat/completions", "/v1/chat/completions", "/v1/messages"]


def test_a_call_needs_both_the_keys_list_and_its_teams(gateway) -> None:
    gw, _ = gateway
    messages = [{"role": "user", "content": unique()}]
    client = openai_client(gw, NARROW_KEY)
    # gpt-4o: the key's list allows it, its team's does not: the team's list is named.
    with pytest.raises(openai.PermissionDeniedError) as by_team:
        client.chat.completions.create(model="gpt-4o", messages=messages)
    message = openai_refusal(by_team.value)
    assert message == (
        "the unitcost virtual key 'intern-narrow' may not call the model `gpt-4o`: "
        "its team 'interns' may call only: gpt-4o-mini*, fast, claude-*-haiku*"
    )
    assert_no_leak(message, NARROW_KEY)
    # The haiku model: its team's list allows it, the key's own does not: the key's list is named.
    claude = anthropic_client(gw, NARROW_KEY)
    with pytest.raises(anthropic.PermissionDeniedError) as by_key:
        claude.messages.create(model="claude-3-5-haiku-20241022", max_tokens=64, messages=messages)
    message = anthropic_refusal(by_key.value)
    assert message == (
        "the unitcost virtual key 'intern-narrow' may not call the model `claude-3-5-haiku-20241022`; "
        "it may call: gpt-4o-mini, gpt-4o, fast"
    )
    assert "team" not in message
    assert_no_leak(message, NARROW_KEY)
    # Both lists match: allowed.
    assert client.chat.completions.create(model="gpt-4o-mini", messages=messages).model == "gpt-4o-mini"
    assert (
        client.chat.completions.with_raw_response.create(
            model="fast", messages=messages
        ).http_response.status_code
        == 200
    )


def test_another_teams_list_and_a_team_without_one(gateway) -> None:
    gw, _ = gateway
    messages = [{"role": "user", "content": unique()}]
    ads = openai_client(gw, OTHER_KEY)  # team ads: gpt-4o and text-embedding-* only
    assert ads.chat.completions.create(model="gpt-4o", messages=messages).model == "gpt-4o-2024-08-06"
    with pytest.raises(openai.PermissionDeniedError) as refused:
        ads.chat.completions.create(model="gpt-4o-mini", messages=messages)
    message = openai_refusal(refused.value)
    assert message.endswith("its team 'ads' may call only: gpt-4o, text-embedding-*")
    assert "interns" not in message and "haiku" not in message
    # Team search has no list: its key still calls every model.
    search = openai_client(gw, GATEWAY_KEY)
    for model in ("gpt-4o", "gpt-4o-mini", "fast"):
        assert (
            search.chat.completions.with_raw_response.create(
                model=model, messages=messages
            ).http_response.status_code
            == 200
        )
    assert (
        anthropic_client(gw, GATEWAY_KEY)
        .messages.create(model="claude-sonnet-4-5", max_tokens=64, messages=messages)
        .model
        == "claude-sonnet-4-5"
    )


def test_model_listings_show_what_both_lists_allow(gateway) -> None:
    gw, _ = gateway
    assert {m.id for m in openai_client(gw, OPEN_KEY).models.list()} == {"gpt-4o-mini", "fast"}
    assert [m.id for m in anthropic_client(gw, OPEN_KEY).models.list()] == ["claude-3-5-haiku-20241022"]
    assert {m.id for m in openai_client(gw, NARROW_KEY).models.list()} == {"gpt-4o-mini", "fast"}
    assert [m.id for m in anthropic_client(gw, NARROW_KEY).models.list()] == []
    with pytest.raises(openai.NotFoundError):
        openai_client(gw, NARROW_KEY).models.retrieve("gpt-4o")  # its own list has it, its team's not
    assert {m.id for m in openai_client(gw, OTHER_KEY).models.list()} == {"gpt-4o", "text-embedding-3-small"}
    everything = {m.id for m in openai_client(gw, GATEWAY_KEY).models.list()}
    assert {"gpt-4o", "gpt-4o-mini", "fast", "text-embedding-3-small"} <= everything


# ------------------------------------------------------------------ [gateway.teams] in the file


def _section(teams: Any, key_models: list[str] | None = None) -> dict[str, Any]:
    key: dict[str, Any] = {"name": "intern", "team": "interns", "sha256": hash_key(OPEN_KEY)}
    if key_models is not None:
        key["models"] = key_models
    return {
        "upstreams": {
            "o": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1", "models": ["gpt-4o", "gpt-4o-mini"]}
        },
        "models": {"fast": {"upstream": "o", "model": "gpt-4o-mini"}},
        "keys": [key, {"name": "other", "sha256": hash_key(OTHER_KEY)}],
        "teams": teams,
    }


def test_a_teams_list_is_read_onto_every_key_of_the_team() -> None:
    config = parse_gateway(_section({"interns": {"models": ["gpt-4o-mini*", "fast"]}}, ["gpt-4o*"]))
    intern, other = config.keys
    assert config.teams["interns"].models == ("gpt-4o-mini*", "fast")
    assert intern.models == ("gpt-4o*",) and intern.team_models == ("gpt-4o-mini*", "fast")
    assert other.team_models is None and other.allows("gpt-4o")
    assert intern.refused_by("gpt-4o-mini") is None and intern.allows("gpt-4o-mini")
    assert intern.refused_by("gpt-4o") == "team" and intern.refused_by("fast") == "key"
    # A team table without models limits nothing.
    assert parse_gateway(_section({"interns": {}})).keys[0].team_models is None


@pytest.mark.parametrize(
    ("teams", "key_models", "said"),
    [
        ({"interns": {"model": ["gpt-4o-mini"]}}, None, "[gateway.teams.interns] unknown setting 'model'"),
        ({"interns": {"models": []}}, None, "[gateway.teams.interns] models must be a non-empty list"),
        ({"interns": {"models": "gpt-4o-mini"}}, None, "[gateway.teams.interns] models must be a non-empty"),
        (
            {"interns": {"models": ["gpt4o-mini"]}},
            None,
            "[gateway.teams.interns] models: 'gpt4o-mini' matches none",
        ),
        (
            {"intern": {"models": ["gpt-4o-mini"]}},
            None,
            "[gateway.teams.intern] no [[gateway.keys]] entry has team",
        ),
        ({"interns": ["gpt-4o-mini"]}, None, "[gateway.teams.interns] must be a table"),
        (["interns"], None, "[gateway.teams] must be a table"),
        (
            {"interns": {"models": ["gpt-4o-mini"]}},
            ["gpt-4o"],
            "[gateway.keys #1] models: no model of the gateway matches both",
        ),
    ],
)
def test_a_team_setting_that_would_not_do_what_it_says_is_refused(
    teams: Any, key_models: list[str] | None, said: str
) -> None:
    with pytest.raises(ConfigError) as refused:
        parse_gateway(_section(teams, key_models))
    assert said in str(refused.value)


# ------------------------------------------------------------------ unitcost gateway-key --models

runner = CliRunner()


def _base_config(directory: Path, sim_url: str = "http://127.0.0.1:9", port: int = 4000) -> Path:
    return write_config(directory, sim_url, port, EXTRA)


def _entry(output: str) -> tuple[str, str]:
    """The key and the [[gateway.keys]] entry that `unitcost gateway-key` printed."""
    first, _, entry = output.partition("\n")
    assert first.startswith("key (shown once): uc-")
    return first.removeprefix("key (shown once): "), entry


def test_gateway_key_writes_models_the_gateway_then_enforces(tmp_path: Path) -> None:
    upstream = RecordingUpstream()
    with serve_app(upstream) as url:
        port = free_port()
        config = _base_config(tmp_path, url, port)
        printed = subprocess.run(
            [
                sys.executable,
                "-c",
                "from unitcost.cli import main; main()",
                "gateway-key",
                "--name",
                'cli "key"',
                "--team",
                "search",
                "--models",
                "gpt-4o-mini*, fast",
                "--models",
                "claude-*-haiku*",
                "--config",
                str(config),
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        key, entry = _entry(printed)
        assert 'models = ["gpt-4o-mini*", "fast", "claude-*-haiku*"]' in entry
        with config.open("a") as file:
            file.write(entry)
        # The loader reads the entry as written: the key, its team and its list.
        loaded = next(k for k in load_gateway(load_config(config)).keys if k.sha256 == hash_key(key))
        assert (loaded.name, loaded.team, loaded.models) == (
            'cli "key"',
            "search",
            ("gpt-4o-mini*", "fast", "claude-*-haiku*"),
        )

        with GatewayProcess(config, port) as gw:
            messages = [{"role": "user", "content": unique()}]
            client = openai_client(gw, key)
            assert (
                client.chat.completions.create(model="gpt-4o-mini", messages=messages).model == "gpt-4o-mini"
            )
            with pytest.raises(openai.PermissionDeniedError) as refused:
                client.chat.completions.create(model="gpt-4o", messages=messages)
            assert openai_refusal(refused.value) == (
                "the unitcost virtual key 'cli \"key\"' may not call the model `gpt-4o`; "
                "it may call: gpt-4o-mini*, fast, claude-*-haiku*"
            )
            claude = anthropic_client(gw, key)
            haiku = "claude-3-5-haiku-20241022"
            assert claude.messages.create(model=haiku, max_tokens=64, messages=messages).model == haiku
            with pytest.raises(anthropic.PermissionDeniedError):
                claude.messages.create(model="claude-sonnet-4-5", max_tokens=64, messages=messages)


def test_gateway_key_names_its_teams_list_and_reads_back(tmp_path: Path) -> None:
    config = _base_config(tmp_path)
    result = runner.invoke(
        app,
        [
            "gateway-key",
            "--name",
            "intern-2",
            "--team",
            "interns",
            "--models",
            "gpt-4o-mini",
            "--config",
            str(config),
        ],
    )
    assert result.exit_code == 0, result.output
    _, entry = _entry(result.output)
    assert (
        '# its team\'s models ([gateway.teams]) apply too: "gpt-4o-mini*", "fast", "claude-*-haiku*"' in entry
    )
    (written,) = tomllib.loads(entry)["gateway"]["keys"]
    assert written["models"] == ["gpt-4o-mini"] and written["team"] == "interns"
    # Without --models nothing changes: no list, and no config needed.
    plain = runner.invoke(app, ["gateway-key", "--name", "k", "--team", "interns"])
    assert plain.exit_code == 0 and "models" not in _entry(plain.output)[1]


@pytest.mark.parametrize(
    ("extra", "said"),
    [
        (
            ["--models", "gpt4o-mini"],
            "[gateway-key] models: 'gpt4o-mini' matches none of the gateway's models",
        ),
        (["--models", "gpt-4o?"], "'gpt-4o?' matches none"),  # `?` is itself, as in the file
        (["--models", ""], "[gateway-key] models must be a non-empty list"),
        (["--models", "gpt-4o-mini,"], "[gateway-key] models must be a non-empty list"),
        (["--team", "interns", "--models", "gpt-4o"], "no model of the gateway matches both"),
    ],
)
def test_gateway_key_refuses_a_list_the_gateway_would_refuse(
    tmp_path: Path, extra: list[str], said: str
) -> None:
    config = _base_config(tmp_path)
    result = runner.invoke(app, ["gateway-key", "--name", "k", "--config", str(config), *extra])
    assert result.exit_code == 2, result.output
    assert said in result.output and "key (shown once)" not in result.output


def test_gateway_key_models_needs_the_gateways_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("UNITCOST_CONFIG", raising=False)
    result = runner.invoke(app, ["gateway-key", "--models", "gpt-4o-mini"])
    assert result.exit_code == 2 and "no config file was found: pass --config" in result.output
    (tmp_path / "unitcost.toml").write_text('[ledger]\npath = "x.duckdb"\n')
    result = runner.invoke(app, ["gateway-key", "--models", "gpt-4o-mini"])
    assert result.exit_code == 2 and "has no [gateway] section" in result.output
    assert "key (shown once)" not in result.output
