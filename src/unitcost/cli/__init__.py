"""The `unitcost` command line. Each module registers its commands on the shared app."""

from __future__ import annotations

from . import compare_cmds, connector_cmds, demo_cmd, gateway_cmds, ledger_cmds, pricing_cmds, watch_cmds  # noqa: F401 - registration
from .app import app


def main() -> None:
    app()
