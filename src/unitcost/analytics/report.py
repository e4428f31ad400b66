"""Where the money goes: the report behind `unitcost report` and `Ledger.report()`.

One scan of the ledger answers every section at once (GROUPING SETS): the headline, the
table by the chosen dimensions, the spend per period, the business units, and the
unpriced calls. The engine sums exact decimals and counts; ratios are derived afterwards
in Python from those exact sums, so a cost per request is an exact division rounded only
for display.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, localcontext
from typing import TYPE_CHECKING, Any

import pyarrow as pa

if TYPE_CHECKING:
    from ..ledger.base import Store
from .dialect import Dialect, dialect_for
from .window import Window

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
            return dialect.tag(key), f"tag:{key}"
    raise ReportError(f"unknown dimension {name!r}; use one of {', '.join(STRING_DIMENSIONS)} or tag:<name>")


def where_sql(filters: Sequence[str], dialect: Dialect) -> str:
    """`team=search`, `model!=gpt-4o`, `tag:region=eu,us` (comma = any of) as SQL conditions."""
    clauses = []
    for text in filters:
        negate = "!=" in text
        left, sep, right = text.partition("!=" if negate else "=")
        if not sep or not left.strip():
            raise ReportError(f"a filter is dimension=value or dimension!=value, got {text!r}")
        expr, _ = dimension_sql(left, dialect)
        values = [v.strip() for v in right.split(",")]
        options = ", ".join(dialect.literal(v) for v in values)
        if negate:
            clauses.append(f"({expr} IS NULL OR {expr} NOT IN ({options}))")
        else:
            clauses.append(f"{expr} IN ({options})")
    return " AND ".join(clauses) if clauses else "TRUE"


@dataclass
class ReportQuery:
    window: Window
    by: Sequence[str] = ()
    period: str | None = None
    where: Sequence[str] = ()
    top: int | None = None


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

    def table(self) -> pa.Table:
        return _rows_to_table(self.rows, self.dimensions)


# --------------------------------------------------------------------------- aggregation

_SUMS: tuple[tuple[str, str], ...] = (
    ("calls", "CAST(count(*) AS BIGINT)"),
    ("requests", "CAST(sum(requests) AS BIGINT)"),
    ("priced_requests", "CAST(sum(CASE WHEN cost IS NOT NULL THEN requests ELSE 0 END) AS BIGINT)"),
    ("spend", "sum(cost)"),
    ("cost_input", "sum(cost_input)"),
    ("cost_cache_read", "sum(cost_cache_read)"),
    ("cost_cache_write", "sum(cost_cache_write_5m + cost_cache_write_1h)"),
    ("cost_output", "sum(cost_output)"),
    ("cost_reasoning", "sum(cost_reasoning)"),
    ("cost_other", "sum(cost_other)"),
    ("cache_savings", "sum(cache_savings)"),
    ("avoided_cost", "sum(avoided_cost)"),
    ("input_tokens", "CAST(sum(input_tokens) AS BIGINT)"),
    ("cache_read_tokens", "CAST(sum(cache_read_tokens) AS BIGINT)"),
    ("output_tokens", "CAST(sum(output_tokens) AS BIGINT)"),
    ("reasoning_tokens", "CAST(sum(reasoning_tokens) AS BIGINT)"),
    ("priced_input_tokens", "CAST(sum(CASE WHEN cost IS NOT NULL THEN input_tokens ELSE 0 END) AS BIGINT)"),
    ("priced_output_tokens", "CAST(sum(CASE WHEN cost IS NOT NULL THEN output_tokens ELSE 0 END) AS BIGINT)"),
    ("errors", "CAST(sum(CASE WHEN status = 'error' THEN 1 ELSE 0 END) AS BIGINT)"),
    ("timeouts", "CAST(sum(CASE WHEN status = 'timeout' THEN 1 ELSE 0 END) AS BIGINT)"),
    ("failed_cost", "sum(CASE WHEN status <> 'ok' THEN cost END)"),
    ("retry_cost", "sum(CASE WHEN attempt > 1 THEN cost END)"),
    ("retries", "CAST(sum(CASE WHEN attempt > 1 THEN 1 ELSE 0 END) AS BIGINT)"),
    ("response_cache_hits", "CAST(sum(CASE WHEN cache_hit THEN 1 ELSE 0 END) AS BIGINT)"),
    ("unpriced_calls", "CAST(sum(CASE WHEN cost IS NULL THEN 1 ELSE 0 END) AS BIGINT)"),
    (
        "unpriced_tokens",
        "CAST(sum(CASE WHEN cost IS NULL THEN input_tokens + output_tokens ELSE 0 END) AS BIGINT)",
    ),
    ("unit_spend", "sum(CASE WHEN unit_id IS NOT NULL THEN cost END)"),
    ("billed_cost", "sum(billed_cost)"),
    ("billed_calls", "CAST(count(billed_cost) AS BIGINT)"),
    ("first_seen", "min(ts)"),
    ("last_seen", "max(ts)"),
)


# What the per-period and per-unit-kind sections use; the rest is only for table rows.
_LIGHT = (
    "calls",
    "requests",
    "priced_requests",
    "spend",
    "unit_spend",
    "unpriced_calls",
    "unpriced_tokens",
    "input_tokens",
    "cache_read_tokens",
    "output_tokens",
)
_UNPRICED = ("calls", "unpriced_calls", "unpriced_tokens", "first_seen", "last_seen")


@dataclass(frozen=True)
class ReportSQL:
    """The report's queries: one scan for the table rows and the headline (exact sums and
    latency percentiles), a light one for periods and unit kinds, one over unpriced calls
    only, and one for the measures that do not add up (distinct units, judged units,
    successes). No set pays for what it does not show, and no join touches the events
    table when outcomes are kept per unit (the usual case)."""

    query: ReportQuery
    dialect: Dialect
    labels: list[str]
    dim_exprs: list[str]

    @classmethod
    def build(cls, query: ReportQuery, dialect: Dialect) -> ReportSQL:
        dims = [dimension_sql(d, dialect) for d in query.by]
        labels = [label for _, label in dims]
        if len(set(labels)) != len(labels):
            raise ReportError(f"a dimension is repeated in --by: {', '.join(labels)}")
        if query.period is not None and query.period not in PERIODS:
            raise ReportError(f"unknown period {query.period!r}; use one of {', '.join(PERIODS)}")
        return cls(query, dialect, labels, [expr for expr, _ in dims])

    @property
    def table_keys(self) -> list[str]:
        return [f"d{i}" for i in range(len(self.dim_exprs))] + (["p"] if self.query.period else [])

    def source(self) -> str:
        """The window's events with every grouping key computed once."""
        d = self.dialect
        trend_period = self.query.period or _auto_period(self.query.window)
        keys = [f"{expr} AS d{i}" for i, expr in enumerate(self.dim_exprs)]
        if self.query.period:
            keys.append(f"{d.trunc(self.query.period, 'ts')} AS p")
        keys += [
            f"{d.trunc(trend_period, 'ts')} AS tp",
            "unit AS u",
            "priced_provider AS up",
            "COALESCE(priced_model, model) AS um",
            "unpriced_reason AS ur",
        ]
        since = d.ts_literal(self.query.window.since.isoformat())
        until = d.ts_literal(self.query.window.until.isoformat())
        return (
            f"SELECT *, {', '.join(keys)} FROM events "
            f"WHERE ts >= {since} AND ts < {until} AND {where_sql(self.query.where, d)}"
        )

    def sums(self) -> list[str]:
        """Exact sums for every section, one query per shape of section: everything for the
        table rows and the headline; what the sparkline and the unit kinds need per period
        and per unit kind; the unpriced calls alone for their section."""
        keys = self.table_keys
        src = f"({self.source()}) s"

        def select(names: Sequence[str]) -> str:
            return ", ".join(
                f"{self.dialect.null_if_empty(sql)} AS {name}" for name, sql in _SUMS if name in names
            )

        d = self.dialect
        everything = (
            f"{select([name for name, _ in _SUMS])}, "
            f"{d.quantile('latency_ms', 0.5)} AS latency_p50_ms, "
            f"{d.quantile('latency_ms', 0.95)} AS latency_p95_ms"
        )
        if keys:
            grouping = ", ".join(f"grouping({k}) AS g_{k}" for k in keys)
            main = (
                f"SELECT {', '.join(keys)}, {grouping}, {everything} FROM {src} "
                f"GROUP BY GROUPING SETS (({', '.join(keys)}), ())"
            )
        else:
            main = f"SELECT {everything} FROM {src}"
        light = (
            f"SELECT tp, u, grouping(tp) AS g_tp, grouping(u) AS g_u, {select(_LIGHT)} FROM {src} "
            "GROUP BY GROUPING SETS ((tp), (u))"
        )
        unpriced = (
            f"SELECT up, um, ur, 0 AS g_up, 0 AS g_um, 0 AS g_ur, {select(_UNPRICED)} FROM {src} "
            "WHERE cost IS NULL GROUP BY up, um, ur"
        )
        return [main, light, unpriced]

    @property
    def grouping_columns(self) -> list[str]:
        return list(dict.fromkeys([*self.table_keys, "tp", "u", "up", "um", "ur"]))

    def _unit_sets(self) -> tuple[str, str, str]:
        keys = self.table_keys
        prefix = f"{', '.join(keys)}, " if keys else ""
        sets = [f"({prefix}u, unit_id)"] + (["(u, unit_id)"] if keys else [])
        whole = f"grouping({keys[0]})" if keys else "1"
        return prefix, f"GROUPING SETS ({', '.join(sets)})", whole

    def units(self, outcome_kinds: set[str]) -> str:
        """Units, judged units, successes and the cost of judged units: per table row, in
        total and per unit kind. A unit counts once in each group it has events in."""
        prefix, sets, whole = self._unit_sets()
        if outcome_kinds <= {"unit"}:
            per_unit = (
                f"SELECT {prefix}u, unit_id, {whole} AS whole, sum(cost) AS cost FROM ({self.source()}) s "
                f"WHERE unit_id IS NOT NULL GROUP BY {sets}"
            )
            judged = (
                f"SELECT p.*, o.key IS NOT NULL AS judged, o.success AS success FROM ({per_unit}) p "
                "LEFT JOIN outcomes o ON o.key_kind = 'unit' AND o.unit = COALESCE(p.u, '') "
                "AND o.key = p.unit_id"
            )
        else:
            judged = self._judged_per_event()
        measures = (
            "count(*) AS units, sum(CASE WHEN judged THEN cost END) AS judged_cost, "
            "CAST(sum(CASE WHEN judged THEN 1 ELSE 0 END) AS BIGINT) AS judged, "
            "CAST(sum(CASE WHEN success THEN 1 ELSE 0 END) AS BIGINT) AS successes"
        )
        keys = self.table_keys
        parts = []
        if keys:
            parts.append(
                f"SELECT 'table' AS s, {', '.join(keys)}, CAST(NULL AS VARCHAR) AS uk, {measures} "
                f"FROM j WHERE whole = 0 GROUP BY {', '.join(keys)}"
            )
        nulls = "".join(f"NULL AS {k}, " for k in keys)
        parts.append(
            f"SELECT CASE WHEN grouping(u) = 0 THEN 'unit' ELSE 'total' END AS s, {nulls}u AS uk, {measures} "
            "FROM j WHERE whole = 1 GROUP BY GROUPING SETS ((u), ())"
        )
        return f"WITH j AS ({judged}) " + " UNION ALL ".join(parts)

    def _judged_per_event(self) -> str:
        """When judgements are kept per trace or per event too, each event finds its own
        (unit first, then trace, then event); a unit is judged if any of its events is."""
        prefix, sets, whole = self._unit_sets()
        events = (
            "SELECT s.*, COALESCE(ou.success, ot.success, oe.success) AS _success, "
            "(ou.key IS NOT NULL OR ot.key IS NOT NULL OR oe.key IS NOT NULL) AS _judged "
            f"FROM ({self.source()}) s "
            "LEFT JOIN outcomes ou ON ou.key_kind = 'unit' AND ou.unit = COALESCE(s.u, '') "
            "AND ou.key = s.unit_id "
            "LEFT JOIN outcomes ot ON ot.key_kind = 'trace' AND ot.unit = '' AND ot.key = s.trace_id "
            "LEFT JOIN outcomes oe ON oe.key_kind = 'event' AND oe.unit = '' AND oe.key = s.event_id "
            "WHERE s.unit_id IS NOT NULL"
        )
        return (
            f"SELECT {prefix}u, unit_id, {whole} AS whole, "
            "sum(CASE WHEN _judged THEN cost END) AS cost, "
            "max(CASE WHEN _judged THEN 1 ELSE 0 END) = 1 AS judged, "
            "max(CASE WHEN _success THEN 1 ELSE 0 END) = 1 AS success "
            f"FROM ({events}) e GROUP BY {sets}"
        )


