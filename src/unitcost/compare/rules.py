"""Provider rules that are knowledge, not code: prompt caching and tokenizer ratios (data/*.toml)."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from decimal import Decimal
from functools import cache
from importlib import resources
from typing import Any

_TTL_SECONDS = {"5m": 300, "30m": 1800, "1h": 3600}
"""How long an unused prefix stays cached. A rule with a 1h TTL writes at the long-lived write
price; every shorter one (Anthropic's 5 minutes, OpenAI's 30 minutes) at the short-lived one."""


@dataclass(frozen=True)
class CacheRule:
    provider: str
    """Whose published rule this is: Anthropic's for a Claude model, whoever serves it. For a
    `provider_default` rule, also the price-book provider whose models no rule knows by name
    take it (`*`: every provider, the catch-all)."""
    models: tuple[re.Pattern[str], ...]
    """Found (case-insensitively) in a model id: the model takes this rule, whoever serves it."""
    min_prefix_tokens: int
    writes_billed: bool
    ttl: str
    source: str
    note: str
    write_premium_5m: Decimal | None = None
    write_premium_1h: Decimal | None = None
    read_multiplier: Decimal | None = None
    """The published multipliers, for the explanation only: the rates always come from the
    PriceBook (a provider's own cache-read price, e.g. each OpenAI model's cached-input price)."""
    name: str = ""
    """The models the rule is for, as the provider names them (said in the output)."""
    provider_default: bool = False
    """`*` in the data's `models`: also the rule of the provider's models no rule knows by name."""

    def matches_model(self, model: str) -> bool:
        return bool(model) and any(pattern.search(model) for pattern in self.models)

    def applies(self, provider: str, model: str) -> bool:
        """Whether the rule can be this model's: by the model's name, or as the default of the
        provider serving it. `cache_rule_for` tries every rule's names before any default."""
        if self.matches_model(model):
            return True
        return self.provider_default and self.provider in ("*", provider.strip().lower())

    def describe(self) -> str:
        writes = f"writes billed ({self.ttl} TTL)" if self.writes_billed else f"no write fee, ~{self.ttl} TTL"
        scope = f" for {self.name}" if self.name else ""
        return f"{self.provider} rule: prefix >= {self.min_prefix_tokens} tokens{scope}, {writes} [{self.source}]"


@dataclass(frozen=True)
class TokenizerFamily:
    name: str
    tokens_per_char: Decimal | None
    """None: the vendor publishes no figure (a ratio to or from another family is then 1)."""
    source: str
    note: str
    models: tuple[re.Pattern[str], ...] = ()
    """Found (case-insensitively) in a model id: the model is of this family, whoever serves it."""
    providers: tuple[str, ...] = ()
    """The price book's providers whose models are of this family when no family's `models` match."""


@dataclass(frozen=True)
class FamilyMatch:
    """Which tokenizer family a model served by a provider was taken as, and why."""

    provider: str
    model: str
    family: TokenizerFamily | None
    by_model: bool = False

    def describe(self) -> str:
        name = self.model or self.provider or "the recorded model"
        if self.family is None:
            return f"{name}: no known tokenizer family"
        how = "by model name" if self.by_model else f"by provider {self.provider}"
        return f"{name}: {self.family.name} tokenizer ({how})"


def _load(name: str) -> dict[str, Any]:
    text = resources.files("unitcost.compare").joinpath("data", name).read_text(encoding="utf-8")
    return tomllib.loads(text)


def _decimal(raw: object) -> Decimal | None:
    return Decimal(str(raw)) if raw not in (None, "") else None


@cache
def cache_rules() -> tuple[CacheRule, ...]:
    """Every rule, in the data's order: the order model patterns are tried in."""
    rules = []
    for raw in _load("cache_rules.toml")["rule"]:
        ttl = str(raw["ttl"])
        if ttl not in _TTL_SECONDS:
            raise ValueError(f"cache_rules.toml: ttl must be one of {', '.join(_TTL_SECONDS)}, got {ttl!r}")
        models = [str(m) for m in raw["models"]]
        rules.append(
            CacheRule(
                provider=str(raw["provider"]).lower(),
                models=tuple(re.compile(m, re.IGNORECASE) for m in models if m != "*"),
                min_prefix_tokens=int(raw["min_prefix_tokens"]),
                writes_billed=bool(raw["writes_billed"]),
                ttl=ttl,
                source=str(raw["source"]),
                note=str(raw.get("note", "")),
                write_premium_5m=_decimal(raw.get("write_premium_5m")),
                write_premium_1h=_decimal(raw.get("write_premium_1h")),
                read_multiplier=_decimal(raw.get("read_multiplier")),
                name=str(raw.get("name", "")),
                provider_default="*" in models,
            )
        )
    if not rules or rules[-1].models or not rules[-1].provider_default or rules[-1].provider != "*":
        raise ValueError(
            'cache_rules.toml: the last rule must be the catch-all (provider = "*", models = ["*"])'
        )
    return tuple(rules)


