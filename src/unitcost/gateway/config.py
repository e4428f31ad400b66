"""The `[gateway]` section of unitcost.toml as typed, validated objects.

Secrets never live in the file: an upstream names the environment variable holding its key
(`api_key_env`), and virtual keys are stored as SHA-256 hashes.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ..config import Config, ConfigError
from .cache import CACHE_SCOPES, CacheScope

ProviderKind = Literal["openai", "anthropic"]
BudgetAction = Literal["alert", "downgrade", "block"]
BudgetPeriod = Literal["day", "week", "month", "total"]
UnpricedPolicy = Literal["block", "allow"]
BUDGET_SCOPES = ("global", "key", "team", "user", "app", "feature", "customer", "trace", "session")
REASONING_EFFORTS = ("minimal", "low", "medium", "high")


@dataclass(frozen=True)
class Upstream:
    name: str
    kind: ProviderKind
    base_url: str
    api_key_env: str | None
    provider: str
    """Provider id for pricing (genai-prices ids: openai, anthropic, deepseek, ...)."""
    models: tuple[str, ...] = ()
    """Model names served as-is by this upstream (besides the aliases in [gateway.models])."""
    timeout_s: float = 600.0
    anthropic_version: str = "2023-06-01"

    def api_key(self) -> str | None:
        return os.environ.get(self.api_key_env) if self.api_key_env else None


@dataclass(frozen=True)
class ModelTarget:
    """Where a public model name goes: an upstream and the model name it knows."""

    public: str
    upstream: str
    model: str
    fallbacks: tuple[str, ...] = ()
    """Public model names tried, in order, when this one fails after its retries."""


@dataclass(frozen=True)
class Route:
    """A public model name that picks a light model by default and escalates to a strong one."""

    name: str
    light: str
    strong: str
    mode: Literal["rules", "cascade"] = "rules"
    max_prompt_tokens: int | None = None
    """Escalate when the prompt has more tokens than this."""
    escalate_on_tools: bool = False
    keywords: tuple[str, ...] = ()
    scorer: str | None = None
    """`module:function` taking the request body and returning True to escalate."""
    check_json_schema: Mapping[str, Any] | None = None
    check_regex: str | None = None
    check_callable: str | None = None
    """`module:function(text) -> bool`: cascade answers that fail it are escalated."""
    max_tokens_cap: int | None = None
    reasoning_effort_cap: str | None = None


def model_pattern(patterns: tuple[str, ...]) -> re.Pattern[str]:
    """One regular expression for a list of model names and globs: `*` stands for any run of
    characters (none included); every other character, `?` and `[` among them, is itself."""
    alternatives = (".*".join(re.escape(part) for part in pattern.split("*")) for pattern in patterns)
    return re.compile("|".join(f"(?:{alternative})" for alternative in alternatives))


@dataclass(frozen=True)
class VirtualKey:
    name: str
    sha256: str
    team: str | None = None
    user: str | None = None
    app: str | None = None
    environment: str | None = None
    models: tuple[str, ...] | None = None
    """The model names the key may call (exact names and `*` globs), matched against the name
    the client asks for: a model, an alias of [gateway.models] or a route. None: every model."""
    team_models: tuple[str, ...] | None = None
    """The `models` of the key's team ([gateway.teams.<team>]), copied in when the
    configuration is loaded, matched like `models`. None: the team limits nothing."""

    @functools.cached_property
    def _allowed(self) -> re.Pattern[str] | None:
        return None if self.models is None else model_pattern(self.models)

    @functools.cached_property
    def _team_allowed(self) -> re.Pattern[str] | None:
        return None if self.team_models is None else model_pattern(self.team_models)

    def refused_by(self, model: str) -> Literal["key", "team"] | None:
        """Which list refuses the public model name `model`: the key's own ("key", looked at
        first), its team's ("team"), or None when both allow it (a missing list allows all)."""
        allowed, team_allowed = self._allowed, self._team_allowed
        if allowed is not None and allowed.fullmatch(model) is None:
            return "key"
        if team_allowed is not None and team_allowed.fullmatch(model) is None:
            return "team"
        return None

    def allows(self, model: str) -> bool:
        """Whether the key may call the public model name `model`: its own list and its
        team's list (each when there is one) both match it."""
        return self.refused_by(model) is None


