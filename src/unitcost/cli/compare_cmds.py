"""`unitcost whatif`, `levers`, `explain-price-change`: what the recorded workload would cost otherwise."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any

import typer

from ..money import pico_to_usd
from .app import (
    ConfigOpt,
    FormatOpt,
    LedgerOpt,
    PricesOpt,
    UserError,
    app,
    friendly,
    open_ledger,
    where_the_events_are,
)
from .output import Col, Format, console, print_json, render

SinceOpt = Annotated[str, typer.Option("--since", help="Start: an age (30d, 12h, 2w) or a date.")]
UntilOpt = Annotated[str | None, typer.Option("--until", help="End (default: now).")]
WhereOpt = Annotated[
    list[str] | None,
    typer.Option("--where", "-w", help="Filter, e.g. feature=support or tag:region=eu (repeatable)."),
]
ChartOpt = Annotated[
    Path | None,
    typer.Option("--chart", help="Also draw the comparison to FILE.png, FILE.svg or FILE.html (offline)."),
]

_COMPONENT_LABELS = {
    "input": "uncached input",
    "cache_read": "cache read",
    "cache_write": "cache write",
    "output": "output",
    "reasoning": "reasoning",
    "other": "other",
}


def _print_lines(lines: Sequence[str], fmt: Format) -> None:
    out = console()
    for line in lines:
        if fmt == Format.markdown:
            out.file.write(f"- {line}\n")
        else:
            out.print(line, markup=False, highlight=False, soft_wrap=True)
    if fmt == Format.markdown:
        out.file.write("\n")


def _days(seconds: int) -> Decimal:
    return (Decimal(seconds) / 86400).quantize(Decimal("0.0001"))


def _excluded_note(unpriced: dict[str, int]) -> list[str]:
    if not unpriced:
        return []
    total = sum(unpriced.values())
    top = "; ".join(f"{n:,}: {reason}" for reason, n in list(unpriced.items())[:3])
    return [f"{total:,} selected calls have no recorded price and are left out of every total ({top})"]


def _no_priced_calls(
    book_ledger: Any, span: str, unpriced: dict[str, int], no_calls: str | None = None
) -> UserError:
    """Why there is nothing to compare: calls selected but none with a price, or no calls at all.

    Pointing at the ledger's dates when the window does hold calls (all unpriced) would send
    the user looking in the wrong place."""
    if unpriced:
        count = sum(unpriced.values())
        return UserError(
            f"no priced calls in {span} for the filters given: "
            + (f"the {count:,} selected calls have" if count != 1 else "the one selected call has")
            + " no recorded price, so there is nothing to reprice "
            + f"({'; '.join(f'{n:,}: {why}' for why, n in list(unpriced.items())[:3])})"
        )
    return UserError(
        no_calls or f"no priced calls in {span} for the filters given. " + where_the_events_are(book_ledger)
    )


# --------------------------------------------------------------------------- whatif


@app.command("whatif")
@friendly
def whatif_cmd(
    alternatives: Annotated[
        list[str] | None,
        typer.Option(
            "--as",
            help="An alternative: provider:model, optionally @DATE and /tier "
            "(anthropic:claude-sonnet-4-5, deepseek-chat@2025-10-01/batch). Repeatable.",
        ),
    ] = None,
    at: Annotated[str | None, typer.Option("--at", help="Price every alternative at this date.")] = None,
    tier: Annotated[
        str | None, typer.Option("--tier", help="Service tier: standard, batch, flex, priority.")
    ] = None,
    cache: Annotated[
        str,
        typer.Option(
            "--cache",
            help="Cache assumption: keep (recorded), prefix (provider rules) or a hit ratio (0.6, 60%).",
        ),
    ] = "keep",
    prefix_share: Annotated[
        float | None,
        typer.Option("--prefix-share", help="With --cache prefix: stable share of each prompt (0.5)."),
    ] = None,
    prefix_reuse: Annotated[
        int | None, typer.Option("--prefix-reuse", help="With --cache prefix: calls per cached prefix (5).")
    ] = None,
    token_ratio: Annotated[
        float | None,
        typer.Option(
            "--token-ratio", help="Target tokens per recorded token (default: documented family ratio)."
        ),
    ] = None,
    reasoning_multiplier: Annotated[
        float,
        typer.Option(
            "--reasoning-multiplier", help="Scale reasoning tokens on the target (1 = as recorded)."
        ),
    ] = 1.0,
    since: SinceOpt = "30d",
    until: UntilOpt = None,
    where: WhereOpt = None,
    fmt: FormatOpt = Format.table,
    chart: ChartOpt = None,
    ledger: LedgerOpt = None,
    config: ConfigOpt = None,
    prices: PricesOpt = None,
) -> None:
    """Reprice the selected workload, token for token, under other models, dates, tiers or cache behaviour."""
    from ..analytics.window import Window
    from ..compare.charts import check_path
    from ..compare.names import resolve_alternative
    from ..compare.whatif import Alternative, CacheAssumption, needed_cuts, needs_recorded_models, run_whatif
    from ..compare.workload import load_workload

    if chart:
        check_path(chart)
    assumption = CacheAssumption.parse(
        cache,
        Decimal(str(prefix_share)) if prefix_share is not None else None,
        prefix_reuse,
    )
    common: dict[str, Any] = {
        "at": at,
        "tier": tier,
        "cache": assumption,
        "token_ratio": Decimal(str(token_ratio)) if token_ratio is not None else None,
        "reasoning_multiplier": Decimal(str(reasoning_multiplier)),
    }
    specs: list[str | None] = list(alternatives or [])
    if not specs:
        if not (at or tier or assumption.mode != "keep" or token_ratio or reasoning_multiplier != 1):
            raise UserError(
                "say what to compare with: --as provider:model (repeatable), --at DATE or --tier batch"
            )
        specs = [None]
    with open_ledger(ledger, config, prices, read_only=True) as book_ledger:
        window = Window.parse(since, until)
        # Every name checked (with close matches) before the ledger is scanned.
        alts = [resolve_alternative(book_ledger.book, Alternative.parse(spec, **common)) for spec in specs]
        workload = load_workload(
            book_ledger.store,
            window,
            where or [],
            needed_cuts(book_ledger.book, alts, window),
            with_recorded_models=needs_recorded_models(alts),
        )
        if not workload.groups:
            raise _no_priced_calls(book_ledger, window.describe(), workload.unpriced)
        result = run_whatif(book_ledger.book, workload, alts)
    rows = result.rows()
    if chart:
        from ..compare.charts import stacked_bars

        stacked_bars(
            chart,
            f"What-if: {workload.calls:,} calls, {window.describe()}",
            [_chart_label(r) for r in rows],
            {c: [float(r.get(c) or 0) for r in rows] for c in _COMPONENT_LABELS},  # type: ignore[arg-type]
        )
    notes = _excluded_note(workload.unpriced)
    if fmt == Format.json:
        print_json(
            {
                "window": {"since": window.since, "until": window.until},
                "where": list(where or []),
                "calls": workload.calls,
                "requests": workload.requests,
                "units": workload.units,
                "successes": workload.successes,
                "excluded_unpriced": workload.unpriced,
                "scenarios": rows,
            }
        )
        return
    component_cols = [Col(c, label, "money") for c, label in _COMPONENT_LABELS.items()]
    delta_cols = [Col(f"delta_{c}", f"Δ {label}", "money") for c, label in _COMPONENT_LABELS.items()]
    summary_cols = [
        Col("scenario", "scenario"),
        Col("total", "total", "money"),
        Col("delta", "Δ", "money"),
        Col("delta_pct", "Δ %", "pct"),
        Col("cost_per_request", "$/request", "unit_money"),
        Col("cost_per_unit", "$/unit", "unit_money"),
        Col("cost_per_success", "$/success", "unit_money"),
        Col("unpriced_calls", "unpriced", "int"),
    ]
    if fmt == Format.csv:
        # The selection's calls with no recorded price are in no row: a column counts them, so
        # a program reading the CSV sees them as the table's note shows them.
        excluded = workload.unpriced_calls
        render(
            [{**r, "excluded_unpriced_calls": excluded} for r in rows],
            [
                *summary_cols,
                *component_cols,
                *delta_cols,
                Col("assumptions", "assumptions"),
                Col("excluded_unpriced_calls", "excluded unpriced calls", "int"),
            ],
            fmt,
        )
        return
    title = (
        f"What-if on {workload.calls:,} calls, {workload.units:,} units, {workload.successes:,} successes — "
        f"{window.describe()}" + (f" where {' and '.join(where)}" if where else "")
    )
    render(rows, summary_cols, fmt, title=title)
    render(rows, [Col("scenario", "scenario"), *component_cols], fmt, title="Cost per component")
    render(
        rows[1:], [Col("scenario", "scenario"), *delta_cols], fmt, title="Change per component vs recorded"
    )
    lines = [f"{r['scenario']}: {r['assumptions']}" for r in rows[1:]]
    _print_lines([*lines, *notes, *([f"chart written to {chart}"] if chart else [])], fmt)


def _chart_label(row: dict[str, object]) -> str:
    """A bar's label: a scenario with calls it cannot price says so, lest a short bar read as cheap."""
    label = str(row["scenario"])
    if row.get("total") is None:
        return f"{label} (no price)"
    unpriced = int(row.get("unpriced_calls") or 0)  # type: ignore[call-overload]
    return f"{label} ({unpriced:,} unpriced)" if unpriced else label