@cache
def cache_rule_for(provider: str, model: str) -> CacheRule:
    """The rule of `model` served by `provider`: the model's name decides (Claude on Vertex AI or
    Bedrock follows Anthropic's rule for that Claude model), the provider only when no rule knows
    the name, and the catch-all (last in the data) when no rule knows the provider either."""
    rules = cache_rules()
    by_model = next((r for r in rules if r.matches_model(model)), None)
    return by_model or next(r for r in rules if r.applies(provider, model))


@cache
def tokenizer_families() -> dict[str, TokenizerFamily]:
    """Every family by name, in the data's order (the order model patterns are tried in)."""
    families: dict[str, TokenizerFamily] = {}
    for raw in _load("tokenizers.toml")["family"]:
        name = str(raw["name"])
        if name in families:
            raise ValueError(f"tokenizers.toml: family {name!r} is defined twice")
        families[name] = TokenizerFamily(
            name,
            _decimal(raw.get("tokens_per_char")),
            str(raw["source"]),
            str(raw.get("note", "")),
            tuple(re.compile(str(pattern), re.IGNORECASE) for pattern in raw.get("models", ())),
            tuple(str(p).lower() for p in raw.get("providers", ())),
        )
    return families


@cache
def tokenizer_family(provider: str, model: str) -> FamilyMatch:
    """The family of `model` served by `provider`: the model's name decides (Claude on Vertex AI
    is Anthropic's tokenizer), the provider only when no family knows the name."""
    families = tokenizer_families().values()
    for family in families:
        if model and any(pattern.search(model) for pattern in family.models):
            return FamilyMatch(provider, model, family, by_model=True)
    wanted = provider.strip().lower()
    for family in families:
        if wanted in family.providers:
            return FamilyMatch(provider, model, family)
    return FamilyMatch(provider, model, None)


def family_ratio(src: FamilyMatch, dst: FamilyMatch) -> tuple[Decimal, str]:
    """Target tokens per source token between two families, and where the figure comes from."""
    sides = f"{src.describe()} → {dst.describe()}"
    a, b = src.family, dst.family
    if a is not None and a == b:
        return Decimal(1), f"{sides}; same tokenizer family"
    if a is None or b is None:
        name = (src.model or src.provider) if a is None else (dst.model or dst.provider)
        return Decimal(1), f"{sides}; no tokenizer family known for {name}: ratio 1 assumed"
    if a.tokens_per_char is None or b.tokens_per_char is None:
        unknown = a.name if a.tokens_per_char is None else b.name
        return Decimal(1), (
            f"{sides}; no published tokens-per-character figure for the {unknown} tokenizer: ratio 1 assumed"
        )
    return b.tokens_per_char / a.tokens_per_char, (
        f"{sides}; {b.name} {b.tokens_per_char} tok/char ({b.source}) / "
        f"{a.name} {a.tokens_per_char} tok/char ({a.source})"
    )


def tokenizer_ratio(
    source_provider: str, source_model: str, target_provider: str, target_model: str
) -> tuple[Decimal, str]:
    """Target tokens per source token for the same text, and where the figure comes from
    (naming the family each side was taken as)."""
    return family_ratio(
        tokenizer_family(source_provider, source_model), tokenizer_family(target_provider, target_model)
    )


def ratios_to(target_provider: str, target_model: str) -> frozenset[Decimal]:
    """Every ratio a call of any family (or of none) could be scaled by to reach this target."""
    dst = tokenizer_family(target_provider, target_model)
    sources = [FamilyMatch("", "", f) for f in tokenizer_families().values()] + [FamilyMatch("", "", None)]
    return frozenset(family_ratio(src, dst)[0] for src in sources)
