"""Rendering rows as a rich table, CSV, JSON or Markdown: one function for every command."""

from __future__ import annotations

import csv
import io
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from enum import StrEnum
from typing import Any

import orjson
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ..exact_json import json_default


class Format(StrEnum):
    table = "table"
    csv = "csv"
    json = "json"
    markdown = "markdown"


@dataclass(frozen=True)
class Col:
    key: str
    header: str
    kind: str = "text"
    """text | dim (a grouping key: None is the bucket of calls without it) | money | unit_money
    (more decimals) | int | pct | ratio | float | ts | date"""


def console() -> Console:
    return Console(highlight=False, soft_wrap=False, width=None if sys.stdout.isatty() else 200)


NO_VALUE = "(none)"
"""The group of calls without a value of the dimension: a bucket of its own, named."""


def fmt_value(value: Any, kind: str) -> str:
    if value is None:
        return NO_VALUE if kind == "dim" else "—"
    if kind == "money":
        return _cents(Decimal(value))
    if kind == "unit_money":
        return _money(Decimal(value), 6 if abs(Decimal(value)) < 1 else 4)
    if kind == "int":
        return f"{int(value):,}"
    if kind == "pct":
        return f"{float(value):+.1f}%"
    if kind == "ratio":
        return f"{float(value) * 100:.1f}%"
    if kind == "float":
        return f"{float(value):,.0f}"
    if kind == "ts" and isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M")
    if kind == "date" and isinstance(value, datetime | date):
        return value.strftime("%Y-%m-%d")
    return str(value)


def _cents(value: Decimal) -> str:
    """Cents, except for an amount that they would show as $0.00: a few calls of a cheap model
    cost $0.0025, and a column of `$0.00` beside a 40 % share reads as free."""
    for places in (2, 6):
        text = _money(value, places)
        if value == 0 or any(digit in text for digit in "123456789"):
            return text.rstrip("0") if places > 2 else text
    return ">-$0.000001" if value < 0 else "<$0.000001"


def _money(value: Decimal, places: int) -> str:
    rounded = value.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_EVEN)
    sign = "-" if rounded < 0 else ""
    return f"{sign}${abs(rounded):,.{places}f}"


def to_json(data: Any) -> str:
    return orjson.dumps(data, default=json_default, option=orjson.OPT_INDENT_2).decode()


def print_json(data: Any, out: Console | None = None) -> None:
    """Machine-readable output: indented JSON, exact decimals, never re-wrapped or styled."""
    (out or console()).print(to_json(data), markup=False, soft_wrap=True)


_LEFT = ("text", "dim", "ts", "date")


def render(
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[Col],
    fmt: Format,
    *,
    title: str | None = None,
    out: Console | None = None,
    caption: str | None = None,
) -> None:
    out = out or console()
    if fmt == Format.json:
        print_json([{c.key: r.get(c.key) for c in columns} for r in rows], out)
        return
    if fmt == Format.csv:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow([c.key for c in columns])
        for r in rows:
            writer.writerow(["" if r.get(c.key) is None else _plain(r.get(c.key)) for c in columns])
        out.file.write(buffer.getvalue())
        return
    if fmt == Format.markdown:
        lines = []
        if title:
            lines.append(f"**{title}**\n")
        lines.append("| " + " | ".join(c.header for c in columns) + " |")
        lines.append("| " + " | ".join("---:" if c.kind not in _LEFT else "---" for c in columns) + " |")
        for r in rows:
            lines.append(
                "| " + " | ".join(fmt_value(r.get(c.key), c.kind).replace("|", "\\|") for c in columns) + " |"
            )
        if caption:
            lines.append(f"\n{caption}")
        out.file.write("\n".join(lines) + "\n\n")
        return
    table = Table(
        title=title,
        caption=caption,
        title_justify="left",
        caption_justify="left",
        header_style="bold",
        pad_edge=False,
    )
    for c in columns:
        table.add_column(c.header, justify="left" if c.kind in _LEFT else "right", overflow="fold")
    for r in rows:
        # Cells are data, not markup: a model id or reason like "[[price]]" must print as is.
        table.add_row(*(escape(fmt_value(r.get(c.key), c.kind)) for c in columns))
    out.print(table)


def _plain(value: Any) -> str:
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, datetime | date):
        return value.isoformat()
    return str(value)


def sparkline(values: Sequence[Decimal | float | None]) -> str:
    bars = "▁▂▃▄▅▆▇█"
    numbers = [float(v) if v is not None else 0.0 for v in values]
    if not numbers:
        return ""
    top = max(numbers) or 1.0
    return "".join(bars[min(int(v / top * (len(bars) - 1) + 0.5), len(bars) - 1)] for v in numbers)
