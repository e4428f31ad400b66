"""`unitcost price` and `unitcost prices ...`: one call priced, price history, changes, layers."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from ..analytics.window import parse_instant
from .app import ConfigOpt, FormatOpt, PricesOpt, app, friendly, open_book
from .output import Col, Format, console, print_json, render

if TYPE_CHECKING:  # the price book takes a third of a second to import: only commands that price do
    from ..pricing.book import PriceBook, PricedCall
    from ..pricing.model import Adjustment, Price

prices_app = typer.Typer(
    help="Price history, changes between dates, layers and updates.", no_args_is_help=True
)
app.add_typer(prices_app, name="prices")

_COMPONENT_LABELS = (
    ("input", "uncached input", "input_text"),
    ("cache_read", "cache read", "cache_read_text"),
    ("cache_write_5m", "cache write 5m", "cache_write_5m"),
    ("cache_write_1h", "cache write 1h", "cache_write_1h"),
    ("output", "output", "output_text"),
    ("reasoning", "reasoning", "reasoning"),
    ("other", "other (audio, images, search, requests)", None),
)
# What the "other" row is made of, shown under it when the call has any: an audio call's
# $0.35 of "other" says nothing until its audio rates are on the page.
_OTHER_LABELS = {
    "input_audio": "  audio input",
    "cache_audio_read": "  audio cache read",
    "input_image": "  image input",
    "cache_image_read": "  image cache read",
    "output_audio": "  audio output",
    "output_image": "  image output",
    "web_searches": "  web searches ($/1K)",
    "requests": "  requests ($/1K)",
}
# Usage fields as this command's flags, so an inconsistent call names what was typed.
_FLAGS = {
    "cache_write_5m_tokens": "--cache-write",
    "cache_write_1h_tokens": "--cache-write-1h",
    "cache_read_tokens": "--cache-read",
    "input_audio_tokens": "--input-audio",
    "input_image_tokens": "--input-image",
    "output_audio_tokens": "--output-audio",
    "output_image_tokens": "--output-image",
    "reasoning_tokens": "--reasoning",
    "input_tokens": "--input",
    "output_tokens": "--output",
}


@app.command("price")
@friendly
def price_cmd(
    model: Annotated[
        str,
        typer.Argument(
            help="Model as your code names it: gpt-4o, claude-sonnet-4-5, openai/gpt-4o, anthropic:claude-sonnet-4-5."
        ),
    ],
    input_tokens: Annotated[
        int, typer.Option("--input", min=0, help="All prompt tokens, cached or not.")
    ] = 0,
    cache_read: Annotated[
        int, typer.Option("--cache-read", min=0, help="Prompt tokens read from cache.")
    ] = 0,
    cache_write_5m: Annotated[
        int,
        typer.Option(
            "--cache-write", "--cache-write-5m", min=0, help="Prompt tokens written to a 5-minute cache."
        ),
    ] = 0,
    cache_write_1h: Annotated[
        int, typer.Option("--cache-write-1h", min=0, help="Prompt tokens written to a 1-hour cache.")
    ] = 0,
    output_tokens: Annotated[
        int, typer.Option("--output", min=0, help="All generated tokens, reasoning included.")
    ] = 0,
    reasoning: Annotated[
        int, typer.Option("--reasoning", min=0, help="Generated tokens spent reasoning.")
    ] = 0,
    input_audio: Annotated[
        int, typer.Option("--input-audio", min=0, help="Prompt tokens that are audio.")
    ] = 0,
    output_audio: Annotated[
        int, typer.Option("--output-audio", min=0, help="Generated tokens that are audio.")
    ] = 0,
    input_image: Annotated[
        int, typer.Option("--input-image", min=0, help="Prompt tokens that are images.")
    ] = 0,
    output_image: Annotated[
        int, typer.Option("--output-image", min=0, help="Generated tokens that are images.")
    ] = 0,
    web_searches: Annotated[int, typer.Option("--web-searches", min=0, help="Server-side web searches.")] = 0,
    requests: Annotated[
        int,
        typer.Option(
            "--requests", min=0, help="Requests (per-request fees, e.g. Perplexity's); 1 for one call."
        ),
    ] = 1,
    provider: Annotated[
        str | None,
        typer.Option(
            "--provider",
            "-p",
            help="Provider id, when the model name is ambiguous (azure, openrouter, aws...).",
        ),
    ] = None,
    at: Annotated[
        str | None, typer.Option("--at", help="When the call happened (date or datetime, UTC). Default: now.")
    ] = None,
    tier: Annotated[str, typer.Option("--tier", help="standard, batch, flex or priority.")] = "standard",
    fmt: FormatOpt = Format.table,
    config: ConfigOpt = None,
    prices: PricesOpt = None,
) -> None:
    """Price one call exactly, with its breakdown and the price's source and effective date."""
    from ..pricing.layers import TIERS
    from ..pricing.quote import also_listed, quote_document, subset_problem, window_hours

    if tier not in TIERS:  # a typo, not a call without a price
        raise ValueError(f"unknown service tier {tier!r}; expected one of {', '.join(TIERS)}")
    when = parse_instant(at) if at else datetime.now(UTC)
    usage = {
        "input_tokens": input_tokens,
        "cache_read_tokens": cache_read,
        "cache_write_5m_tokens": cache_write_5m,
        "cache_write_1h_tokens": cache_write_1h,
        "output_tokens": output_tokens,
        "reasoning_tokens": reasoning,
        "input_audio_tokens": input_audio,
        "output_audio_tokens": output_audio,
        "input_image_tokens": input_image,
        "output_image_tokens": output_image,
        "web_searches": web_searches,
        "requests": requests,
    }
    problem = subset_problem(usage, _FLAGS)
    if problem:
        raise ValueError(problem)
    book = open_book(config, prices)
    call = book.price(model, usage, provider=provider, at=when, tier=tier)
    if call.breakdown is None:
        _print_unpriced(book, model, provider, tier, when, call.unpriced_reason or "", fmt)
        raise typer.Exit(1)
    assert call.price is not None
    parts = call.breakdown.as_dict()
    q = call.quantities
    tokens = {
        "input": q["input_text"],
        "cache_read": q["cache_read_text"],
        "cache_write_5m": q["cache_write_5m"],
        "cache_write_1h": q["cache_write_1h"],
        "output": q["output_text"],
        "reasoning": q["reasoning"],
        "other": None,
    }
    # A quantity the price has no rate for makes a call using it unpriced: "—", not "$0".
    unpriced = set(book.plan(call.price).missing)
    rows: list[dict[str, Any]] = []
    for key, label, quantity in _COMPONENT_LABELS:
        rows.append(
            {
                "component": label,
                "tokens": tokens[key],
                "usd_per_mtok": call.rates.get(quantity) if quantity and quantity not in unpriced else None,
                "cost": parts[key],
            }
        )
    rows.extend(
        {
            "component": label,
            "tokens": q[name],
            "usd_per_mtok": call.rates[name],
            "cost": call.quantity_costs[name],
        }
        for name, label in _OTHER_LABELS.items()
        # One request with no per-request fee is every call: not worth a line.
        if q[name] and (name != "requests" or call.quantity_costs[name])
    )
    rows.append({"component": "total", "tokens": None, "usd_per_mtok": None, "cost": call.breakdown.total})
    if fmt == Format.json:
        print_json(quote_document(book, model, provider, call))
        return
    window = window_hours(book, call)
    also = also_listed(book, model, provider, call)
    out = console()
    if fmt in (Format.table, Format.markdown):  # which price, from when: csv and json are data
        _print_price_header(out, call, call.price, window, also, markdown=fmt == Format.markdown)
    render(
        rows,
        [
            Col("component", "component"),
            Col("tokens", "tokens", "int"),
            Col("usd_per_mtok", "$/MTok", "unit_money"),
            Col("cost", "cost", "unit_money"),
        ],
        fmt,
        out=out,
    )
    if fmt == Format.table and call.breakdown.cache_savings:
        saved = call.breakdown.cache_savings
        verb = "saved" if saved > 0 else "cost an extra"
        out.print(
            f"prompt caching {verb} ${abs(saved):.6f} on this call against uncached input", markup=False
        )


