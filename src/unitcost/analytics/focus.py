"""The ledger's priced calls as a FinOps FOCUS 1.2 cost and usage dataset.

Finance teams load FOCUS files into the tools they already use (FinOps hubs, Vantage,
CloudZero, a spreadsheet). One row is one charge: the calls of one UTC day, one provider,
model and service tier, one price (`SkuPriceId` is the ledger's `price_ref`) and one set of
attribution values (team, app, ... as `Tags`), for one cost component (`SkuMeter`: input,
cache read, cache write 5 min / 1 h, output, reasoning, other).

The money is the ledger's, summed exactly: `BilledCost`, `EffectiveCost` and
`ContractedCost` are the stored costs (negotiated discounts from the overrides file
included), so their total equals `unitcost report`'s spend for the same window to the last
digit. `ListCost` is what the same calls cost at public prices: the stored cost where no
price of the user's overrides file took part, else the calls repriced by the book without
that layer; a model only the overrides file prices (self-hosted, custom) has no public
price, and its list cost is its contracted cost.

Calls with no price cannot be written: FOCUS has no unknown cost, and writing them as $0
would be the very error unitcost exists to prevent. They are counted in the summary, and
the caller chooses to stop or to leave them out (`unitcost export focus --unpriced`).
Responses served from unitcost's own cache are no provider charge and are counted apart.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..events import PRICING_INPUTS, USAGE_FIELDS
from ..money import MONEY_ARROW_TYPE, TOTAL_ARROW_TYPE, pico_to_usd, usd_to_pico
from ..pricing.quantities import BREAKDOWN_COLUMNS, QUANTITIES, split_usage
from ..utc import as_utc
from .dialect import Dialect, dialect_for
from .report import dimension_sql, where_sql
from .window import Window

if TYPE_CHECKING:
    from ..api import Ledger
    from ..pricing.book import PriceBook

FOCUS_VERSION = "1.2"
DEFAULT_TAGS: tuple[str, ...] = ("team", "app", "feature", "environment")
USER_LAYER = "user:"
"""How a `price_ref` names a price of the user's overrides file."""


@dataclass(frozen=True)
class Meter:
    """One cost component of the ledger as a FOCUS SKU meter."""

    column: str
    label: str
    quantities: tuple[str, ...]
    """The disjoint usage quantities whose cost goes to the column (pricing/quantities.py)."""


METERS: tuple[Meter, ...] = tuple(
    Meter(column, label, tuple(q.name for q in QUANTITIES if q.breakdown == column))
    for column, label in (
        ("cost_input", "Input tokens"),
        ("cost_cache_read", "Cache read tokens"),
        ("cost_cache_write_5m", "Cache write tokens (5 minutes)"),
        ("cost_cache_write_1h", "Cache write tokens (1 hour)"),
        ("cost_output", "Output tokens"),
        ("cost_reasoning", "Reasoning tokens"),
        ("cost_other", "Other: audio and image tokens, web searches, request fees"),
    )
)
OTHER = "cost_other"
"""The one meter whose quantities have mixed units: priced per call (`Requests`), with the
quantities themselves in `x_OtherQuantities`."""

FOCUS_COLUMNS: tuple[str, ...] = (
    "BilledCost",
    "BillingAccountId",
    "BillingAccountName",
    "BillingCurrency",
    "BillingPeriodEnd",
    "BillingPeriodStart",
    "ChargeCategory",
    "ChargeClass",
    "ChargeDescription",
    "ChargeFrequency",
    "ChargePeriodEnd",
    "ChargePeriodStart",
    "ConsumedQuantity",
    "ConsumedUnit",
    "ContractedCost",
    "EffectiveCost",
    "InvoiceIssuerName",
    "ListCost",
    "PricingCategory",
    "PricingQuantity",
    "PricingUnit",
    "ProviderName",
    "PublisherName",
    "RegionId",
    "RegionName",
    "ResourceId",
    "ResourceName",
    "ResourceType",
    "ServiceCategory",
    "ServiceName",
    "ServiceSubcategory",
    "SkuId",
    "SkuMeter",
    "SkuPriceId",
    "SubAccountId",
    "SubAccountName",
    "Tags",
    "x_Calls",
    "x_ServiceTier",
    "x_OtherQuantities",
)
FOCUS_MONEY_TYPE = TOTAL_ARROW_TYPE
"""A charge sums many calls: wider than one call's DECIMAL(18, 12), as exact."""
MONEY_COLUMNS = ("BilledCost", "ContractedCost", "EffectiveCost", "ListCost")
TIME_COLUMNS = ("BillingPeriodEnd", "BillingPeriodStart", "ChargePeriodEnd", "ChargePeriodStart")
QUANTITY_COLUMNS = ("ConsumedQuantity", "PricingQuantity", "x_Calls")


