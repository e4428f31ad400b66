"""What the dashboard's pages show, as display values: tables of cells and chart figures.

Every figure is formatted by the helpers `unitcost report`, `budgets` and `alerts` print with
(`cli.output.fmt_value`, the report's headline lines and column lists), so a page and the
command show the same strings, to the cent. Charts are plotly figures as plain data: the
money on their axes is a float for drawing only, and each point's hover text is the exact
amount, formatted as the tables format it. Nothing here writes HTML: the templates escape
every value.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

from ..analytics.report import Report, bucket_starts
from ..cli.output import NO_VALUE, Col, fmt_value
from ..utc import as_utc

_LEFT = ("text", "dim", "ts", "date")
"""Column kinds aligned left, as in the terminal tables; numbers are aligned right."""


@dataclass(frozen=True)
class Cell:
    text: str
    href: str | None = None
    """A narrower drill-down of this value, when the cell is a dimension's value."""
    numeric: bool = False
    missing: bool = False
    """No value: an unknown amount (`—`) or the group of calls without the dimension."""


@dataclass
class Table:
    headers: list[tuple[str, bool]]
    """(header, numeric) per column."""
    rows: list[list[Cell]]
    title: str = ""
    caption: str | None = None
    keys: list[str] = field(default_factory=list)


def table(
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[Col],
    *,
    title: str = "",
    caption: str | None = None,
    link: Any = None,
) -> Table:
    """`rows` as the CLI renders them with `columns`; `link(column, row)` gives a cell's href."""
    body = []
    for row in rows:
        cells = []
        for col in columns:
            value = row.get(col.key)
            href = link(col, row) if link is not None else None
            cells.append(
                Cell(
                    fmt_value(value, col.kind),
                    href,
                    col.kind not in _LEFT,
                    value is None and col.kind != "text",
                )
            )
        body.append(cells)
    return Table(
        [(c.header, c.kind not in _LEFT) for c in columns], body, title, caption, [c.key for c in columns]
    )


# --------------------------------------------------------------------------- drill-down links


def filter_value(value: Any) -> str:
    """A value as `--where dimension=value` reads it: `\\,` is a comma inside the value and `\\\\`
    a backslash; no value (the `(none)` group) is the empty value."""
    if value is None:
        return ""
    return str(value).replace("\\", "\\\\").replace(",", "\\,")


def query_string(params: Sequence[tuple[str, str]]) -> str:
    kept = [(k, v) for k, v in params if v != "" or k == "where"]
    return ("?" + urlencode(kept)) if kept else ""


def next_dimension(current: Sequence[str]) -> str:
    """What to split by once a value of each dimension shown is chosen: the model, or the
    feature when the model is chosen already."""
    for candidate in ("model", "feature", "team", "provider"):
        if candidate not in current:
            return candidate
    return "status"


# --------------------------------------------------------------------------- charts


LEGEND_BELOW: dict[str, Any] = {"orientation": "h", "yref": "container", "y": 0, "yanchor": "bottom"}
"""A legend at the foot of the figure, in LEGEND_HEIGHT pixels of bottom margin of its own,
under the x axis's labels and title. plotly's default place for a horizontal legend is just
under the plot area, over the first tick's second line (the year) and the axis title."""
LEGEND_HEIGHT = 30


def count_ticks(peak: int) -> dict[str, Any]:
    """Ticks of an axis that counts calls: whole numbers. plotly.js (3 and later) lines an
    overlaying axis's ticks up with the main axis's gridlines unless told otherwise (tickmode
    "sync"), which labels the axis 41.5 or 3.04 calls."""
    if peak <= 10:
        return {"tickmode": "linear", "tick0": 0, "dtick": 1}
    return {"tickmode": "auto"}  # steps of 1, 2 or 5 times a power of ten: whole for such a range


def _money_float(value: Decimal | None) -> float | None:
    return None if value is None else float(value)


def spend_chart(report: Report) -> dict[str, Any]:
    """The spend per bucket of the window (as `unitcost report`'s sparkline), with the unpriced
    calls of each bucket beside it: a bucket whose calls all lack a price has no bar (unknown),
    never a bar of $0, and its unpriced calls show on the second axis."""
    by_start = {as_utc(p["period"]): p for p in report.periods}
    starts = bucket_starts(report.query.window, report.bucket)
    x: list[str] = []
    spend: list[float | None] = []
    hover: list[str] = []
    unpriced: list[int] = []
    for start in starts:
        row = by_start.get(start)
        # A plain UTC clock time (the title says UTC): plotly.js reads no zone offsets.
        x.append(start.strftime("%Y-%m-%d %H:%M"))
        if row is None:
            spend.append(0.0)  # no call at all in the bucket: nothing was spent
            hover.append("no calls")
            unpriced.append(0)
            continue
        spend.append(_money_float(row.get("spend")))
        calls, missing = row.get("calls") or 0, row.get("unpriced_calls") or 0
        hover.append(
            f"{fmt_value(row.get('spend'), 'money')} · {fmt_value(calls, 'int')} calls"
            + (f" · {fmt_value(missing, 'int')} unpriced (cost unknown)" if missing else "")
        )
        unpriced.append(missing)
    data: list[dict[str, Any]] = [
        {
            "type": "bar",
            "name": "spend (USD)",
            "x": x,
            "y": spend,
            "text": hover,
            "hovertemplate": "%{x}<br>%{text}<extra></extra>",
            "textposition": "none",
            "marker": {"color": "#4C72B0"},
        }
    ]
    if any(unpriced):
        data.append(
            {
                "type": "scatter",
                "mode": "markers",
                "name": "unpriced calls",
                "x": x,
                "y": [n or None for n in unpriced],
                "yaxis": "y2",
                "marker": {"color": "#C44E52", "symbol": "x", "size": 9},
                "hovertemplate": "%{x}<br>%{y:,} unpriced calls (cost unknown)<extra></extra>",
            }
        )
    layout: dict[str, Any] = {
        "title": {"text": f"Spend per {report.bucket} (UTC)"},
        "yaxis": {"title": {"text": "USD"}, "rangemode": "tozero"},
        # Room at the foot for the dates (the first tick has the year on a second line) and
        # the legend under them.
        "margin": {"l": 60, "r": 60, "t": 40, "b": 40 + LEGEND_HEIGHT if any(unpriced) else 40},
        "height": 320 + LEGEND_HEIGHT if any(unpriced) else 320,
        "showlegend": bool(any(unpriced)),
        "legend": LEGEND_BELOW,
    }
    if any(unpriced):
        layout["yaxis2"] = {
            "title": {"text": "unpriced calls"},
            "overlaying": "y",
            "side": "right",
            "rangemode": "tozero",
            "showgrid": False,
            **count_ticks(max(unpriced)),
        }
    return {"data": data, "layout": layout}