def _print_unpriced(
    book: PriceBook, model: str, provider: str | None, tier: str, when: datetime, reason: str, fmt: Format
) -> None:
    """No price: say why, and for a name no layer knows, the names that are close to it."""
    from ..pricing.quote import unpriced_document

    document = unpriced_document(book, model, provider, tier, when, reason)
    if fmt == Format.json:
        print_json(document)
        return
    suggestions = document["suggestions"]
    hint = f"; did you mean {', '.join(suggestions)}?" if suggestions else ""
    console().print(
        f"[yellow]no price[/yellow] for {escape(model)} at {when:%Y-%m-%d %H:%M} UTC ({tier}): "
        f"{escape(reason)}{escape(hint)}",
        markup=True,
    )


def _adjustment_text(adjustment: Adjustment) -> str:
    return (
        f"x{adjustment.factor.normalize():f} {adjustment.layer} {adjustment.kind} "
        f"{adjustment.ref}: {adjustment.source}"
    )


def _print_price_header(
    out: Any, call: PricedCall, price: Price, window: str | None, also: list[str], *, markdown: bool = False
) -> None:
    title = f"{call.provider}/{call.model} · {call.tier} · at {call.at:%Y-%m-%d %H:%M} UTC"
    if markdown:  # a list, so a renderer keeps one line per fact
        out.print(f"**{title}**\n", markup=False)
        for line in _header_lines(call, price, window, also):
            out.print(f"- {line}", markup=False)
        out.print("", markup=False)
        return
    out.print(f"[bold]{escape(title)}[/bold]", markup=True)
    for line in _header_lines(call, price, window, also):
        out.print(line, markup=False)


