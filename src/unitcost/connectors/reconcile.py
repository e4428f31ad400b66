"""Computed vs billed cost, per model: where a source's prices (or unitcost's) are wrong.

Only events that carry a `billed_cost` take part, so the two sums cover the same calls.
Unpriced events are counted apart: their computed cost is unknown, not zero. The calls of a
reconciled model that carry no `billed_cost` are counted too (`unbilled`): a bill with rows
missing reads as agreement otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from ..analytics.dialect import dialect_for
from ..analytics.window import Window

if TYPE_CHECKING:
    from ..api import Ledger


@dataclass(frozen=True)
class Reconciliation:
    provider: str | None
    model: str
    calls: int
    computed: Decimal
    """unitcost's cost of the priced calls among them."""
    billed: Decimal
    """The source's cost of the same priced calls."""
    unpriced: int
    billed_unpriced: Decimal
    """The source's cost of the calls unitcost has no price for."""
    unbilled: int = 0
    """Calls of the model in the window that carry no billed cost: in neither sum."""

    @property
    def difference(self) -> Decimal:
        return self.computed - self.billed

    @property
    def difference_pct(self) -> float | None:
        if self.billed == 0:
            return None if self.computed == 0 else float("inf")
        return float(self.difference / self.billed * 100)

    @property
    def priced(self) -> int:
        return self.calls - self.unpriced

    def as_row(self) -> dict[str, Any]:
        # With no priced call there is nothing to compare: unitcost's cost is unknown, and the
        # source's bill for those calls is in billed_unpriced. Two zeros would read "agrees".
        compared = self.priced > 0
        return {
            "provider": self.provider,
            "model": self.model,
            "calls": self.calls,
            "computed": self.computed if compared else None,
            "billed": self.billed if compared else None,
            "difference": self.difference if compared else None,
            "difference_pct": self.difference_pct if compared else None,
            "unpriced": self.unpriced,
            "billed_unpriced": self.billed_unpriced if self.unpriced else None,
            "unbilled": self.unbilled,
        }


def reconcile(
    ledger: Ledger,
    *,
    since: str | datetime | date | None = "30d",
    until: str | datetime | date | None = None,
    threshold_pct: float = 5.0,
    show_all: bool = False,
    tolerance: Decimal | str | int | float = 0,
) -> list[Reconciliation]:
    """Per provider and model with billed calls in the window, sorted by the size of the
    disagreement (largest first). A model is listed when its costs differ by more than
    `threshold_pct` percent and by more than `tolerance` USD (rounding: a bill in cents, a
    source that rounds each call), when some of its billed calls have no price, or with
    `show_all`."""
    window = Window.parse(since, until)
    allowed = _tolerance(tolerance)
    dialect = dialect_for(ledger.store.dialect)
    billed = "billed_cost IS NOT NULL"
    sql = f"""
        SELECT provider, model,
               sum(CASE WHEN {billed} THEN 1 ELSE 0 END) AS calls,
               sum(CASE WHEN {billed} THEN cost END) AS computed,
               sum(CASE WHEN {billed} AND cost IS NOT NULL THEN billed_cost END) AS billed,
               sum(CASE WHEN {billed} AND cost IS NULL THEN 1 ELSE 0 END) AS unpriced,
               sum(CASE WHEN cost IS NULL THEN billed_cost END) AS billed_unpriced,
               sum(CASE WHEN {billed} THEN 0 ELSE 1 END) AS unbilled
        FROM events
        WHERE ts >= {dialect.ts_literal(window.since.isoformat())}
          AND ts < {dialect.ts_literal(window.until.isoformat())}
        GROUP BY provider, model
        HAVING sum(CASE WHEN {billed} THEN 1 ELSE 0 END) > 0
    """
    rows = []
    for row in ledger.store.fetch(sql).to_pylist():
        item = Reconciliation(
            provider=row["provider"],
            model=row["model"],
            calls=int(row["calls"]),
            computed=Decimal(row["computed"] or 0),
            billed=Decimal(row["billed"] or 0),
            unpriced=int(row["unpriced"] or 0),
            billed_unpriced=Decimal(row["billed_unpriced"] or 0),
            unbilled=int(row["unbilled"] or 0),
        )
        pct = item.difference_pct
        differs = pct is not None and abs(pct) > threshold_pct and abs(item.difference) > allowed
        if show_all or item.unpriced or differs:
            rows.append(item)
    rows.sort(key=lambda r: abs(r.difference), reverse=True)
    return rows


def _tolerance(value: Decimal | str | int | float) -> Decimal:
    try:
        # A float as written (0.01), not as stored (0.01000000000000000020816...).
        amount = Decimal(str(value) if isinstance(value, float) else value)
    except ArithmeticError:
        raise ValueError(f"tolerance: not an amount in USD: {value!r}") from None
    if not amount.is_finite() or amount < 0:
        raise ValueError(f"tolerance: must be an amount of 0 USD or more, got {value}")
    return amount
