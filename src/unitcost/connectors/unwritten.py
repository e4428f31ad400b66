"""Events the ledger could not take, kept on disk until a later write adds them.

The recorder behind `unitcost.record` writes from a background thread and nobody waits for
it. When the ledger stays unwritable (a long `unitcost ingest` holding a DuckDB file, a
ClickHouse server down, a full disk) through the writer's retries, or still is when the
application exits, its events are written here instead of being dropped: one JSON-lines
file per batch, in the event schema, so `unitcost ingest FILE` takes them as they are. The
next successful write of a recorder on the same ledger adds every file it finds and removes
it; ingestion is idempotent on `event_id`, so a file added twice (two processes, or a
write that did commit after all) changes nothing.

A file appears under its final name only once it is complete and on disk (written beside,
flushed, then renamed), so a reader never takes half a batch.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..ingest.readers import record_json

if TYPE_CHECKING:
    from ..api import Ledger

log = logging.getLogger("unitcost.writer")

SUFFIX = ".unwritten"
"""A DuckDB ledger's kept events are in the directory named like the file plus this."""


def directory_for(target: str | Path | Ledger | None) -> Path:
    """Where the events meant for `target` (what `Recorder` was given) are kept."""
    from ..api import Ledger
    from ..config import load_config, resolve_ledger

    if isinstance(target, Ledger):
        path = getattr(target.store, "path", None)
        location = str(path) if path is not None else target.target
    else:
        location = resolve_ledger(target, load_config())
    if "://" not in location:
        return Path(location + SUFFIX)
    # A ClickHouse ledger has no file to sit beside: one directory per server and database,
    # named without the password (`target` of a Ledger is already redacted).
    from platformdirs import user_data_path

    from ..ledger.clickhouse_store import redact

    digest = hashlib.sha256(redact(location).encode()).hexdigest()[:16]
    return user_data_path("unitcost", appauthor=False) / "unwritten" / digest


class Unwritten:
    """The kept events of one ledger: `keep` a batch, `files` to list them, `add_to` a ledger."""

    def __init__(self, target: str | Path | Ledger | None, directory: str | Path | None = None) -> None:
        self._target = target
        self._directory = Path(directory) if directory is not None else None
        self._lock = threading.Lock()

    @property
    def directory(self) -> Path:
        # Resolved on first use: a bad config file is the writer's error to report, not record()'s.
        if self._directory is None:
            self._directory = directory_for(self._target)
        return self._directory

    def keep(self, records: Sequence[Mapping[str, Any]]) -> Path:
        """Write `records` to a new file of their own; its path. Raises OSError when it cannot."""
        lines = []
        for record in records:
            try:
                lines.append(record_json(record))
            except TypeError:
                # The ledger would reject it too, naming the field; nothing to keep.
                log.warning("unitcost: an event that cannot be written as JSON was not kept: %r", record)
        directory = self.directory
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        final = directory / f"events-{stamp}-{os.getpid()}-{uuid.uuid4().hex[:8]}.jsonl"
        partial = final.with_suffix(".part")
        with self._lock:
            directory.mkdir(parents=True, exist_ok=True)
            # Events name teams, users and customers: readable by their owner only, like the ledger's spool.
            fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as handle:
                    handle.write("".join(line + "\n" for line in lines))
                    handle.flush()
                    os.fsync(handle.fileno())
                os.replace(partial, final)
            except BaseException:
                partial.unlink(missing_ok=True)
                raise
        return final

    def files(self) -> list[Path]:
        """The complete files waiting, oldest first."""
        try:
            return sorted(self.directory.glob("events-*.jsonl"))
        except OSError:
            return []

    def add_to(self, ledger: Ledger, *, source: str) -> list[Path]:
        """Ingest every waiting file into `ledger` (as written by `source`) and remove it; the
        files added. A file that fails stays for the next attempt."""
        added = []
        for path in self.files():
            summary = ledger.ingestor().ingest_path(path, fmt="jsonl", source=source)
            for rejection in summary.rejections[:20]:
                log.warning("unitcost: kept event not recorded: %s", rejection)
            path.unlink(missing_ok=True)
            added.append(path)
            log.warning(
                "unitcost: %d kept events added to the ledger from %s (%d were already there, %d rejected)",
                summary.accepted,
                path,
                summary.duplicates,
                summary.rejected,
            )
        return added