@dataclass(frozen=True)
class Team:
    """[gateway.teams.<name>]: settings of every key whose `team` is `name`."""

    name: str
    models: tuple[str, ...] | None = None
    """The model names the team's keys may call, besides what each key's own `models` allows:
    a call needs both lists (each when there is one) to match. None: every model."""


@dataclass(frozen=True)
class Budget:
    name: str
    scope: str
    """global, key, team, user, app, feature, customer, trace, session, or tag:<name>."""
    limit_usd: Decimal | None
    period: BudgetPeriod
    action: BudgetAction = "block"
    match: str | None = None
    """Only this value of the scope (e.g. team "search"); None: one budget per value."""
    max_calls: int | None = None
    downgrade_to: str | None = None
    timezone: ZoneInfo = field(default_factory=lambda: ZoneInfo("UTC"))
    alert_at: Decimal = Decimal("0.85")
    unpriced: UnpricedPolicy = "block"
    """A model without a price cannot be counted against limit_usd: "block" refuses it on this
    budget (when it blocks or downgrades), "allow" lets it through, counted by max_calls only."""

    @functools.cached_property
    def limit_nano(self) -> int:
        """The limit in integer nano-USD, -1 for none (read on every request: computed once)."""
        return -1 if self.limit_usd is None else int(self.limit_usd * 10**9)


@dataclass(frozen=True)
class GatewayConfig:
    upstreams: Mapping[str, Upstream]
    models: Mapping[str, ModelTarget]
    routes: Mapping[str, Route] = field(default_factory=dict)
    keys: tuple[VirtualKey, ...] = ()
    teams: Mapping[str, Team] = field(default_factory=dict)
    budgets: tuple[Budget, ...] = ()
    host: str = "127.0.0.1"
    port: int = 4000
    require_key: bool = True
    spool_dir: str = "unitcost-spool"
    fsync_interval_ms: float = 20.0
    max_body_bytes: int = 4 * 1024 * 1024
    default_max_tokens: int = 4096
    """Output cap assumed for the worst-case reservation when a request sets none."""
    retries: int = 2
    backoff_base_s: float = 0.25
    backoff_max_s: float = 8.0
    cache_enabled: bool = False
    cache_backend: Literal["memory", "redis"] = "memory"
    cache_ttl_s: int = 3600
    cache_max_entries: int = 10_000
    cache_scope: CacheScope = "key"
    """Who shares cached answers: each virtual key its own ("key"), a key's team ("team"), or
    every client of the gateway ("global")."""
    redis_url: str | None = None
    redis_prefix: str = "unitcost:"
    redis_fail_open: bool = False
    """When Redis cannot be reached: False refuses requests under a budget (503), True lets
    them through unguarded and adds their cost to the counters once Redis is back."""
    redis_lease_s: float = 60.0
    """How long a reservation outlives a replica that stopped renewing it (crash, kill -9)."""
    redis_timeout_s: float = 5.0
    """Connect and read timeout of every Redis call: the budget state's, and the response
    cache's (which gives up after at most RedisCache.TIMEOUT_S, a miss being cheap)."""
    watch: bool = False
    """Run the watch loop (budgets, detectors, alerts; [watch]) in the ledger writer process:
    with a DuckDB ledger that process is its only writer, so a `unitcost watch` beside the
    gateway cannot open it."""
    store_bodies: bool = False
    environment: str | None = None
    metrics_enabled: bool = True
    """Serve Prometheus `GET /metrics` on the gateway's own port ([gateway.metrics] enabled)."""
    metrics_token_env: str | None = None
    """The environment variable holding the bearer token /metrics requires (None: no token)."""

    def target(self, public: str) -> ModelTarget | None:
        found = self.models.get(public)
        return found if found is not None else self._served_as_is.get(public)

    @functools.cached_property
    def _served_as_is(self) -> dict[str, ModelTarget]:
        """Models listed by an upstream, each at the first upstream that lists it."""
        found: dict[str, ModelTarget] = {}
        for upstream in self.upstreams.values():
            for name in upstream.models:
                found.setdefault(name, ModelTarget(name, upstream.name, name))
        return found

    def public_models(self) -> list[str]:
        names = dict.fromkeys([*self.models, *self.routes])
        for upstream in self.upstreams.values():
            names.update(dict.fromkeys(upstream.models))
        return list(names)


