"""Configuration: one TOML file, secrets from the environment.

Where things are looked for, first match wins:

- the config file: `--config PATH`, then `$UNITCOST_CONFIG`, then `./unitcost.toml`;
- the ledger: `--ledger PATH`, then `$UNITCOST_LEDGER`, then `[ledger] path` (or `url` for
  ClickHouse) in the config file, then the user data directory
  (`~/.local/share/unitcost/ledger.duckdb` on Linux);
- price overrides: `--prices PATH`, then `$UNITCOST_PRICES`, then `[pricing] overrides`.

Relative paths in the config file are relative to the file. The file never holds secrets:
sections that need one name an environment variable (`api_key_env = "OPENAI_API_KEY"`).
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from platformdirs import user_data_path

CONFIG_ENV = "UNITCOST_CONFIG"
LEDGER_ENV = "UNITCOST_LEDGER"
PRICES_ENV = "UNITCOST_PRICES"
DEFAULT_CONFIG_NAME = "unitcost.toml"


class ConfigError(ValueError):
    pass


@dataclass
class Config:
    path: Path | None = None
    ledger: str | None = None
    """A DuckDB file path, or a ClickHouse URL (clickhouse://..., chdb://...)."""
    overrides: Path | None = None
    raw: Mapping[str, Any] = field(default_factory=dict)

    def section(self, name: str) -> Mapping[str, Any]:
        value = self.raw.get(name, {})
        if not isinstance(value, Mapping):
            raise ConfigError(f"{self.path}: [{name}] must be a table")
        return value


def default_ledger_path() -> Path:
    return user_data_path("unitcost", appauthor=False) / "ledger.duckdb"


SECTIONS = ("ledger", "pricing", "budget", "watch", "gateway", "otlp", "levers", "api")
"""The top-level tables of the config file (README, "Configuration")."""


def load_config(path: str | Path | None = None) -> Config:
    chosen = Path(path) if path else None
    if chosen is None and os.environ.get(CONFIG_ENV):
        chosen = Path(os.environ[CONFIG_ENV])
    if chosen is None and Path(DEFAULT_CONFIG_NAME).is_file():
        chosen = Path(DEFAULT_CONFIG_NAME)
    raw: dict[str, Any] = {}
    if chosen is not None:
        if not chosen.is_file():
            raise ConfigError(f"config file {chosen} does not exist")
        try:
            raw = tomllib.loads(chosen.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{chosen}: not valid TOML: {exc}") from exc
    unknown = sorted(set(raw) - set(SECTIONS))
    if unknown:
        # `[[budgets]]` for `[[budget]]` would otherwise leave the file's budgets unwatched.
        raise ConfigError(
            f"{chosen}: unknown section(s) {', '.join(unknown)}; the sections are {', '.join(SECTIONS)}"
        )
    base = chosen.parent if chosen else Path.cwd()
    ledger_section = raw.get("ledger", {})
    if isinstance(ledger_section, str):  # `ledger = "clickhouse://..."` at the top level
        ledger_section = {"url": ledger_section}
    pricing_section = raw.get("pricing", {})
    ledger = ledger_section.get("url") or _relative(ledger_section.get("path"), base)
    overrides = _relative(pricing_section.get("overrides"), base)
    return Config(
        path=chosen,
        ledger=str(ledger) if ledger else None,
        overrides=Path(overrides) if overrides else None,
        raw=raw,
    )


def resolve_ledger(explicit: str | Path | None, config: Config | None = None) -> str:
    if explicit:
        return str(explicit)
    if os.environ.get(LEDGER_ENV):
        return os.environ[LEDGER_ENV]
    if config is not None and config.ledger:
        return config.ledger
    return str(default_ledger_path())


def resolve_overrides(explicit: str | Path | None, config: Config | None = None) -> Path | None:
    if explicit:
        return Path(explicit)
    if os.environ.get(PRICES_ENV):
        return Path(os.environ[PRICES_ENV])
    return config.overrides if config is not None else None


def _relative(value: Any, base: Path) -> Path | None:
    if not value:
        return None
    candidate = Path(str(value)).expanduser()
    return candidate if candidate.is_absolute() else base / candidate
