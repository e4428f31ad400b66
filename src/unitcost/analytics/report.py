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
from ..events import LEDGER_FIELDS
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
    ("calls", "count(*)"),
    ("requests", "sum(requests)"),
    ("priced_requests", "sum(CASE WHEN cost IS NOT NULL THEN requests ELSE 0 END)"),
    ("spend", "sum(cost)"),
    ("cost_input", "sum(cost_input)"),
    ("cost_cache_read", "sum(cost_cache_read)"),
    ("cost_cache_write", "sum(cost_cache_write_5m + cost_cache_write_1h)"),
    ("cost_output", "sum(cost_output)"),
    ("cost_reasoning", "sum(cost_reasoning)"),
    ("cost_other", "sum(cost_other)"),
    ("cache_savings", "sum(cache_savings)"),
    ("avoided_cost", "sum(avoided_cost)"),
    ("input_tokens", "sum(input_tokens)"),
    ("cache_read_tokens", "sum(cache_read_tokens)"),
    ("output_tokens", "sum(output_tokens)"),
    ("reasoning_tokens", "sum(reasoning_tokens)"),
    ("priced_input_tokens", "sum(CASE WHEN cost IS NOT NULL THEN input_tokens ELSE 0 END)"),
    ("priced_output_tokens", "sum(CASE WHEN cost IS NOT NULL THEN output_tokens ELSE 0 END)"),
    ("errors", "sum(CASE WHEN status = 'error' THEN 1 ELSE 0 END)"),
    ("timeouts", "sum(CASE WHEN status = 'timeout' THEN 1 ELSE 0 END)"),
    ("failed_cost", "sum(CASE WHEN status <> 'ok' THEN cost END)"),
    ("retry_cost", "sum(CASE WHEN attempt > 1 THEN cost END)"),
    ("retries", "sum(CASE WHEN attempt > 1 THEN 1 ELSE 0 END)"),
    ("response_cache_hits", "sum(CASE WHEN cache_hit THEN 1 ELSE 0 END)"),
    ("unpriced_calls", "sum(CASE WHEN cost IS NULL THEN 1 ELSE 0 END)"),
    ("unpriced_tokens", "sum(CASE WHEN cost IS NULL THEN input_tokens + output_tokens ELSE 0 END)"),
    ("unit_spend", "sum(CASE WHEN unit_id IS NOT NULL THEN cost END)"),
    ("billed_cost", "sum(billed_cost)"),
    ("billed_calls", "count(billed_cost)"),
    ("first_seen", "min(ts)"),
    ("last_seen", "max(ts)"),
)


def _aggregates(dialect: Dialect, with_outcomes: bool) -> list[tuple[str, str]]:
    unit_key = dialect.concat('"unit"', "':'", '"unit_id"')
    aggregates = [
        *_SUMS,
        ("latency_p50_ms", dialect.quantile("latency_ms", 0.5)),
        ("latency_p95_ms", dialect.quantile("latency_ms", 0.95)),
        ("units", f"count(DISTINCT CASE WHEN unit_id IS NOT NULL THEN {unit_key} END)"),
    ]
    if with_outcomes:
        aggregates += [
            ("judged_cost", "sum(CASE WHEN _outcome_key IS NOT NULL THEN cost END)"),
            ("judged", "count(DISTINCT _outcome_key)"),
            ("successes", "count(DISTINCT CASE WHEN _success THEN _outcome_key END)"),
        ]
    return [(name, dialect.null_if_empty(sql)) for name, sql in aggregates]