def _err(where: str, message: str) -> ConfigError:
    return ConfigError(f"[{where}] {message}")


def _decimal(value: Any, where: str) -> Decimal:
    try:
        result = Decimal(str(value))
    except InvalidOperation as exc:
        raise _err(where, f"{value!r} is not an amount") from exc
    if not result.is_finite() or result < 0:
        raise _err(where, f"{value!r} must be a non-negative amount")
    return result


def _table(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise _err(where, "must be a table")
    return value


def _strings(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _err(where, "must be a list of strings")
    return tuple(value)


def _upstream(name: str, raw: Mapping[str, Any]) -> Upstream:
    where = f"gateway.upstreams.{name}"
    kind = raw.get("kind", "openai")
    if kind not in ("openai", "anthropic"):
        raise _err(where, f"kind must be 'openai' or 'anthropic', not {kind!r}")
    base_url = _base_url(raw.get("base_url"), where)
    if "api_key" in raw:
        raise _err(
            where, "keys are never written in the file: set api_key_env to an environment variable name"
        )
    return Upstream(
        name=name,
        kind=kind,
        base_url=base_url.rstrip("/"),
        api_key_env=raw.get("api_key_env"),
        provider=str(raw.get("provider", kind)),
        models=_strings(raw.get("models"), where),
        timeout_s=float(raw.get("timeout_s", 600.0)),
        anthropic_version=str(raw.get("anthropic_version", "2023-06-01")),
    )


def _base_url(value: Any, where: str) -> str:
    """An http(s) URL the endpoint paths are appended to. Credentials in it are refused, and
    never quoted back: they would travel with every request's URL into client libraries'
    logs and errors, where a key named by api_key_env never goes."""
    if not isinstance(value, str) or not value.startswith(("http://", "https://")):
        raise _err(where, "base_url must be an http(s) URL")
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - parsing the port is what checks it
    except ValueError as exc:
        raise _err(where, f"base_url is not a valid URL ({exc})") from None
    if parts.username is not None or parts.password is not None:
        raise _err(
            where,
            "base_url has credentials in it (user:password@host): remove them, and put the "
            "upstream's key in an environment variable named by api_key_env",
        )
    if parts.query or parts.fragment:
        raise _err(
            where,
            "base_url must not have a query string or fragment (?... or #...): the gateway "
            "appends the endpoint path to it, and a key belongs in the variable named by api_key_env",
        )
    if not parts.hostname:
        raise _err(where, "base_url has no host")
    return value


_CACHE_SETTINGS = ("enabled", "backend", "ttl_s", "max_entries", "scope")


def _cache_settings(raw: Mapping[str, Any]) -> dict[str, Any]:
    """[gateway.cache], checked: a misspelt setting or backend would otherwise be ignored
    and leave the cache running other than the file says."""
    where = "gateway.cache"
    unknown = sorted(set(raw) - set(_CACHE_SETTINGS))
    if unknown:
        raise _err(where, f"unknown setting {unknown[0]!r} (known: {', '.join(_CACHE_SETTINGS)})")
    enabled = raw.get("enabled", False)
    if not isinstance(enabled, bool):
        raise _err(where, f"enabled must be true or false, not {enabled!r}")
    backend = raw.get("backend", "memory")
    if backend not in ("memory", "redis"):
        raise _err(where, f"backend must be 'memory' or 'redis', not {backend!r}")
    scope = raw.get("scope", "key")
    if scope not in CACHE_SCOPES:
        raise _err(where, f"scope must be one of {', '.join(CACHE_SCOPES)}, not {scope!r}")
    return {
        "cache_enabled": enabled,
        "cache_backend": backend,
        "cache_ttl_s": _whole(raw.get("ttl_s", 3600), where, "ttl_s"),
        "cache_max_entries": _whole(raw.get("max_entries", 10_000), where, "max_entries"),
        "cache_scope": scope,
    }


_METRICS_SETTINGS = ("enabled", "bearer_token_env")


def _metrics_settings(raw: Mapping[str, Any]) -> dict[str, Any]:
    """[gateway.metrics], checked like [gateway.cache]: a misspelt bearer_token_env would
    otherwise leave /metrics open while the file says it is protected."""
    where = "gateway.metrics"
    unknown = sorted(set(raw) - set(_METRICS_SETTINGS))
    if unknown:
        raise _err(where, f"unknown setting {unknown[0]!r} (known: {', '.join(_METRICS_SETTINGS)})")
    enabled = raw.get("enabled", True)
    if not isinstance(enabled, bool):
        raise _err(where, f"enabled must be true or false, not {enabled!r}")
    token_env = raw.get("bearer_token_env")
    if token_env is not None and (not isinstance(token_env, str) or not token_env.strip()):
        raise _err(where, "bearer_token_env must be the NAME of an environment variable")
    return {"metrics_enabled": enabled, "metrics_token_env": token_env}


def _whole(value: Any, where: str, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise _err(where, f"{name} must be a positive whole number, not {value!r}")
    return value


_KEY_SETTINGS = ("name", "sha256", "team", "user", "app", "environment", "models")
_TEAM_SETTINGS = ("models",)


def _key_models(value: Any, where: str) -> tuple[str, ...]:
    """A key's or a team's `models`: a non-empty list of names and `*` globs. An empty list is
    refused rather than read as "every model" (LiteLLM) or "no model": leave `models` out for
    every model."""
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v.strip() for v in value):
        raise _err(
            where,
            "models must be a non-empty list of model names or patterns such as 'gpt-4o-mini*' "
            "(leave models out to allow every model)",
        )
    return tuple(v.strip() for v in value)


def check_models(value: Any, config: GatewayConfig, where: str) -> tuple[str, ...]:
    """A `models` list checked as the loader checks a key's or a team's: a non-empty list of
    names and `*` globs, each matching at least one model, alias or route of `config` (a typo
    would lock the key out of the model it was meant to have). Returns the patterns as read."""
    patterns = _key_models(value, where)
    names = config.public_models()
    for pattern in patterns:
        if not any(model_pattern((pattern,)).fullmatch(name) for name in names):
            raise _err(
                where,
                f"models: {pattern!r} matches none of the gateway's models, aliases and routes "
                f"({', '.join(names[:20])}{', ...' if len(names) > 20 else ''})",
            )
    return patterns


def check_key_in_team(key: VirtualKey, config: GatewayConfig, where: str) -> None:
    """Refuse a key whose own `models` and its team's `models` have no model in common: every
    call with it would be refused, which no one writing both lists means."""
    if key.models is None or key.team_models is None:
        return
    if not any(key.allows(name) for name in config.public_models()):
        raise _err(
            where,
            f"models: no model of the gateway matches both this key's models "
            f"({', '.join(key.models)}) and those of its team {key.team!r} "
            f"({', '.join(key.team_models)}), so the key could call nothing",
        )


def _teams(raw: Any, keys: list[VirtualKey]) -> dict[str, Team]:
    """[gateway.teams.<name>], each checked like a key: an unknown setting (a misspelt `models`
    would leave the team's keys allowed every model) and a team no key names (a misspelt team
    name would bind no key) are refused."""
    named = sorted({key.team for key in keys if key.team})
    teams: dict[str, Team] = {}
    for name, value in _table(raw, "gateway.teams").items():
        where = f"gateway.teams.{name}"
        entry = _table(value, where)
        unknown = sorted(set(entry) - set(_TEAM_SETTINGS))
        if unknown:
            raise _err(where, f"unknown setting {unknown[0]!r} (known: {', '.join(_TEAM_SETTINGS)})")
        if name not in named:
            raise _err(
                where,
                f"no [[gateway.keys]] entry has team = {name!r}, so these settings would bind no key "
                f"(the keys' teams: {', '.join(named) or 'none'})",
            )
        teams[name] = Team(name, _key_models(entry["models"], where) if "models" in entry else None)
    return teams


def _budget(raw: Mapping[str, Any], index: int) -> Budget:
    where = f"gateway.budgets #{index + 1}"
    name = raw.get("name") or f"budget-{index + 1}"
    scope = str(raw.get("scope", "global"))
    if scope not in BUDGET_SCOPES and not scope.startswith("tag:"):
        raise _err(where, f"scope {scope!r} is not one of {', '.join(BUDGET_SCOPES)} or tag:<name>")
    period = raw.get("period", "total" if scope in ("trace", "session") else "month")
    if period not in ("day", "week", "month", "total"):
        raise _err(where, f"period must be day, week, month or total, not {period!r}")
    action = raw.get("action", "block")
    if action not in ("alert", "downgrade", "block"):
        raise _err(where, f"action must be alert, downgrade or block, not {action!r}")
    if action == "downgrade" and not raw.get("downgrade_to"):
        raise _err(where, "action 'downgrade' needs downgrade_to (a model name)")
    limit = raw.get("limit_usd")
    max_calls = raw.get("max_calls")
    if limit is None and max_calls is None:
        raise _err(where, "needs limit_usd, max_calls or both")
    try:
        tz = ZoneInfo(str(raw.get("timezone", "UTC")))
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise _err(where, f"unknown time zone {raw.get('timezone')!r}") from exc
    unpriced = raw.get("unpriced", "block")
    if unpriced not in ("block", "allow"):
        raise _err(where, f"unpriced must be block or allow, not {unpriced!r}")
    return Budget(
        name=str(name),
        scope=scope,
        limit_usd=_decimal(limit, where) if limit is not None else None,
        period=period,
        action=action,
        match=raw.get("match"),
        max_calls=int(max_calls) if max_calls is not None else None,
        downgrade_to=raw.get("downgrade_to"),
        timezone=tz,
        alert_at=_decimal(raw.get("alert_at", "0.85"), where),
        unpriced=unpriced,
    )


def _redis_fail_open(value: Any) -> bool:
    if not isinstance(value, bool):
        raise _err("gateway.redis", f"fail_open must be true or false, not {value!r}")
    return value


def _positive(value: Any, where: str, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise _err(where, f"{name} must be a positive number of seconds, not {value!r}")
    return float(value)


def _route(name: str, raw: Mapping[str, Any]) -> Route:
    where = f"gateway.routes.{name}"
    if "light" not in raw or "strong" not in raw:
        raise _err(where, "needs light and strong model names")
    mode = raw.get("mode", "rules")
    if mode not in ("rules", "cascade"):
        raise _err(where, f"mode must be 'rules' or 'cascade', not {mode!r}")
    check = _table(raw.get("check", {}), where + ".check")
    effort = raw.get("reasoning_effort_cap")
    if effort is not None and effort not in REASONING_EFFORTS:
        raise _err(where, f"reasoning_effort_cap must be one of {', '.join(REASONING_EFFORTS)}")
    if mode == "cascade" and not check:
        raise _err(where, "cascade mode needs a [check] with json_schema, regex or callable")
    return Route(
        name=name,
        light=str(raw["light"]),
        strong=str(raw["strong"]),
        mode=mode,
        max_prompt_tokens=raw.get("max_prompt_tokens"),
        escalate_on_tools=bool(raw.get("escalate_on_tools", False)),
        keywords=_strings(raw.get("keywords"), where),
        scorer=raw.get("scorer"),
        check_json_schema=check.get("json_schema"),
        check_regex=check.get("regex"),
        check_callable=check.get("callable"),
        max_tokens_cap=raw.get("max_tokens_cap"),
        reasoning_effort_cap=effort,
    )


def parse_gateway(section: Mapping[str, Any]) -> GatewayConfig:
    """Build the gateway configuration from the `[gateway]` table; every problem names where it is."""
    upstreams = {
        name: _upstream(name, _table(raw, f"gateway.upstreams.{name}"))
        for name, raw in _table(section.get("upstreams", {}), "gateway.upstreams").items()
    }
    if not upstreams:
        raise _err("gateway", "declare at least one upstream in [gateway.upstreams.<name>]")
    models: dict[str, ModelTarget] = {}
    for public, raw in _table(section.get("models", {}), "gateway.models").items():
        entry = _table(raw, f"gateway.models.{public}")
        upstream = entry.get("upstream")
        if upstream not in upstreams:
            raise _err(f"gateway.models.{public}", f"upstream {upstream!r} is not declared")
        models[public] = ModelTarget(
            public, upstream, str(entry.get("model", public)), _strings(entry.get("fallbacks"), public)
        )
    routes = {
        name: _route(name, _table(raw, f"gateway.routes.{name}"))
        for name, raw in _table(section.get("routes", {}), "gateway.routes").items()
    }
    keys = []
    for i, raw in enumerate(section.get("keys", [])):
        where = f"gateway.keys #{i + 1}"
        entry = _table(raw, where)
        unknown = sorted(set(entry) - set(_KEY_SETTINGS))
        if unknown:
            # A misspelt `models` would leave the key allowed every model while the file
            # says otherwise: refused, as in [gateway.cache].
            raise _err(where, f"unknown setting {unknown[0]!r} (known: {', '.join(_KEY_SETTINGS)})")
        digest = str(entry.get("sha256", "")).removeprefix("sha256:").lower()
        if len(digest) != 64:
            raise _err(where, "sha256 must be the hex SHA-256 of the key (unitcost gateway-key)")
        keys.append(
            VirtualKey(
                name=str(entry.get("name", f"key-{i + 1}")),
                sha256=digest,
                team=entry.get("team"),
                user=entry.get("user"),
                app=entry.get("app"),
                environment=entry.get("environment"),
                models=_key_models(entry.get("models", None), where) if "models" in entry else None,
            )
        )
    teams = _teams(section.get("teams", {}), keys)
    keys = [
        dataclasses.replace(key, team_models=teams[key.team].models) if key.team in teams else key
        for key in keys
    ]
    budgets = tuple(
        _budget(_table(raw, "gateway.budgets"), i) for i, raw in enumerate(section.get("budgets", []))
    )
    cache = _table(section.get("cache", {}), "gateway.cache")
    redis = _table(section.get("redis", {}), "gateway.redis")
    metrics = _table(section.get("metrics", {}), "gateway.metrics")
    config = GatewayConfig(
        upstreams=upstreams,
        models=models,
        routes=routes,
        keys=tuple(keys),
        teams=teams,
        budgets=budgets,
        host=str(section.get("host", "127.0.0.1")),
        port=int(section.get("port", 4000)),
        require_key=bool(section.get("require_key", bool(keys))),
        spool_dir=str(section.get("spool_dir", "unitcost-spool")),
        fsync_interval_ms=float(section.get("fsync_interval_ms", 20.0)),
        max_body_bytes=int(section.get("max_body_bytes", 4 * 1024 * 1024)),
        default_max_tokens=int(section.get("default_max_tokens", 4096)),
        retries=int(section.get("retries", 2)),
        backoff_base_s=float(section.get("backoff_base_s", 0.25)),
        backoff_max_s=float(section.get("backoff_max_s", 8.0)),
        **_cache_settings(cache),
        redis_url=redis.get("url"),
        redis_prefix=str(redis.get("prefix", "unitcost:")),
        redis_fail_open=_redis_fail_open(redis.get("fail_open", False)),
        redis_lease_s=_positive(redis.get("lease_s", 60.0), "gateway.redis", "lease_s"),
        redis_timeout_s=_positive(redis.get("timeout_s", 5.0), "gateway.redis", "timeout_s"),
        store_bodies=bool(section.get("store_bodies", False)),
        watch=bool(section.get("watch", False)),
        environment=section.get("environment"),
        **_metrics_settings(metrics),
    )
    if config.cache_backend == "redis" and not config.redis_url:
        raise _err("gateway.cache", "backend 'redis' needs [gateway.redis] url")
    for route in routes.values():
        for model in (route.light, route.strong):
            if config.target(model) is None:
                raise _err(f"gateway.routes.{route.name}", f"model {model!r} is not declared")
    for i, key in enumerate(config.keys):
        if key.models is not None:
            check_models(list(key.models), config, f"gateway.keys #{i + 1}")
    for team in teams.values():
        if team.models is not None:
            check_models(list(team.models), config, f"gateway.teams.{team.name}")
    for i, key in enumerate(config.keys):
        check_key_in_team(key, config, f"gateway.keys #{i + 1}")
    for budget in budgets:
        if budget.downgrade_to and config.target(budget.downgrade_to) is None:
            raise _err(
                f"gateway.budgets {budget.name}", f"downgrade_to {budget.downgrade_to!r} is not declared"
            )
    return config


def load_gateway(config: Config) -> GatewayConfig:
    section = config.section("gateway")
    if not section:
        raise ConfigError(f"{config.path or 'no config file'}: no [gateway] section (see docs/gateway.md)")
    spool = section.get("spool_dir")
    if spool and config.path is not None and not os.path.isabs(str(spool)):
        section = {**section, "spool_dir": str(config.path.parent / str(spool))}
    return parse_gateway(section)