def groups_chart(report: Report, limit: int = 20) -> dict[str, Any] | None:
    """The groups of the table by spend (the biggest `limit`), for a report without a period."""
    if report.query.period or not report.dimensions:
        return None
    rows = [r for r in report.rows if r.get("spend") is not None][:limit]
    if not rows:
        return None
    labels = [" · ".join(fmt_value(r.get(d), "dim") for d in report.dimensions) for r in rows]
    return {
        "data": [
            {
                "type": "bar",
                "orientation": "h",
                "x": [_money_float(r.get("spend")) for r in rows][::-1],
                "y": labels[::-1],
                "text": [fmt_value(r.get("spend"), "money") for r in rows][::-1],
                "hovertemplate": "%{y}<br>%{text}<extra></extra>",
                "textposition": "none",
                "marker": {"color": "#55A868"},
            }
        ],
        "layout": {
            "title": {"text": f"Spend by {', '.join(report.dimensions)}"},
            "xaxis": {"title": {"text": "USD"}, "rangemode": "tozero"},
            "yaxis": {"automargin": True},
            "margin": {"l": 20, "r": 20, "t": 40, "b": 40},
            "height": max(220, 26 * len(rows) + 90),
        },
    }


def budgets_chart(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """Per budget: spent and the forecast at period end, with its 90 % interval, against the
    amount."""
    if not rows:
        return None
    names = [str(r["budget"]) for r in rows]
    forecast = [_money_float(r.get("forecast")) for r in rows]
    plus = [_gap(r.get("forecast"), r.get("forecast_high")) for r in rows]
    minus = [_gap(r.get("forecast_low"), r.get("forecast")) for r in rows]
    return {
        "data": [
            {
                "type": "bar",
                "orientation": "h",
                "name": "spent",
                "y": names,
                "x": [_money_float(r.get("spent")) for r in rows],
                "text": [fmt_value(r.get("spent"), "money") for r in rows],
                "hovertemplate": "%{y}: spent %{text}<extra></extra>",
                "textposition": "none",
                "marker": {"color": "#4C72B0"},
            },
            {
                "type": "scatter",
                "mode": "markers",
                "name": "forecast (90 % interval)",
                "y": names,
                "x": forecast,
                "text": [f"{fmt_value(r.get('forecast'), 'money')} ({r.get('forecast_90')})" for r in rows],
                "hovertemplate": "%{y}: forecast %{text}<extra></extra>",
                "error_x": {"type": "data", "symmetric": False, "array": plus, "arrayminus": minus},
                "marker": {"color": "#DD8452", "size": 10},
            },
            {
                "type": "scatter",
                "mode": "markers",
                "name": "amount",
                "y": names,
                "x": [_money_float(r.get("amount")) for r in rows],
                "text": [fmt_value(r.get("amount"), "money") for r in rows],
                "hovertemplate": "%{y}: budget %{text}<extra></extra>",
                "marker": {"color": "#C44E52", "symbol": "line-ns-open", "size": 22, "line": {"width": 3}},
            },
        ],
        "layout": {
            "title": {"text": "Spent and forecast against each budget"},
            "xaxis": {"title": {"text": "USD"}, "rangemode": "tozero", "automargin": True},
            "yaxis": {"automargin": True},
            "margin": {"l": 20, "r": 20, "t": 40, "b": 50 + LEGEND_HEIGHT},
            "height": max(220, 48 * len(rows) + 110) + LEGEND_HEIGHT,
            "legend": LEGEND_BELOW,
        },
    }


def _gap(low: Decimal | None, high: Decimal | None) -> float | None:
    """One side of the forecast's interval, for its error bar (None: no interval yet)."""
    return None if low is None or high is None else float(high - low)


def used_percent(row: Mapping[str, Any]) -> float:
    """How much of the bar a budget's spend fills, capped at the bar's end."""
    return max(0.0, min(float(row.get("used") or 0.0) * 100, 100.0))


__all__ = [
    "NO_VALUE",
    "Cell",
    "Table",
    "budgets_chart",
    "filter_value",
    "groups_chart",
    "next_dimension",
    "query_string",
    "spend_chart",
    "table",
    "used_percent",
]
