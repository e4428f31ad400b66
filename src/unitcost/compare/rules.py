"""Provider rules that are knowledge, not code: prompt caching and tokenizer ratios (data/*.toml)."""

from __future__ import annotations

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
    provider: str
    tokens_per_char: Decimal
    source: str
    note: str


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
    return {
        str(raw["provider"]): TokenizerFamily(
            str(raw["provider"]), Decimal(str(raw["tokens_per_char"])), str(raw["source"]), str(raw["note"])
        )
        for raw in _load("tokenizers.toml")["family"]
    }


def tokenizer_ratio(source_provider: str, target_provider: str) -> tuple[Decimal, str]:
    """Target tokens per source token for the same text, and where the figure comes from."""
    if source_provider == target_provider:
        return Decimal(1), "same tokenizer family"
    families = tokenizer_families()
    src, dst = families.get(source_provider), families.get(target_provider)
    if src is None or dst is None:
        unknown = source_provider if src is None else target_provider
        return Decimal(1), f"no published tokens-per-character figure for {unknown}: ratio 1 assumed"
    ratio = dst.tokens_per_char / src.tokens_per_char
    return ratio, (
        f"{target_provider} {dst.tokens_per_char} tok/char ({dst.source}) / "
        f"{source_provider} {src.tokens_per_char} tok/char ({src.source})"
    )
