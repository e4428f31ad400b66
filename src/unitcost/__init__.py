"""unitcost: what each unit of LLM work really costs.

import unitcost
ledger = unitcost.Ledger("costs.duckdb")
ledger.ingest("events.jsonl")
print(ledger.report(since="30d", by="team,model"))

book = unitcost.PriceBook.load()
call = book.price("gpt-4o", input_tokens=12_000, cache_read_tokens=8_000, output_tokens=900)
print(call.cost, call.price_ref)
"""

from ._version import __version__
from .api import Ledger, RepriceResult
from .connectors import Recorder, configure, flush, instrument, record, tags, uninstrument
from .events import UsageEvent
from .pricing.book import CostBreakdown, PriceBook, PricedCall

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
