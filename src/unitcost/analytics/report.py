"""Where the money goes: the report behind `unitcost report` and `Ledger.report()`.

A few grouped queries (GROUPING SETS) answer every section: the headline, the table by the
chosen dimensions, the spend per period, the business units, and the unpriced calls. The
engine sums exact decimals and counts; ratios are derived afterwards in Python from those
exact sums, so a cost per request is an exact division rounded only for display. Latency
percentiles come from log-bucket histograms (`latency`), within 1 % of the exact ones.

On the DuckDB ledger the sums are read from hourly rollups (`ledger.report_rollups`) when
they keep every dimension the report needs, merged with partial sums of the events they do
not hold: the same numbers as reading every event, from thousands of rows instead of
millions.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal, localcontext
from itertools import pairwise
from typing import TYPE_CHECKING, Any

from ..ledger import report_rollups as rollups
from ..utc import as_utc
from .dialect import Dialect, dialect_for
from .latency import bucket_sql, percentile
from .measures import MEASURE_BY_NAME, MEASURES, ROLLUP_DIMS
from .window import Window

if TYPE_CHECKING:
    import pyarrow as pa

    from ..ledger.base import Store

STRING_DIMENSIONS: tuple[str, ...] = (
    "provider",
    "model",
    "served_model",
    "priced_model",
    "operation",
    "service_tier",
    "status",
    "team",
    "app",
    "feature",
    "user",
    "customer",
    "environment",
    "unit",
    "unit_id",
    "trace_id",
    "session_id",
    "source",
    "priced_provider",
    "unpriced_reason",
    "price_ref",
)
PERIODS = ("hour", "day", "week", "month")
MONEY_PLACES = Decimal("1e-12")


class ReportError(ValueError):
    pass


def dimension_sql(name: str, dialect: Dialect) -> tuple[str, str]:
    """(SQL expression, column label) for a dimension: an event column or `tag:<name>`."""
    name = name.strip()
    if name in STRING_DIMENSIONS:
        return f'"{name}"', name
    for prefix in ("tag:", "tags.", "tag."):
        if name.startswith(prefix) and len(name) > len(prefix):
            key = name[len(prefix) :]
            # An empty tag value is no value: one bucket with the calls that lack the tag (as
            # ClickHouse, whose maps answer '' for a missing key, groups them), not two.
            expr = dialect.tag(key)
            return (expr if dialect.name == "clickhouse" else f"nullif({expr}, '')"), f"tag:{key}"
    raise ReportError(f"unknown dimension {name!r}; use one of {', '.join(STRING_DIMENSIONS)} or tag:<name>")


def _parse_filter(text: str) -> tuple[str, bool, list[str]]:
    """(dimension, negated, values) of `dimension=v1,v2` or `dimension!=v1,v2`.

    The operator is the first `=` (or the `!=` it ends): dimension names hold no `=`, while
    values may hold anything, `=` and `!=` included. A comma separates values (any of
    them matches); `\\,` is a comma inside a value and `\\\\` a backslash."""
    equals = text.find("=")
    negate = equals > 0 and text[equals - 1] == "!"
    left = text[: equals - 1 if negate else max(equals, 0)].strip()
    if equals < 0 or not left:
        raise ReportError(f"a filter is dimension=value or dimension!=value, got {text!r}")
    return left, negate, _split_values(text[equals + 1 :])


def _split_values(text: str) -> list[str]:
    values, current, chars = [], [], iter(text)
    for char in chars:
        if char == "\\":
            following = next(chars, "")
            # Only a comma or a backslash is escaped: `C:\\temp` keeps its backslash.
            current.append(following if following in (",", "\\") else char + following)
        elif char == ",":
            values.append("".join(current).strip())
            current = []
        else:
            current.append(char)
    values.append("".join(current).strip())
    return values


def where_sql(filters: Sequence[str] | str, dialect: Dialect) -> str:
    """`team=search`, `model!=gpt-4o`, `tag:region=eu,us` (comma = any of), `customer=` (no
    customer) as SQL conditions.
    One string is one filter: iterating it would make a filter of each character."""
    clauses = []
    for text in [filters] if isinstance(filters, str) else filters:
        left, negate, values = _parse_filter(text)
        expr, _ = dimension_sql(left, dialect)
        clauses.append(_matching(expr, values, negate, dialect))
    return " AND ".join(clauses) if clauses else "TRUE"


def _matching(expr: str, values: list[str], negate: bool, dialect: Dialect) -> str:
    """`expr` is one of `values` (or none of them). An empty value stands for no value: the
    `(none)` group of a report, so `customer=` keeps the calls without a customer and
    `customer!=` those with one (no dimension keeps an empty string: ingestion and the tag
    dimensions make it NULL)."""
    present = [value for value in values if value != ""]
    options = ", ".join(dialect.literal(v) for v in present)
    wants_none = len(present) < len(values)
    if negate:
        if not present:
            return f"{expr} IS NOT NULL"
        if wants_none:
            return f"({expr} IS NOT NULL AND {expr} NOT IN ({options}))"
        return f"({expr} IS NULL OR {expr} NOT IN ({options}))"
    if not present:
        return f"{expr} IS NULL"
    if wants_none:
        return f"({expr} IS NULL OR {expr} IN ({options}))"
    return f"{expr} IN ({options})"


@dataclass
class ReportQuery:
    window: Window
    by: Sequence[str] = ()
    period: str | None = None
    where: Sequence[str] = ()
    top: int | None = None
    now: datetime | None = None
    """When the report is made (None: when it runs). A period that has not ended by then is
    partial even inside the window: `--since 2025-10 --until 2025-11` on October 10 covers ten
    days of October, not the month."""

    def __post_init__(self) -> None:
        if isinstance(self.where, str):
            self.where = [self.where]
        if self.top is not None and self.top < 1:
            raise ReportError(
                f"--top is how many groups to show, at least 1 (got {self.top}); leave it out for all"
            )


@dataclass
class Report:
    """All sections of a report, each a list of rows (dicts), plus the query that made it."""

    query: ReportQuery
    headline: dict[str, Any]
    rows: list[dict[str, Any]]
    periods: list[dict[str, Any]]
    units: list[dict[str, Any]]
    unpriced: list[dict[str, Any]]
    dimensions: list[str] = field(default_factory=list)
    others: dict[str, Any] | None = None
    """What `--top` left out of `rows` (`groups`, `calls`, `spend`, `share`, `unpriced_calls`),
    so the rows shown and the others add up to the headline, and how many of those groups
    (`tied`) spent exactly what the last group shown did (`tied_spend`); None without `top`,
    or when it kept every group."""
    from_rollups: bool = False
    """Whether the sums came from the hourly report rollups (merged with the events they do
    not hold) rather than from the events alone; the numbers are the same either way."""

    def table(self) -> pa.Table:
        return _rows_to_table(self.rows, self.dimensions)

    @property
    def bucket(self) -> str:
        """What one entry of `periods` spans: `--period`, or the size chosen for the window."""
        return _bucket(self.query)

    def spend_per_bucket(self) -> list[Decimal | None]:
        """The spend of every bucket of the window, in order ($0 where it has no call, None
        where its calls have no price)."""
        spend = {as_utc(p["period"]): p.get("spend") for p in self.periods}
        return [spend.get(start) for start in bucket_starts(self.query.window, self.bucket)]


def report_document(report: Report) -> dict[str, Any]:
    """The report as one document for programs (`unitcost report --format json`, the JSON API):
    every section, money as exact Decimals, the unpriced calls and tokens always present."""
    window = report.query.window
    return {
        "window": {
            "since": window.since,
            "until": window.until,
            # what `previous_spend` and `trend_pct` compare with
            "previous": {"since": window.previous.since, "until": window.previous.until},
        },
        "by": report.dimensions,
        "headline": report.headline,
        "rows": report.rows,
        "others": report.others,
        "periods": report.periods,
        "units": report.units,
        "unpriced": report.unpriced,
    }


# --------------------------------------------------------------------------- aggregation

# What each section sums: everything for the table rows and the headline (the unpriced
# section's own dates aside); what the sparkline and the unit kinds need per period and per
# unit kind; the unpriced calls alone for their section.
_UNPRICED = ("unpriced_calls", "unpriced_tokens", "unpriced_first_seen", "unpriced_last_seen")
_MAIN = tuple(m.name for m in MEASURES if m.name not in _UNPRICED[2:])
_LIGHT = (
    "calls",
    "requests",
    "priced_requests",
    "spend",
    "unit_spend",
    "unpriced_calls",
    "unpriced_tokens",
    "input_tokens",
    "output_tokens",
    "sent_input_tokens",
    "sent_cache_read_tokens",
)


_ROLLUP_TABLES = {
    "hourly": rollups.HOURLY,
    "latency": rollups.with_dims(rollups.LATENCY),
    "units": rollups.with_dims(rollups.UNITS),
}
_PARTIALS = {
    "hourly": rollups.hourly_partials,
    "latency": rollups.latency_partials,
    "units": rollups.unit_partials,
}


def rollable(query: ReportQuery) -> bool:
    """Whether the report rollups keep every dimension the query groups or filters by."""
    names = [d.strip() for d in query.by] + [_parse_filter(f)[0] for f in query.where]
    return all(name in ROLLUP_DIMS for name in names)


def judged_events_sql(source: str, *, unit_column: str = "unit") -> str:
    """The events of `source` with the judgement each counts toward: `jk` its key kind (unit,
    trace, event, or NULL), `ju` and `jid` its key, `js` whether it succeeded.

    An event counts toward its unit's judgement if there is one, else its trace's, else its
    own: the one rule of the report and of the what-ifs, so no cost is counted twice."""
    return (
        "SELECT s.*, CASE WHEN ou.key IS NOT NULL THEN 'unit' WHEN ot.key IS NOT NULL THEN 'trace' "
        "WHEN oe.key IS NOT NULL THEN 'event' END AS jk, COALESCE(ou.unit, '') AS ju, "
        "COALESCE(ou.key, ot.key, oe.key) AS jid, CASE WHEN ou.key IS NOT NULL THEN ou.success "
        "WHEN ot.key IS NOT NULL THEN ot.success ELSE oe.success END AS js "
        f"FROM ({source}) s "
        f"LEFT JOIN outcomes ou ON ou.key_kind = 'unit' AND ou.unit = COALESCE(s.{unit_column}, '') "
        "AND ou.key = s.unit_id "
        "LEFT JOIN outcomes ot ON ot.key_kind = 'trace' AND ot.unit = '' AND ot.key = s.trace_id "
        "LEFT JOIN outcomes oe ON oe.key_kind = 'event' AND oe.unit = '' AND oe.key = s.event_id"
    )


@dataclass(frozen=True)
class ReportSQL:
    """The report's queries: one for the table rows and the headline (exact sums), a light one
    for periods and unit kinds, one over unpriced calls only, one for the latency histograms
    behind the percentiles, and one for the measures that do not add up (distinct units,
    judged units, successes). No set pays for what it does not show, and no join touches the
    events when outcomes are kept per unit (the usual case).

    Two roads to the same numbers. From the events: each query scans the window's events.
    From the hourly report rollups (DuckDB, when every dimension and filter of the query is
    one they keep): each query merges the rollups of the window's whole hours with partial
    aggregates, computed on the fly, of the events the rollups do not hold: those of the
    partial hours at the window's edges and those appended past the rollups' watermark."""

    query: ReportQuery
    dialect: Dialect
    labels: list[str]
    dim_exprs: list[str]
    rolled: int | None = None
    """Events with a rowid below this are in the report rollups; None: read the events only."""

    @classmethod
    def build(cls, query: ReportQuery, dialect: Dialect, rolled: int | None = None) -> ReportSQL:
        dims = [dimension_sql(d, dialect) for d in query.by]
        labels = [label for _, label in dims]
        if len(set(labels)) != len(labels):
            raise ReportError(f"a dimension is repeated in --by: {', '.join(labels)}")
        if query.period is not None and query.period not in PERIODS:
            raise ReportError(f"unknown period {query.period!r}; use one of {', '.join(PERIODS)}")
        if rolled is not None and not rollable(query):
            rolled = None
        return cls(query, dialect, labels, [expr for expr, _ in dims], rolled)

    @property
    def table_keys(self) -> list[str]:
        return [f"d{i}" for i in range(len(self.dim_exprs))] + (["p"] if self.query.period else [])

    def _keys(self, time: str) -> str:
        """Every grouping key, computed once, from the events' `ts` or the rollups' `hour`."""
        d = self.dialect
        trend_period = self.query.period or _auto_period(self.query.window)
        keys = [f"{expr} AS d{i}" for i, expr in enumerate(self.dim_exprs)]
        if self.query.period:
            keys.append(f"{d.trunc(self.query.period, time)} AS p")
        keys += [
            f"{d.trunc(trend_period, time)} AS tp",
            "unit AS u",
            "priced_provider AS up",
            "COALESCE(priced_model, model) AS um",
            "unpriced_reason AS ur",
        ]
        return ", ".join(keys)

    def _between(self, since: datetime, until: datetime, column: str = "ts") -> str:
        d = self.dialect
        return (
            f"{column} >= {d.ts_literal(since.isoformat())} AND {column} < {d.ts_literal(until.isoformat())}"
        )

    def source(self) -> str:
        """The window's events with every grouping key."""
        window = self.query.window
        return (
            f"SELECT *, {self._keys('ts')} FROM events "
            f"WHERE {self._between(window.since, window.until)} AND {where_sql(self.query.where, self.dialect)}"
        )

    def _rolled(self, kind: str, window: Window | None = None) -> str:
        """The window's partial aggregates of one kind (hourly sums, latency buckets or units)
        with every grouping key: the rollups of the window's whole hours, plus the same
        partials computed from the events the rollups do not hold (those of the partial
        hours at the window's edges, and those past the watermark)."""
        window = window or self.query.window
        where = where_sql(self.query.where, self.dialect)
        first, last = _ceil_hour(window.since), _floor_hour(window.until)
        parts, events = [], []
        if first < last:
            table = _ROLLUP_TABLES[kind]
            parts.append(f"SELECT * FROM {table} r WHERE {self._between(first, last, 'hour')} AND {where}")
            events.append(f"{self._between(first, last)} AND rowid >= {self.rolled}")
            if window.since < first:
                events.append(self._between(window.since, first))
            if last < window.until:
                events.append(self._between(last, window.until))
        else:
            events.append(self._between(window.since, window.until))
        parts += [_PARTIALS[kind](f"{condition} AND {where}") for condition in events]
        return f"SELECT *, {self._keys('hour')} FROM ({' UNION ALL BY NAME '.join(parts)}) x"

    def _sum(self, name: str) -> str:
        measure = MEASURE_BY_NAME[name]
        return measure.rollup if self.rolled is not None else self.dialect.null_if_empty(measure.sql)

    def sums(self) -> list[str]:
        """Exact sums for every section, one query per shape of section."""
        keys = self.table_keys
        src = f"({self._rolled('hourly') if self.rolled is not None else self.source()}) s"

        def select(names: Sequence[str]) -> str:
            return ", ".join(f"{self._sum(name)} AS {name}" for name in names)

        if keys:
            grouping = ", ".join(f"grouping({k}) AS g_{k}" for k in keys)
            main = (
                f"SELECT {', '.join(keys)}, {grouping}, {select(_MAIN)} FROM {src} "
                f"GROUP BY GROUPING SETS (({', '.join(keys)}), ())"
            )
        else:
            main = f"SELECT {select(_MAIN)} FROM {src}"
        light = (
            f"SELECT tp, u, grouping(tp) AS g_tp, grouping(u) AS g_u, {select(_LIGHT)} FROM {src} "
            "GROUP BY GROUPING SETS ((tp), (u))"
        )
        unpriced_rows = "NOT priced" if self.rolled is not None else "cost IS NULL"
        unpriced = (
            f"SELECT up, um, ur, 0 AS g_up, 0 AS g_um, 0 AS g_ur, {select(_UNPRICED)} FROM {src} "
            f"WHERE {unpriced_rows} GROUP BY up, um, ur"
        )
        return [main, light, unpriced]

    def latency(self) -> str:
        """Calls per latency bucket, for each table row and in total (see `latency`)."""
        if self.rolled is not None:
            src, calls = f"({self._rolled('latency')}) s", "CAST(sum(n) AS BIGINT)"
        else:
            src = f"(SELECT *, {bucket_sql('latency_ms')} AS b FROM ({self.source()}) e WHERE latency_ms IS NOT NULL) s"
            calls = "CAST(count(*) AS BIGINT)"
        keys = self.table_keys
        if not keys:
            return f"SELECT b, {calls} AS n FROM {src} GROUP BY b"
        grouping = ", ".join(f"grouping({k}) AS g_{k}" for k in keys)
        return (
            f"SELECT {', '.join(keys)}, {grouping}, b, {calls} AS n FROM {src} "
            f"GROUP BY GROUPING SETS (({', '.join(keys)}, b), (b))"
        )

    def previous(self) -> str:
        """Spend over the window before, per table row (without period) and in total."""
        n = len(self.dim_exprs)
        names = ", ".join(f"d{i}" for i in range(n))
        group = f"GROUP BY GROUPING SETS (({names}), ())" if n else ""
        grouping = ", ".join(f"grouping(d{i}) AS g_d{i}" for i in range(n))
        head = f"{names}, {grouping}, " if n else ""
        prev = self.query.window.previous
        if self.rolled is not None:
            return f"SELECT {head}sum(spend) AS spend FROM ({self._rolled('hourly', prev)}) s {group}"
        keys = [f"{expr} AS d{i}" for i, expr in enumerate(self.dim_exprs)]
        return (
            f"SELECT {head}sum(cost) AS spend FROM (SELECT cost{', ' if keys else ''}{', '.join(keys)} FROM events "
            f"WHERE {self._between(prev.since, prev.until)} AND {where_sql(self.query.where, self.dialect)}) s {group}"
        )

    def period_previous(self, span: Window) -> str:
        """Spend per table row's group and `--period` bucket over `span`: the buckets before the
        window's periods, cut where the last partial period's like-for-like span ends (see
        `PeriodSpan.like_for_like`); it may begin before the window."""
        keys = [f"d{i}" for i in range(len(self.dim_exprs))] + ["p"]
        names = ", ".join(keys)
        if self.rolled is not None:
            return f"SELECT {names}, sum(spend) AS spend FROM ({self._rolled('hourly', span)}) s GROUP BY {names}"
        assert self.query.period is not None
        exprs = [f"{expr} AS d{i}" for i, expr in enumerate(self.dim_exprs)]
        exprs.append(f"{self.dialect.trunc(self.query.period, 'ts')} AS p")
        return (
            f"SELECT {names}, sum(cost) AS spend FROM (SELECT cost, {', '.join(exprs)} FROM events "
            f"WHERE {self._between(span.since, span.until)} AND {where_sql(self.query.where, self.dialect)}) s "
            f"GROUP BY {names}"
        )

    @property
    def grouping_columns(self) -> list[str]:
        return list(dict.fromkeys([*self.table_keys, "tp", "u", "up", "um", "ur"]))

    def units(self, outcome_kinds: set[str]) -> str:
        """Units, judgements, successes and the cost of the judged events: per table row, per
        unit kind and in total. A unit, or a judgement, counts once in each group it has
        events in; each event counts toward one judgement at most (see `_judgements`)."""
        keys = self.table_keys
        prefix = f"{', '.join(keys)}, " if keys else ""
        measures = (
            "CAST(sum(is_unit) AS BIGINT) AS units, sum(CASE WHEN judged THEN cost END) AS judged_cost, "
            "CAST(sum(CASE WHEN judged THEN 1 ELSE 0 END) AS BIGINT) AS judged, "
            "CAST(sum(CASE WHEN success THEN 1 ELSE 0 END) AS BIGINT) AS successes"
        )
        parts = []
        if keys:
            parts.append(
                f"SELECT 'table' AS s, {', '.join(keys)}, CAST(NULL AS VARCHAR) AS uk, {measures} "
                f"FROM j WHERE lvl = 0 GROUP BY {', '.join(keys)}"
            )
        nulls = "".join(f"NULL AS {k}, " for k in keys)
        if outcome_kinds <= {"unit"}:
            # A unit's identity includes its kind, so the units of every kind add up to the total.
            sets = [f"({prefix}u, unit_id)"] + (["(u, unit_id)"] if keys else [])
            src = self._rolled("units") if self.rolled is not None else self.source()
            per_unit = (
                f"SELECT {prefix}u, unit_id, {self._level(keys)} AS lvl, sum(cost) AS cost FROM ({src}) s "
                f"WHERE unit_id IS NOT NULL GROUP BY GROUPING SETS ({', '.join(sets)})"
            )
            judged = (
                "SELECT p.*, 1 AS is_unit, o.key IS NOT NULL AS judged, o.success AS success "
                f"FROM ({per_unit}) p LEFT JOIN outcomes o ON o.key_kind = 'unit' "
                "AND o.unit = COALESCE(p.u, '') AND o.key = p.unit_id"
            )
            parts.append(
                f"SELECT CASE WHEN grouping(u) = 0 THEN 'unit' ELSE 'total' END AS s, {nulls}u AS uk, "
                f"{measures} FROM j WHERE lvl = 1 GROUP BY GROUPING SETS ((u), ())"
            )
        else:
            judged = self._judgements()
            # A trace may have events of several unit kinds: the total counts it once, from
            # its own level, not as the sum of the kinds.
            parts.append(
                f"SELECT CASE WHEN lvl = 1 THEN 'unit' ELSE 'total' END AS s, {nulls}u AS uk, {measures} "
                "FROM j WHERE lvl IN (1, 3) GROUP BY lvl, u"
            )
        return f"WITH j AS ({judged}) " + " UNION ALL ".join(parts)

    @staticmethod
    def _level(keys: Sequence[str]) -> str:
        """0: a table row's group, 1: a unit kind's, 3: the whole window's."""
        return f"grouping(u) * 2 + grouping({keys[0]})" if keys else "grouping(u) * 2 + 1"

    def _judgements(self) -> str:
        """When judgements are kept per trace or per event too. Each event counts toward the
        judgement of its unit if there is one, else of its trace, else of itself, so no cost
        is counted twice; a judgement counts once, with the cost of the events it covers. The
        units are counted beside the judgements (`is_unit`). This reads the events: the
        rollups keep no traces or event ids."""
        keys = self.table_keys
        prefix = f"{', '.join(keys)}, " if keys else ""
        item = "role, iu, iid"
        sets = [f"({prefix}u, {item})"] + (["(u, " + item + ")"] if keys else []) + [f"({item})"]
        events = judged_events_sql(self.source(), unit_column="u")
        items = (
            f"SELECT {prefix}u, 'units' AS role, COALESCE(u, '') AS iu, unit_id AS iid, cost, "
            "CAST(NULL AS BOOLEAN) AS js FROM e WHERE unit_id IS NOT NULL UNION ALL "
            f"SELECT {prefix}u, jk AS role, ju AS iu, jid AS iid, cost, js FROM e WHERE jk IS NOT NULL"
        )
        return (
            f"WITH e AS ({events}) SELECT {prefix}u, {self._level(keys)} AS lvl, "
            "CASE WHEN role = 'units' THEN 1 ELSE 0 END AS is_unit, role <> 'units' AS judged, "
            "sum(cost) AS cost, max(CASE WHEN js THEN 1 ELSE 0 END) = 1 AS success "
            f"FROM ({items}) i GROUP BY GROUPING SETS ({', '.join(sets)})"
        )