# --------------------------------------------------------------------------- levers


@app.command("levers")
@friendly
def levers_cmd(
    settings: Annotated[
        list[str] | None,
        typer.Option(
            "--set", help="Override a lever default, e.g. batch_share=0.4 or light.openai=gpt-5-mini."
        ),
    ] = None,
    since: SinceOpt = "30d",
    until: UntilOpt = None,
    where: WhereOpt = None,
    fmt: FormatOpt = Format.table,
    chart: ChartOpt = None,
    ledger: LedgerOpt = None,
    config: ConfigOpt = None,
    prices: PricesOpt = None,
) -> None:
    """Simulate the cost levers on the recorded workload, one at a time and combined."""
    from ..analytics.window import Window
    from ..compare.charts import check_path
    from ..compare.levers import Settings, run_levers, scaling_span_seconds
    from ..compare.names import require_model
    from ..compare.whatif import Alternative, needed_cuts
    from ..compare.workload import load_workload
    from ..config import load_config
    from ..money import pico_to_usd

    if chart:
        check_path(chart)
    overrides: dict[str, object] = dict(load_config(config).section("levers"))
    for item in settings or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise UserError(f"--set takes name=value, got {item!r}")
        overrides[key.strip()] = value.strip()
    chosen = Settings.build(overrides)
    with open_ledger(ledger, config, prices, read_only=True) as book_ledger:
        book = book_ledger.book
        for provider, model in chosen.light.items():
            require_model(book, provider, model, f"light.{provider}")
        require_model(book, *chosen.summariser(), "summariser")
        light = [Alternative(provider=p, model=m) for p, m in chosen.light.items()]
        window = Window.parse(since, until)
        workload = load_workload(
            book_ledger.store, window, where or [], needed_cuts(book, light, window), with_units=False
        )
        if not workload.groups:
            raise _no_priced_calls(book_ledger, window.describe(), workload.unpriced)
        baseline, results = run_levers(book, workload, chosen)
    rows = [
        {
            "lever": r.lever,
            "assumption": r.assumption,
            "cost_after": pico_to_usd(r.cost_after),
            "saving": pico_to_usd(r.saving),
            "monthly_saving": r.monthly_saving,
            "share_of_spend": r.share_of_spend,
            "needs": r.needs,
        }
        for r in results
    ]
    if chart:
        from ..compare.charts import stacked_bars

        stacked_bars(
            chart,
            "Monthly saving per lever",
            [str(r["lever"]) for r in rows],
            {"saving": [float(r["monthly_saving"]) for r in rows]},  # type: ignore[arg-type]
            ylabel="USD per month",
        )
    if fmt == Format.json:
        print_json(
            {
                "window": {"since": window.since, "until": window.until},
                "where": list(where or []),
                "spend": pico_to_usd(baseline.total),
                # The span the monthly savings are scaled from (at least one day).
                "span_days": _days(scaling_span_seconds(workload)),
                "calls_span_days": _days(workload.span_seconds()),
                "settings": chosen.values,
                "light_models": chosen.light,
                "excluded_unpriced": workload.unpriced,
                # Priced when recorded, but with no price in the price book given now (an
                # overrides file left out, say): left out of the spend and of every saving.
                "not_repriced": baseline.unpriced_reasons or {},
                "levers": rows,
            }
        )
        return
    columns = [
        Col("lever", "lever"),
        Col("assumption", "assumption"),
        Col("monthly_saving", "monthly saving", "money"),
        Col("share_of_spend", "share of spend", "ratio"),
        Col("needs", "what it would need to be true"),
    ]
    if fmt == Format.csv:
        # Calls left out of the spend (no recorded price, or none in the price book now) are
        # counted in columns of their own: the table's notes do not reach a CSV reader.
        left_out = {
            "excluded_unpriced_calls": workload.unpriced_calls,
            "not_repriced_calls": baseline.unpriced_calls,
        }
        render(
            [{**r, **left_out} for r in rows],
            [
                *columns,
                Col("saving", "saving in window", "money"),
                Col("cost_after", "cost after", "money"),
                Col("excluded_unpriced_calls", "excluded unpriced calls", "int"),
                Col("not_repriced_calls", "not repriced calls", "int"),
            ],
            fmt,
        )
        return
    span_days = _days(scaling_span_seconds(workload))
    render(
        rows,
        columns,
        fmt,
        title=f"Cost levers on {workload.calls:,} calls, {pico_to_usd(baseline.total):,.2f} USD over "
        f"{span_days:.1f} days (monthly = 30 days)",
    )
    short = workload.span_seconds() < scaling_span_seconds(workload)
    _print_lines(
        [
            "defaults are conservative; override any with --set name=value or a [levers] section in the config",
            *(
                [
                    "the selected calls span less than a day: savings are scaled to a month from one day, "
                    "a rough extrapolation (select a longer window for a firmer figure)"
                ]
                if short
                else []
            ),
            *_excluded_note(workload.unpriced),
            *_not_repriced_note(baseline.unpriced_calls, baseline.unpriced_reasons or {}),
            *([f"chart written to {chart}"] if chart else []),
        ],
        fmt,
    )


