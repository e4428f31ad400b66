"""From findings to incidents: one incident per detector and scope, with updates, not a storm.

A finding whose key (detector + scope + subject) has an open incident updates it; the
update is recorded in the history but notifies again only after the cool-down and only
if the incident got worse (a larger change, or a higher severity). An incident with no
finding for `resolve_after` is resolved, and that is notified once. Acknowledged
incidents keep being updated in the history but notify nobody until they resolve.

Two exceptions, for conditions that are re-evaluated as a whole every cycle (budgets):
their incidents resolve when a cycle no longer finds them, not after a quiet spell, so
cycles a day apart do not reopen them; and a finding that goes up a step (`level`: a
higher threshold crossed) notifies at once, even through the cool-down and an
acknowledgement, which covered the step it was given at.

A detector may also end its incidents itself and have a quiet spell of its own (`resolve_after_by`):
a model with no price (`unpriced_model`) is one standing problem, however sparse its calls, so its
incident resolves when the detector finds the model priced and its calls repriced (a `Cleared`), or
after a day with no unpriced call, not after `resolve_after` (see `detectors/unpriced.py`).
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pyarrow as pa

from ..analytics.dialect import dialect_for
from ..ledger.base import Store
from .detectors.base import Cleared, Finding, floor_hour
from .tables import ALERT_LOG_SCHEMA, ALERT_SCHEMA

SEVERITY_RANK = {"info": 0, "warning": 1, "critical": 2}
STATUSES = ("open", "acknowledged", "resolved")


@dataclass(frozen=True)
class Notification:
    alert_id: str
    kind: str  # opened | updated | resolved
    key: str
    detector: str
    scope: dict[str, Any]
    severity: str
    title: str
    message: str
    details: dict[str, Any]
    at: datetime

    def payload(self) -> dict[str, Any]:
        return {
            "alert_id": self.alert_id,
            "event": self.kind,
            "key": self.key,
            "detector": self.detector,
            "scope": self.scope,
            "severity": self.severity,
            "title": self.title,
            "message": self.message,
            "details": self.details,
            "at": self.at.isoformat(),
        }


class Incidents:
    def __init__(
        self,
        store: Store,
        *,
        cooldown: timedelta,
        resolve_after: timedelta,
        resolve_after_by: Mapping[str, timedelta] | None = None,
    ) -> None:
        self.store = store
        self.cooldown = cooldown
        self.resolve_after = resolve_after
        self.resolve_after_by = dict(resolve_after_by or {})
        """The quiet spell of the detectors that have their own (by detector name)."""

    def quiet_spell(self, detector: str) -> timedelta:
        """How long an incident of `detector` stays open with no new finding."""
        return self.resolve_after_by.get(detector, self.resolve_after)

    def apply(
        self,
        findings: Iterable[Finding],
        now: datetime,
        *,
        current: Collection[str] = (),
        judged_at: datetime | None = None,
        cleared: Iterable[Cleared] = (),
    ) -> list[Notification]:
        """Fold a cycle's findings into the incidents, write the history, return what to notify.

        `current` names the detectors whose findings are everything that holds at `judged_at`
        (default `now`; budgets, evaluated at the cycle's instant rather than hour by hour):
        however long since the last cycle, their incidents stay open while found, and resolve at
        `judged_at` in the first cycle that does not find them (a new period, spend back under).

        `cleared` names incidents their detector found over (a model now priced): each is resolved
        at its instant, after this cycle's findings, unless its quiet spell ended first."""
        judged_at = judged_at or now
        live = {row["key"]: row for row in open_alerts(self.store)}
        found: set[str] = set()
        changed: dict[str, dict[str, Any]] = {}
        log: list[dict[str, Any]] = []
        out: list[Notification] = []
        for judged in sorted(findings, key=lambda f: f.at):
            finding = judged
            found.add(finding.key)
            row = live.get(finding.key)
            if (
                row is not None
                and finding.detector not in current
                and finding.at - row["last_seen"] > self.quiet_spell(finding.detector)
            ):
                self._resolve(row, row["last_seen"] + self.quiet_spell(finding.detector), changed, log, out)
                row = None
            if row is None:
                row = self._open(finding)
                live[finding.key] = row
                log.append(_log(row["alert_id"], finding.at, "opened", finding.title))
                out.append(_notification(row, "opened", finding.at))
            else:
                if row["since"] is not None and row["since"] < finding.since:
                    # An incident started when it started: a detector that sees only its last
                    # hours (a trailing window, a run longer than it looks back) must not move
                    # "since" forward from one update to the next.
                    finding = replace(finding, since=row["since"])
                escalated = _escalated(finding, row)
                worse = escalated if finding.level is not None else _worse(finding, row)
                details = finding.details() | _notified(row)
                # Hourly detectors find an incident once an hour; budgets are judged every cycle
                # (every minute by default): their history keeps one update per clock hour, and
                # every escalation and notification, not one row per cycle.
                logged = (
                    finding.detector not in current
                    or escalated
                    or floor_hour(finding.at) != floor_hour(row["last_seen"])
                )
                row.update(
                    severity=max(row["severity"], finding.severity, key=lambda s: SEVERITY_RANK.get(s, 1)),
                    title=finding.title,
                    message=finding.message(),
                    details=orjson.dumps(details).decode(),
                    last_seen=finding.at,
                )
                if escalated and row["status"] == "acknowledged":
                    # The acknowledgement was of the thresholds crossed then, not of this one.
                    row.update(status="open", acked_by=None, acked_at=None)
                due = escalated or finding.at - row["last_notified"] >= self.cooldown
                notify = row["status"] == "open" and due and worse
                if logged or notify:
                    row["updates"] += 1
                    log.append(_log(row["alert_id"], finding.at, "updated", finding.title))
                if notify:
                    row["last_notified"] = finding.at
                    details["notified_change"] = finding.change
                    if finding.level is not None:
                        details["notified_level"] = finding.level
                    row["details"] = orjson.dumps(details).decode()
                    out.append(_notification(row, "updated", finding.at))
            changed[row["alert_id"]] = row
        for clear in cleared:
            row = live.get(clear.key)
            if row is None or row["status"] == "resolved" or row["detector"] in current:
                continue
            if clear.at - row["last_seen"] > self.quiet_spell(row["detector"]):
                continue  # over already, at the end of its quiet spell (below)
            self._resolve(row, max(clear.at, row["last_seen"]), changed, log, out, clear.why)
        for row in list(live.values()):
            if row["status"] == "resolved":
                continue
            if row["detector"] in current:
                if row["key"] not in found:
                    # When this cycle looked, not the start of its hour: a budget alert seen at
                    # 16:10 must not read as resolved at 16:00.
                    self._resolve(row, max(judged_at, row["last_seen"]), changed, log, out, "no longer holds")
            elif now - row["last_seen"] > self.quiet_spell(row["detector"]):
                # Resolved when the quiet spell ended, not when a catch-up (a backfill, a watch that
                # was down for a day) happened to look: the history says how long it lasted.
                self._resolve(row, row["last_seen"] + self.quiet_spell(row["detector"]), changed, log, out)
        self._write(changed.values(), log)
        return out

    def _open(self, finding: Finding) -> dict[str, Any]:
        return {
            "alert_id": uuid.uuid4().hex[:12],
            "key": finding.key,
            "detector": finding.detector,
            "scope": finding.scope.label,
            "status": "open",
            "severity": finding.severity,
            "title": finding.title,
            "message": finding.message(),
            "details": orjson.dumps(finding.details()).decode(),
            "since": finding.since,
            "first_seen": finding.at,
            "last_seen": finding.at,
            "last_notified": finding.at,
            "updates": 0,
            "acked_by": None,
            "acked_at": None,
            "resolved_at": None,
        }

    def _resolve(
        self,
        row: dict[str, Any],
        at: datetime,
        changed: dict[str, dict[str, Any]],
        log: list[dict[str, Any]],
        out: list[Notification],
        why: str | None = None,
    ) -> None:
        row.update(status="resolved", resolved_at=at)
        changed[row["alert_id"]] = row
        quiet = f"no new finding for {self.quiet_spell(row['detector']).total_seconds() / 3600:g} h"
        log.append(_log(row["alert_id"], at, "resolved", why or quiet))
        out.append(_notification(row, "resolved", at))

    def _write(self, rows: Iterable[dict[str, Any]], log: list[dict[str, Any]]) -> None:
        rows = list(rows)
        with self.store.transaction():
            if rows:
                self.store.upsert("alerts", pa.Table.from_pylist(rows, schema=ALERT_SCHEMA))
            if log:
                self.store.insert("alert_log", pa.Table.from_pylist(log, schema=ALERT_LOG_SCHEMA))


_TIES = '"key", alert_id'
"""The alerts one cycle opened share their instants: without these, each engine (and each run of
ClickHouse) lists them in its own order, and `--limit` keeps different ones."""


def open_alerts(store: Store) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = store.fetch(
        f"SELECT * FROM alerts WHERE status <> 'resolved' ORDER BY first_seen, {_TIES}"
    ).to_pylist()
    return rows


class UnknownAlertError(ValueError):
    """No alert has this id (or id prefix)."""


class AlertResolvedError(ValueError):
    """The alert is resolved: there is nothing left to acknowledge."""


def list_alerts(
    store: Store,
    *,
    status: str | None = None,
    detector: str | None = None,
    limit: int = 50,
    since: datetime | None = None,
) -> list[dict[str, Any]]:
    """The alerts, most recently seen first; `since`: only those seen at or after it."""
    if status is not None and status not in STATUSES:
        # A misspelt status would otherwise list "0 alerts", which reads as good news.
        raise ValueError(f"unknown alert status {status!r}; the statuses are {', '.join(STATUSES)}")
    if detector is not None:
        _check_detector(store, detector)
    filters: tuple[tuple[str, Any], ...] = (
        ("status = ?", status),
        ("detector = ?", detector),
        ("last_seen >= ?", since),
    )
    conditions = [(c, v) for c, v in filters if v is not None]
    where = ("WHERE " + " AND ".join(c for c, _ in conditions)) if conditions else ""
    rows: list[dict[str, Any]] = store.fetch(
        f"SELECT * FROM alerts {where} ORDER BY last_seen DESC, first_seen DESC, {_TIES} LIMIT {int(limit)}",
        [v for _, v in conditions],
    ).to_pylist()
    return rows


def _check_detector(store: Store, detector: str) -> None:
    """A misspelt detector would list "0 alerts" too: refuse a name no detector has and no alert
    carries (a detector turned off since still has its alerts listed)."""
    from .detectors import all_detectors

    known = {d.name for d in all_detectors()} | {"budget"}
    if detector in known:
        return
    if store.fetch("SELECT 1 AS found FROM alerts WHERE detector = ? LIMIT 1", [detector]).num_rows:
        return
    raise ValueError(f"unknown detector {detector!r}; the detectors are {', '.join(sorted(known))}")


def find_alert(store: Store, alert_id: str) -> dict[str, Any]:
    """One alert by id or unambiguous id prefix."""
    if not alert_id.strip():
        # Every id starts with "": on a ledger of one alert, that would pick it.
        raise ValueError("an alert id (or a unique prefix of one) is required: see `unitcost alerts`")
    prefix = dialect_for(store.dialect).starts_with("alert_id", "?")
    rows: list[dict[str, Any]] = store.fetch(f"SELECT * FROM alerts WHERE {prefix}", [alert_id]).to_pylist()
    if not rows:
        raise UnknownAlertError(f"no alert with id {alert_id!r}: see `unitcost alerts`")
    if len(rows) > 1:
        raise ValueError(f"alert id {alert_id!r} is ambiguous: {', '.join(r['alert_id'] for r in rows)}")
    return rows[0]


def acknowledge(store: Store, alert_id: str, by: str, at: datetime | None = None) -> dict[str, Any]:
    """Acknowledge an open incident (a prefix of its id is enough when it is unambiguous)."""
    ((row, _),) = acknowledge_many(store, [alert_id], by, at)
    return row


def acknowledge_many(
    store: Store, alert_ids: Sequence[str], by: str, at: datetime | None = None, *, note: str | None = None
) -> list[tuple[dict[str, Any], bool]]:
    """Acknowledge several incidents at once, all or none: an id that matches no alert, more than
    one, or a resolved one is refused before anything is written (a typo in the fourth id must
    not leave three acknowledged and the user unsure which). Each alert comes back with whether
    this call acknowledged it: one already acknowledged keeps who did it and when. A `note` (why,
    what is being done) goes into the alert's history beside who acknowledged it."""
    found: dict[str, dict[str, Any]] = {}
    for alert_id in alert_ids:
        try:
            row = find_alert(store, alert_id)
            if row["status"] == "resolved":
                when = row["resolved_at"]
                raise AlertResolvedError(
                    f"alert {row['alert_id']} is already resolved"
                    + (f" (at {when:%Y-%m-%d %H:%M} UTC)" if when else "")
                )
        except ValueError as exc:
            if len(alert_ids) > 1:
                raise ValueError(f"{exc}; no alert was acknowledged") from None
            raise
        found.setdefault(row["alert_id"], row)  # the same alert named twice (a prefix and its id)
    when = at or datetime.now(UTC)
    fresh = [row for row in found.values() if row["status"] == "open"]
    for row in fresh:
        row.update(status="acknowledged", acked_by=by, acked_at=when)
    if fresh:
        said = f"by {by}" + (f": {note}" if note else "")
        log = [_log(row["alert_id"], when, "acknowledged", said) for row in fresh]
        with store.transaction():
            store.upsert("alerts", pa.Table.from_pylist(fresh, schema=ALERT_SCHEMA))
            store.insert("alert_log", pa.Table.from_pylist(log, schema=ALERT_LOG_SCHEMA))
    return [(row, any(row is f for f in fresh)) for row in found.values()]


def alert_history(store: Store, alert_id: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = store.fetch(
        'SELECT * FROM alert_log WHERE alert_id = ? ORDER BY "at"', [alert_id]
    ).to_pylist()
    return rows


def _worse(finding: Finding, row: dict[str, Any]) -> bool:
    if SEVERITY_RANK.get(finding.severity, 1) > SEVERITY_RANK.get(row["severity"], 1):
        return True
    before: float | None = _notified(row)["notified_change"]
    now = finding.change
    if now is None or before is None:
        return False
    return abs(now) > abs(before) * 1.25


def _escalated(finding: Finding, row: dict[str, Any]) -> bool:
    if finding.level is None:
        return False
    before: float | None = _notified(row).get("notified_level")
    return before is None or finding.level > before


def _notified(row: dict[str, Any]) -> dict[str, Any]:
    """What the last notification of the incident said (its change, and its level if it has one)."""
    details = orjson.loads(row["details"]) if row["details"] else {}
    change = details.get("notified_change", details.get("change"))
    level = details.get("notified_level", details.get("level"))
    out = {"notified_change": float(change) if change is not None else None}
    if level is not None:
        out["notified_level"] = float(level)
    return out


def _notification(row: dict[str, Any], kind: str, at: datetime) -> Notification:
    details = orjson.loads(row["details"]) if row["details"] else {}
    return Notification(
        alert_id=row["alert_id"],
        kind=kind,
        key=row["key"],
        detector=row["detector"],
        scope=details.get("scope", {}),
        severity=row["severity"],
        title=row["title"],
        message=row["message"],
        details=details,
        at=at,
    )


def _log(alert_id: str, at: datetime, kind: str, message: str, sink: str | None = None) -> dict[str, Any]:
    return {"alert_id": alert_id, "at": at, "kind": kind, "sink": sink, "message": message}


def delivery_log(alert_id: str, sink: str, ok: bool, message: str) -> pa.Table:
    row = _log(alert_id, datetime.now(UTC), "delivered" if ok else "failed", message, sink)
    return pa.Table.from_pylist([row], schema=ALERT_LOG_SCHEMA)