def _auto_period(window: Window) -> str:
    days = window.length.total_seconds() / 86400
    if days <= 2:
        return "hour"
    if days <= 120:
        return "day"
    return "week" if days <= 730 else "month"


def previous_spend_sql(query: ReportQuery, dialect: Dialect) -> str:
    dims = [dimension_sql(d, dialect) for d in query.by]
    prev = query.window.previous
    since = dialect.ts_literal(prev.since.isoformat())
    until = dialect.ts_literal(prev.until.isoformat())
    keys = [f"{expr} AS d{i}" for i, (expr, _) in enumerate(dims)]
    group = f"GROUP BY GROUPING SETS (({', '.join(f'd{i}' for i in range(len(dims)))}), ())" if dims else ""
    grouping = ", ".join(f"grouping(d{i}) AS g_d{i}" for i in range(len(dims)))
    head = f"{', '.join(f'd{i}' for i in range(len(dims)))}, {grouping}, " if dims else ""
    return (
        f"SELECT {head}sum(cost) AS spend FROM (SELECT cost{', ' if keys else ''}{', '.join(keys)} FROM events "
        f"WHERE ts >= {since} AND ts < {until} AND {where_sql(query.where, dialect)}) s {group}"
    )


def run_report(store: Store, query: ReportQuery) -> Report:
    dialect = dialect_for(store.dialect)
    sql = ReportSQL.build(query, dialect)
    labels = sql.labels
    result = []
    for part in sql.sums():
        for row in store.fetch(part).to_pylist():
            # Every row carries every grouping flag and measure: 1 / None where its set has none.
            for column in sql.grouping_columns:
                row.setdefault(column, None)
                row.setdefault(f"g_{column}", 1)
            for name, _ in _SUMS:
                row.setdefault(name, None)
            result.append(row)
    previous = store.fetch(previous_spend_sql(query, dialect)).to_pylist()

    dim_keys = [f"d{i}" for i in range(len(labels))]
    table_keys = sql.table_keys
    _merge_measures(result, store, sql, table_keys)

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
    if query.period:
        rows.sort(key=lambda x: (x["period"], -(x.get("spend") or 0), _names(x, labels)))
        _add_period_trend(rows, labels)
    else:
        rows.sort(key=lambda x: (-(x.get("spend") or 0), _names(x, labels)))
        if query.top:
            rows = rows[: query.top]
    if not table_keys:
        rows = [dict(headline)]

    periods = sorted(
        ({"period": r["tp"], **_derive(r, total)} for r in result if in_set(r, ["tp"])),
        key=lambda x: x["period"],
    )
    units = sorted(
        ({"unit": r["u"], **_derive(r, total)} for r in result if in_set(r, ["u"]) and r["u"]),
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
                "first_seen": r["first_seen"],
                "last_seen": r["last_seen"],
            }
            for r in result
            if in_set(r, ["up", "um", "ur"]) and r["ur"] is not None
        ),
        key=lambda x: (-x["calls"], _names(x, ["provider", "model", "reason"])),
    )
    return Report(
        query, headline, rows, periods, units, unpriced, labels + (["period"] if query.period else [])
    )