def _outcome_join(dialect: Dialect) -> tuple[str, str]:
    """Extra columns and joins linking each event to its outcome: by unit, else trace, else event."""
    columns = (
        "COALESCE(CASE WHEN ou.key IS NOT NULL THEN "
        + dialect.concat("'u:'", "e.unit", "':'", "e.unit_id")
        + " END, "
        "CASE WHEN ot.key IS NOT NULL THEN " + dialect.concat("'t:'", "e.trace_id") + " END, "
        "CASE WHEN oe.key IS NOT NULL THEN "
        + dialect.concat("'e:'", "e.event_id")
        + " END) AS _outcome_key, "
        "COALESCE(ou.success, ot.success, oe.success) AS _success"
    )
    joins = (
        "LEFT JOIN outcomes ou ON ou.key_kind = 'unit' AND ou.unit = e.unit AND ou.key = e.unit_id "
        "LEFT JOIN outcomes ot ON ot.key_kind = 'trace' AND ot.unit = '' AND ot.key = e.trace_id "
        "LEFT JOIN outcomes oe ON oe.key_kind = 'event' AND oe.unit = '' AND oe.key = e.event_id"
    )
    return columns, joins


def build_report_sql(query: ReportQuery, dialect: Dialect, with_outcomes: bool) -> tuple[str, list[str]]:
    dims = [dimension_sql(d, dialect) for d in query.by]
    labels = [label for _, label in dims]
    if len(set(labels)) != len(labels):
        raise ReportError(f"a dimension is repeated in --by: {', '.join(labels)}")
    period = query.period
    if period is not None and period not in PERIODS:
        raise ReportError(f"unknown period {period!r}; use one of {', '.join(PERIODS)}")
    trend_period = period or _auto_period(query.window)

    select_dims = [f"{expr} AS d{i}" for i, (expr, _) in enumerate(dims)]
    if period:
        select_dims.append(f"{dialect.trunc(period, 'ts')} AS p")
    select_dims += [
        f"{dialect.trunc(trend_period, 'ts')} AS tp",
        "unit AS u",
        "priced_provider AS up",
        "COALESCE(priced_model, model) AS um",
        "unpriced_reason AS ur",
    ]
    table_keys = [f"d{i}" for i in range(len(dims))] + (["p"] if period else [])
    sets = [
        f"({', '.join(table_keys)})" if table_keys else "()",
        "()",
        "(tp)",
        "(u)",
        "(up, um, ur)",
    ]
    outcome_cols, outcome_joins = _outcome_join(dialect) if with_outcomes else ("", "")
    since = dialect.ts_literal(query.window.since.isoformat())
    until = dialect.ts_literal(query.window.until.isoformat())
    # Columns named one by one: with joins, ClickHouse names `e.*` columns `e.ts`, not `ts`.
    event_cols = ", ".join(f'e."{f.name}" AS "{f.name}"' for f in LEDGER_FIELDS)
    source = (
        f"SELECT {event_cols}{', ' + outcome_cols if outcome_cols else ''} FROM events e {outcome_joins} "
        f"WHERE e.ts >= {since} AND e.ts < {until} AND {where_sql(query.where, dialect)}"
    )
    aggregates = ", ".join(f"{sql} AS {name}" for name, sql in _aggregates(dialect, with_outcomes))
    grouping_cols = [*table_keys, "tp", "u", "up", "um", "ur"]
    grouping = ", ".join(f"grouping({c}) AS g_{c}" for c in dict.fromkeys(grouping_cols))
    sql = (
        f"SELECT {', '.join(dict.fromkeys(grouping_cols))}, {grouping}, {aggregates} "
        f"FROM (SELECT *, {', '.join(select_dims)} FROM ({source}) src) s "
        f"GROUP BY GROUPING SETS ({', '.join(sets)})"
    )
    return sql, labels


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
    with_outcomes = _has_outcomes(store)
    sql, labels = build_report_sql(query, dialect, with_outcomes)
    result = store.fetch(sql).to_pylist()
    previous = store.fetch(previous_spend_sql(query, dialect)).to_pylist()

    dim_keys = [f"d{i}" for i in range(len(labels))]
    table_keys = dim_keys + (["p"] if query.period else [])

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


def _has_outcomes(store: Store) -> bool:
    rows = store.fetch("SELECT count(*) AS n FROM (SELECT 1 FROM outcomes LIMIT 1) x").to_pylist()
    return bool(rows and rows[0]["n"])


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
