"""The `unitcost` command line. Each module registers its commands on the shared app."""

from __future__ import annotations

from . import demo_cmd, ledger_cmds, pricing_cmds  # noqa: F401 - registration
from . import watch_cmds as _watch_cmds  # noqa: F401 - registration
from .app import app


def main() -> None:
    app()
