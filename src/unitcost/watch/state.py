"""Watermarks and small per-detector state, kept in the ledger's `watch_state` table."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pyarrow as pa

from ..ledger.base import Store
from .tables import STATE_SCHEMA


class WatchState:
    def __init__(self, store: Store) -> None:
        self.store = store

    def get(self, name: str) -> tuple[datetime | None, dict[str, Any]]:
        rows = self.store.fetch("SELECT watermark, state FROM watch_state WHERE name = ?", [name]).to_pylist()
        if not rows:
            return None, {}
        row = rows[0]
        watermark = row["watermark"].astimezone(UTC) if row["watermark"] is not None else None
        return watermark, (orjson.loads(row["state"]) if row["state"] else {})

    def put(self, name: str, watermark: datetime | None, state: dict[str, Any] | None = None) -> None:
        self.put_many([(name, watermark, state)])

    def put_many(self, entries: list[tuple[str, datetime | None, dict[str, Any] | None]]) -> None:
        """Several watermarks in one write: a cycle commits its detectors' progress together."""
        if not entries:
            return
        now = datetime.now(UTC)
        rows = [
            {
                "name": name,
                "watermark": mark,
                "state": orjson.dumps(st or {}, default=str).decode(),
                "updated_at": now,
            }
            for name, mark, st in entries
        ]
        self.store.upsert("watch_state", pa.Table.from_pylist(rows, schema=STATE_SCHEMA))

    def reset(self) -> None:
        self.store.fetch("DELETE FROM watch_state")