class FocusError(ValueError):
    """The export cannot be written as asked (unpriced calls, a bad dimension)."""


@dataclass
class Unpriced:
    calls: int = 0
    tokens: int = 0
    by_model: dict[str, int] = field(default_factory=dict)
    """`provider/model` → calls."""


@dataclass
class FocusExport:
    rows: list[dict[str, Any]]
    window: Window
    calls: int
    billed: Decimal
    listed: Decimal
    unpriced: Unpriced
    cache_hits: int
    """Responses served from unitcost's own cache: no provider charge, not in the rows."""

    def table(self) -> pa.Table:
        return pa.Table.from_pylist(self.rows, schema=FOCUS_SCHEMA)


def _schema() -> pa.Schema:
    fields = []
    for name in FOCUS_COLUMNS:
        if name in MONEY_COLUMNS:
            kind: pa.DataType = FOCUS_MONEY_TYPE
        elif name in TIME_COLUMNS:
            kind = pa.timestamp("us", tz="UTC")
        elif name in QUANTITY_COLUMNS:
            kind = pa.int64()
        else:
            kind = pa.string()
        fields.append(pa.field(name, kind))
    return pa.schema(fields)


FOCUS_SCHEMA = _schema()


def export_focus(
    ledger: Ledger,
    *,
    since: str | datetime | None = "30d",
    until: str | datetime | None = None,
    where: Sequence[str] = (),
    tags: Sequence[str] = DEFAULT_TAGS,
    billing_account: str | None = None,
    include_unpriced: bool = False,
) -> FocusExport:
    """The FOCUS rows of the window's priced calls.

    Raises FocusError when calls in the window have no price, unless `include_unpriced`
    is set, in which case they are left out of the rows and counted in `unpriced`.
    """
    window = Window.parse(since, until)
    dialect = dialect_for(ledger.store.dialect)
    selected = (
        f"ts >= {dialect.ts_literal(window.since.isoformat())} "
        f"AND ts < {dialect.ts_literal(window.until.isoformat())} AND {where_sql(list(where), dialect)}"
    )
    tag_exprs = _tag_expressions(tags, dialect)
    unpriced = _unpriced(ledger, selected)
    if unpriced.calls and not include_unpriced:
        raise FocusError(_unpriced_message(unpriced))
    not_cached = "(cache_hit IS NULL OR NOT cache_hit)"
    cache_hits = int(
        ledger.store.fetch(f"SELECT count(*) AS n FROM events WHERE {selected} AND cache_hit").to_pylist()[0][
            "n"
        ]
    )
    priced = f"{selected} AND cost IS NOT NULL AND {not_cached}"
    groups = _groups(ledger, priced, tag_exprs, dialect)
    listed = _list_costs(ledger, priced, tag_exprs, dialect)
    rows: list[dict[str, Any]] = []
    calls = 0
    billed = listed_total = Decimal(0)
    for key, group in groups.items():
        calls += group["calls"]
        list_group = listed.get(key)
        for meter in METERS:
            row = _row(
                key, group, list_group, meter, [label for label, _ in tag_exprs], ledger.book, billing_account
            )
            if row is not None:
                rows.append(row)
                billed += row["BilledCost"]
                listed_total += row["ListCost"]
    rows.sort(
        key=lambda r: (r["ChargePeriodStart"], r["ProviderName"], r["ResourceId"], r["SkuId"], r["Tags"])
    )
    return FocusExport(rows, window, calls, billed, listed_total, unpriced, cache_hits)


def _tag_expressions(tags: Sequence[str], dialect: Dialect) -> list[tuple[str, str]]:
    """(label, SQL expression) of each attribution dimension written into `Tags`."""
    out = []
    for name in tags:
        try:
            expr, label = dimension_sql(name, dialect)
        except ValueError as exc:
            raise FocusError(f"--tags: {exc}") from None
        out.append((label.removeprefix("tag:"), expr))
    return out


GroupKey = tuple[Any, ...]
"""(day, provider, model, service tier, price_ref, currency, *tag values)."""


def _key_sql(tag_exprs: Sequence[tuple[str, str]], dialect: Dialect) -> list[str]:
    return [
        f"{dialect.trunc('day', 'ts')} AS k_day",
        "provider AS k_provider",
        "model AS k_model",
        "COALESCE(service_tier, 'standard') AS k_tier",
        "price_ref AS k_ref",
        "COALESCE(currency, 'USD') AS k_currency",
        *(f"{expr} AS k_tag{i}" for i, (_, expr) in enumerate(tag_exprs)),
    ]


def _key_names(tag_exprs: Sequence[tuple[str, str]]) -> list[str]:
    return ["k_day", "k_provider", "k_model", "k_tier", "k_ref", "k_currency"] + [
        f"k_tag{i}" for i in range(len(tag_exprs))
    ]


