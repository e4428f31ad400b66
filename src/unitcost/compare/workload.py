"""The recorded workload, aggregated in SQL into groups that price identically.

A group holds every call of one (priced provider, model, service tier) whose calls fall on
the same side of every *cut*: the start of each price segment (`instants`), the edges of
each time-of-day window (`seconds_of_day`) and each prompt-length threshold
(`prompt_sizes`, compared as `input_tokens > size`). Inside a group every call is priced by
the same rates, so pricing the group's summed quantities once is exact. The cuts come from
the timelines of the recorded models and of every alternative asked for, so one scan of
the ledger serves them all.
"""

from __future__ import annotations

import calendar
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING

import numpy as np

from ..analytics.dialect import Dialect, dialect_for
from ..analytics.report import judged_events_sql, where_sql
from ..analytics.window import Window
from ..events import USAGE_FIELDS
from ..money import usd_to_pico
from ..pricing.book import PriceBook
from ..pricing.genai_layer import ModelRef
from ..pricing.model import PriceError
from ..pricing.quantities import BREAKDOWN_COLUMNS, split_usage

if TYPE_CHECKING:
    from ..ledger.base import Store

ModelKey = tuple[str, str, str]
"""(provider, model, service tier) as the PriceBook knows them."""


@dataclass(frozen=True)
class Cuts:
    instants: frozenset[int] = frozenset()
    seconds_of_day: frozenset[int] = frozenset()
    prompt_sizes: frozenset[int] = frozenset()

    def __or__(self, other: Cuts) -> Cuts:
        return Cuts(
            self.instants | other.instants,
            self.seconds_of_day | other.seconds_of_day,
            self.prompt_sizes | other.prompt_sizes,
        )


Span = tuple[int, int]
"""[start, end) in epoch seconds."""


def timeline_cuts(
    book: PriceBook, provider: str, model: str, tier: str, spans: Sequence[Span] | None = None
) -> Cuts:
    """Every instant, time of day and prompt size at which this model's price can change.

    With `spans`, only what can matter inside them: instants strictly inside a span, and
    the windows and thresholds of the segments that overlap one.
    """
    try:
        timeline = book.timeline(ModelRef(provider, model), tier)
    except PriceError:
        return Cuts()
    instants, sods, sizes = set(), set(), set()
    starts = [None if seg.start is None else int(seg.start.timestamp()) for seg in timeline.segments]
    for index, segment in enumerate(timeline.segments):
        begin = starts[index]
        end = starts[index + 1] if index + 1 < len(starts) else None
        if spans is not None and not any(
            (begin is None or begin < hi) and (end is None or end > lo) for lo, hi in spans
        ):
            continue
        if begin is not None and (spans is None or any(lo < begin < hi for lo, hi in spans)):
            instants.add(begin)
        for option in segment.options:
            if option.window is not None:
                sods |= {option.window.start, option.window.end}
            if option.price is not None:
                try:
                    sizes |= set(book.plan(option.price).thresholds)
                except PriceError:
                    continue
    return Cuts(frozenset(instants), frozenset(sods), frozenset(sizes))


def day_span(at: datetime) -> Span:
    """The UTC day of `at`: where an alternative priced `--at` that date can fall."""
    midnight = int(datetime(at.year, at.month, at.day, tzinfo=UTC).timestamp())
    return midnight, midnight + 86400


def window_span(window: Window) -> Span:
    return int(window.since.timestamp()), int(window.until.timestamp())


@dataclass
class Group:
    provider: str
    model: str
    tier: str
    response_cache_hit: bool
    """Served from unitcost's own response cache: costs nothing whatever the model."""
    calls: int
    requests: int
    first_ts: int
    """Epoch seconds of the group's earliest call: every call of the group prices like it."""
    min_input: int
    """The group's smallest prompt: every call of the group is in its prompt-length tier."""
    usage: dict[str, int]
    recorded: dict[str, int]
    """Recorded cost per breakdown column and `cost`, in pico-USD."""
    of_units: bool = False
    """The group's calls belong to business units (unit_id set)."""
    judged: bool = False
    """A judgement (`unitcost outcomes`) covers the group's calls."""
    quantities: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.quantities:
            arrays = {k: np.asarray([v], dtype=np.int64) for k, v in self.usage.items()}
            self.quantities = [int(x) for x in split_usage(arrays)[:, 0]]