def _header_lines(call: PricedCall, price: Price, window: str | None, also: list[str]) -> list[str]:
    since = f"{call.effective_from:%Y-%m-%d %H:%M} UTC" if call.effective_from else "the start of the data"
    until = f"{call.effective_to:%Y-%m-%d %H:%M} UTC" if call.effective_to else "further notice"
    lines = [f"price   {price.ref}", f"source  {price.layer}: {price.source}"]
    lines += [f"        then {_adjustment_text(adjustment)}" for adjustment in price.adjustments]
    if call.earliest_known is not None:
        # "from the start of the data" would read as a price billed on that day.
        lines.append(f"valid   {call.earliest_known.describe(call.at)}; until {until}")
    else:
        lines.append(f"valid   from {since} until {until}")
    if window:
        lines.append(f"window  {window}")
    if call.context_tier is not None:
        lines.append(
            f"context prompt above {call.context_tier:,} tokens: every token of the call at the long-context rates"
        )
    if price.note:
        lines.append(f"note    {price.note}")
    if also:
        lines.append(f"also    listed for {', '.join(also)}: pass --provider to price theirs")
    return lines


@prices_app.command("show")
@friendly
def prices_show(
    model: Annotated[str, typer.Argument(help="Model name or id.")],
    provider: Annotated[str | None, typer.Option("--provider", "-p")] = None,
    tier: Annotated[list[str] | None, typer.Option("--tier", help="Only these tiers (repeatable).")] = None,
    fmt: FormatOpt = Format.table,
    config: ConfigOpt = None,
    prices: PricesOpt = None,
) -> None:
    """The dated price history of a model, every tier and layer, with sources."""
    from ..pricing.history import earliest_known_note, price_history
    from ..pricing.quote import require_model

    book = open_book(config, prices)
    ref = require_model(book, provider, model)
    rows = price_history(book, ref, tiers=tier or None)
    columns = [
        Col("tier", "tier"),
        Col("from", "from", "ts"),
        Col("to", "until", "ts"),
        Col("window", "window"),
        Col("input", "input", "unit_money"),
        Col("cache_read", "cache read", "unit_money"),
        Col("cache_write_5m", "write 5m", "unit_money"),
        Col("cache_write_1h", "write 1h", "unit_money"),
        Col("output", "output", "unit_money"),
        Col("reasoning", "reasoning", "unit_money"),
        Col("tiers", "long context"),
        Col("layer", "layer"),
        Col("ref", "price ref"),
    ]
    if fmt in (Format.json, Format.csv):
        columns += [Col("source", "source"), Col("note", "note"), Col("components", "components")]
        if fmt == Format.json:
            columns.append(Col("adjustments", "adjustments"))
    else:  # a period with no price says so, rather than a row of dashes
        rows = [row if row.get("ref") else {**row, "layer": "no price"} for row in rows]
    sources = sorted({part for r in rows if r.get("source") for part in str(r["source"]).split("; ")})
    caption = "Sources: " + "; ".join(sources)
    earliest = earliest_known_note(book, ref)
    if earliest and any(r["from"] is None and r.get("ref") for r in rows):
        caption += f"\nNo 'from' date: {earliest}."
    render(
        rows,
        columns,
        fmt,
        title=f"{ref.provider}/{ref.model} — USD per million tokens",
        caption=caption if fmt == Format.table else None,
    )


