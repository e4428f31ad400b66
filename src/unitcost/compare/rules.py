"""Provider rules that are knowledge, not code: prompt caching and tokenizer ratios (data/*.toml)."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from decimal import Decimal
from functools import cache
from importlib import resources
from typing import Any

_TTL_SECONDS = {"5m": 300, "1h": 3600}


@dataclass(frozen=True)
class CacheRule:
    provider: str
    models: tuple[str, ...]
    min_prefix_tokens: int
    writes_billed: bool
    ttl: str
    source: str
    note: str
    write_premium_5m: Decimal | None = None
    write_premium_1h: Decimal | None = None
    read_multiplier: Decimal | None = None

    def applies(self, provider: str, model: str) -> bool:
        if self.provider not in ("*", provider):
            return False
        return any(m == "*" or model.startswith(m) for m in self.models)

    def describe(self) -> str:
        writes = f"writes billed ({self.ttl} TTL)" if self.writes_billed else f"no write fee, ~{self.ttl} TTL"
        return f"{self.provider} rule: prefix >= {self.min_prefix_tokens} tokens, {writes} [{self.source}]"


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
    rules = []
    for raw in _load("cache_rules.toml")["rule"]:
        ttl = str(raw["ttl"])
        if ttl not in _TTL_SECONDS:
            raise ValueError(f"cache_rules.toml: ttl must be one of {', '.join(_TTL_SECONDS)}, got {ttl!r}")
        rules.append(
            CacheRule(
                provider=str(raw["provider"]),
                models=tuple(raw["models"]),
                min_prefix_tokens=int(raw["min_prefix_tokens"]),
                writes_billed=bool(raw["writes_billed"]),
                ttl=ttl,
                source=str(raw["source"]),
                note=str(raw.get("note", "")),
                write_premium_5m=_decimal(raw.get("write_premium_5m")),
                write_premium_1h=_decimal(raw.get("write_premium_1h")),
                read_multiplier=_decimal(raw.get("read_multiplier")),
            )
        )
    return tuple(rules)


def cache_rule_for(provider: str, model: str) -> CacheRule:
    """The first rule that applies; the data ends with a catch-all, so there always is one."""
    return next(r for r in cache_rules() if r.applies(provider, model))


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
