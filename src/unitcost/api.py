"""`unitcost.Ledger`: the Python face of the ledger.

import unitcost
ledger = unitcost.Ledger("costs.duckdb")
ledger.ingest("events.jsonl")
ledger.record(unitcost.UsageEvent(model="gpt-4o", input_tokens=1200, output_tokens=80, team="search"))
df = ledger.report(since="30d", by=["team", "model"])      # Arrow-backed pandas DataFrame
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from .analytics.dialect import dialect_for
from .analytics.report import Report, ReportQuery, run_report, where_sql
from .analytics.window import Window, parse_instant
from .config import Config, load_config, resolve_ledger, resolve_overrides
from .ledger.base import Store
from .utc import as_utc

if TYPE_CHECKING:
    # Imported where used: reading a report needs neither Arrow nor pandas, nor the ingest
    # path, nor prices; `unitcost report` starts in half the time for it.
    import pandas as pd
    import pyarrow as pa

    from .events import UsageEvent
    from .ingest.normalise import Rejection
    from .ingest.pipeline import Ingestor, IngestSummary, Progress
    from .pricing.book import PriceBook

_PRICED = (
    "cost",
    "cost_input",
    "cost_cache_read",
    "cost_cache_write_5m",
    "cost_cache_write_1h",
    "cost_output",
    "cost_reasoning",
    "cost_other",
    "cache_savings",
    "avoided_cost",
    "price_ref",
    "unpriced_reason",
    "priced_provider",
    "priced_model",
)


def _shown(target: str) -> str:
    if "://" not in target:
        return target
    from .ledger.clickhouse_store import redact

    return redact(target)


def open_store(target: str, *, read_only: bool = False, threads: int | None = None) -> Store:
    """A DuckDB file path, or a ClickHouse URL (clickhouse://, chdb://). `threads` caps DuckDB's
    worker threads (default: one per core); ClickHouse ignores it."""
    if target.startswith(("clickhouse://", "clickhouses://", "chdb://")):
        from .ledger.clickhouse_store import ClickHouseStore

        # Read-only: a misspelt database or chDB path is "no ledger", not a new empty one.
        store: Store = ClickHouseStore.from_url(target, read_only=read_only)
        return store
    if "://" in target:
        # Not a path either: "clickhous://host/db" would become a DuckDB file named "clickhous:".
        scheme = target.split("://", 1)[0]
        raise ValueError(
            f"unknown ledger scheme {scheme + '://'!r}: a ledger is a DuckDB file path, "
            "clickhouse://, clickhouses:// or chdb://"
        )
    from .ledger.duckdb_store import DuckDBStore

    return DuckDBStore(target, read_only=read_only, threads=threads)


@dataclass
class RepriceChange:
    provider: str | None
    model: str | None
    events: int
    old_total: Decimal
    new_total: Decimal
    old_unpriced: int
    new_unpriced: int


@dataclass(frozen=True)
class PriceFile:
    """A price file a reprice used: its layer, path and the SHA-256 of its bytes as read."""

    layer: str
    path: str
    sha256: str


@dataclass
class RepriceResult:
    run_id: str
    window: Window
    events_seen: int = 0
    events_changed: int = 0
    old_total: Decimal = Decimal(0)
    new_total: Decimal = Decimal(0)
    old_unpriced: int = 0
    new_unpriced: int = 0
    changes: list[RepriceChange] = field(default_factory=list)
    dry_run: bool = False
    reason: str | None = None
    actor: str | None = None
    price_files: list[PriceFile] = field(default_factory=list)
    newly_priced: int = 0
    """Events that had no price and have one now; with `newly_unpriced`, the moves that the
    net old_unpriced -> new_unpriced can hide (five priced and five lost nets to zero)."""
    newly_unpriced: int = 0


@dataclass
class OutcomeSummary:
    recorded: int = 0
    rejected: int = 0
    rejections: list[Rejection] = field(default_factory=list)
    superseded: int = 0
    """Judgements not kept: a later judged one of the same key is in the file or already
    recorded. recorded + rejected + superseded = the records read."""
    unmatched: int = 0
    """Judgements recorded whose unit, trace or event has no call in the ledger (yet): kept,
    they count once their calls arrive; many of them may be a misspelt unit kind."""
    unmatched_keys: list[str] = field(default_factory=list)
    """A few of them, as `ticket T-9`, `trace tr-1` or `event e-1`."""


class Ledger:
    """A priced, append-only ledger of LLM calls (DuckDB file by default, ClickHouse for scale)."""

    def __init__(
        self,
        path: str | Path | None = None,
        *,
        book: PriceBook | None = None,
        config: Config | None = None,
        read_only: bool = False,
        prices: str | Path | None = None,
        threads: int | None = None,
    ) -> None:
        self.config = config or load_config()
        target = resolve_ledger(path, self.config)
        self.target = _shown(target)
        """Where the ledger is, as messages show it: a ClickHouse URL without its password."""
        self._threads = threads
        """DuckDB worker threads of the ledger and of the ingest checks (None: one per core)."""
        self.store: Store = open_store(target, read_only=read_only, threads=threads)
        self._book = book
        self._prices = prices
        self._ingestor: Ingestor | None = None

    @property
    def book(self) -> PriceBook:
        """The price book (with the configured overrides), loaded on first use: reports need none."""
        if self._book is None:
            from .pricing.book import PriceBook

            self._book = PriceBook.load(resolve_overrides(self._prices, self.config))
        return self._book

    # ------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        if self._ingestor is not None:
            self._ingestor.close()
        self.store.close()

    def yield_to_waiters(self) -> bool:
        """Between two writes of a process that keeps the ledger open (a server, a recorder): give
        a DuckDB file up to a command waiting for it; the next write takes it back. True when it
        was given up."""
        return self.store.yield_to_waiters()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def ingestor(self, *, allow_unknown_fields: bool = False, rejects: TextIO | None = None) -> Ingestor:
        from .ingest.pipeline import Ingestor

        if allow_unknown_fields or rejects is not None:
            return Ingestor(
                self.store,
                self.book,
                allow_unknown_fields=allow_unknown_fields,
                rejects=rejects,
                threads=self._threads,
            )
        if self._ingestor is None:
            self._ingestor = Ingestor(self.store, self.book, threads=self._threads)
        return self._ingestor

    # ------------------------------------------------------------------ in

    def ingest(
        self,
        *paths: str | Path,
        fmt: str | None = None,
        progress: Progress | None = None,
        allow_unknown_fields: bool = False,
        rejects: TextIO | None = None,
    ) -> IngestSummary:
        """Ingest JSONL, CSV or Parquet files in unitcost's event schema (see docs/event-schema.md).

        A file that cannot be read (missing, not gzip, an unknown column, ...) does not stop the
        others: every readable file is ingested first, then `UnreadableFilesError` (an
        `IngestFileError`) names each unreadable file and why; its `summary` counts what went in.
        The summary's `files` holds each file's own counts and rejections."""
        from .ingest.pipeline import IngestSummary, UnreadableFilesError

        ingestor = self.ingestor(allow_unknown_fields=allow_unknown_fields, rejects=rejects)
        total = IngestSummary()
        for path in paths:
            summary = self._ingest_file(ingestor, Path(path), fmt, progress)
            total.merge(summary)
            total.files[str(path)] = summary
        if total.unreadable:
            raise UnreadableFilesError(total)
        return total

    def _ingest_file(
        self, ingestor: Ingestor, path: Path, fmt: str | None, progress: Progress | None
    ) -> IngestSummary:
        """One file's summary; when it cannot be read, whole or in part, its `unreadable` says why."""
        from .ingest.pipeline import IngestSummary, PartlyIngestedError
        from .ingest.readers import IngestFileError

        try:
            _check_openable(path)
            # The report rollups take a file's events in one pass once it is in: then the next
            # report reads no event at all, and no partial rows are left to merge.
            with self.store.bulk():
                return ingestor.ingest_path(path, fmt=fmt, progress=progress)
        except PartlyIngestedError as exc:
            summary, reason = exc.summary, str(exc)
        except IngestFileError as exc:
            summary, reason = IngestSummary(), str(exc)
        summary.unreadable.append((str(path), reason))
        return summary

    def ingest_records(
        self, records: Iterable[Mapping[str, Any] | UsageEvent], *, source: str = "python"
    ) -> IngestSummary:
        from .events import UsageEvent

        dicts = (r.to_record() if isinstance(r, UsageEvent) else r for r in records)
        return self.ingestor().ingest_records(dicts, source=source)

    def record(self, event: UsageEvent | Mapping[str, Any], *, source: str = "python") -> IngestSummary:
        """Record one event now. Raises ValueError with the reason if it is invalid."""
        summary = self.ingest_records([event], source=source)
        if summary.rejections:
            rejection = summary.rejections[0]
            raise ValueError(f"{rejection.field}: {rejection.reason}")
        return summary

    # ------------------------------------------------------------------ outcomes

    def record_outcome(
        self,
        *,
        success: bool | None = None,
        score: float | None = None,
        feedback: str | None = None,
        unit: str | None = None,
        unit_id: str | None = None,
        trace_id: str | None = None,
        event_id: str | None = None,
        ts: datetime | str | None = None,
        source: str = "python",
    ) -> bool:
        """Attach a late judgement to a unit (unit + unit_id), a trace or an event.

        Of two judgements of one key the later judged one wins (`ts`, when it was judged: now
        by default), the later recorded on a tie. True when this one is kept, False when the
        one already recorded was judged later (a replayed or backfilled older judgement)."""
        row = outcome_row(
            {
                "success": success,
                "score": score,
                "feedback": feedback,
                "unit": unit,
                "unit_id": unit_id,
                "trace_id": trace_id,
                "event_id": event_id,
                "ts": ts,
            },
            source,
        )
        if not self._not_older_than_recorded([row]):
            return False
        self._upsert_outcomes([row])
        return True

    def import_outcomes(self, path: str | Path) -> OutcomeSummary:
        """Record the judgements of a JSONL or CSV file (see `ingest.outcomes`): the bad records
        are rejected with line, field and reason, the others kept; of several judgements of one
        key the later judged one wins, as in `record_outcome`."""
        from .ingest.normalise import Rejection
        from .ingest.outcomes import read_outcomes

        summary = OutcomeSummary()
        rows: list[dict[str, Any]] = []
        source = f"file:{Path(path).name}"
        # One instant for the whole file: its rows are found again by it (see `_unmatched`).
        now = datetime.now(UTC)
        for position, raw, error in read_outcomes(Path(path)):
            if error is None:
                try:
                    rows.append(outcome_row(raw, source, now=now))
                    continue
                except ValueError as exc:
                    message = str(exc)
            else:
                message = error
            summary.rejected += 1
            field_name, _, reason = message.partition(": ")
            summary.rejections.append(
                Rejection(position, field_name if reason else "record", reason or message)
            )
        if rows:
            kept = self._not_older_than_recorded(_latest_judgements(rows))
            summary.superseded = len(rows) - len(kept)
            summary.recorded = len(kept)
            if kept:
                self._upsert_outcomes(kept)
                unmatched = self._unmatched(source, now, {r["key_kind"] for r in kept})
                summary.unmatched = len(unmatched)
                summary.unmatched_keys = unmatched[:5]
        return summary

    def _upsert_outcomes(self, rows: list[dict[str, Any]]) -> None:
        import pyarrow as pa

        from .ledger.schema import OUTCOME_SCHEMA

        self.store.upsert("outcomes", pa.Table.from_pylist(rows, schema=OUTCOME_SCHEMA))

    def _not_older_than_recorded(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The rows judged no earlier than the judgement already recorded for their key: a file
        of last month's judgements imported again must not undo this week's re-judgements."""
        where = ""
        if len(rows) == 1:  # one judgement recorded from code: read its key alone
            lit = dialect_for(self.store.dialect).literal
            row = rows[0]
            where = (
                f"WHERE key_kind = {lit(row['key_kind'])} AND unit = {lit(row['unit'])} "
                f"AND key = {lit(row['key'])}"
            )
        recorded: dict[tuple[str, str, str], datetime] = {}
        for old in self.store.fetch(f"SELECT key_kind, unit, key, ts FROM outcomes {where}").to_pylist():
            if old["ts"] is None:
                continue
            key, when = (old["key_kind"], old["unit"], old["key"]), as_utc(old["ts"])
            recorded[key] = max(when, recorded.get(key, when))
        return [
            r
            for r in rows
            if (old_ts := recorded.get((r["key_kind"], r["unit"], r["key"]))) is None or r["ts"] >= old_ts
        ]

    def _unmatched(self, source: str, at: datetime, kinds: set[str]) -> list[str]:
        """The judgements recorded by one import (its source and instant) that no call of the
        ledger carries the key of, as `ticket T-9`, `trace tr-1`, `event e-1`."""
        dialect = dialect_for(self.store.dialect)
        matches = {
            "unit": "(unit, key) IN (SELECT COALESCE(unit, ''), unit_id FROM events WHERE unit_id IS NOT NULL)",
            "trace": "key IN (SELECT trace_id FROM events WHERE trace_id IS NOT NULL)",
            "event": "key IN (SELECT event_id FROM events)",
        }
        matched = " OR ".join(f"(key_kind = '{kind}' AND {matches[kind]})" for kind in sorted(kinds))
        sql = (
            f"SELECT key_kind, unit, key FROM outcomes WHERE source = {dialect.literal(source)} "
            f"AND recorded_at = {dialect.ts_literal(at.isoformat())} AND NOT ({matched}) "
            "ORDER BY key_kind, unit, key"
        )
        return [
            f"{row['unit'] if row['key_kind'] == 'unit' else row['key_kind']} {row['key']}"
            for row in self.store.fetch(sql).to_pylist()
        ]

    # ------------------------------------------------------------------ out

    def report_sections(
        self,
        since: str | datetime | date | None = "30d",
        until: str | datetime | date | None = None,
        by: Sequence[str] | str = (),
        period: str | None = None,
        where: Sequence[str] | str = (),
        top: int | None = None,
    ) -> Report:
        if isinstance(by, str):
            by = [b for b in by.split(",") if b.strip()]
        # One string is one filter (its commas separate values), not a sequence of characters.
        filters = [where] if isinstance(where, str) else list(where)
        query = ReportQuery(Window.parse(since, until), list(by), period, filters, top)
        return run_report(self.store, query)

    def report(
        self,
        since: str | datetime | date | None = "30d",
        until: str | datetime | date | None = None,
        by: Sequence[str] | str = (),
        period: str | None = None,
        where: Sequence[str] | str = (),
        top: int | None = None,
    ) -> pd.DataFrame:
        """KPIs per group (spend, trend, cost per request and per 1k tokens, cache, reasoning, waste,
        units, successes, latency, unpriced calls) as an Arrow-backed DataFrame. `since` and
        `until` take what `--since`/`--until` take; an age counts whole units back from the
        current one, in UTC (`"30d"`: from midnight 30 days before today, so the 30 whole days
        before today and today so far; `"12h"` from the start of the hour 12 hours ago), while
        dates and datetimes are taken as they are. `where` is one filter (`"team=ops"`) or a
        list of them, all of which must hold. With `top`, what the other groups add up to is in
        `frame.attrs["others"]` (None when none was left out), so the rows shown and the others
        still make the total."""
        import pandas as pd

        report = self.report_sections(since, until, by, period, where, top)
        frame: pd.DataFrame = report.table().to_pandas(types_mapper=pd.ArrowDtype)
        frame.attrs["others"] = report.others
        return frame

    def sql(self, query: str) -> pd.DataFrame:
        """Run a read-only SQL query against the ledger and return an Arrow-backed DataFrame."""
        import pandas as pd

        frame: pd.DataFrame = self.store.fetch(query).to_pandas(types_mapper=pd.ArrowDtype)
        return frame

    def count(self) -> int:
        return int(self.store.fetch("SELECT count(*) AS n FROM events").column("n")[0].as_py())

    # ------------------------------------------------------------------ reprice

    def reprice(
        self,
        since: str | datetime | date,
        until: str | datetime | date | None = None,
        where: Sequence[str] = (),
        *,
        dry_run: bool = False,
        progress: Progress | None = None,
        book: PriceBook | None = None,
        reason: str | None = None,
        actor: str | None = None,
    ) -> RepriceResult:
        """Recompute stored costs for a period with the current price book, and audit old -> new:
        the run (`reprice_runs`, with `reason` and `actor`, by default the system user), its
        totals per model (`reprice_changes`) and each changed event (`reprice_events`)."""
        import pyarrow as pa
        import pyarrow.compute as pc

        from .events import PRICING_INPUTS
        from .pricing.batch import price_table

        book = book or self.book
        window = _reprice_window(since, until)
        result = RepriceResult(
            uuid.uuid4().hex,
            window,
            dry_run=dry_run,
            reason=reason or None,
            actor=actor or _system_user(),
            price_files=_price_files(book),
        )
        dialect = dialect_for(self.store.dialect)
        columns = ["event_id", *PRICING_INPUTS, *_PRICED]
        select = ", ".join(f'"{c}"' for c in columns)
        sql = (
            f"SELECT {select} FROM events WHERE ts >= {dialect.ts_literal(window.since.isoformat())} "
            f"AND ts < {dialect.ts_literal(window.until.isoformat())} AND {where_sql(where, dialect)}"
        )
        per_model: dict[tuple[str | None, str | None], RepriceChange] = {}
        # One transaction around the reading too: each batch is written as soon as it is priced,
        # so memory holds one batch, not every changed row; the run's totals are written last.
        # DuckDB commits all of it or none. ClickHouse has no such transaction: a batch's
        # events are audited before they are updated, and the run's row only once all are, so
        # an interrupted run leaves per-event audit rows and no run claiming totals.
        with nullcontext() if dry_run else self.store.transaction():
            for batch in self.store.scan(sql):
                table = pa.Table.from_batches([batch])
                new = price_table(book, table).columns
                changed = _changed_mask(table, new)
                result.events_seen += table.num_rows
                _accumulate(per_model, result, table, new)
                _count_price_moves(result, table, new, changed)
                n_changed = int(pc.sum(changed).as_py() or 0)
                result.events_changed += n_changed
                if n_changed and not dry_run:
                    self.store.insert(
                        "reprice_events", _changed_events(result.run_id, table, new).filter(changed)
                    )
                    update = pa.table(
                        {"event_id": table.column("event_id"), **{name: new[name] for name in _PRICED}}
                    )
                    self.store.update_costs(update.filter(changed))
                if progress is not None:
                    progress(table.num_rows)
            result.changes = sorted(
                per_model.values(), key=lambda c: abs(c.new_total - c.old_total), reverse=True
            )
            if not dry_run:
                self._audit(result, book)
        return result

    def _audit(self, result: RepriceResult, book: PriceBook) -> None:
        """The run and its totals per model (each changed event is written with its batch)."""
        import pyarrow as pa

        from .ledger.schema import REPRICE_CHANGE_SCHEMA, REPRICE_RUN_SCHEMA

        layers = "; ".join(f"{row['layer']}={row['what']}" for row in book.describe_layers())
        changes = [
            {
                "run_id": result.run_id,
                "provider": c.provider,
                "model": c.model,
                "events": c.events,
                "old_total": _known_total(c.old_total, c.old_unpriced, c.events),
                "new_total": _known_total(c.new_total, c.new_unpriced, c.events),
                "old_unpriced": c.old_unpriced,
                "new_unpriced": c.new_unpriced,
            }
            for c in result.changes
        ]
        if changes:
            self.store.insert("reprice_changes", pa.Table.from_pylist(changes, schema=REPRICE_CHANGE_SCHEMA))
        run = {
            "run_id": result.run_id,
            "at": datetime.now(UTC),
            "since": result.window.since,
            "until": result.window.until,
            "price_layers": layers,
            "events_seen": result.events_seen,
            "events_changed": result.events_changed,
            # A side where no event had a price has no total: NULL, never $0.
            "old_total": _known_total(result.old_total, result.old_unpriced, result.events_seen),
            "new_total": _known_total(result.new_total, result.new_unpriced, result.events_seen),
            "old_unpriced": result.old_unpriced,
            "new_unpriced": result.new_unpriced,
            "reason": result.reason,
            "actor": result.actor,
            "price_files": "; ".join(f"{f.layer}={f.path} sha256:{f.sha256}" for f in result.price_files),
            "newly_priced": result.newly_priced,
            "newly_unpriced": result.newly_unpriced,
        }
        # Last: a run row is written only for a reprice that got to its end.
        self.store.insert("reprice_runs", pa.Table.from_pylist([run], schema=REPRICE_RUN_SCHEMA))


def _reprice_window(since: str | datetime | date, until: str | datetime | date | None) -> Window:
    start = parse_instant(since)
    end = parse_instant(until) if until else datetime.now(UTC)
    if end > start:
        return Window(start, end)
    if until is None:
        # The user gave no --until: "must be after --since" would name an option they never used.
        raise ValueError(
            f"--since ({start:%Y-%m-%d %H:%M}) is in the future (now is {end:%Y-%m-%d %H:%M} UTC): "
            "no event there to reprice"
        )
    raise ValueError(f"--until ({end:%Y-%m-%d %H:%M}) must be after --since ({start:%Y-%m-%d %H:%M})")


def _price_files(book: PriceBook) -> list[PriceFile]:
    """The price files the book was built from, each with the SHA-256 of the bytes it read."""
    return [
        PriceFile(layer.name, layer.path, layer.sha256)
        for layer in (book.corrections, book.overrides)
        if layer is not None and layer.sha256
    ]


def _check_openable(path: Path) -> None:
    """Raise IngestFileError when `path` cannot be opened (missing, a directory, not allowed): only
    here is an OSError the file's problem; later it may be the ledger's (a full disk), which stops."""
    from .ingest.readers import IngestFileError

    if path.is_dir():
        raise IngestFileError(f"{path}: is a directory (pass the files in it, e.g. {path}/*.jsonl)")
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise IngestFileError(f"{path}: {exc.strerror or exc}") from None


def _changed_events(run_id: str, old: pa.Table, new: Mapping[str, pa.Array]) -> pa.Table:
    """Each event of `old` with its cost and price before and after (`REPRICE_EVENT_SCHEMA`)."""
    import pyarrow as pa

    from .ledger.schema import REPRICE_EVENT_SCHEMA

    n = old.num_rows
    columns = {
        "run_id": pa.repeat(pa.scalar(run_id, pa.string()), n),
        "event_id": old.column("event_id"),
        "ts": old.column("ts"),
        "provider": old.column("provider"),
        "model": old.column("model"),
        "old_cost": old.column("cost"),
        "new_cost": new["cost"],
        "old_price_ref": old.column("price_ref"),
        "new_price_ref": new["price_ref"],
        "old_unpriced_reason": old.column("unpriced_reason"),
        "new_unpriced_reason": new["unpriced_reason"],
    }
    return pa.table(columns).cast(REPRICE_EVENT_SCHEMA)


def _system_user() -> str | None:
    """Who runs this process, for the audit; None where the system cannot say (a container
    running under a numeric uid with no name)."""
    import getpass

    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return None


def _known_total(total: Decimal, unpriced: int, events: int) -> Decimal | None:
    return None if events and unpriced >= events else total


def _changed_mask(old: pa.Table, new: Mapping[str, pa.Array]) -> pa.Array:
    import pyarrow.compute as pc

    mask = None
    # Every priced column, not only the total and the ref: a price corrected in place (same
    # entry, same ref) can move cost between input and output and leave the total unchanged.
    for name in _PRICED:
        a, b = old.column(name), new[name]
        differs = pc.or_kleene(pc.not_equal(a, b), pc.xor(pc.is_null(a), pc.is_null(b)))
        differs = pc.fill_null(differs, False)
        mask = differs if mask is None else pc.or_(mask, differs)
    assert mask is not None
    return mask


def _count_price_moves(
    result: RepriceResult, old: pa.Table, new: Mapping[str, pa.Array], changed: pa.Array
) -> None:
    import pyarrow.compute as pc

    was_unpriced, is_unpriced = pc.is_null(old.column("cost")), pc.is_null(new["cost"])
    gained = pc.and_(changed, pc.and_(was_unpriced, pc.invert(is_unpriced)))
    lost = pc.and_(changed, pc.and_(pc.invert(was_unpriced), is_unpriced))
    result.newly_priced += int(pc.sum(gained).as_py() or 0)
    result.newly_unpriced += int(pc.sum(lost).as_py() or 0)


def _accumulate(
    per_model: dict[tuple[str | None, str | None], RepriceChange],
    result: RepriceResult,
    old: pa.Table,
    new: Mapping[str, pa.Array],
) -> None:
    import pyarrow as pa
    import pyarrow.compute as pc

    from .money import MONEY_ARROW_TYPE

    frame = pa.table(
        {
            "provider": new["priced_provider"],
            "model": new["priced_model"],
            "old": old.column("cost").cast(MONEY_ARROW_TYPE),
            "new": new["cost"],
            "old_unpriced": pc.cast(pc.is_null(old.column("cost")), pa.int64()),
            "new_unpriced": pc.cast(pc.is_null(new["cost"]), pa.int64()),
        }
    )
    grouped = frame.group_by(["provider", "model"], use_threads=False).aggregate(
        [
            ("old", "sum"),
            ("new", "sum"),
            ("old_unpriced", "sum"),
            ("new_unpriced", "sum"),
            ([], "count_all"),
        ]
    )
    for row in grouped.to_pylist():
        key = (row["provider"], row["model"])
        change = per_model.setdefault(key, RepriceChange(key[0], key[1], 0, Decimal(0), Decimal(0), 0, 0))
        old_sum, new_sum = row["old_sum"] or Decimal(0), row["new_sum"] or Decimal(0)
        change.events += row["count_all"]
        change.old_total += old_sum
        change.new_total += new_sum
        change.old_unpriced += row["old_unpriced_sum"]
        change.new_unpriced += row["new_unpriced_sum"]
        result.old_total += old_sum
        result.new_total += new_sum
        result.old_unpriced += row["old_unpriced_sum"]
        result.new_unpriced += row["new_unpriced_sum"]


def outcome_row(raw: Mapping[str, Any], source: str, *, now: datetime | None = None) -> dict[str, Any]:
    """Validate one outcome; raises ValueError('field: reason'). `now` is when it is recorded
    (and judged, when the record does not say)."""
    now = now or datetime.now(UTC)
    unit, unit_id = _opt(raw.get("unit")), _opt(raw.get("unit_id"))
    trace_id, event_id = _opt(raw.get("trace_id")), _opt(raw.get("event_id"))
    if unit_id is not None:
        if unit is None:
            raise ValueError("unit: an outcome for a unit_id needs its unit kind (ticket, document, ...)")
        kind, key, unit_kind = "unit", unit_id, unit
    elif trace_id is not None:
        kind, key, unit_kind = "trace", trace_id, ""
    elif event_id is not None:
        kind, key, unit_kind = "event", event_id, ""
    else:
        raise ValueError("key: an outcome needs unit + unit_id, trace_id or event_id")
    success = _bool(raw.get("success"))
    score = raw.get("score")
    if isinstance(score, bool):
        # float(True) is 1.0: a verdict in the wrong field would pass for a perfect score.
        raise ValueError(f"score: expected a number, got {str(score).lower()} (true/false goes in success)")
    if score is not None:
        try:
            score = float(score)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"score: not a number: {score!r}") from exc
        if not math.isfinite(score):
            raise ValueError(f"score: {score} is not a score (a finite number)")
    if success is None and score is None:
        raise ValueError("success: an outcome needs success (true/false) or a score")
    return {
        "key_kind": kind,
        "unit": unit_kind,
        "key": key,
        "success": success,
        "score": score,
        "feedback": _feedback(raw.get("feedback")),
        "ts": _judged_at(raw.get("ts"), now),
        "source": source,
        "recorded_at": now,
    }


def _latest_judgements(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per key: the latest judged (`ts`), the later in the file on a tie."""
    latest: dict[tuple[str, str, str], dict[str, Any]] = {}
    for row in rows:
        key = (row["key_kind"], row["unit"], row["key"])
        if key not in latest or row["ts"] >= latest[key]["ts"]:
            latest[key] = row
    return list(latest.values())


def _judged_at(value: Any, now: datetime) -> datetime:
    """When the judgement was made: now by default, and within the times an event may have."""
    from .ingest.normalise import EARLIEST, FUTURE_SKEW

    if value in (None, ""):
        return now
    try:
        when = parse_instant(value)
    except ValueError as exc:
        raise ValueError(f"ts: {exc}") from None
    if when > now + FUTURE_SKEW:
        raise ValueError(f"ts: in the future: {value}")
    if when < EARLIEST:
        raise ValueError(f"ts: before {EARLIEST:%Y-%m-%d}: {value}")
    return when


def _feedback(value: Any) -> str | None:
    # Structured feedback is kept as JSON, not as Python's repr of it.
    if isinstance(value, Mapping | list):
        import orjson

        return orjson.dumps(value, default=str).decode()
    return _opt(value)


def _opt(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _bool(value: Any) -> bool | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes", "y", "t", "success", "ok"):
        return True
    if text in ("false", "0", "no", "n", "f", "failure", "fail"):
        return False
    raise ValueError(f"success: expected true or false, got {value!r}")