def _not_repriced_note(calls: int, reasons: dict[str, int]) -> list[str]:
    if not calls:
        return []
    top = "; ".join(f"{n:,}: {reason}" for reason, n in sorted(reasons.items(), key=lambda kv: -kv[1])[:3])
    return [
        f"{calls:,} selected calls have a recorded price but none in the price book used now, so they are "
        f"left out of the spend and of every saving ({top}); pass the overrides file they were priced "
        "with (--prices or the config)"
    ]


# --------------------------------------------------------------------------- explain-price-change


@app.command("explain-price-change")
@friendly
def explain_price_change_cmd(
    date_from: Annotated[
        str, typer.Option("--from", help="First period: a date (a --window from it) or A..B.")
    ],
    date_to: Annotated[str, typer.Option("--to", help="Second period: a date (a --window from it) or A..B.")],
    model: Annotated[
        str | None, typer.Option("--model", help="The model whose price changed (provider:model or model).")
    ] = None,
    window: Annotated[str, typer.Option("--window", help="Length of a period given as one date.")] = "7d",
    examples: Annotated[
        list[str] | None,
        typer.Option(
            "--example", help="Explain on an example workload instead: cache-heavy, cache-miss-heavy."
        ),
    ] = None,
    where: WhereOpt = None,
    fmt: FormatOpt = Format.table,
    chart: ChartOpt = None,
    ledger: LedgerOpt = None,
    config: ConfigOpt = None,
    prices: PricesOpt = None,
) -> None:
    """Split the change in effective cost between two periods into price, mix and volume, beside list prices."""
    from ..compare import price_change as pc
    from ..compare.charts import check_path
    from ..compare.costing import Pricer
    from ..compare.names import require_model

    if chart:
        check_path(chart)
    period_a, period_b = pc.parse_period(date_from, window), pc.parse_period(date_to, window)
    provider, model_name = _split_model(model)
    explanations: list[tuple[str, Any]] = []
    notes: list[str] = []
    if examples:
        if model_name is None:
            raise UserError("--example needs --model (the model whose price changed)")
        from ..config import load_config, resolve_overrides
        from ..pricing.book import PriceBook

        book = PriceBook.load(resolve_overrides(prices, load_config(config)))
        require_model(book, provider, model_name, "--model")
        pricer = Pricer(book)
        for name in examples:
            if name not in pc.EXAMPLES:
                raise UserError(f"unknown example {name!r}; use one of {', '.join(pc.EXAMPLES)}")
            lines = pc.example_lines(book, name, provider, model_name, period_a.since)
            a = pc.period_from_lines(pricer, f"{period_a.since:%Y-%m-%d}", lines)
            b = pc.period_from_lines(pricer, f"{period_b.since:%Y-%m-%d}", pc.shifted(lines, period_b.since))
            e = pc.explain(a, b)
            e.list_change_on_a_mix = e.change_pct()
            explanations.append((f"{name} ({pc.EXAMPLES[name][3]})", e))
    else:
        with open_ledger(ledger, config, prices, read_only=True) as book_ledger:
            book = book_ledger.book
            # The price book's model, not the id a source recorded: a ledger of
            # claude-sonnet-4-5-20250929 calls is what --model claude-sonnet-4-5 explains.
            chosen = require_model(book, provider, model_name, "--model") if model_name else None
            filters = [*(where or []), *(_model_filters(book_ledger, chosen) if chosen else [])]
            explanations.append(
                (
                    "your ledger",
                    _ledger_explanation(book_ledger, period_a, period_b, filters, notes),
                )
            )
    ref = book.require(provider, model_name) if model_name else None
    for _, e in explanations:
        if ref is not None:
            e.list_prices = pc.list_price_rows(book, ref, period_a.since, period_b.since)
    if ref is not None and not examples:
        for name, period in (("first", period_a), ("second", period_b)):
            changes = pc.price_changes_within(book, ref, period)
            if changes:
                when = ", ".join(f"{c:%Y-%m-%d %H:%M} UTC" for c in changes)
                notes.append(
                    f"the price of {ref.provider}/{ref.model} changed inside the {name} period ({when}): "
                    "its effective prices blend both, the list prices shown are those at the period's start"
                )
    _print_explanations(explanations, ref, fmt, notes, period_a, period_b)
    if chart:
        from ..compare.charts import waterfall

        title, e = explanations[0]
        waterfall(
            chart,
            f"Effective cost change: {title}",
            (e.a.label, float(pico_to_usd(e.a.total))),
            [(pc.LABELS[k], float(v)) for k, v in e.contributions.items() if v],
            (e.b.label, float(pico_to_usd(e.b.total))),
        )
        console().print(f"chart written to {chart}", markup=False)


