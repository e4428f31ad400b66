"""`unitcost price` and `unitcost prices ...`: one call priced, price history, changes, layers."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from ..analytics.window import parse_instant
from .app import ConfigOpt, FormatOpt, PricesOpt, app, friendly, open_book
from .output import Col, Format, console, print_json, render

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


@app.command("price")
@friendly
def price_cmd(
    model: Annotated[
        str, typer.Argument(help="Model as your code names it, e.g. gpt-4o or claude-sonnet-4-5.")
    ],
    input_tokens: Annotated[int, typer.Option("--input", help="All prompt tokens, cached or not.")] = 0,
    cache_read: Annotated[int, typer.Option("--cache-read", help="Prompt tokens read from cache.")] = 0,
    cache_write_5m: Annotated[
        int,
        typer.Option("--cache-write", "--cache-write-5m", help="Prompt tokens written to a 5-minute cache."),
    ] = 0,
    cache_write_1h: Annotated[
        int, typer.Option("--cache-write-1h", help="Prompt tokens written to a 1-hour cache.")
    ] = 0,
    output_tokens: Annotated[
        int, typer.Option("--output", help="All generated tokens, reasoning included.")
    ] = 0,
    reasoning: Annotated[int, typer.Option("--reasoning", help="Generated tokens spent reasoning.")] = 0,
    input_audio: Annotated[int, typer.Option("--input-audio", help="Prompt tokens that are audio.")] = 0,
    output_audio: Annotated[int, typer.Option("--output-audio", help="Generated tokens that are audio.")] = 0,
    input_image: Annotated[int, typer.Option("--input-image", help="Prompt tokens that are images.")] = 0,
    web_searches: Annotated[int, typer.Option("--web-searches", help="Server-side web searches.")] = 0,
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
    book = open_book(config, prices)
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
        "web_searches": web_searches,
    }
    call = book.price(model, usage, provider=provider, at=when, tier=tier)
    if call.breakdown is None:
        if fmt == Format.json:
            print_json(
                {
                    "model": model,
                    "provider": call.provider,
                    "tier": tier,
                    "at": when,
                    "cost": None,
                    "unpriced_reason": call.unpriced_reason,
                }
            )
            raise typer.Exit(1)
        console().print(
            f"[yellow]no price[/yellow] for {escape(model)} at {when:%Y-%m-%d %H:%M} UTC ({tier}): "
            f"{escape(call.unpriced_reason or '')}",
            markup=True,
        )
        raise typer.Exit(1)
    parts = call.breakdown.as_dict()
    tokens = {
        "input": input_tokens - cache_read - cache_write_5m - cache_write_1h - input_audio - input_image,
        "cache_read": cache_read,
        "cache_write_5m": cache_write_5m,
        "cache_write_1h": cache_write_1h,
        "output": output_tokens - reasoning - output_audio,
        "reasoning": reasoning,
        "other": None,
    }
    rows: list[dict[str, Any]] = []
    for key, label, quantity in _COMPONENT_LABELS:
        rows.append(
            {
                "component": label,
                "tokens": tokens[key],
                "usd_per_mtok": call.rates.get(quantity) if quantity else None,
                "cost": parts[key],
            }
        )
    rows.append({"component": "total", "tokens": None, "usd_per_mtok": None, "cost": call.breakdown.total})
    assert call.price is not None
    info = {
        "model": call.model,
        "provider": call.provider,
        "tier": tier,
        "at": when,
        "price_ref": call.price.ref,
        "layer": call.price.layer,
        "source": call.price.source,
        "effective_from": call.effective_from,
        "effective_to": call.effective_to,
        "window": call.window,
        "note": call.price.note or None,
    }
    if fmt == Format.json:
        from ..pricing.quantities import QUANTITIES

        per_mtok = {q.name for q in QUANTITIES if q.per == 1_000_000}
        print_json(
            {
                **info,
                "cost": call.breakdown.total,
                "breakdown": parts,
                # Web searches and requests are priced per thousand, not per million tokens.
                "rates_usd_per_mtok": {k: v for k, v in call.rates.items() if k in per_mtok},
                "rates_usd_per_thousand": {k: v for k, v in call.rates.items() if k not in per_mtok},
            }
        )
        return
    out = console()
    if fmt == Format.table:
        since = (
            f"{call.effective_from:%Y-%m-%d %H:%M} UTC" if call.effective_from else "the start of the data"
        )
        until = f"{call.effective_to:%Y-%m-%d %H:%M} UTC" if call.effective_to else "now"
        out.print(
            f"[bold]{escape(f'{call.provider}/{call.model}')}[/bold] · {tier} · at {when:%Y-%m-%d %H:%M} UTC",
            markup=True,
        )
        out.print(f"price  {call.price.ref}" + (f"  [{call.window}]" if call.window else ""), markup=False)
        out.print(f"source {call.price.source}", markup=False)
        out.print(f"valid  from {since} until {until}", markup=False)
        if call.price.note:
            out.print(f"note   {call.price.note}", markup=False)
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
    from ..pricing.history import price_history

    book = open_book(config, prices)
    ref = book.require(provider, model)
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
        columns += [Col("source", "source"), Col("components", "components")]
    render(
        rows,
        columns,
        fmt,
        title=f"{ref.provider}/{ref.model} — USD per million tokens",
        caption="Sources: " + "; ".join(sorted({str(r["source"]) for r in rows if r.get("source")}))
        if fmt == Format.table
        else None,
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
