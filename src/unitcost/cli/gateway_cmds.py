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


@app.command("gateway-key")
def gateway_key_cmd(
    name: Annotated[str, typer.Option("--name", help="Name of the key in the config.")] = "my-key",
    team: Annotated[str | None, typer.Option("--team")] = None,
) -> None:
    """Create a virtual key: prints the key (give it to the client) and the config entry (only its hash)."""
    from ..gateway.keys import new_key

    key, digest = new_key()
    out = console()
    out.print(f"key (shown once): {key}", markup=False, highlight=False)
    out.print("\n[[gateway.keys]]", markup=False, highlight=False)
    out.print(f'name = "{name}"', markup=False, highlight=False)
    if team:
        out.print(f'team = "{team}"', markup=False, highlight=False)
    out.print(f'sha256 = "{digest}"', markup=False, highlight=False)


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