def _names(row: Mapping[str, Any], labels: Sequence[str]) -> tuple[tuple[bool, str], ...]:
    """Tie-breaker for rows of equal spend, so every engine lists them in the same order."""
    return tuple((row.get(label) is not None, str(row.get(label) or "")) for label in labels)


def _merge_measures(
    result: list[dict[str, Any]], store: Store, sql: ReportSQL, table_keys: list[str]
) -> None:
    """Put the unit measures beside the sums of the same group."""
    kinds = {r["key_kind"] for r in store.fetch("SELECT DISTINCT key_kind FROM outcomes").to_pylist()}
    measures: dict[tuple[str, tuple[Any, ...]], dict[str, Any]] = {}
    key: tuple[Any, ...]
    for row in store.fetch(sql.units(kinds)).to_pylist():
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
        # Percentiles come with the sums of the table rows and the headline; other sets have none.
        row.setdefault("latency_p50_ms", None)
        row.setdefault("latency_p95_ms", None)
        row["units"] = found.get("units") or 0
        row["judged_cost"] = found.get("judged_cost")
        # With no judgement recorded at all there is no success rate (None), not 0 %.
        row["judged"] = (found.get("judged") or 0) if kinds else None
        row["successes"] = (found.get("successes") or 0) if kinds else None


