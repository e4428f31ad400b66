"""The `[watch]`, `[[watch.sink]]`, `[[watch.override]]` and `[[budget]]` sections of the config file."""

from __future__ import annotations

import difflib
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

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
        """A value given directly, or through `<key>_env` naming an environment variable; None
        when neither is given. A variable named but not set is an error that names it (never
        its value): the sink would otherwise send no credentials and fail at every alert."""
        if self.options.get(key):
            return str(self.options[key])
        env = self.options.get(f"{key}_env")
        if not env:
            return None
        where = f"sink {self.name}: {key} (or {key}_env naming a set variable) is required: {key}_env"
        return _from_env(str(env), where)

    def headers(self) -> dict[str, str]:
        """The webhook's headers: `Authorization = "..."` in clear, or `Authorization_env = "VAR"`
        read from the environment (the way to keep a token out of the config file)."""
        out: dict[str, str] = {}
        for key, value in dict(self.options.get("headers", {})).items():
            if key.endswith(ENV_SUFFIX):
                out[key.removesuffix(ENV_SUFFIX)] = _from_env(str(value), f"sink {self.name}: headers.{key}")
            else:
                out[str(key)] = str(value)
        return out


ENV_SUFFIX = "_env"


def _from_env(variable: str, where: str) -> str:
    value = os.environ.get(variable)
    if not value:
        raise ConfigError(f"{where} names the environment variable {variable}, which is not set (or empty)")
    return value


@dataclass
class WatchSettings:
    interval_s: float = 60.0
    cooldown_minutes: float = 60.0
    """An open incident notifies again only after this long, and only if it got worse."""
    resolve_after_hours: float = 3.0
    """An incident with no new finding for this long is resolved (not a budget's, judged every cycle,
    nor a model with no price's, which resolves once priced or after a day: `detectors/unpriced.py`)."""
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
    sinks = _sinks(watch.get("sink", []), where)
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


_SINK_KEYS: dict[str, tuple[str, ...]] = {
    "webhook": ("url", "url_env", "headers", "timeout"),
    "slack": ("url", "url_env", "headers", "timeout"),
    "email": (
        "host",
        "port",
        "from",
        "to",
        "starttls",
        "tls",
        "username",
        "username_env",
        "password",
        "password_env",
        "timeout",
    ),
    "log": (),
}


def _sinks(raw: Any, where: str) -> list[SinkConfig]:
    """The `[[watch.sink]]` tables, each checked before the first cycle: a misspelt key, a port that
    is no port or a missing URL is named now, not found at the first alert, retried twelve times."""
    if isinstance(raw, Mapping):
        raise ConfigError(f"{where}: [watch.sink] is a single table: write [[watch.sink]], one per sink")
    if not isinstance(raw, list):
        raise ConfigError(f"{where}: watch.sink must be [[watch.sink]] tables, got {raw!r}")
    sinks: list[SinkConfig] = []
    for i, entry in enumerate(raw):
        table = _table(entry, f"{where}: [[watch.sink]] #{i + 1}")
        kind = table.get("type")
        here = f"{where}: [[watch.sink]] #{i + 1}"
        if kind not in SINK_TYPES:
            close = difflib.get_close_matches(str(kind), SINK_TYPES, n=1)
            hint = f' (did you mean "{close[0]}"?)' if close else ""
            got = "it is missing" if kind is None else f"got {kind!r}{hint}"
            raise ConfigError(f"{here}: type must be one of {', '.join(SINK_TYPES)}; {got}")
        name = table.get("name", f"{kind}-{i + 1}")
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{here}: name: expected a non-empty string, got {name!r}")
        here = f"{here} ({name})"
        if name in {s.name for s in sinks}:
            # The alert log tells deliveries apart by sink name.
            raise ConfigError(f"{here}: name: another sink is already named {name!r}")
        _known_keys(table, ("type", "name", *_SINK_KEYS[kind]), here)
        _check_sink(kind, table, here)
        sinks.append(SinkConfig(kind, name, table))
    return sinks


def _check_sink(kind: str, table: Mapping[str, Any], where: str) -> None:
    if "timeout" in table and not (_is_number(table["timeout"]) and 0 < table["timeout"] < math.inf):
        raise ConfigError(
            f"{where}: timeout: expected a positive number of seconds, got {table['timeout']!r}"
        )
    if kind in ("webhook", "slack"):
        _check_url(table, where)
        _check_headers(table.get("headers", {}), where)
    elif kind == "email":
        _check_email(table, where)


def _check_url(table: Mapping[str, Any], where: str) -> None:
    if "url" not in table and "url_env" not in table:
        raise ConfigError(
            f'{where}: url is required (or url_env = "VARIABLE" to read it from the environment)'
        )
    _check_names(table, ("url_env",), where)
    url = table.get("url")
    if url is None:
        return
    # The URL is a secret (a Slack webhook's holds its token): the error does not repeat it.
    if not _is_http_url(url):
        raise ConfigError(f"{where}: url: expected an http:// or https:// URL with a host")


def _is_http_url(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - parsing the port is what checks it (1 to 65535)
    except ValueError:  # "http://[bad", "http://host:99999"
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def _check_headers(headers: Any, where: str) -> None:
    table = _table(headers, f"{where}: headers")
    for key, value in table.items():
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{where}: headers.{key}: expected a non-empty string")
        if key.endswith(ENV_SUFFIX) and key.removesuffix(ENV_SUFFIX) in table:
            raise ConfigError(
                f"{where}: headers: {key.removesuffix(ENV_SUFFIX)} is given both in clear and as {key}; keep one"
            )


def _check_email(table: Mapping[str, Any], where: str) -> None:
    for key in ("host", "from"):
        if not isinstance(table.get(key), str) or not table[key]:
            raise ConfigError(f"{where}: {key}: required, a non-empty string")
    to = table.get("to")
    if isinstance(to, str):
        to = [to]
    if not isinstance(to, list) or not to or not all(isinstance(t, str) and "@" in t for t in to):
        raise ConfigError(f"{where}: to: expected an address or a list of addresses, got {table.get('to')!r}")
    port = table.get("port", 25)
    if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
        raise ConfigError(f"{where}: port: expected a port number from 1 to 65535, got {port!r}")
    for key in ("starttls", "tls"):
        if key in table and not isinstance(table[key], bool):
            raise ConfigError(f"{where}: {key}: expected true or false, got {table[key]!r}")
    if table.get("starttls") and table.get("tls"):
        # One or the other: STARTTLS upgrades a plain connection, tls starts encrypted (port 465).
        raise ConfigError(
            f"{where}: starttls and tls exclude each other (tls for port 465, starttls for 587)"
        )
    _check_names(table, ("username_env", "password_env"), where)
    has_user = "username" in table or "username_env" in table
    has_password = "password" in table or "password_env" in table
    if has_user != has_password:
        # Without both, smtplib would not log in at all, and the server would refuse every alert.
        raise ConfigError(f"{where}: username and password go together (each directly or through *_env)")


def _check_names(table: Mapping[str, Any], keys: Iterable[str], where: str) -> None:
    for key in keys:
        if key in table and (not isinstance(table[key], str) or not table[key]):
            raise ConfigError(
                f"{where}: {key}: expected the name of an environment variable, got {table[key]!r}"
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
