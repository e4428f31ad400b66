"""Exact money: integer pico-USD inside, Decimal at the edges.

Every cost unitcost computes is an integer number of pico-USD (1e-12 USD). A price of
$x per million tokens is x * 1e6 pico-USD per token, so any published price with up to
six decimals per million tokens is represented exactly, and costs are exact integer
products and sums. Nothing on a money path is ever a float.

The ledger stores costs as DECIMAL(18, 12): an int64 of pico-USD, below $1M per call.
Aggregates are summed as 128-bit decimals by the engine.
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal, localcontext
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    # NumPy and Arrow are imported by the array helpers when first used: a command that only
    # formats amounts (`unitcost report`) does not pay for them.
    import numpy as np
    import pyarrow as pa

    MONEY_ARROW_TYPE: pa.Decimal128Type
    TOTAL_ARROW_TYPE: pa.Decimal128Type

PICO_PER_USD = 10**12
MONEY_SCALE = 12
MAX_EVENT_PICO = 10**18 - 1  # the largest DECIMAL(18, 12): $999,999.999999999999 for one call
TOO_BIG_REASON = "cost of $1M or more for one call: check the usage counts"

_PICO = Decimal(1).scaleb(-MONEY_SCALE)


def pico_to_usd(pico: int) -> Decimal:
    """An exact Decimal in USD for an integer amount of pico-USD."""
    return Decimal(pico).scaleb(-MONEY_SCALE)


def usd_to_pico(usd: Decimal | int | str) -> int:
    """Integer pico-USD for a USD amount; raises if the amount is finer than 1e-12 USD."""
    value = Decimal(usd)
    if not value.is_finite():
        raise ValueError(f"not a finite amount: {usd!r}")
    with localcontext() as ctx:
        ctx.prec = 60
        scaled = value.scaleb(MONEY_SCALE)
        if scaled != scaled.to_integral_value():
            raise ValueError(f"{usd} USD is finer than 1e-12 USD")
        return int(scaled)


def rate_pico(price: Decimal, per: int) -> tuple[int, bool]:
    """Pico-USD per single unit for `price` USD per `per` units.

    Returns the rate and whether it is exact. Inexact rates (a price with more decimals
    than the unit allows, e.g. 0.0833333333333333 $/MTok) are rounded half-even, which
    is at most 0.5 pico-USD per unit.
    """
    with localcontext() as ctx:
        ctx.prec = 60
        exact = price * PICO_PER_USD / per
        rounded = exact.quantize(Decimal(1), rounding=ROUND_HALF_EVEN)
    return int(rounded), rounded == exact


def pico_array_to_arrow(pico: np.ndarray, valid: np.ndarray | None = None) -> pa.Array:
    """Build a DECIMAL(18, 12) Arrow array from int64 pico-USD without leaving C.

    Arrow decimals are two's-complement 128-bit integers at the column's scale, so an
    int64 of pico-USD sign-extended to 128 bits *is* the decimal value.
    """
    import numpy as np
    import pyarrow as pa

    values = np.ascontiguousarray(pico, dtype=np.int64)
    wide = np.empty((len(values), 2), dtype=np.int64)
    wide[:, 0] = values
    wide[:, 1] = values >> 63
    buffers: list[pa.Buffer | None] = [None, pa.py_buffer(wide)]
    null_count = 0
    if valid is not None and not bool(np.all(valid)):
        mask = np.asarray(valid, dtype=bool)
        buffers[0] = pa.py_buffer(np.packbits(mask, bitorder="little"))
        null_count = int(len(mask) - np.count_nonzero(mask))
    return pa.Array.from_buffers(money_arrow_type(), len(values), buffers, null_count=null_count)


def arrow_to_pico(array: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """int64 pico-USD and a validity mask from a DECIMAL(18, 12) Arrow array."""
    import numpy as np
    import pyarrow as pa

    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks() if array.num_chunks != 1 else array.chunk(0)
    if array.type != money_arrow_type():
        array = array.cast(money_arrow_type())
    raw = np.frombuffer(array.buffers()[1], dtype=np.int64)
    pico = raw[2 * array.offset : 2 * (array.offset + len(array)) : 2].copy()
    valid = np.asarray(array.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
    return pico, valid


def format_usd(value: Decimal | None, places: int = 2) -> str:
    """Human display only: `$1,234.57`. Never feed the result back into arithmetic."""
    if value is None:
        return "—"
    quant = Decimal(1).scaleb(-places)
    rounded = value.quantize(quant, rounding=ROUND_HALF_EVEN)
    sign = "-" if rounded < 0 else ""
    return f"{sign}${abs(rounded):,.{places}f}"


def money_arrow_type() -> pa.Decimal128Type:
    """DECIMAL(18, 12), the Arrow type of one event's cost (also as `MONEY_ARROW_TYPE`)."""
    import pyarrow as pa

    return pa.decimal128(18, MONEY_SCALE)


def total_arrow_type() -> pa.Decimal128Type:
    """DECIMAL(38, 12), the Arrow type of a stored sum of costs (also as `TOTAL_ARROW_TYPE`):
    one call's DECIMAL(18, 12) stops below $1M, which a month of an organisation passes."""
    import pyarrow as pa

    return pa.decimal128(38, MONEY_SCALE)


def __getattr__(name: str) -> Any:
    # The Arrow types are made on first use, so that importing this module imports no Arrow.
    if name in _ARROW_TYPES:
        globals()[name] = _ARROW_TYPES[name]()
        return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


_ARROW_TYPES = {"MONEY_ARROW_TYPE": money_arrow_type, "TOTAL_ARROW_TYPE": total_arrow_type}
