"""unitcost: what each unit of LLM work really costs.

import unitcost
ledger = unitcost.Ledger("costs.duckdb")
ledger.ingest("events.jsonl")
print(ledger.report(since="30d", by="team,model"))

book = unitcost.PriceBook.load()
call = book.price("gpt-4o", input_tokens=12_000, cache_read_tokens=8_000, output_tokens=900)
print(call.cost, call.price_ref)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._version import __version__

if TYPE_CHECKING:
    from .api import Ledger, RepriceResult
    from .connectors import Recorder, configure, flush, record, tags

    # From its own module: `connectors.instrument` is also that module's name, which mypy
    # takes for a second definition depending on the order it reads the package in.
    from .connectors.instrument import instrument, uninstrument
    from .events import UsageEvent
    from .pricing.book import CostBreakdown, PriceBook, PricedCall

# Each public name is imported on first use: `unitcost report` needs neither pandas nor the
# price book, and a program that only records events needs no report machinery.
_HOMES = {
    "CostBreakdown": "pricing.book",
    "Ledger": "api",
    "PriceBook": "pricing.book",
    "PricedCall": "pricing.book",
    "Recorder": "connectors",
    "RepriceResult": "api",
    "UsageEvent": "events",
    "configure": "connectors",
    "flush": "connectors",
    "instrument": "connectors",
    "record": "connectors",
    "tags": "connectors",
    "uninstrument": "connectors",
}

__all__ = [
    "CostBreakdown",
    "Ledger",
    "PriceBook",
    "PricedCall",
    "Recorder",
    "RepriceResult",
    "UsageEvent",
    "__version__",
    "configure",
    "flush",
    "instrument",
    "record",
    "tags",
    "uninstrument",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'unitcost' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{home}", __name__), name)
    globals()[name] = value  # once imported, a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOMES})