def _split_model(model: str | None) -> tuple[str | None, str | None]:
    if not model:
        return None, None
    provider, sep, name = model.partition(":")
    return (provider, name) if sep else (None, model)


def _filter_value(value: str) -> str:
    """A value for a `dimension=value` filter: its commas and backslashes escaped."""
    return value.replace("\\", "\\\\").replace(",", "\\,")


def _model_filters(book_ledger: Any, ref: Any) -> list[str]:
    """Filters for the calls the price book priced as `ref`, under whatever provider name
    their source recorded (the priced provider is not a report dimension)."""
    from ..analytics.dialect import dialect_for

    dialect = dialect_for(book_ledger.store.dialect)
    rows = book_ledger.store.fetch(
        "SELECT DISTINCT provider FROM events WHERE priced_provider = "
        f"{dialect.literal(ref.provider)} AND priced_model = {dialect.literal(ref.model)}"
    ).to_pylist()
    providers = sorted({str(r["provider"]) for r in rows if r["provider"] is not None}) or [ref.provider]
    return [
        f"priced_model={_filter_value(ref.model)}",
        "provider=" + ",".join(_filter_value(p) for p in providers),
    ]


def _ledger_explanation(
    book_ledger: Any, period_a: Any, period_b: Any, filters: list[str], notes: list[str]
) -> Any:
    from ..compare import price_change as pc
    from ..compare.costing import Pricer
    from ..compare.whatif import Alternative, needed_cuts
    from ..compare.workload import load_workload

    cuts = needed_cuts(book_ledger.book, [Alternative()])
    wa = load_workload(book_ledger.store, period_a, filters, cuts, with_units=False)
    wb = load_workload(book_ledger.store, period_b, filters, cuts, with_units=False)
    pricer = Pricer(book_ledger.book)
    for w, name in ((wa, "first"), (wb, "second")):
        notes.extend(f"{name} period: {n}" for n in _excluded_note(w.unpriced))
    label_a = f"{period_a.since:%Y-%m-%d}..{period_a.until:%Y-%m-%d}"
    label_b = f"{period_b.since:%Y-%m-%d}..{period_b.until:%Y-%m-%d}"
    if not wa.groups and not wb.groups:
        unpriced = dict(Counter(wa.unpriced) + Counter(wb.unpriced))
        raise _no_priced_calls(
            book_ledger,
            f"{label_a} or {label_b}",
            unpriced,
            no_calls=f"neither period ({label_a}, {label_b}) has priced calls for these filters. "
            + _ledger_dates(book_ledger),
        )
    if not wb.groups:
        notes.append(
            f"no recorded calls in {label_b}: the first period's workload is priced at {period_b.since:%Y-%m-%d} "
            "(same calls, same time of day), so only prices move"
        )
        a = pc.period_from_groups(label_a, wa.groups)
        b = pc.period_from_lines(pricer, label_b, pc.shifted(pc.lines_of(wa.groups), period_b.since))
    elif not wa.groups:
        notes.append(
            f"no recorded calls in {label_a}: the second period's workload is priced at {period_a.since:%Y-%m-%d}"
        )
        a = pc.period_from_lines(pricer, label_a, pc.shifted(pc.lines_of(wb.groups), period_a.since))
        b = pc.period_from_groups(label_b, wb.groups)
    else:
        a = pc.period_from_groups(label_a, wa.groups)
        b = pc.period_from_groups(label_b, wb.groups)
    e = pc.explain(a, b)
    if wa.groups:
        e.list_change_on_a_mix = pc.list_change_on_mix(pricer, pc.lines_of(wa.groups), period_b.since)
    return e


