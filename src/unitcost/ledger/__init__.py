"""Storage of priced events: the protocol, the DuckDB file, ClickHouse, schema and migrations.

The `unitcost.Ledger` that users open lives in `unitcost.api`; this package knows nothing of
providers or prices, only how to keep events safely and answer queries.
"""

from .base import AppendResult, LedgerBusyError, Store

__all__ = ["AppendResult", "LedgerBusyError", "Store"]
