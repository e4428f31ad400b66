"""The `unitcost` command line. Each module registers its commands on the shared app."""

from __future__ import annotations

from . import (  # noqa: F401 - registration
    compare_cmds,
    connector_cmds,
    demo_cmd,
    export_cmds,
    gateway_cmds,
    ledger_cmds,
    pricing_cmds,
    watch_cmds,
)
from .app import app


def main() -> None:
    app()