def _add_period_trend(rows: list[dict[str, Any]], labels: Sequence[str]) -> None:
    last: dict[tuple[Any, ...], Decimal | None] = {}
    for row in rows:
        key = tuple(row.get(label) for label in labels)
        prev = last.get(key)
        row["previous_spend"] = prev
        row["trend_pct"] = _pct_change(row.get("spend"), prev)
        last[key] = row.get("spend")


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
    """Exact sums from the engine plus the ratios a reader wants."""
    if not row:
        return {"calls": 0, "spend": None, "unpriced_calls": 0, "unpriced_tokens": 0}
    spend = row.get("spend")
    out: dict[str, Any] = {
        "calls": row["calls"],
        "requests": row["requests"],
        "spend": spend,
        "share": _ratio(spend, total) if total is not None else None,
        "cost_per_request": _div(spend, row["priced_requests"]),
        "cost_per_1k_input": _div(
            _add(row["cost_input"], row["cost_cache_read"], row["cost_cache_write"]),
            row["priced_input_tokens"],
            1000,
        ),
        "cost_per_1k_output": _div(
            _add(row["cost_output"], row["cost_reasoning"]), row["priced_output_tokens"], 1000
        ),
        "input_tokens": row["input_tokens"],
        "output_tokens": row["output_tokens"],
        "cost_input": row["cost_input"],
        "cost_cache_read": row["cost_cache_read"],
        "cost_cache_write": row["cost_cache_write"],
        "cost_output": row["cost_output"],
        "cost_reasoning": row["cost_reasoning"],
        "cost_other": row["cost_other"],
        "cache_hit_ratio": _ratio(row["cache_read_tokens"], row["input_tokens"]),
        "cache_savings": row["cache_savings"],
        "response_cache_hits": row["response_cache_hits"],
        "avoided_cost": row["avoided_cost"],
        "reasoning_share": _ratio(row["cost_reasoning"], _add(row["cost_output"], row["cost_reasoning"])),
        "failed_cost": row["failed_cost"],
        "retry_cost": row["retry_cost"],
        "wasted_share": _ratio(_add(row["failed_cost"], row["retry_cost"]), spend),
        "retries": row["retries"],
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


def _rows_to_table(rows: list[dict[str, Any]], dimensions: Sequence[str]) -> pa.Table:
    if not rows:
        return pa.table({})
    names = list(rows[0].keys())
    arrays = []
    for name in names:
        values = [r.get(name) for r in rows]
        if name in MONEY_COLUMNS:
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