def _groups(
    ledger: Ledger, priced: str, tag_exprs: Sequence[tuple[str, str]], dialect: Dialect
) -> dict[GroupKey, dict[str, Any]]:
    """Calls, summed usage and summed stored costs (exact decimals) per group key."""
    names = _key_names(tag_exprs)
    usage = ", ".join(f'sum("{f}") AS "{f}"' for f in USAGE_FIELDS)
    costs = ", ".join(f'sum("{c}") AS "{c}"' for c in BREAKDOWN_COLUMNS)
    sql = (
        f"SELECT {', '.join(names)}, count(*) AS calls, "
        f"sum(CASE WHEN cost_other <> 0 THEN 1 ELSE 0 END) AS other_calls, {usage}, {costs} "
        f"FROM (SELECT *, {', '.join(_key_sql(tag_exprs, dialect))} FROM events WHERE {priced}) AS e "
        f"GROUP BY {', '.join(names)}"
    )
    out: dict[GroupKey, dict[str, Any]] = {}
    for row in ledger.store.fetch(sql).to_pylist():
        key = _key(row, names)
        sums = {f: int(row[f] or 0) for f in USAGE_FIELDS}
        quantities = split_usage({k: np.asarray([v], dtype=np.int64) for k, v in sums.items()})[:, 0]
        out[key] = {
            "calls": int(row["calls"]),
            "other_calls": int(row["other_calls"] or 0),
            "quantities": {q.name: int(quantities[i]) for i, q in enumerate(QUANTITIES)},
            "costs": {c: Decimal(row[c] or 0) for c in BREAKDOWN_COLUMNS},
        }
    return out


def _key(row: Mapping[str, Any], names: Sequence[str]) -> GroupKey:
    day = row["k_day"]
    if isinstance(day, datetime):
        day = day.astimezone(UTC) if day.tzinfo else day.replace(tzinfo=UTC)
    return (day, *(row[n] for n in names[1:]))


def _list_costs(
    ledger: Ledger, priced: str, tag_exprs: Sequence[tuple[str, str]], dialect: Dialect
) -> dict[GroupKey, dict[str, Decimal]]:
    """List cost per group key and component, for the groups a user price took part in.

    Those calls are repriced, one UTC day at a time, by the book without the overrides
    layer; a call that book cannot price (a model only the overrides file knows) keeps its
    stored cost: it has no public price."""
    user_priced = f"{priced} AND price_ref LIKE '%{USER_LAYER}%'"
    days = [
        r["d"]
        for r in ledger.store.fetch(
            f"SELECT DISTINCT {dialect.trunc('day', 'ts')} AS d FROM events WHERE {user_priced} ORDER BY 1"
        ).to_pylist()
    ]
    if not days:
        return {}
    from ..pricing.batch import price_table
    from ..pricing.book import PriceBook

    book = ledger.book
    public = PriceBook(genai=book.genai, corrections=book.corrections, overrides=None)
    names = _key_names(tag_exprs)
    wanted = ", ".join(f'"{c}"' for c in PRICING_INPUTS)
    stored = ", ".join(f'"{c}" AS "stored_{c}"' for c in BREAKDOWN_COLUMNS)
    out: dict[GroupKey, dict[str, Decimal]] = {}
    for day in days:
        start = day if isinstance(day, datetime) else datetime.fromisoformat(str(day))
        start = as_utc(start)
        in_day = (
            f"ts >= {dialect.ts_literal(start.isoformat())} "
            f"AND ts < {dialect.ts_literal((start + timedelta(days=1)).isoformat())}"
        )
        table = ledger.store.fetch(
            f"SELECT {wanted}, {stored}, {', '.join(_key_sql(tag_exprs, dialect))} "
            f"FROM events WHERE {user_priced} AND {in_day}"
        )
        _add_list_costs(out, table, price_table(public, table).columns, names)
    return out


def _add_list_costs(
    out: dict[GroupKey, dict[str, Decimal]],
    table: pa.Table,
    repriced: Mapping[str, pa.Array],
    names: Sequence[str],
) -> None:
    columns = {}
    for c in BREAKDOWN_COLUMNS:
        public = pc.cast(repriced[c], MONEY_ARROW_TYPE)
        # No public price: the user's price is the only one there is.
        columns[c] = pc.if_else(pc.is_null(repriced["cost"]), table.column(f"stored_{c}"), public)
    keyed = pa.table({**{n: table.column(n) for n in names}, **columns})
    summed = keyed.group_by(list(names), use_threads=False).aggregate([(c, "sum") for c in BREAKDOWN_COLUMNS])
    for row in summed.to_pylist():
        key = _key(row, names)
        into = out.setdefault(key, {c: Decimal(0) for c in BREAKDOWN_COLUMNS})
        for c in BREAKDOWN_COLUMNS:
            into[c] += Decimal(row[f"{c}_sum"] or 0)


