"""What every ledger engine provides. Queries are written once (see `unitcost.analytics`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import pyarrow as pa


class LedgerBusyError(RuntimeError):
    """Another process holds the ledger for writing."""


class LedgerUnreachableError(RuntimeError):
    """The ledger's server cannot be reached or refuses the connection (a user can fix it)."""


class LedgerVersionError(RuntimeError):
    """The ledger's schema is not the one this unitcost reads: newer (upgrade unitcost) or
    older and opened read-only (open it once read-write to migrate it)."""


def newer_schema_error(target: str, version: int, supported: int) -> LedgerVersionError:
    return LedgerVersionError(
        f"{target} has schema version {version}, newer than this unitcost reads ({supported}): "
        "it was written by a later unitcost; upgrade unitcost to use it"
    )


@dataclass(frozen=True)
class AppendResult:
    inserted: int
    duplicates: int
    """Events not inserted because their event_id was already present (in the ledger or earlier in the batch)."""
    in_batch_duplicates: int = 0


class Store(Protocol):
    dialect: str

    def append(self, table: pa.Table, *, all_cores: bool = False) -> AppendResult:
        """Insert the events whose event_id is new. `all_cores`: nothing else in this process is
        working, so the engine may spread the insert over every core it is allowed."""
        ...

    def insert(self, table_name: str, table: pa.Table) -> None: ...

    def upsert(self, table_name: str, table: pa.Table) -> None: ...

    def update_costs(self, table: pa.Table) -> int: ...

    def transaction(self) -> AbstractContextManager[None]: ...

    def fetch(self, sql: str, params: Sequence[Any] | None = None) -> pa.Table: ...

    def snapshot(self) -> AbstractContextManager[Callable[[str], list[dict[str, Any]]]]:
        """A query function for several queries that should see the ledger in one state (a
        report's); it returns rows as dicts."""
        ...

    def scan(
        self, sql: str, params: Sequence[Any] | None = None, batch_size: int = 200_000
    ) -> Iterator[pa.RecordBatch]: ...

    def insert_meta(self, key: str, value: str) -> None: ...

    def refresh_rollups(self) -> int:
        """Bring the engine's report rollups up to date, if it keeps any; returns events rolled up."""
        ...

    def bulk(self) -> AbstractContextManager[None]:
        """Many appends at once (a file): the engine may defer its report rollups to the end."""
        ...

    def yield_to_waiters(self) -> bool:
        """Give the ledger up if another process asked for it (an engine with one writer process
        at a time); the next use takes it back. True when it was given up."""
        ...

    def close(self) -> None: ...