@dataclass
class Workload:
    groups: list[Group]
    window: Window
    where: Sequence[str]
    unpriced: dict[str, int]
    """Calls with no recorded cost, by reason: excluded from every comparison and counted."""
    units: int = 0
    successes: int = 0
    first_ts: int | None = None
    last_ts: int | None = None

    @property
    def calls(self) -> int:
        return sum(g.calls for g in self.groups)

    @property
    def requests(self) -> int:
        return sum(g.requests for g in self.groups)

    @property
    def recorded_cost(self) -> int:
        return sum(g.recorded["cost"] for g in self.groups)

    @property
    def unpriced_calls(self) -> int:
        return sum(self.unpriced.values())

    def models(self) -> list[ModelKey]:
        return sorted({(g.provider, g.model, g.tier) for g in self.groups})

    def span_seconds(self) -> int:
        if self.first_ts is None or self.last_ts is None:
            return 0
        return self.last_ts - self.first_ts


def _seconds(value: datetime) -> int:
    """Whole seconds since the epoch (calls are priced by the second they started in)."""
    aware = value if value.tzinfo else value.replace(tzinfo=UTC)
    return calendar.timegm(aware.utctimetuple())


def epoch_seconds(dialect: Dialect) -> str:
    if dialect.name == "clickhouse":
        return "toUnixTimestamp(ts)"
    return "CAST(epoch_us(ts) // 1000000 AS BIGINT)"


def selection_sql(window: Window, where: Sequence[str], dialect: Dialect) -> str:
    return (
        f"ts >= {dialect.ts_literal(window.since.isoformat())} "
        f"AND ts < {dialect.ts_literal(window.until.isoformat())} AND {where_sql(where, dialect)}"
    )


def _bucket(conditions: Iterable[str]) -> str:
    parts = [f"CAST({c} AS INTEGER)" for c in conditions]
    return " + ".join(parts) if parts else "0"


def load_workload(
    store: Store,
    window: Window,
    where: Sequence[str],
    cuts_for: Callable[[list[ModelKey]], Cuts],
    *,
    with_units: bool = True,
    with_recorded_models: bool = True,
) -> Workload:
    """Aggregate the selected, priced calls into groups that `cuts_for(recorded models)` keeps apart.

    `with_recorded_models=False` skips the scan that lists the recorded models (cuts_for then
    gets an empty list): right when every alternative names its own model, so the recorded
    models' price changes cannot matter (their cost is read from the ledger, not repriced).
    """
    dialect = dialect_for(store.dialect)
    selected = selection_sql(window, where, dialect)
    recorded_models: list[ModelKey] = []
    if with_recorded_models:
        recorded_models = [
            (str(r["p"]), str(r["m"]), str(r["t"]))
            for r in store.fetch(
                "SELECT DISTINCT priced_provider AS p, priced_model AS m, "
                f"COALESCE(service_tier, 'standard') AS t FROM events WHERE {selected} AND cost IS NOT NULL"
            ).to_pylist()
        ]
    cuts = cuts_for(recorded_models)
    lo, hi = window_span(window)
    instants = [t for t in sorted(cuts.instants) if lo < t < hi]
    sods = [s for s in sorted(cuts.seconds_of_day) if 0 < s < 86400]
    # Time cuts compare timestamps directly; seconds since the epoch are computed per call
    # only when a time-of-day window needs them.
    time_bucket = _bucket(f"ts >= {dialect.ts_literal(instant(t).isoformat())}" for t in instants)
    sec = epoch_seconds(dialect)
    sod_bucket = _bucket(f"{sec} % 86400 >= {s}" for s in sods)
    size_bucket = _bucket(f"input_tokens > {z}" for z in sorted(cuts.prompt_sizes))
    usage_sums = ", ".join(f'sum("{f}") AS "{f}"' for f in USAGE_FIELDS)
    cost_sums = ", ".join(f'sum({expr}) AS "{name}"' for name, expr in _SUMMED_COSTS.items())
    needed = ", ".join(
        f'"{c}"'
        for c in (
            "ts",
            "priced_provider",
            "priced_model",
            "service_tier",
            "cache_hit",
            "unit_id",
            *USAGE_FIELDS,
            *COST_COLUMNS,
        )
    )
    # Calls some judgement covers are flagged by id: joining the outcomes in here would bring
    # their own `ts` beside the events' (ambiguous on ClickHouse), and a constant flag cannot
    # be grouped by on ClickHouse (`GROUP BY false` is read as a position).
    judged = "false"
    if with_units and _has_outcomes(store):
        calls = f"SELECT unit, unit_id, trace_id, event_id FROM events WHERE {selected} AND cost IS NOT NULL"
        covered = f"SELECT event_id FROM ({judged_events_sql(calls)}) AS c WHERE jk IS NOT NULL"
        judged = f"event_id IN ({covered})"
    source = (
        f"SELECT {needed}, unit_id IS NOT NULL AS of_units, {judged} AS judged "
        f"FROM events WHERE {selected} AND cost IS NOT NULL"
    )
    sql = (
        # Raw key columns (NULL tier = standard, NULL cache_hit = false, resolved in Python):
        # grouping on the columns themselves is cheaper than on expressions over them.
        "SELECT priced_provider AS p, priced_model AS m, service_tier AS t, cache_hit AS h, "
        f"{time_bucket} AS tb, {sod_bucket} AS sb, {size_bucket} AS zb, "
        # Calls of business units, and calls some judgement covers, apart: cost per unit and per
        # success are their costs over the units and the successes, as in the report.
        "of_units AS u, judged AS j, "
        "count(*) AS calls, sum(requests) AS requests, min(ts) AS first_ts, max(ts) AS last_ts, "
        f"min(input_tokens) AS min_input, {usage_sums}, {cost_sums} "
        f"FROM ({source}) AS selected "
        "GROUP BY p, m, t, h, tb, sb, zb, of_units, judged"
    )
    groups = []
    first: int | None = None
    last: int | None = None
    for row in store.fetch(sql).to_pylist():
        groups.append(
            Group(
                provider=row["p"],
                model=row["m"],
                tier=row["t"] or "standard",
                response_cache_hit=bool(row["h"]),
                calls=int(row["calls"]),
                requests=int(row["requests"] or 0),
                first_ts=_seconds(row["first_ts"]),
                min_input=int(row["min_input"] or 0),
                usage={f: int(row[f] or 0) for f in USAGE_FIELDS},
                recorded=_recorded(row),
                of_units=bool(row["u"]),
                judged=bool(row["j"]),
            )
        )
        first = _seconds(row["first_ts"]) if first is None else min(first, _seconds(row["first_ts"]))
        last = _seconds(row["last_ts"]) if last is None else max(last, _seconds(row["last_ts"]))
    unpriced = {
        str(r["reason"] or "no price"): int(r["n"])
        for r in store.fetch(
            "SELECT unpriced_reason AS reason, count(*) AS n FROM events "
            f"WHERE {selected} AND cost IS NULL GROUP BY 1 ORDER BY 2 DESC"
        ).to_pylist()
    }
    workload = Workload(groups, window, list(where), unpriced, first_ts=first, last_ts=last)
    if with_units:
        workload.units, workload.successes = unit_counts(store, window, where)
    return workload


