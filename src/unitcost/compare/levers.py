"""The cost levers of the source articles, simulated on the recorded workload.

    unitcost levers --since 30d

Each lever transforms the priced lines of the workload (a share moved to another model or
tier, tokens cut, a prefix cached) and the result is priced exactly by the PriceBook. Levers
run one at a time and combined (applied in sequence on the same lines, so their savings do
not double count). Savings are scaled to a 30-day month from the selection's time span.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from decimal import Decimal
from fractions import Fraction
from functools import cache
from importlib import resources
from typing import Any

from ..money import pico_to_usd
from ..pricing.book import PriceBook
from .costing import TOKEN_QUANTITIES, Costed, Line, Pricer, Q, scale, scale_all
from .whatif import CacheAssumption, apply_cache, group_line
from .workload import Workload

DAY_SECONDS = 86400
MONTH_SECONDS = 30 * DAY_SECONDS


@cache
def _data() -> dict[str, Any]:
    text = resources.files("unitcost.compare").joinpath("data", "levers.toml").read_text(encoding="utf-8")
    return tomllib.loads(text)


def default_settings() -> dict[str, str]:
    return {k: str(v["value"]) for k, v in _data()["defaults"].items()}


def light_models() -> dict[str, str]:
    return dict(_data()["light_models"])


# Settings that are not numbers, numbers that may be left empty, and the bounds of the rest
# (every number is at least 0).
_TEXT_SETTINGS = frozenset({"summariser"})
_OPTIONAL_SETTINGS = frozenset({"self_hosted_usd_per_mtok"})
_POSITIVE_SETTINGS = frozenset({"tokens_per_second", "utilisation", "gpus"})
_AT_LEAST_ONE_SETTINGS = frozenset({"prefix_reuse", "summarise_every"})
# Counted in whole calls: 2.5 would be shown as stated but simulated as 2.
_WHOLE_SETTINGS = frozenset({"prefix_reuse"})
_SHARE_SETTINGS = frozenset(
    {
        "model_choice_share",
        "reasoning_cut",
        "prefix_share",
        "batch_share",
        "summarise_cut",
        "summary_output_ratio",
        "structured_output_cut",
        "escalation_rate",
        "self_hosted_share",
        "utilisation",
    }
)


@dataclass
class Settings:
    values: dict[str, str]
    light: dict[str, str]

    @staticmethod
    def build(overrides: Mapping[str, object] | None = None) -> Settings:
        values = default_settings()
        light = light_models()
        for key, raw in (overrides or {}).items():
            if key.startswith("light."):
                light[key.removeprefix("light.")] = str(raw)
                continue
            if key not in values:
                raise ValueError(
                    f"unknown lever setting {key!r}; known: {', '.join(sorted(values))}, light.<provider>"
                )
            values[key] = str(raw)
        settings = Settings(values, light)
        settings.check()
        return settings

    def check(self) -> None:
        """Refuse values no workload could have: a zero that is divided by, a negative price."""
        for key in self.values:
            if key in _TEXT_SETTINGS or (key in _OPTIONAL_SETTINGS and not self.values[key]):
                continue
            value = self.num(key)
            if not value.is_finite():
                raise ValueError(f"lever setting {key} must be a finite number, got {self.values[key]!r}")
            if key in _POSITIVE_SETTINGS and value <= 0:
                raise ValueError(f"lever setting {key} must be above 0, got {value}")
            if key in _AT_LEAST_ONE_SETTINGS and value < 1:
                raise ValueError(f"lever setting {key} must be at least 1, got {value}")
            if key in _WHOLE_SETTINGS and value != value.to_integral_value():
                raise ValueError(f"lever setting {key} must be a whole number, got {value}")
            if value < 0:
                raise ValueError(f"lever setting {key} cannot be negative, got {value}")
            if key in _SHARE_SETTINGS:
                self.share(key)

    def num(self, key: str) -> Decimal:
        try:
            return Decimal(self.values[key])
        except ArithmeticError as exc:
            raise ValueError(f"lever setting {key} must be a number, got {self.values[key]!r}") from exc

    def share(self, key: str) -> Decimal:
        value = self.num(key)
        if not Decimal(0) <= value <= Decimal(1):
            raise ValueError(f"lever setting {key} must be within 0..1, got {value}")
        return value

    def summariser(self) -> tuple[str | None, str]:
        """(provider or None, model) of the summarising model: `openai:gpt-4o-mini` or `gpt-4o-mini`."""
        provider, sep, model = self.values["summariser"].strip().partition(":")
        return (provider.strip() or None, model.strip()) if sep else (None, provider.strip())

    def self_hosted_rate(self) -> Decimal:
        if self.values["self_hosted_usd_per_mtok"]:
            return self.num("self_hosted_usd_per_mtok")
        tokens_per_hour = self.num("tokens_per_second") * 3600 * self.share("utilisation")
        return (self.num("gpu_hour_usd") * self.num("gpus") / (tokens_per_hour / 10**6)).quantize(
            Decimal("0.000001")
        )


@dataclass
class Priced:
    """Lines still priced by the PriceBook plus cost computed outside it (self-hosted)."""

    lines: list[Line]
    extra: Costed


Transform = Callable[[Pricer, Settings, list[Line]], tuple[list[Line], Costed]]


def _split(line: Line, share: Decimal) -> tuple[Line, Line]:
    moved = scale_all(line.quantities, share)
    kept = tuple(q - m for q, m in zip(line.quantities, moved, strict=True))
    moved_calls = scale(line.calls, share)
    return (
        replace(line, quantities=kept, calls=line.calls - moved_calls),
        replace(line, quantities=moved, calls=moved_calls),
    )


def _cheaper(pricer: Pricer, new: list[Line], old: Line) -> bool:
    after = pricer.cost(new)
    return not after.unpriced_calls and after.total < pricer.cost([old]).total


def _light(settings: Settings, pricer: Pricer, line: Line) -> Line | None:
    target = settings.light.get(line.provider)
    if not target or target == line.model:
        return None
    ref = pricer.resolve(line.provider, target)
    return replace(line, provider=ref.provider, model=ref.model)


def model_choice(pricer: Pricer, settings: Settings, lines: list[Line]) -> tuple[list[Line], Costed]:
    out: list[Line] = []
    for line in lines:
        kept, moved = _split(line, settings.share("model_choice_share"))
        light = _light(settings, pricer, moved)
        out += [kept, light] if light is not None and _cheaper(pricer, [light], moved) else [line]
    return out, Costed.zero()


def routing(pricer: Pricer, settings: Settings, lines: list[Line]) -> tuple[list[Line], Costed]:
    out: list[Line] = []
    for line in lines:
        light = _light(settings, pricer, line)
        if light is None:
            out.append(line)
            continue
        _, escalated = _split(line, settings.share("escalation_rate"))
        candidate = [light, escalated]
        out += candidate if _cheaper(pricer, candidate, line) else [line]
    return out, Costed.zero()


def _scaled(lines: list[Line], quantity: str, keep: Decimal) -> tuple[list[Line], Costed]:
    """Every line with one quantity cut to `keep` of itself (reasoning, output, ...)."""
    out = []
    for line in lines:
        q = list(line.quantities)
        q[Q[quantity]] = scale(q[Q[quantity]], keep)
        out.append(line.with_quantities(q))
    return out, Costed.zero()


def reasoning_effort(pricer: Pricer, settings: Settings, lines: list[Line]) -> tuple[list[Line], Costed]:
    return _scaled(lines, "reasoning", 1 - settings.share("reasoning_cut"))


def prompt_caching(pricer: Pricer, settings: Settings, lines: list[Line]) -> tuple[list[Line], Costed]:
    assumption = CacheAssumption(
        "prefix", prefix_share=settings.share("prefix_share"), prefix_reuse=int(settings.num("prefix_reuse"))
    )
    out = []
    for line in lines:
        cached = line.with_quantities(
            apply_cache(assumption, line.quantities, line.provider, line.model, line.min_prompt, set())
        )
        out.append(cached if _cheaper(pricer, [cached], line) else line)
    return out, Costed.zero()


def batch_mode(pricer: Pricer, settings: Settings, lines: list[Line]) -> tuple[list[Line], Costed]:
    out: list[Line] = []
    for line in lines:
        if line.tier != "standard" or not pricer.available(line.provider, line.model, "batch", line.at):
            out.append(line)
            continue
        kept, moved = _split(line, settings.share("batch_share"))
        out += [kept, replace(moved, tier="batch")]
    return out, Costed.zero()


def summarisation(pricer: Pricer, settings: Settings, lines: list[Line]) -> tuple[list[Line], Costed]:
    cut = settings.share("summarise_cut")
    every = settings.num("summarise_every")
    ref = pricer.resolve(*settings.summariser())
    out: list[Line] = []
    for line in lines:
        if line.min_prompt < settings.num("summarise_min_prompt"):
            out.append(line)
            continue
        q = list(line.quantities)
        removed = 0
        for name in ("input_text", "cache_read_text", "cache_write_5m", "cache_write_1h"):
            drop = scale(q[Q[name]], cut)
            q[Q[name]] -= drop
            removed += drop
        shorter = replace(line, quantities=tuple(q), min_prompt=line.min_prompt * (1 - cut))
        summary_q = [0] * len(q)
        summary_q[Q["input_text"]] = scale(removed, 1 / every)
        summary_q[Q["output_text"]] = scale(removed, settings.share("summary_output_ratio") / every)
        summary_q[Q["requests"]] = scale(line.calls, 1 / every)
        summary = Line(ref.provider, ref.model, "standard", line.at, Decimal(0), tuple(summary_q), 0)
        candidate = [shorter, summary]
        out += candidate if _cheaper(pricer, candidate, line) else [line]
    return out, Costed.zero()


def structured_output(pricer: Pricer, settings: Settings, lines: list[Line]) -> tuple[list[Line], Costed]:
    return _scaled(lines, "output_text", 1 - settings.share("structured_output_cut"))


def _hosted_cost(line: Line, rate_pico: int) -> Costed:
    """The line's tokens at a flat self-hosted rate (pico-USD per token), input and output apart."""
    hosted = Costed.zero()
    hosted.calls = line.calls
    for i, amount in enumerate(line.quantities):
        if i in TOKEN_QUANTITIES:
            direction = "input" if i < Q["output_text"] else "output"
            hosted.components[direction] += amount * rate_pico
    return hosted


