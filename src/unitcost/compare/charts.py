"""Charts of the comparisons, written to a file: PNG or SVG with matplotlib, HTML with plotly.

Both work offline: matplotlib renders with its Agg backend, and the HTML page embeds
plotly.js itself rather than loading it from a CDN.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

SUFFIXES = (".png", ".svg", ".html")
COMPONENT_COLOURS = {
    "input": "#4C72B0",
    "cache_read": "#55A868",
    "cache_write": "#C44E52",
    "output": "#8172B2",
    "reasoning": "#CCB974",
    "other": "#64B5CD",
}


def check_path(path: Path) -> None:
    """Refuse, before any work, a chart file that could not be written: checked after the
    comparison, a missing directory would cost the whole run and end in a bare errno."""
    if path.suffix.lower() not in SUFFIXES:
        raise ValueError(f"--chart must end with {', '.join(SUFFIXES)}, got {path.name!r}")
    target = path.expanduser()
    folder = target.parent
    if not folder.is_dir():
        raise ValueError(f"--chart {path}: the directory {folder} does not exist (create it first)")
    if target.is_dir():
        raise ValueError(f"--chart {path} is a directory, not a file")
    if not os.access(folder, os.W_OK) or (target.exists() and not os.access(target, os.W_OK)):
        raise ValueError(f"--chart {path}: no permission to write there")


def _write(path: Path, save: Callable[[str], object]) -> None:
    """Write the chart with `save(filename)`; a file system refusal becomes a one-line error."""
    try:
        save(str(path.expanduser()))
    except OSError as exc:
        raise ValueError(f"cannot write the chart to {path}: {exc.strerror or exc}") from None


def stacked_bars(
    path: Path, title: str, labels: Sequence[str], components: dict[str, Sequence[float]], ylabel: str = "USD"
) -> None:
    """One bar per scenario, stacked by cost component."""
    check_path(path)
    if path.suffix.lower() == ".html":
        import plotly.graph_objects as go

        fig = go.Figure()
        for name, values in components.items():
            fig.add_bar(
                name=name.replace("_", " "),
                x=list(labels),
                y=list(values),
                marker_color=COMPONENT_COLOURS.get(name),
            )
        fig.update_layout(barmode="stack", title=title, yaxis_title=ylabel)
        _write(path, lambda name: fig.write_html(name, include_plotlyjs=True, full_html=True))
        return
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(labels) + 2), 4.8))
    bottoms = [0.0] * len(labels)
    for name, values in components.items():
        ax.bar(
            labels, values, bottom=bottoms, label=name.replace("_", " "), color=COMPONENT_COLOURS.get(name)
        )
        bottoms = [b + v for b, v in zip(bottoms, values, strict=True)]
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize="small")
    ax.tick_params(axis="x", labelrotation=20, labelsize="small")
    fig.tight_layout()
    try:
        _write(path, fig.savefig)
    finally:
        plt.close(fig)


def waterfall(
    path: Path,
    title: str,
    start: tuple[str, float],
    steps: Sequence[tuple[str, float]],
    end: tuple[str, float],
) -> None:
    """From the first period's cost, one step per contribution, to the second period's cost."""
    check_path(path)
    if path.suffix.lower() == ".html":
        import plotly.graph_objects as go

        fig = go.Figure(
            go.Waterfall(
                x=[start[0], *(s[0] for s in steps), end[0]],
                y=[start[1], *(s[1] for s in steps), end[1]],
                measure=["absolute", *("relative" for _ in steps), "total"],
            )
        )
        fig.update_layout(title=title, yaxis_title="USD")
        _write(path, lambda name: fig.write_html(name, include_plotlyjs=True, full_html=True))
        return
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(7.0, 0.9 * (len(steps) + 2) + 2), 5.0))
    names = [start[0], *(s[0] for s in steps), end[0]]
    level = start[1]
    bottoms, heights, colours = [0.0], [start[1]], ["#4C72B0"]
    for _, value in steps:
        bottoms.append(level if value >= 0 else level + value)
        heights.append(abs(value))
        colours.append("#C44E52" if value > 0 else "#55A868")
        level += value
    bottoms.append(0.0)
    heights.append(end[1])
    colours.append("#4C72B0")
    ax.bar(names, heights, bottom=bottoms, color=colours)
    ax.set_title(title)
    ax.set_ylabel("USD")
    ax.tick_params(axis="x", labelrotation=35, labelsize="small")
    fig.tight_layout()
    try:
        _write(path, fig.savefig)
    finally:
        plt.close(fig)


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