def _unpriced(ledger: Ledger, selected: str) -> Unpriced:
    tokens = " + ".join(f'COALESCE("{f}", 0)' for f in ("input_tokens", "output_tokens"))
    rows = ledger.store.fetch(
        f"SELECT provider, model, count(*) AS n, sum({tokens}) AS tokens FROM events "
        f"WHERE {selected} AND cost IS NULL GROUP BY provider, model ORDER BY n DESC"
    ).to_pylist()
    found = Unpriced()
    for r in rows:
        found.calls += int(r["n"])
        found.tokens += int(r["tokens"] or 0)
        found.by_model[f"{r['provider']}/{r['model']}"] = int(r["n"])
    return found


def _unpriced_message(unpriced: Unpriced) -> str:
    models = ", ".join(f"{m}: {n:,}" for m, n in list(unpriced.by_model.items())[:5])
    more = f" and {len(unpriced.by_model) - 5} more models" if len(unpriced.by_model) > 5 else ""
    return (
        f"{unpriced.calls:,} calls in the window have no price ({models}{more}); "
        "a FOCUS file has no unknown cost and they must not read as $0. Add their price to the "
        "overrides file and run `unitcost reprice`, or pass --unpriced exclude to write the "
        "priced calls and leave these out (they are counted in the summary)."
    )


def _row(
    key: GroupKey,
    group: Mapping[str, Any],
    list_group: Mapping[str, Decimal] | None,
    meter: Meter,
    labels: Sequence[str],
    book: PriceBook,
    billing_account: str | None,
) -> dict[str, Any] | None:
    day, provider, model, tier, ref, currency, *tag_values = key
    cost: Decimal = group["costs"][meter.column]
    quantities: Mapping[str, int] = group["quantities"]
    if meter.column == OTHER:
        consumed = group["other_calls"]
        unit = "Requests"
        # Request fees are per call, as the row's quantity says; the rest are spelled out.
        other = {q: quantities[q] for q in meter.quantities if quantities[q] and q != "requests"}
    else:
        consumed = sum(quantities[q] for q in meter.quantities)
        unit = "Tokens"
        other = None
    if consumed == 0 and cost == 0:
        return None
    listed = cost if list_group is None else list_group[meter.column]
    name = _provider_name(book, provider)
    start = day
    month = datetime(start.year, start.month, 1, tzinfo=UTC)
    next_month = datetime(month.year + month.month // 12, month.month % 12 + 1, 1, tzinfo=UTC)
    tag_map = {label: value for label, value in zip(labels, tag_values, strict=True) if value is not None}
    return {
        "BilledCost": cost,
        "BillingAccountId": billing_account or provider,
        "BillingAccountName": billing_account or name,
        "BillingCurrency": currency,
        "BillingPeriodEnd": next_month,
        "BillingPeriodStart": month,
        "ChargeCategory": "Usage",
        "ChargeClass": None,
        "ChargeDescription": f"{model} {meter.label.lower()}, {tier} tier",
        "ChargeFrequency": "Usage-Based",
        "ChargePeriodEnd": start + timedelta(days=1),
        "ChargePeriodStart": start,
        "ConsumedQuantity": consumed,
        "ConsumedUnit": unit,
        "ContractedCost": cost,
        "EffectiveCost": cost,
        "InvoiceIssuerName": name,
        "ListCost": listed,
        "PricingCategory": "Standard",
        "PricingQuantity": consumed,
        "PricingUnit": unit,
        "ProviderName": name,
        "PublisherName": name,
        "RegionId": None,
        "RegionName": None,
        "ResourceId": f"{provider}/{model}",
        "ResourceName": model,
        "ResourceType": "Model",
        "ServiceCategory": "AI and Machine Learning",
        "ServiceName": name,
        "ServiceSubcategory": "Generative AI",
        "SkuId": f"{provider}/{model}/{tier}/{meter.column.removeprefix('cost_')}",
        "SkuMeter": meter.label,
        "SkuPriceId": ref,
        "SubAccountId": None,
        "SubAccountName": None,
        "Tags": json.dumps(tag_map, sort_keys=True, ensure_ascii=False),
        "x_Calls": group["calls"],
        "x_ServiceTier": tier,
        "x_OtherQuantities": json.dumps(other, sort_keys=True) if other else None,
    }


def _provider_name(book: PriceBook, provider: str) -> str:
    """The provider's name as its invoice says it (genai-prices' display name), else its id."""
    known = book.genai.provider(provider)
    return known.name if known is not None and known.name else provider


def money_text(value: Decimal) -> str:
    """A decimal as plain digits (no exponent), exact: what a spreadsheet reads as a number."""
    return format(pico_to_usd(usd_to_pico(value)), "f")
