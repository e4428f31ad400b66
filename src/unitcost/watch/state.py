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
        row = {
            "name": name,
            "watermark": watermark,
            "state": orjson.dumps(state or {}, default=str).decode(),
            "updated_at": datetime.now(UTC),
        }
        self.store.upsert("watch_state", pa.Table.from_pylist([row], schema=STATE_SCHEMA))

    def reset(self) -> None:
        self.store.fetch("DELETE FROM watch_state")
