"""`unitcost gateway`, `unitcost gateway-key` and `unitcost simulate-provider`."""

from __future__ import annotations

from typing import Annotated

import typer

from ..config import load_config
from .app import ConfigOpt, LedgerOpt, app, friendly
from .output import console


@app.command("gateway")
@friendly
def gateway_cmd(
    config: ConfigOpt = None,
    ledger: LedgerOpt = None,
    host: Annotated[str | None, typer.Option("--host", help=r"Default: \[gateway] host, 127.0.0.1.")] = None,
    port: Annotated[int | None, typer.Option("--port", help=r"Default: \[gateway] port, 4000.")] = None,
) -> None:
    """Run the OpenAI- and Anthropic-compatible gateway configured in the gateway section of the config file."""
    import logging

    from ..gateway.config import load_gateway
    from ..gateway.server import run_gateway
    from .app import listening_socket

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per proxied request is noise
    base = load_config(config)
    settings = load_gateway(base)
    host, port = host or settings.host, port or settings.port
    sock = listening_socket(
        host,
        port,
        "another gateway or proxy may be using it: stop it, or choose another --port or [gateway] port",
    )

    def announce() -> None:
        # Only once it listens: a busy ledger or a watch it cannot run stops it before this line.
        console().print(
            f"unitcost gateway on http://{host}:{sock.getsockname()[1]} · {len(settings.upstreams)} upstream(s), "
            f"{len(settings.public_models())} model(s), {len(settings.budgets)} budget(s), "
            f"spool {settings.spool_dir}",
            markup=False,
            highlight=False,
        )

    try:
        run_gateway(settings, base, ledger, sock, on_ready=announce)
    finally:
        sock.close()


def _toml_string(value: str) -> str:
    """`value` as a TOML basic string: quotes, backslashes and control characters escaped, so
    that the entry printed reads back as the same value whatever the name holds."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + "".join(f"\\u{ord(c):04X}" if ord(c) < 0x20 or ord(c) == 0x7F else c for c in escaped) + '"'


def _split_models(values: list[str]) -> list[str]:
    """`--models` values, each split at its commas: `--models a --models b` is `--models a,b`."""
    return [part.strip() for value in values for part in value.split(",")]


@app.command("gateway-key")
@friendly
def gateway_key_cmd(
    name: Annotated[str, typer.Option("--name", help="Name of the key in the config.")] = "my-key",
    team: Annotated[str | None, typer.Option("--team")] = None,
    models: Annotated[
        list[str] | None,
        typer.Option(
            "--models",
            metavar="PATTERN",
            help="A model name or `*` glob the key may call (repeatable, or comma-separated): "
            "each must match a model, alias or route of the gateway section of --config. "
            "Default: every model (within its team's models, when the team has a list).",
            show_default=False,
        ),
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """Create a virtual key: prints the key (give it to the client) and the config entry (only its hash)."""
    from ..gateway.config import VirtualKey, check_key_in_team, check_models, load_gateway
    from ..gateway.keys import new_key
    from .app import UserError

    patterns: tuple[str, ...] | None = None
    team_models: tuple[str, ...] | None = None
    if models is not None:
        # Checked as the gateway checks the entry when it starts: a pattern it would refuse
        # is refused here, before the key is handed out.
        base = load_config(config)
        if not base.section("gateway"):
            raise UserError(
                "--models is checked against the models, aliases and routes of the gateway, and "
                + (f"{base.path} has no [gateway] section" if base.path else "no config file was found")
                + ": pass --config with the gateway's unitcost.toml"
            )
        settings = load_gateway(base)
        patterns = check_models(_split_models(models), settings, "gateway-key")
        if team is not None and team in settings.teams:
            team_models = settings.teams[team].models
        check_key_in_team(
            VirtualKey(name, "", team=team, models=patterns, team_models=team_models), settings, "gateway-key"
        )

    key, digest = new_key()
    lines = ["", "[[gateway.keys]]", f"name = {_toml_string(name)}"]
    if team:
        lines.append(f"team = {_toml_string(team)}")
    if patterns is not None:
        lines.append(f"models = [{', '.join(_toml_string(p) for p in patterns)}]")
    if team_models is not None:
        allowed = ", ".join(_toml_string(p) for p in team_models)
        lines.append(f"# its team's models ([gateway.teams]) apply too: {allowed}")
    lines.append(f'sha256 = "{digest}"')
    out = console()
    out.print(f"key (shown once): {key}", markup=False, highlight=False)
    out.print("\n".join(lines), markup=False, highlight=False, emoji=False, soft_wrap=True)


@app.command("simulate-provider")
def simulate_provider_cmd(
    host: Annotated[str, typer.Option("--host")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port")] = 8100,
    latency_ms: Annotated[float, typer.Option("--latency-ms", help="Service time of every request.")] = 0.0,
) -> None:
    """Run a SIMULATED OpenAI + Anthropic upstream (fake replies, real usage shapes) for tests and demos."""
    from ..gateway.httpserver import serve
    from ..gateway.simulator import Simulator

    console().print(
        f"simulated provider (not a model) on http://{host}:{port} · OpenAI base_url "
        f"http://{host}:{port}/v1 · Anthropic base_url http://{host}:{port} · latency {latency_ms} ms",
        markup=False,
        highlight=False,
    )
    serve(Simulator(latency_ms=latency_ms).handle, host, port)