def _ledger_dates(book_ledger: Any) -> str:
    """Where the ledger's events are, for periods (--from/--to) rather than a --since window."""
    span = book_ledger.sql("SELECT min(ts) AS first, max(ts) AS last, count(*) AS n FROM events")
    n = int(span["n"].iloc[0]) if len(span) else 0
    if not n:
        return "The ledger has no events yet: run `unitcost ingest FILE` (or `unitcost demo`) first."
    first, last = span["first"].iloc[0], span["last"].iloc[0]
    return (
        f"The ledger has {n:,} events from {first:%Y-%m-%d} to {last:%Y-%m-%d}: "
        "choose --from and --to periods between those dates"
    )


def _print_explanations(
    explanations: list[tuple[str, Any]], ref: Any, fmt: Format, notes: list[str], period_a: Any, period_b: Any
) -> None:

    if fmt == Format.json:
        print_json(
            [
                {
                    "workload": title,
                    "model": f"{ref.provider}/{ref.model}" if ref else None,
                    "periods": [
                        {"label": e.a.label, "cost": pico_to_usd(e.a.total), "calls": e.a.calls},
                        {"label": e.b.label, "cost": pico_to_usd(e.b.total), "calls": e.b.calls},
                    ],
                    "effective_change_pct": e.change_pct(),
                    "list_change_on_first_mix_pct": e.list_change_on_a_mix,
                    "list_prices": e.list_prices,
                    "contributions": e.rows(),
                    "notes": notes,
                }
                for title, e in explanations
            ]
        )
        return
    for title, e in explanations:
        rows = e.rows()
        if fmt == Format.csv:
            render(
                [{**r, "workload": title} for r in rows],
                [
                    Col("workload", "workload"),
                    Col("factor", "factor"),
                    Col("before", "before"),
                    Col("after", "after"),
                    Col("contribution", "contribution", "money"),
                    Col("points", "points", "float"),
                    Col("before_value", "before value"),
                    Col("after_value", "after value"),
                    Col("unit", "unit"),
                ],
                fmt,
            )
            continue
        headline = _headline(e)
        render(
            rows,
            [
                Col("factor", "factor"),
                Col("before", e.a.label),
                Col("after", e.b.label),
                Col("contribution", "contribution", "money"),
                Col("points", "pts of first period", "pct"),
            ],
            fmt,
            title=f"Effective cost change — {title}",
        )
        if e.list_prices:
            render(
                e.list_prices,
                [
                    Col("component", "list price (USD per unit named)"),
                    Col("before", e.a.label),
                    Col("after", e.b.label),
                    Col("change_pct", "change", "pct"),
                ],
                fmt,
                title=f"List price of {ref.provider}/{ref.model}" if ref else "List price",
            )
        _print_lines([*headline, *notes], fmt)


def _headline(e: Any) -> list[str]:
    from ..compare import price_change as pc

    lines = [pc.change_summary(e)]
    cut = next((r for r in e.list_prices if r["component"] == "input_mtok"), None)
    if cut and cut["change_pct"] is not None:
        lines.append(f"headline list-price change (cache-miss input): {float(cut['change_pct']):+.1f}%")
    if e.list_change_on_a_mix is not None:
        lines.append(
            f"list-price change weighted by the first period's workload: {float(e.list_change_on_a_mix):+.1f}%"
        )
    pct = e.change_pct()
    if cut and cut["change_pct"] is not None and pct is not None:
        gap = float(pct) - float(cut["change_pct"])
        lines.append(
            f"the bill moved {float(pct):+.1f}% against a headline of {float(cut['change_pct']):+.1f}%: "
            f"{gap:+.1f} points come from the other components' prices, the workload mix and volume (table above)"
        )
    return lines