def self_hosted(pricer: Pricer, settings: Settings, lines: list[Line]) -> tuple[list[Line], Costed]:
    rate_pico = scale(10**6, settings.self_hosted_rate())  # pico-USD per token
    extra = Costed.zero()
    out: list[Line] = []
    for line in lines:
        kept, moved = _split(line, settings.share("self_hosted_share"))
        hosted = _hosted_cost(moved, rate_pico)
        current = pricer.cost([moved])
        # Like every lever, never a move that costs more: a share of gpt-4.1-nano traffic at a
        # $0.93/Mtok GPU profile would add to the bill, not save.
        if line.free or current.unpriced_calls or hosted.total >= current.total:
            out.append(line)
            continue
        out.append(kept)
        extra.add(hosted)
    return out, extra


@dataclass(frozen=True)
class Lever:
    name: str
    transform: Transform
    assumption: Callable[[Settings], str]
    needs: str


def _pct(settings: Settings, key: str) -> str:
    return f"{(settings.num(key) * 100).normalize():f}%"


LEVERS: tuple[Lever, ...] = (
    Lever(
        "model choice",
        model_choice,
        lambda s: (
            f"{_pct(s, 'model_choice_share')} of traffic on the provider's light model "
            f"({', '.join(f'{k}: {v}' for k, v in s.light.items())})"
        ),
        "that share passes your quality bar on the light model (evaluate it per feature)",
    ),
    Lever(
        "reasoning effort",
        reasoning_effort,
        lambda s: f"reasoning tokens -{_pct(s, 'reasoning_cut')}",
        "answers hold at the lower effort; reasoning-heavy features were over-provisioned",
    ),
    Lever(
        "prompt caching",
        prompt_caching,
        lambda s: (
            f"stable prefix = {_pct(s, 'prefix_share')} of each prompt, reused by "
            f"{s.num('prefix_reuse')} calls per TTL, provider minimums and write premiums applied"
        ),
        "prompts start with the stable part (system, tools, documents) and calls repeat within the TTL",
    ),
    Lever(
        "batch mode",
        batch_mode,
        lambda s: (
            f"{_pct(s, 'batch_share')} of standard traffic sent through the batch API where it has a price"
        ),
        "that traffic can wait up to 24 h for its answer",
    ),
    Lever(
        "context summarisation",
        summarisation,
        lambda s: (
            f"prompts >= {s.num('summarise_min_prompt'):,} tokens cut by {_pct(s, 'summarise_cut')}; "
            f"a summary every {s.num('summarise_every')} calls on {s.values['summariser']}"
        ),
        "the summary keeps what later turns need (check answer quality on long conversations)",
    ),
    Lever(
        "structured output",
        structured_output,
        lambda s: f"visible output -{_pct(s, 'structured_output_cut')} with a response schema",
        "consumers read fields, not prose",
    ),
    Lever(
        "light-by-default routing",
        routing,
        lambda s: (
            f"every call tries the light model first; {_pct(s, 'escalation_rate')} escalate and pay both"
        ),
        "a reliable signal decides escalation, and the escalation rate stays at or below the assumption",
    ),
    Lever(
        "self-hosted model",
        self_hosted,
        lambda s: (
            f"{_pct(s, 'self_hosted_share')} of traffic, where it is cheaper than the current model, "
            f"at ${s.self_hosted_rate()}/Mtok (TCO profile: "
            + (
                "set directly"
                if s.values["self_hosted_usd_per_mtok"]
                else f"${s.num('gpu_hour_usd')}/GPU-h x {s.num('gpus')}, {s.num('tokens_per_second'):,} tok/s, "
                f"{_pct(s, 'utilisation')} utilised"
            )
            + ")"
        ),
        "an open model matches quality for that share and the GPUs stay as busy as assumed",
    ),
)
# Model choice and self-hosting are alternatives to routing, not additions to it.
COMBINED = (
    "light-by-default routing",
    "context summarisation",
    "structured output",
    "reasoning effort",
    "prompt caching",
    "batch mode",
)