def _floor_hour(instant: datetime) -> datetime:
    return instant.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def _ceil_hour(instant: datetime) -> datetime:
    floor = _floor_hour(instant)
    return floor if floor == instant else floor + timedelta(hours=1)


def _truncate(instant: datetime, period: str) -> datetime:
    """The start of the bucket holding `instant`, as the dialects' `trunc` computes it."""
    hour = _floor_hour(instant)
    if period == "hour":
        return hour
    day = hour.replace(hour=0)
    if period == "day":
        return day
    if period == "week":
        return day - timedelta(days=day.weekday())
    return day.replace(day=1)


def _next_bucket(start: datetime, period: str) -> datetime:
    if period == "month":
        return start.replace(year=start.year + start.month // 12, month=start.month % 12 + 1)
    return start + {"hour": timedelta(hours=1), "day": timedelta(days=1), "week": timedelta(weeks=1)}[period]


def bucket_end(start: datetime, period: str) -> datetime:
    """The end (excluded) of the bucket of `period` that begins at `start`."""
    return _next_bucket(as_utc(start), period)


def bucket_starts(window: Window, period: str) -> list[datetime]:
    """The start of every bucket the window overlaps, the partial ones at its edges included."""
    starts, start = [], _truncate(window.since, period)
    while start < window.until:
        starts.append(start)
        start = _next_bucket(start, period)
    return starts


@dataclass(frozen=True)
class PeriodSpan:
    """A bucket of the window (`start` to `end`) and the part of it the report covers: the
    window's, cut at the time the report is made."""

    start: datetime
    end: datetime
    covered_since: datetime
    covered_until: datetime

    @property
    def partial(self) -> bool:
        """The window covers only part of the bucket: the first one cut by `--since`, the last
        one cut by `--until` (the current week, month or day of a report up to now), or one that
        has not ended when the report is made."""
        return self.covered_since > self.start or self.covered_until < self.end

    def like_for_like(self, before: PeriodSpan) -> tuple[datetime, datetime] | None:
        """What this period's trend compares with in the bucket `before` it: the same span from
        the bucket's start (Monday to Wednesday of the week before for a week covered Monday to
        Wednesday, September 1-10 for October 1-10), as far as that bucket goes (a month after a
        shorter one compares with all of it); the whole bucket before for a whole period, even
        where the window covers only part of it. None when this period covers nothing yet."""
        if self.covered_until <= self.covered_since:
            return None
        since = before.start + (self.covered_since - self.start)
        until = min(before.start + (self.covered_until - self.start), before.end)
        return (since, until) if since < until else None


def period_spans(window: Window, period: str, now: datetime | None = None) -> list[PeriodSpan]:
    """Every bucket of the window (as `bucket_starts`) with the part of it the report covers:
    from `since` (or the bucket's start) to `until`, `now` or the bucket's end, whichever is
    first."""
    until = window.until if now is None else min(window.until, as_utc(now))
    spans = []
    for start in bucket_starts(window, period):
        end = _next_bucket(start, period)
        since = max(start, window.since)
        spans.append(PeriodSpan(start, end, since, max(since, min(end, until))))
    return spans


def _span_fields(span: PeriodSpan | None) -> dict[str, Any]:
    """What a row of the period says of its coverage (see `PERIOD_SPAN_COLUMNS`)."""
    if span is None:
        return {"partial": None, "covered_since": None, "covered_until": None}
    return {"partial": span.partial, "covered_since": span.covered_since, "covered_until": span.covered_until}


def _bucket(query: ReportQuery) -> str:
    return query.period or _auto_period(query.window)


def _auto_period(window: Window) -> str:
    # By what the window is said to span: `--since 2d` is two whole days and today so far,
    # by the hour as ever, not three days' worth of hours read by the day.
    days = window.nominal_length.total_seconds() / 86400
    if days <= 2:
        return "hour"
    if days <= 120:
        return "day"
    return "week" if days <= 730 else "month"


def run_report(store: Store, query: ReportQuery, *, use_rollups: bool = True) -> Report:
    """The report for `query`; from the report rollups when the store keeps them and they hold
    every dimension the query needs, unless `use_rollups` is False."""
    dialect = dialect_for(store.dialect)
    now = datetime.now(UTC) if query.now is None else as_utc(query.now)
    before_spend: dict[tuple[tuple[Any, ...], datetime], Decimal | None] = {}
    with store.snapshot() as fetch:
        rolled = rollups.watermark(fetch) if use_rollups and dialect.name == "duckdb" else None
        sql = ReportSQL.build(query, dialect, rolled)
        spans = period_spans(query.window, query.period, now) if query.period else []
        likes = _likes(spans)
        compared = [like for like in likes if like is not None]
        if compared:
            # The like-for-like spans are whole buckets but for the last one compared (see
            # `_likes`): one range, summed per bucket, holds them all.
            span = Window(min(c[0] for c in compared), max(c[1] for c in compared))
            n = len(sql.dim_exprs)
            for r in fetch(sql.period_previous(span)):
                before_spend[tuple(r[f"d{i}"] for i in range(n)), as_utc(r["p"])] = r["spend"]
        result = []
        for part in sql.sums():
            for row in fetch(part):
                # Every row carries every grouping flag and measure: 1 / None where its set has none.
                for column in sql.grouping_columns:
                    row.setdefault(column, None)
                    row.setdefault(f"g_{column}", 1)
                for measure in MEASURES:
                    row.setdefault(measure.name, None)
                result.append(row)
        previous = fetch(sql.previous())
        table_keys = sql.table_keys
        _merge_measures(result, fetch, sql, table_keys)
        _merge_percentiles(result, fetch(sql.latency()), table_keys)

    labels = sql.labels
    dim_keys = [f"d{i}" for i in range(len(labels))]

    def in_set(row: Mapping[str, Any], keys: Sequence[str]) -> bool:
        # grouping(c) is 0 when c is part of the row's grouping set.
        all_keys = [k for k in row if k.startswith("g_")]
        return all(row[f"g_{k}"] == 0 for k in keys) and all(
            row[g] == 1 for g in all_keys if g[2:] not in keys
        )

    headline_rows = [r for r in result if in_set(r, [])]
    headline = _derive(headline_rows[0] if headline_rows else {}, None)
    prev_total = next(
        (r["spend"] for r in previous if not dim_keys or all(r[f"g_{k}"] == 1 for k in dim_keys)), None
    )
    headline["previous_spend"] = prev_total
    headline["trend_pct"] = _pct_change(headline.get("spend"), prev_total)
    total = headline.get("spend")

    prev_by_dims = {
        tuple(r[k] for k in dim_keys): r["spend"]
        for r in previous
        if dim_keys and all(r[f"g_{k}"] == 0 for k in dim_keys)
    }
    rows = []
    for r in (r for r in result if table_keys and in_set(r, table_keys)):
        derived = _derive(r, total)
        out: dict[str, Any] = {label: r[k] for label, k in zip(labels, dim_keys, strict=True)}
        if query.period:
            out["period"] = r["p"]
        out.update(derived)
        if not query.period:
            prev = prev_by_dims.get(tuple(r[k] for k in dim_keys))
            out["previous_spend"] = prev
            out["trend_pct"] = _pct_change(derived.get("spend"), prev)
        rows.append(out)
    others = None
    if query.top:
        rows, others = _top_groups(rows, labels, query.top, total)
    if query.period:
        rows.sort(key=lambda x: (x["period"], -(x.get("spend") or 0), _names(x, labels)))
        _add_period_trend(rows, labels, spans, likes, before_spend)
    else:
        rows.sort(key=lambda x: (-(x.get("spend") or 0), _names(x, labels)))
    if not table_keys:
        rows = [dict(headline)]

    with_calls = {
        as_utc(r["tp"]): {"period": r["tp"], **_light(r, total, PERIOD_COLUMNS)}
        for r in result
        if in_set(r, ["tp"])
    }
    # Every bucket of the window, the quiet ones as 0 calls and $0: a daily spend read from
    # JSON or charted must not close the gap of a day without calls.
    periods = [
        {**(with_calls.get(span.start) or _quiet_period(span.start, total)), **_span_fields(span)}
        for span in period_spans(query.window, _bucket(query), now)
    ]
    units = sorted(
        ({"unit": r["u"], **_light(r, total, UNIT_COLUMNS)} for r in result if in_set(r, ["u"]) and r["u"]),
        key=lambda x: (-(x.get("spend") or 0), _names(x, ["unit"])),
    )
    unpriced = sorted(
        (
            {
                "provider": r["up"],
                "model": r["um"],
                "reason": r["ur"],
                "calls": r["unpriced_calls"],
                "tokens": r["unpriced_tokens"],
                "first_seen": r["unpriced_first_seen"],
                "last_seen": r["unpriced_last_seen"],
            }
            for r in result
            if in_set(r, ["up", "um", "ur"]) and r["ur"] is not None
        ),
        key=lambda x: (-x["calls"], _names(x, ["provider", "model", "reason"])),
    )
    return Report(
        query,
        headline,
        rows,
        periods,
        units,
        unpriced,
        labels + (["period"] if query.period else []),
        others=others,
        from_rollups=sql.rolled is not None,
    )


def _names(row: Mapping[str, Any], labels: Sequence[str]) -> tuple[tuple[bool, str], ...]:
    """Tie-breaker for rows of equal spend, so every engine lists them in the same order."""
    return tuple((row.get(label) is not None, str(row.get(label) or "")) for label in labels)


Fetch = Callable[[str], list[dict[str, Any]]]


def _merge_measures(
    result: list[dict[str, Any]], fetch: Fetch, sql: ReportSQL, table_keys: list[str]
) -> None:
    """Put the unit measures beside the sums of the same group."""
    kinds = {r["key_kind"] for r in fetch("SELECT DISTINCT key_kind FROM outcomes")}
    measures: dict[tuple[str, tuple[Any, ...]], dict[str, Any]] = {}
    key: tuple[Any, ...]
    for row in fetch(sql.units(kinds)):
        key = ()
        if row["s"] == "table":
            key = tuple(row[k] for k in table_keys)
        elif row["s"] == "unit":
            key = (row["uk"],)
        measures.setdefault((row["s"], key), {}).update(row)
    empty: dict[str, Any] = {}
    for row in result:
        groups = {k for k in row if k.startswith("g_") and row[k] == 0}
        if table_keys and groups == {f"g_{k}" for k in table_keys}:
            found = measures.get(("table", tuple(row[k] for k in table_keys)), empty)
        elif not groups:
            found = measures.get(("total", ()), empty)
        elif groups == {"g_u"}:
            found = measures.get(("unit", (row["u"],)), empty)
        else:
            found = empty
        row["units"] = found.get("units") or 0
        row["judged_cost"] = found.get("judged_cost")
        # With no judgement recorded at all there is no success rate (None), not 0 %.
        row["judged"] = (found.get("judged") or 0) if kinds else None
        row["successes"] = (found.get("successes") or 0) if kinds else None


def _merge_percentiles(
    result: list[dict[str, Any]], histograms: list[dict[str, Any]], table_keys: list[str]
) -> None:
    """Latency P50 and P95 of each table row and of the headline, from their histograms;
    the other sections have none."""
    merged: dict[tuple[Any, ...] | None, list[tuple[int, int]]] = {}
    for row in histograms:
        whole = all(row[f"g_{k}"] == 1 for k in table_keys)
        key = None if whole else tuple(row[k] for k in table_keys)
        merged.setdefault(key, []).append((row["b"], row["n"]))
    for row in result:
        groups = {k for k in row if k.startswith("g_") and row[k] == 0}
        histogram: list[tuple[int, int]] = []
        if table_keys and groups == {f"g_{k}" for k in table_keys}:
            histogram = merged.get(tuple(row[k] for k in table_keys), [])
        elif not groups:
            histogram = merged.get(None, [])
        histogram.sort()
        row["latency_p50_ms"] = percentile(histogram, 0.5)
        row["latency_p95_ms"] = percentile(histogram, 0.95)


def _group_spend(rows: list[dict[str, Any]], labels: Sequence[str]) -> dict[tuple[Any, ...], Decimal]:
    """Each group's spend over the whole window (with a period, a group has a row per period;
    an unpriced group counts 0 here, for ranking only)."""
    spend: dict[tuple[Any, ...], Decimal] = {}
    for row in rows:
        key = tuple(row.get(label) for label in labels)
        spend[key] = spend.get(key, Decimal(0)) + (row.get("spend") or 0)
    return spend


def _top_groups(
    rows: list[dict[str, Any]], labels: Sequence[str], top: int, total: Decimal | None
) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """The rows of the `top` groups by spend over the whole window, and what the others add up
    to. With a period a group's rows are its periods: ranking them one by one would keep a
    group's best periods rather than the biggest groups. Equal spends rank by name."""
    spend = _group_spend(rows, labels)
    ranked = sorted(spend, key=lambda k: (-spend[k], _names(dict(zip(labels, k, strict=True)), labels)))
    kept = set(ranked[:top])
    shown = [row for row in rows if tuple(row.get(label) for label in labels) in kept]
    dropped = [row for row in rows if tuple(row.get(label) for label in labels) not in kept]
    if not dropped:
        return shown, None
    last_shown = spend[ranked[top - 1]]
    spends = [row["spend"] for row in dropped if row.get("spend") is not None]
    left_out = sum(spends, Decimal(0)) if spends else None
    # Exact sums of disjoint groups: the rows shown plus these make the headline.
    others = {
        "groups": len(ranked) - top,
        "calls": sum(row.get("calls") or 0 for row in dropped),
        "spend": left_out,
        "share": _ratio(left_out, total) if total is not None else None,
        "unpriced_calls": sum(row.get("unpriced_calls") or 0 for row in dropped),
        "tied": sum(1 for key in ranked[top:] if spend[key] == last_shown),
        "tied_spend": last_shown,
    }
    return shown, others


def _likes(spans: Sequence[PeriodSpan]) -> list[tuple[datetime, datetime] | None]:
    """What each period's trend compares with (`PeriodSpan.like_for_like`): nothing for the
    window's first period, whose bucket before is outside the window.

    Like with like, because a finance team signs the comparison of equal spans, not of a
    period's first three days with a whole week: the partial last period (the current week of
    a report up to now) is compared with the same span of the period before, and the period
    after a partial first one (cut by `--since`) with the whole period before, calls before
    `--since` included; a plain change of a partial period against a whole one would show a
    fall in spend that is only fewer days. Neither is extrapolated to a whole period: a run
    rate is a forecast, and these are the amounts the ledger holds. Only the first period can
    be cut at its start, and the periods from the last whole one on are covered less and less
    (the last cut by `--until` or by the time the report is made, those after it not at all),
    so these spans are whole buckets up to the last one compared, which may be cut: one range
    of the events holds them all."""
    return [None] + [span.like_for_like(before) for before, span in pairwise(spans)]


def _add_period_trend(
    rows: list[dict[str, Any]],
    labels: Sequence[str],
    spans: Sequence[PeriodSpan],
    likes: Sequence[tuple[datetime, datetime] | None],
    before_spend: Mapping[tuple[tuple[Any, ...], datetime], Decimal | None],
) -> None:
    """Each row's trend against the same group in the period just before, over the same span
    (`_likes`): $0 when the group had no call then, none for the window's first period. Not
    against the group's last row, which may be weeks earlier. Each row says how much of its
    period the window covers (`partial`, `covered_since`, `covered_until`) and what its trend
    compared with (`previous_since`, `previous_until`)."""
    index = {span.start: k for k, span in enumerate(spans)}
    for row in rows:
        k = index.get(as_utc(row["period"]))
        like = None if k is None else likes[k]
        prev = None
        if k is not None and like is not None:
            prev = before_spend.get((_group(row, labels), spans[k - 1].start), _ZERO)
        row["previous_spend"] = prev
        row["trend_pct"] = _pct_change(row.get("spend"), prev)
        row.update(_span_fields(None if k is None else spans[k]))
        row["previous_since"], row["previous_until"] = like or (None, None)


def _group(row: Mapping[str, Any], labels: Sequence[str]) -> tuple[Any, ...]:
    return tuple(row.get(label) for label in labels)


_ZERO = Decimal(0).quantize(MONEY_PLACES)


def _quiet_period(start: datetime, total: Decimal | None) -> dict[str, Any]:
    """A bucket of the window without a call: nothing spent, nothing unpriced; its ratios
    (cost per request, cache hit) have nothing to divide."""
    quiet: dict[str, Any] = {name: 0 for name in PERIOD_COLUMNS}
    quiet |= {"spend": _ZERO, "share": 0.0 if total else None, "cost_per_request": None}
    quiet["cache_hit_ratio"] = None
    return {"period": start, **quiet}


def per_unit(a: Decimal | int | None, b: Decimal | int | None, scale: int = 1) -> Decimal | None:
    """Money per request, unit or success: to the pico-dollar, like every amount in the ledger."""
    return _div(a, b, scale)


def _div(a: Decimal | int | None, b: Decimal | int | None, scale: int = 1) -> Decimal | None:
    if a is None or b in (None, 0):
        return None
    with localcontext() as ctx:
        ctx.prec = 40
        return (Decimal(a) * scale / Decimal(b)).quantize(MONEY_PLACES)


def _ratio(a: Decimal | int | None, b: Decimal | int | None) -> float | None:
    if a is None or b in (None, 0):
        return None
    return float(Decimal(a) / Decimal(b))


def _pct_change(now: Decimal | None, before: Decimal | None) -> float | None:
    if now is None or before in (None, 0):
        return None
    return float((Decimal(now) - Decimal(before)) / Decimal(before) * 100)


def _derive(row: Mapping[str, Any], total: Decimal | None) -> dict[str, Any]:
    """Exact sums from the engine plus the ratios a reader wants.

    The ratios whose parts are not plain columns:

    - `cost_per_1k_input`: what the prompt's tokens cost at the input rates (`cost_input` +
      `cost_cache_read` + `cost_cache_write`) per 1,000 of those tokens: the input tokens of
      the priced calls the provider answered, less their uncached audio and image tokens. An
      effective text input rate, to read against a price list's input price.
    - `cost_per_1k_output`: `cost_output` + `cost_reasoning` per 1,000 output tokens of the
      same calls, less audio and image output.
    - Left out of both, and in `cost_other`: audio and image tokens (their own rates), web
      searches and per-request fees. Also left out: the calls served from unitcost's response
      cache, which cost nothing and billed no token (their saving is `avoided_cost`).
    - `cache_hit_ratio`: the provider's prompt cache, the cache-read tokens over the input
      tokens of the calls the provider answered (priced or not); response-cache hits are in
      neither (they are `response_cache_hits`).
    """
    if not row:
        return {"calls": 0, "spend": None, "unpriced_calls": 0, "unpriced_tokens": 0}
    spend = row.get("spend")
    out: dict[str, Any] = {
        "calls": row["calls"],
        "requests": row["requests"],
        "spend": spend,
        "share": _ratio(spend, total) if total is not None else None,
        "cost_per_request": _div(spend, row["priced_requests"]),
        # Each cost per 1k tokens divides a cost by the tokens it pays for (see above).
        "cost_per_1k_input": _div(
            _add(row["cost_input"], row["cost_cache_read"], row["cost_cache_write"]),
            row["rated_input_tokens"],
            1000,
        ),
        "cost_per_1k_output": _div(
            _add(row["cost_output"], row["cost_reasoning"]), row["rated_output_tokens"], 1000
        ),
        "input_tokens": row["input_tokens"],
        "output_tokens": row["output_tokens"],
        "cost_input": row["cost_input"],
        "cost_cache_read": row["cost_cache_read"],
        "cost_cache_write": row["cost_cache_write"],
        "cost_output": row["cost_output"],
        "cost_reasoning": row["cost_reasoning"],
        "cost_other": row["cost_other"],
        "cache_hit_ratio": _ratio(row["sent_cache_read_tokens"], row["sent_input_tokens"]),
        "cache_savings": row["cache_savings"],
        "response_cache_hits": row["response_cache_hits"],
        "avoided_cost": row["avoided_cost"],
        "reasoning_share": _ratio(row["cost_reasoning"], _add(row["cost_output"], row["cost_reasoning"])),
        "failed_cost": _none_is_zero(row["failed_cost"], row["failed_calls"]),
        "retry_cost": _none_is_zero(row["retry_cost"], row["retries"]),
        "wasted_share": _ratio(
            _none_is_zero(row["wasted_cost"], _add_counts(row["failed_calls"], row["retries"])), spend
        ),
        "retries": row["retries"],
        "failed_unpriced_calls": row["failed_unpriced_calls"],
        "retry_unpriced_calls": row["retry_unpriced_calls"],
        "error_rate": _ratio(row["errors"], row["calls"]),
        "timeout_rate": _ratio(row["timeouts"], row["calls"]),
        "latency_p50_ms": row["latency_p50_ms"],
        "latency_p95_ms": row["latency_p95_ms"],
        "units": row["units"],
        "cost_per_unit": _div(row["unit_spend"], row["units"]),
        "successes": row.get("successes"),
        "judged": row.get("judged"),
        "success_rate": _ratio(row.get("successes"), row.get("judged")),
        "cost_per_success": _div(row.get("judged_cost"), row.get("successes")),
        "unpriced_calls": row["unpriced_calls"],
        "unpriced_tokens": row["unpriced_tokens"],
        "billed_cost": row["billed_cost"],
        "billed_calls": row["billed_calls"],
    }
    return out


PERIOD_COLUMNS = (
    "calls",
    "requests",
    "spend",
    "share",
    "cost_per_request",
    "input_tokens",
    "output_tokens",
    "cache_hit_ratio",
    "unpriced_calls",
    "unpriced_tokens",
)
"""The measures of the spend per period: what its light query sums (`_LIGHT`) supports."""
UNIT_COLUMNS = (
    *PERIOD_COLUMNS,
    "units",
    "cost_per_unit",
    "judged",
    "successes",
    "success_rate",
    "cost_per_success",
)
"""The measures of the business-units section: the light sums plus units and judgements."""


def _light(row: Mapping[str, Any], total: Decimal | None, columns: Sequence[str]) -> dict[str, Any]:
    """Only the measures a light section computes: the others would read as a failed cost or
    error rate of None, or as 0 units, where nothing was counted at all."""
    derived = _derive(row, total)
    return {name: derived[name] for name in columns}


def _none_is_zero(cost: Decimal | None, calls: int | None) -> Decimal | None:
    """The cost of some calls (failed ones, retries): $0 when there are none, where SQL's sum
    says NULL. NULL stays for calls that are there without a price: unknown, never $0."""
    return Decimal(0) if cost is None and calls == 0 else cost


def _add_counts(*counts: int | None) -> int | None:
    return None if any(n is None for n in counts) else sum(n for n in counts if n is not None)


def _add(*values: Decimal | None) -> Decimal | None:
    present = [v for v in values if v is not None]
    return sum(present, Decimal(0)) if present else None


MONEY_COLUMNS = frozenset(
    {
        "spend",
        "previous_spend",
        "cost_per_request",
        "cost_per_1k_input",
        "cost_per_1k_output",
        "cost_input",
        "cost_cache_read",
        "cost_cache_write",
        "cost_output",
        "cost_reasoning",
        "cost_other",
        "cache_savings",
        "avoided_cost",
        "failed_cost",
        "retry_cost",
        "cost_per_unit",
        "cost_per_success",
        "billed_cost",
    }
)
FLOAT_COLUMNS = frozenset(
    {
        "share",
        "cache_hit_ratio",
        "reasoning_share",
        "wasted_share",
        "error_rate",
        "timeout_rate",
        "latency_p50_ms",
        "latency_p95_ms",
        "success_rate",
        "trend_pct",
    }
)


class _BlankRow(dict[str, Any]):
    """A row that has every measure, each NULL: what `_derive` is given to name its columns."""

    def __missing__(self, key: str) -> None:
        return None

    def __bool__(self) -> bool:
        return True


KPI_COLUMNS = tuple(_derive(_BlankRow(), None))
"""The measures of a report row, in order (everything `_derive` makes of a group's sums)."""
TREND_COLUMNS = ("previous_spend", "trend_pct")
PERIOD_SPAN_COLUMNS = ("partial", "covered_since", "covered_until", "previous_since", "previous_until")
"""What a row of a report by `--period` says besides its measures: whether the window covers
its period only in part, the part it covers, and the span its trend compares with."""


def _rows_to_table(rows: list[dict[str, Any]], dimensions: Sequence[str]) -> pa.Table:
    """The rows as typed columns. Every column is there even when the window has no calls, or
    when a row lacks a measure (the headline of an empty window): a script reading `spend`
    must not break on a quiet day."""
    import pyarrow as pa

    names = [*dimensions, *KPI_COLUMNS, *TREND_COLUMNS]
    if "period" in dimensions:
        names += PERIOD_SPAN_COLUMNS
    names += [name for row in rows[:1] for name in row if name not in names]
    arrays = []
    for name in names:
        values = [r.get(name) for r in rows]
        if name == "partial":
            arrays.append(pa.array(values, type=pa.bool_()))
        elif name in PERIOD_SPAN_COLUMNS:
            arrays.append(pa.array(values, type=pa.timestamp("us", tz="UTC")))
        elif name in MONEY_COLUMNS:
            arrays.append(pa.array(values, type=pa.decimal128(38, 12)))
        elif name in FLOAT_COLUMNS:
            arrays.append(pa.array([None if v is None else float(v) for v in values], type=pa.float64()))
        elif name == "period":
            arrays.append(pa.array(values, type=pa.timestamp("us", tz="UTC")))
        elif name in dimensions:
            arrays.append(pa.array([None if v is None else str(v) for v in values], type=pa.string()))
        else:
            arrays.append(pa.array(values, type=pa.int64()))
    return pa.table(arrays, names=names)
