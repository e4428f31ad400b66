"""Datetimes as UTC instants, the one way every module reads them."""

from __future__ import annotations

from datetime import UTC, datetime


def as_utc(instant: datetime) -> datetime:
    """`instant` in UTC. A naive one is taken to be UTC already: DuckDB and ClickHouse hand back
    naive UTC timestamps, and the ledger stores nothing else."""
    return instant.replace(tzinfo=UTC) if instant.tzinfo is None else instant.astimezone(UTC)
