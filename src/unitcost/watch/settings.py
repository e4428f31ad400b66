"""The `[watch]`, `[[watch.sink]]`, `[[watch.override]]` and `[[budget]]` sections of the config file."""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
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
    # A misspelt setting would otherwise be ignored and the default used without a word.
    _known_keys(watch, {*_WATCH_KEYS, *names}, f"{where}: [watch]")
    enabled: Sequence[str] = watch.get("detectors", sorted(names))
    unknown = set(enabled) - names
    if unknown:
        raise ConfigError(f"{where}: [watch] detectors: unknown {sorted(unknown)}; known: {sorted(names)}")
    detectors = [d for d in detectors if d.name in enabled]
    tuning: dict[str, ScopedValue] = {}
    overrides = watch.get("override", [])
    for i, override in enumerate(overrides):
        _known_keys(
            _table(override, f"{where}: [[watch.override]] #{i + 1}"),
            {"scope", *names},
            f"{where}: [[watch.override]] #{i + 1}",
        )
    for detector in detectors:
        base = dict(detector.defaults)
        base.update(_tuning(detector, watch.get(detector.name, {}), f"{where}: [watch.{detector.name}]"))
        scoped: list[tuple[Scope, Mapping[str, Any]]] = []
        for i, override in enumerate(overrides):
            scope = Scope.parse(_table(override.get("scope", {}), f"{where}: [[watch.override]] #{i + 1}"))
            if detector.name in override:
                table = f"{where}: [[watch.override]] #{i + 1} {detector.name}"
                scoped.append((scope, _tuning(detector, override[detector.name], table)))
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

    def number(key: str, default: float) -> float:
        value = watch.get(key, default)
        if not _is_number(value) or not 0 <= value < math.inf:  # nan fails both
            raise ConfigError(f"{where}: [watch] {key}: expected a non-negative number, got {value!r}")
        return float(value)

    return WatchSettings(
        interval_s=number("interval_seconds", 60),
        cooldown_minutes=number("cooldown_minutes", 60),
        resolve_after_hours=number("resolve_after_hours", 3),
        backfill_hours=number("backfill_hours", 48),
        detectors=detectors,
        tuning=tuning,
        sinks=sinks,
        budgets=budgets,
    )


_WATCH_KEYS = (
    "interval_seconds",
    "cooldown_minutes",
    "resolve_after_hours",
    "backfill_hours",
    "detectors",
    "override",
    "sink",
)


def _known_keys(table: Mapping[str, Any], known: Iterable[str], where: str) -> None:
    allowed = set(known)
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise ConfigError(
            f"{where}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(allowed))}"
        )


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _tuning(detector: Detector, value: Any, where: str) -> dict[str, Any]:
    """A detector's settings: only the ones it has, each a number (or a list of numbers) as its default is."""
    table = _table(value, where)
    _known_keys(table, detector.defaults, where)
    for key, setting in table.items():
        default = detector.defaults[key]
        if isinstance(default, list):
            ok = isinstance(setting, list) and bool(setting) and all(_is_number(v) and v > 0 for v in setting)
            expected = "a list of positive numbers"
        else:
            ok = _is_number(setting) and setting >= 0
            expected = "a non-negative number"
        if not ok:
            raise ConfigError(f"{where}: {key}: expected {expected}, got {setting!r}")
    return table


def _table(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where} must be a table")
    return dict(value)
