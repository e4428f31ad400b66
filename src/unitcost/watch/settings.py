"""The `[watch]`, `[[watch.sink]]`, `[[watch.override]]` and `[[budget]]` sections of the config file."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..config import Config, ConfigError
from .budgets import Budget, parse_budgets
from .detectors import Detector, all_detectors
from .scope import Scope, ScopedValue

SINK_TYPES = ("webhook", "slack", "email", "log")


@dataclass(frozen=True)
class SinkConfig:
    kind: str
    name: str
    options: Mapping[str, Any]

    def secret(self, key: str) -> str | None:
        """A value given directly, or through `<key>_env` naming an environment variable."""
        if self.options.get(key):
            return str(self.options[key])
        env = self.options.get(f"{key}_env")
        return os.environ.get(str(env)) if env else None


@dataclass
class WatchSettings:
    interval_s: float = 60.0
    cooldown_minutes: float = 60.0
    """An open incident notifies again only after this long, and only if it got worse."""
    resolve_after_hours: float = 3.0
    """An incident with no new finding for this long is resolved."""
    backfill_hours: float = 48.0
    """How far back the first cycle on a ledger judges hours."""
    detectors: list[Detector] = field(default_factory=all_detectors)
    tuning: dict[str, ScopedValue] = field(default_factory=dict)
    sinks: list[SinkConfig] = field(default_factory=list)
    budgets: list[Budget] = field(default_factory=list)

    def for_detector(self, detector: Detector) -> ScopedValue:
        return self.tuning.get(detector.name, ScopedValue(dict(detector.defaults)))


def load_watch_settings(config: Config) -> WatchSettings:
    where = str(config.path or "config")
    watch = config.section("watch")
    detectors = all_detectors()
    names = {d.name for d in detectors}
    enabled: Sequence[str] = watch.get("detectors", sorted(names))
    unknown = set(enabled) - names
    if unknown:
        raise ConfigError(f"{where}: [watch] detectors: unknown {sorted(unknown)}; known: {sorted(names)}")
    detectors = [d for d in detectors if d.name in enabled]
    tuning: dict[str, ScopedValue] = {}
    overrides = watch.get("override", [])
    for detector in detectors:
        base = dict(detector.defaults)
        base.update(_table(watch.get(detector.name, {}), f"{where}: [watch.{detector.name}]"))
        scoped: list[tuple[Scope, Mapping[str, Any]]] = []
        for i, override in enumerate(overrides):
            scope = Scope.parse(_table(override.get("scope", {}), f"{where}: [[watch.override]] #{i + 1}"))
            if detector.name in override:
                scoped.append((scope, _table(override[detector.name], f"{where}: override #{i + 1}")))
        tuning[detector.name] = ScopedValue(base, tuple(scoped))
    sinks = []
    for i, raw in enumerate(watch.get("sink", [])):
        kind = raw.get("type")
        if kind not in SINK_TYPES:
            raise ConfigError(
                f"{where}: [[watch.sink]] #{i + 1}: type must be one of {', '.join(SINK_TYPES)}"
            )
        sinks.append(SinkConfig(kind, str(raw.get("name", f"{kind}-{i + 1}")), raw))
    try:
        budgets = parse_budgets(config.raw.get("budget", []))
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from exc
    return WatchSettings(
        interval_s=float(watch.get("interval_seconds", 60)),
        cooldown_minutes=float(watch.get("cooldown_minutes", 60)),
        resolve_after_hours=float(watch.get("resolve_after_hours", 3)),
        backfill_hours=float(watch.get("backfill_hours", 48)),
        detectors=detectors,
        tuning=tuning,
        sinks=sinks,
        budgets=budgets,
    )


def _table(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where} must be a table")
    return dict(value)