@prices_app.command("diff")
@friendly
def prices_diff(
    since: Annotated[str, typer.Option("--from", help="Earlier date or datetime (UTC).")],
    until: Annotated[str, typer.Option("--to", help="Later date or datetime (UTC).")],
    provider: Annotated[str | None, typer.Option("--provider", "-p", help="Only this provider.")] = None,
    model: Annotated[
        str | None, typer.Option("--model", "-m", help="Only models whose id contains this.")
    ] = None,
    tier: Annotated[list[str] | None, typer.Option("--tier", help="Only these tiers (repeatable).")] = None,
    fmt: FormatOpt = Format.table,
    config: ConfigOpt = None,
    prices: PricesOpt = None,
) -> None:
    """What changed in the price book between two dates: every step, component by component."""
    from ..pricing.history import diff_prices

    book = open_book(config, prices)
    start, end = parse_instant(since), parse_instant(until)
    rows = diff_prices(book, start, end, provider=provider, model_filter=model, tiers=tier or None)
    render(
        rows,
        [
            Col("model", "model"),
            Col("tier", "tier"),
            Col("window", "window"),
            Col("component", "component"),
            Col("old", "before", "unit_money"),
            Col("new", "after", "unit_money"),
            Col("change_pct", "change", "pct"),
            Col("changed_at", "changed at", "ts"),
            Col("layer", "layer"),
            Col("source", "source"),
        ],
        fmt,
        title=f"Price changes {start:%Y-%m-%d %H:%M} → {end:%Y-%m-%d %H:%M} UTC (USD per million tokens)",
        caption=None if rows else "No price changed in that interval.",
    )


@prices_app.command("layers")
@friendly
def prices_layers(fmt: FormatOpt = Format.table, config: ConfigOpt = None, prices: PricesOpt = None) -> None:
    """Which price layers are in use, highest precedence last."""
    from ..pricing.update import active_snapshot

    book = open_book(config, prices)
    rows = book.describe_layers()
    snapshot = active_snapshot()
    if snapshot is not None:  # the data in use is a fetched snapshot, not the pinned package data
        rows = [
            {
                **row,
                "updated": f"fetched {snapshot['fetched_at'][:16].replace('T', ' ')} UTC as "
                f"{Path(snapshot['path']).name}; `unitcost prices update --bundled` reverts",
            }
            if row["layer"] == "genai-prices"
            else row
            for row in rows
        ]
    render(rows, [Col("layer", "layer"), Col("what", "data"), Col("updated", "updates")], fmt)


@prices_app.command("update")
@friendly
def prices_update(
    url: Annotated[
        str | None,
        typer.Option(
            "--url",
            help="Where to fetch genai-prices data (JSON): a URL, or the path of a data.json "
            "downloaded elsewhere (offline machines).",
        ),
    ] = None,
    revert: Annotated[
        bool,
        typer.Option(
            "--bundled", help="Go back to the data bundled with the installed genai-prices package."
        ),
    ] = False,
) -> None:
    """Fetch newer genai-prices data on purpose. Nothing is ever fetched otherwise."""
    from ..pricing.update import DEFAULT_URL, fetch_snapshot, use_bundled

    out = console()
    if revert:
        use_bundled()
        out.print("Using the genai-prices data bundled with the installed package.", markup=False)
        return
    snapshot = fetch_snapshot(url or DEFAULT_URL)
    out.print(
        f"Fetched {snapshot.models} models from {snapshot.providers} providers "
        f"({snapshot.url}, sha256 {snapshot.sha256[:12]}) into {snapshot.path}; new calls are priced with it.",
        markup=False,
    )
    out.print(
        "Costs already in a ledger are unchanged: `unitcost reprice --since DATE` applies the new "
        "prices to them, with an audit of old -> new.",
        markup=False,
    )
