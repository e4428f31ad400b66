"""The event spool: every gateway event is appended to a file before its response is returned.

- `append` writes one JSON line with a single `write(2)` on an O_APPEND descriptor. Once it
  returns, the line is in the kernel's page cache: a `kill -9` of the gateway cannot lose it.
- A background thread fsyncs the file every `fsync_interval_ms` when something was written
  (batched fsync), which bounds what a power loss could take.
- A writer thread ingests the lines into the ledger in batches through
  `Ledger.ingest_records` (the one ingest path) and then records how far it got in a
  checkpoint file. On restart, everything after the checkpoint is replayed; ingestion is
  idempotent on `event_id`, so a line ingested just before a crash is not counted twice.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson

log = logging.getLogger("unitcost.gateway.spool")

SEGMENT_BYTES = 64 * 1024 * 1024
CHECKPOINT = "checkpoint.json"
BATCH = 5000

Sink = Callable[[Sequence[Mapping[str, Any]]], None]


def _segment_name(number: int) -> str:
    return f"events-{number:08d}.jsonl"


def _segments(directory: Path) -> list[int]:
    numbers = []
    for path in directory.glob("events-*.jsonl"):
        with contextlib.suppress(ValueError):
            numbers.append(int(path.stem.removeprefix("events-")))
    return sorted(numbers)


def read_lines(path: Path, offset: int) -> Iterator[tuple[int, dict[str, Any]]]:
    """(end offset, record) for every complete, valid line after `offset`.

    A torn last line (power loss mid-write) has no newline and is skipped: its response was
    never returned, since the write had not completed.
    """
    with path.open("rb") as handle:
        handle.seek(offset)
        position = offset
        for line in handle:
            position += len(line)
            if not line.endswith(b"\n"):
                log.warning("spool %s: torn last line at byte %d skipped", path.name, position - len(line))
                break
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError:
                log.error("spool %s: unreadable line ending at byte %d skipped", path.name, position)
                continue
            yield position, record


class Spool:
    def __init__(self, directory: str | Path, sink: Sink | None, *, fsync_interval_ms: float = 20.0) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._sink = sink
        self._interval = fsync_interval_ms / 1000.0
        self._queue: queue.Queue[tuple[int, int, dict[str, Any]] | None] = queue.Queue()
        self._lock = threading.Lock()
        self._dirty = False
        self._stop = threading.Event()
        self.appended = 0
        self.ingested = 0
        self.replayed = self._replay()
        existing = _segments(self.directory)
        self._number = (existing[-1] + 1) if existing else 1
        self._fd = self._open(self._number)
        self._size = 0
        self._threads = [
            threading.Thread(target=self._fsync_loop, name="unitcost-spool-fsync", daemon=True),
            threading.Thread(target=self._writer_loop, name="unitcost-spool-writer", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    # ------------------------------------------------------------------ hot path

    def append(self, record: Mapping[str, Any]) -> None:
        line = orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE)
        with self._lock:
            os.write(self._fd, line)
            self._size += len(line)
            self._dirty = True
            number, end = self._number, self._size
            if self._size >= SEGMENT_BYTES:
                self._rotate()
        self.appended += 1
        self._queue.put((number, end, dict(record)))

    # ------------------------------------------------------------------ files

    def _open(self, number: int) -> int:
        path = self.directory / _segment_name(number)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._fsync_dir()
        return fd

    def _fsync_dir(self) -> None:
        dir_fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def _rotate(self) -> None:
        os.fsync(self._fd)
        os.close(self._fd)
        self._number += 1
        self._fd = self._open(self._number)
        self._size = 0

    def _read_checkpoint(self) -> tuple[int, int]:
        try:
            raw = orjson.loads((self.directory / CHECKPOINT).read_bytes())
            return int(raw["segment"]), int(raw["offset"])
        except (FileNotFoundError, orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return 0, 0

    def _write_checkpoint(self, segment: int, offset: int) -> None:
        tmp = self.directory / (CHECKPOINT + ".tmp")
        tmp.write_bytes(orjson.dumps({"segment": segment, "offset": offset}))
        os.replace(tmp, self.directory / CHECKPOINT)
        for number in _segments(self.directory):
            if number < segment:
                with contextlib.suppress(FileNotFoundError):
                    (self.directory / _segment_name(number)).unlink()

    def _replay(self) -> int:
        """Ingest every spooled line after the checkpoint (events of a previous run)."""
        done_segment, done_offset = self._read_checkpoint()
        replayed = 0
        for number in _segments(self.directory):
            if number < done_segment:
                continue
            start = done_offset if number == done_segment else 0
            batch: list[dict[str, Any]] = []
            end = start
            for end, record in read_lines(self.directory / _segment_name(number), start):
                batch.append(record)
                if len(batch) >= BATCH:
                    self._deliver(batch)
                    replayed += len(batch)
                    batch = []
                    self._write_checkpoint(number, end)
            if batch:
                self._deliver(batch)
                replayed += len(batch)
            self._write_checkpoint(number, end)
        if replayed:
            log.info("spool: replayed %d events from a previous run", replayed)
        return replayed

    def _deliver(self, batch: Sequence[Mapping[str, Any]]) -> None:
        if self._sink is not None:
            self._sink(batch)
        self.ingested += len(batch)

    # ------------------------------------------------------------------ threads

    def _fsync_loop(self) -> None:
        while not self._stop.wait(self._interval):
            self.sync()

    def sync(self) -> None:
        # fsync outside the lock: appends (on the event loop) never wait for the disk.
        with self._lock:
            if not self._dirty:
                return
            self._dirty = False
            fd = self._fd
        with contextlib.suppress(OSError):  # rotated and closed meanwhile: rotation fsynced it
            os.fsync(fd)

    def _writer_loop(self) -> None:
        stopping = False
        while not stopping:
            item = self._queue.get()
            items = []
            if item is None:
                stopping = True
            else:
                items.append(item)
            while len(items) < BATCH:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stopping = True
                    break
                items.append(more)
            if items:
                self._ingest(items)
            if not stopping:
                # Let a batch build up under load: one ledger append per ~200 ms, not per event.
                self._stop.wait(0.2)

    def _ingest(self, items: list[tuple[int, int, dict[str, Any]]]) -> None:
        try:
            self._deliver([record for _, _, record in items])
        except Exception:
            # The lines stay in the spool after the checkpoint: the next start replays them.
            log.exception(
                "spool: ledger write failed for %d events; they will be replayed on restart", len(items)
            )
            return
        number, end, _ = items[-1]
        self._write_checkpoint(number, end)

    def pending(self) -> int:
        return self._queue.qsize()

    def close(self) -> None:
        """Ingest what is queued, fsync and stop the threads."""
        self._queue.put(None)
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)
        self.sync()
        with self._lock:
            os.close(self._fd)