# The two cache-write columns are summed as one: what-ifs show cache writes as one component.
COST_COLUMNS = ("cost", *BREAKDOWN_COLUMNS)
_SUMMED_COSTS = {
    **{c: f'"{c}"' for c in COST_COLUMNS if not c.startswith("cost_cache_write")},
    "cost_cache_write": '"cost_cache_write_5m" + "cost_cache_write_1h"',
}


def _recorded(row: dict[str, object]) -> dict[str, int]:
    out = {c: usd_to_pico(row[c] or Decimal(0)) for c in _SUMMED_COSTS}  # type: ignore[arg-type]
    out["cost_cache_write_5m"] = out.pop("cost_cache_write")
    out["cost_cache_write_1h"] = 0
    return out


def unit_counts(store: Store, window: Window, where: Sequence[str]) -> tuple[int, int]:
    """Business units, and successful judgements, among the selected priced calls.

    Same rule as `unitcost report`: a unit is (unit, unit_id); each call counts toward its
    unit's judgement, else its trace's, else its own (`judged_events_sql`), and a judgement
    is a success when it says so.
    """
    dialect = dialect_for(store.dialect)
    selected = f"{selection_sql(window, where, dialect)} AND cost IS NOT NULL"
    row = store.fetch(
        "SELECT count(*) AS units FROM (SELECT unit, unit_id FROM events "
        f"WHERE {selected} AND unit_id IS NOT NULL GROUP BY unit, unit_id) AS p"
    ).to_pylist()[0]
    units = int(row["units"] or 0)
    if not _has_outcomes(store):
        return units, 0
    calls = f"SELECT unit, unit_id, trace_id, event_id FROM events WHERE {selected}"
    per_judgement = (
        "SELECT max(CASE WHEN js THEN 1 ELSE 0 END) AS ok "
        f"FROM ({judged_events_sql(calls)}) AS e WHERE jk IS NOT NULL GROUP BY jk, ju, jid"
    )
    row = store.fetch(f"SELECT sum(ok) AS successes FROM ({per_judgement}) AS p").to_pylist()[0]
    return units, int(row["successes"] or 0)


def _has_outcomes(store: Store) -> bool:
    return bool(
        store.fetch("SELECT count(*) AS n FROM (SELECT 1 FROM outcomes LIMIT 1) AS o").to_pylist()[0]["n"]
    )


def instant(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)
