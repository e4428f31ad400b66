"""A scope: which slice of spend a budget or a detector setting applies to.

A scope is any combination of team, app, feature, user, customer, model, provider and
tags; an empty scope is the whole organisation. A detector's series can be the events with
no value for a dimension (no team, say): that value is None, reads `(none)` in text and null
in JSON, never "" or "nan".
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

SCOPE_DIMS: tuple[str, ...] = (
    "team",
    "app",
    "feature",
    "user",
    "customer",
    "model",
    "provider",
    "environment",
)

MISSING = "(none)"
"""How a dimension with no value reads in messages and labels."""


@dataclass(frozen=True)
class Scope:
    dims: tuple[tuple[str, str | None], ...] = ()
    tags: tuple[tuple[str, str], ...] = ()

    @classmethod
    def parse(cls, raw: Mapping[str, Any], where: str = "scope") -> Scope:
        dims: list[tuple[str, str | None]] = []
        tags: list[tuple[str, str]] = []
        for key, value in raw.items():
            if key == "tags":
                if not isinstance(value, Mapping):
                    raise ValueError(f"{where}: tags must be a table of name = value")
                tags.extend((str(k), str(v)) for k, v in value.items())
            elif key in SCOPE_DIMS:
                dims.append((key, str(value)))
            elif key != "org":
                raise ValueError(
                    f"{where}: unknown scope key {key!r} (use {', '.join(SCOPE_DIMS)}, tags or org)"
                )
        return cls(tuple(sorted(dims)), tuple(sorted(tags)))

    @classmethod
    def of(cls, **dims: str | None) -> Scope:
        """A scope on the dimensions given a value (None leaves that dimension out)."""
        return cls(tuple(sorted((k, v) for k, v in dims.items() if v is not None)))

    @classmethod
    def series(cls, **dims: str | None) -> Scope:
        """The scope of one series: None is the events that have no value for that dimension."""
        return cls(tuple(sorted(dims.items(), key=lambda item: item[0])))

    @property
    def is_org(self) -> bool:
        return not self.dims and not self.tags

    @property
    def label(self) -> str:
        if self.is_org:
            return "org"
        parts = [f"{k}={show(v)}" for k, v in self.dims] + [f"tags.{k}={v}" for k, v in self.tags]
        return ",".join(parts)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.dims)
        if self.tags:
            out["tags"] = dict(self.tags)
        return out

    def covers(self, other: Scope) -> bool:
        """True when every condition of this scope also holds in `other` (org covers everything)."""
        mine = set(self.dims) | {("tags." + k, v) for k, v in self.tags}
        theirs = set(other.dims) | {("tags." + k, v) for k, v in other.tags}
        return mine <= theirs

    def where(self) -> tuple[str, list[Any]]:
        """A SQL condition on the events table, with its parameters."""
        clauses = ["TRUE"]
        params: list[Any] = []
        for key, value in self.dims:
            if value is None:
                clauses.append(f'"{key}" IS NULL')
                continue
            clauses.append(f'"{key}" = ?')
            params.append(value)
        for key, value in self.tags:
            clauses.append("element_at(tags, ?)[1] = ?")
            params.extend([key, value])
        return " AND ".join(clauses), params


ORG = Scope()


def show(value: str | None) -> str:
    """A dimension's value as text: a missing one reads as missing."""
    return MISSING if value is None else value


@dataclass(frozen=True)
class ScopedValue:
    """A setting with per-scope overrides: the most specific scope that covers the series wins."""

    default: Mapping[str, Any]
    overrides: tuple[tuple[Scope, Mapping[str, Any]], ...] = field(default=())

    def for_scope(self, scope: Scope) -> dict[str, Any]:
        merged = dict(self.default)
        matching = [(s, v) for s, v in self.overrides if s.covers(scope)]
        for _, values in sorted(matching, key=lambda item: len(item[0].dims) + len(item[0].tags)):
            merged.update(values)
        return merged