@dataclass
class LeverResult:
    lever: str
    assumption: str
    cost_after: int
    saving: int
    monthly_saving: Decimal
    share_of_spend: Decimal | None
    needs: str


def _apply(pricer: Pricer, settings: Settings, lines: list[Line], levers: list[Lever]) -> Costed:
    extra = Costed.zero()
    for lever in levers:
        lines, more = lever.transform(pricer, settings, lines)
        extra.add(more)
    total = pricer.cost(lines)
    total.add(extra)
    return total


def scaling_span_seconds(workload: Workload) -> int:
    """The time span savings are scaled to a month from: the selected calls' first to last
    call, and at least one day (a burst of calls an hour long is not extrapolated 720 times)."""
    return max(workload.span_seconds(), DAY_SECONDS)


def _exact(numerator: int, denominator: int) -> Decimal:
    """numerator / denominator to 12 decimal places (half-even): a stable, exact string."""
    return pico_to_usd(round(Fraction(numerator * 10**12, denominator)))


def run_levers(book: PriceBook, workload: Workload, settings: Settings) -> tuple[Costed, list[LeverResult]]:
    pricer = Pricer(book)
    lines = [group_line(g) for g in workload.groups]
    baseline = pricer.cost(lines)
    span = scaling_span_seconds(workload)

    def result(name: str, assumption: str, needs: str, after: Costed) -> LeverResult:
        saving = baseline.total - after.total
        return LeverResult(
            name,
            assumption,
            after.total,
            saving,
            # pico-USD x 30 days / span, rounded to the pico-dollar like every amount
            pico_to_usd(round(Fraction(saving * MONTH_SECONDS, span))),
            _exact(saving, baseline.total) if baseline.total else None,
            needs,
        )

    results = [
        result(lever.name, lever.assumption(settings), lever.needs, _apply(pricer, settings, lines, [lever]))
        for lever in LEVERS
    ]
    chosen = [lever for lever in LEVERS if lever.name in COMBINED]
    combined = _apply(pricer, settings, lines, chosen)
    results.append(
        result(
            "combined",
            " + ".join(COMBINED) + " (applied in that order)",
            "every assumption above at once",
            combined,
        )
    )
    return baseline, results
