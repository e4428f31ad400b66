"""Budgets that hold under concurrency: reserve the worst case before the call, settle after.

Every budget line (one budget, one scope value, one calendar period) keeps three counters:
spend in integer nano-USD (reservations of requests in flight included), the part of it that
is such reservations, and calls. Before forwarding, the gateway reserves the request's
worst-case cost on every line that applies, in one atomic step that first checks every
blocking line: either all lines take the reservation or none does. After the call it settles
each line by (real cost - reservation). So concurrent requests can push spend past a limit
only by what the reservations in flight underestimated.

State lives in this process (`MemoryBudgetState`: the asyncio loop makes check-and-add
atomic) or in Redis (`RedisBudgetState`: Lua scripts run atomically on the server) when
several gateway replicas share budgets. In Redis every reservation also holds a lease that
its replica renews while the request runs: when a replica dies with requests in flight,
the next reservation on any replica after the lease ran out releases what it held.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Protocol

from ..events import ATTRIBUTION_FIELDS
from .config import Budget
from .records import new_event_id

log = logging.getLogger("unitcost.gateway.budget")

NANO_PER_USD = 10**9
TRACE_TTL_S = 30 * 86400


def pico_to_nano_ceil(pico: int) -> int:
    """Budgets count nano-USD; rounding up keeps the guarantee on the safe side."""
    return -((-pico) // 1000)


def nano_to_usd(nano: int) -> Decimal:
    return Decimal(nano).scaleb(-9)


def usd_text(amount: Decimal) -> str:
    """Plain decimal notation without trailing zeros: 0.00018, 0, 12.5 (never 1.8E-4)."""
    return format(amount.normalize(), "f") if amount else "0"


def _utc_text(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class Line:
    """One budget applied to one scope value in one period."""

    budget: Budget
    value: str
    key: str
    reset_at: datetime | None
    ttl_s: int

    @property
    def limit_nano(self) -> int:
        return self.budget.limit_nano

    @property
    def max_calls(self) -> int:
        return -1 if self.budget.max_calls is None else self.budget.max_calls

    def describe(self, spend_nano: int, calls: int, reserved_nano: int = 0) -> dict[str, Any]:
        """The line as the 429 body and the alert log show it. `spend_nano` includes the
        reservations of requests in flight (`reserved_nano`): spend_usd is what settled calls
        cost, reserved_usd what requests still running may cost at most."""
        reserved = max(min(reserved_nano, spend_nano), 0)
        remaining = None
        if self.limit_nano >= 0:
            remaining = usd_text(nano_to_usd(max(self.limit_nano - spend_nano, 0)))
        return {
            "name": self.budget.name,
            "scope": self.budget.scope,
            "value": self.value,
            "period": self.budget.period,
            "limit_usd": None if self.budget.limit_usd is None else str(self.budget.limit_usd),
            "spend_usd": usd_text(nano_to_usd(spend_nano - reserved)),
            "reserved_usd": usd_text(nano_to_usd(reserved)),
            "remaining_usd": remaining,
            "max_calls": self.budget.max_calls,
            "calls": calls,
            "reset_at": _utc_text(self.reset_at) if self.reset_at else None,
        }


def period_bounds(budget: Budget, now: datetime) -> tuple[str, datetime | None]:
    """Calendar period containing `now` in the budget's time zone: (label, reset time in UTC)."""
    label, _, reset = _period(budget, now)
    return label, reset


_PERIODS: dict[int, tuple[Budget, datetime | None, datetime | None, str]] = {}


def _current_period(budget: Budget, now: datetime) -> tuple[str, datetime | None]:
    """period_bounds, computed once per budget and period rather than on every request."""
    hit = _PERIODS.get(id(budget))
    if (
        hit is not None
        and hit[0] is budget
        and (hit[1] is None or hit[1] <= now)
        and (hit[2] is None or now < hit[2])
    ):
        return hit[3], hit[2]
    label, start, reset = _period(budget, now)
    _PERIODS[id(budget)] = (budget, start, reset, label)
    return label, reset


def _period(budget: Budget, now: datetime) -> tuple[str, datetime | None, datetime | None]:
    """(label, start in UTC, reset in UTC) of the period containing `now`."""
    local = now.astimezone(budget.timezone)
    midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
    if budget.period == "day":
        start, end = midnight, midnight + timedelta(days=1)
    elif budget.period == "week":
        start = midnight - timedelta(days=local.weekday())
        end = start + timedelta(days=7)
    elif budget.period == "month":
        start = midnight.replace(day=1)
        end = (start + timedelta(days=32)).replace(day=1)
    else:
        return "all", None, None
    # Re-localise the bounds so a DST change inside the period moves them with the wall clock.
    end = end.replace(tzinfo=None).replace(tzinfo=budget.timezone)
    begin = start.replace(tzinfo=None).replace(tzinfo=budget.timezone)
    return start.date().isoformat(), begin.astimezone(UTC), end.astimezone(UTC)


def scope_value(budget: Budget, attrs: Mapping[str, Any]) -> str | None:
    if budget.scope == "global":
        return "*"
    if budget.scope.startswith("tag:"):
        # Tags named like attribution fields (feature=, customer=) are lifted into those fields.
        name = budget.scope[4:]
        value = (attrs.get("tags") or {}).get(name) or (
            attrs.get(name) if name in ATTRIBUTION_FIELDS else None
        )
    else:
        value = attrs.get(budget.scope)
    if value is None or (budget.match is not None and value != budget.match):
        return None
    return str(value)


def lines_for(budgets: Sequence[Budget], attrs: Mapping[str, Any], prefix: str, now: datetime) -> list[Line]:
    lines = []
    for budget in budgets:
        value = scope_value(budget, attrs)
        if value is None:
            continue
        label, reset = _current_period(budget, now)
        if reset is not None:
            ttl = int((reset - now).total_seconds()) + 86400
        else:
            ttl = TRACE_TTL_S if budget.scope in ("trace", "session") else 0
        key = f"{prefix}budget:{budget.name}:{value}:{label}"
        lines.append(Line(budget, value, key, reset, ttl))
    return lines


def unpriced_refusal(lines: Sequence[Line], models: Sequence[str]) -> str | None:
    """Why a request to models without a price cannot go ahead under these lines, if it cannot.

    A money limit cannot count what has no price: reserving $0 for such a call and settling it
    at $0 would let any number of them through while the budget still showed money left."""
    refusing = [
        line
        for line in lines
        if line.limit_nano >= 0 and line.budget.action != "alert" and line.budget.unpriced == "block"
    ]
    if not models or not refusing:
        return None
    budget = refusing[0].budget
    names = ", ".join(sorted(set(models)))
    return (
        f"budget {budget.name!r} ({budget.scope}={refusing[0].value}) has a limit of "
        f"${budget.limit_usd} and the model {names} has no price, so the gateway cannot count "
        "what this call spends: price the model in the overrides file ([pricing] overrides) or set "
        'unpriced = "allow" on the budget to let such calls through, counted by max_calls only'
    )


@dataclass
class Reservation:
    lines: list[Line]
    amount_nano: int
    spends: list[tuple[int, int]]
    """(spend nano-USD, calls) of each line just after the reservation."""
    token: str | None = None
    """The Redis lease of this reservation (None in memory, or when it took none)."""
    guarded: bool = True
    """False: admitted without a reservation because the shared state could not be reached
    and [gateway.redis] fail_open is true; its cost is added when the state is back."""
    settled: bool = False

    def over(self, action: str) -> list[Line]:
        if not self.guarded:
            return []
        return [
            line
            for line, (spend, calls) in zip(self.lines, self.spends, strict=True)
            if line.budget.action == action
            and (
                (line.limit_nano >= 0 and spend > line.limit_nano)
                or (line.max_calls >= 0 and calls > line.max_calls)
            )
        ]

    def remaining(self) -> tuple[Line, Decimal] | None:
        """The money line with the least left, and what is left after this reservation."""
        if not self.guarded:
            return None
        best: tuple[Line, Decimal] | None = None
        for line, (spend, _) in zip(self.lines, self.spends, strict=True):
            if line.limit_nano < 0:
                continue
            left = nano_to_usd(max(line.limit_nano - spend, 0))
            if best is None or left < best[1]:
                best = (line, left)
        return best


class BudgetExceededError(Exception):
    def __init__(
        self, line: Line, spend_nano: int, calls: int, amount_nano: int, reserved_nano: int = 0
    ) -> None:
        super().__init__(line.budget.name)
        self.line = line
        self.spend_nano = spend_nano
        self.calls = calls
        self.amount_nano = amount_nano
        self.reserved_nano = max(min(reserved_nano, spend_nano), 0)

    def detail(self) -> dict[str, Any]:
        return self.line.describe(self.spend_nano, self.calls, self.reserved_nano)

    def message(self) -> str:
        budget = self.line.budget
        limit = self.line.limit_nano
        if budget.max_calls is not None and self.calls + 1 > budget.max_calls:
            what = f"{self.calls} of {budget.max_calls} calls used"
        else:
            settled = nano_to_usd(self.spend_nano - self.reserved_nano)
            what = f"spend ${usd_text(settled)}"
            if self.reserved_nano:
                what += f" + ${usd_text(nano_to_usd(self.reserved_nano))} reserved by requests in flight"
            what += f" + this request's worst case ${usd_text(nano_to_usd(self.amount_nano))}"
            what += f" would pass the limit ${budget.limit_usd}"
            if 0 <= limit - self.spend_nano < self.amount_nano and limit > self.spend_nano:
                # Money is left, just not this request's worst case: a smaller max_tokens fits.
                left = usd_text(nano_to_usd(limit - self.spend_nano))
                what += f" (${left} left: a smaller max_tokens reserves less)"
        reset = f"; resets {_utc_text(self.line.reset_at)}" if self.line.reset_at else ""
        return f"budget {budget.name!r} ({budget.scope}={self.line.value}, {budget.period}): {what}{reset}"

    def retry_after_s(self, now: datetime) -> int | None:
        """Seconds until the line's period resets (None for a budget that never resets)."""
        if self.line.reset_at is None:
            return None
        return max(math.ceil((self.line.reset_at - now).total_seconds()), 1)


class BudgetUnavailableError(Exception):
    """The shared budget state cannot be reached and the gateway fails closed."""


class BudgetState(Protocol):
    async def hold(self, lines: Sequence[Line], amount_nano: int) -> Reservation:
        """Atomically reserve `amount_nano` and one call on every line, or raise
        BudgetExceededError (or BudgetUnavailableError when the state cannot be reached)."""
        ...

    async def settle(self, reservation: Reservation, spent_nano: int) -> None:
        """Replace the reservation by what the call spent. Never raises for an unreachable
        state: the settlement is kept and written when the state is back."""
        ...

    async def release(self, reservation: Reservation) -> None:
        """Undo a reservation: its money and its call (a request that did not go ahead)."""
        ...

    async def reserve(self, lines: Sequence[Line], amount_nano: int) -> list[tuple[int, int]]:
        """Take `amount_nano` and one call on every line without a lease (seeding, tests)."""
        ...

    async def adjust(self, lines: Sequence[Line], delta_nano: int, delta_calls: int = 0) -> None: ...

    async def read(self, lines: Sequence[Line]) -> list[tuple[int, int]]: ...

    async def close(self) -> None: ...


def _blocks(line: Line, spend: int, calls: int, amount: int) -> bool:
    if line.budget.action != "block":
        return False
    if line.limit_nano >= 0 and spend + amount > line.limit_nano:
        return True
    return line.max_calls >= 0 and calls + 1 > line.max_calls


class MemoryBudgetState:
    """One replica: a dict; check-and-add runs without an await in between, so it is atomic.

    Lines expire like their Redis keys (a day after their period, 30 days for a trace or
    session), so per-trace budgets do not grow the dict for as long as the gateway runs."""

    SWEEP_EVERY_S = 60.0

    def __init__(self) -> None:
        self._counters: dict[str, list[int]] = {}
        """key -> [spend nano-USD (reservations included), calls, reserved nano-USD]."""
        self._expires: dict[str, float] = {}
        self._next_sweep = time.monotonic() + self.SWEEP_EVERY_S

    def seed(self, key: str, spend_nano: int, calls: int) -> None:
        self._counters[key] = [spend_nano, calls, 0]

    def _check(self, lines: Sequence[Line], amount_nano: int) -> None:
        for line in lines:
            spend, calls, reserved = self._counters.get(line.key, (0, 0, 0))
            if _blocks(line, spend, calls, amount_nano):
                raise BudgetExceededError(line, spend, calls, amount_nano, reserved)

    def _take(self, lines: Sequence[Line], amount_nano: int, held: bool) -> list[tuple[int, int]]:
        result = []
        now = time.time()
        for line in lines:
            counter = self._counters.setdefault(line.key, [0, 0, 0])
            counter[0] += amount_nano
            counter[1] += 1
            if held:
                counter[2] += amount_nano
            if line.ttl_s > 0:
                self._expires[line.key] = now + line.ttl_s
            result.append((counter[0], counter[1]))
        return result

    def _sweep(self) -> None:
        if time.monotonic() < self._next_sweep:
            return
        self._next_sweep = time.monotonic() + self.SWEEP_EVERY_S
        now = time.time()
        for key, expires in list(self._expires.items()):
            counter = self._counters.get(key)
            if expires <= now and (counter is None or counter[2] == 0):
                self._counters.pop(key, None)
                del self._expires[key]

    async def hold(self, lines: Sequence[Line], amount_nano: int) -> Reservation:
        self._sweep()
        self._check(lines, amount_nano)
        return Reservation(list(lines), amount_nano, self._take(lines, amount_nano, held=True))

    async def settle(self, reservation: Reservation, spent_nano: int) -> None:
        if reservation.settled:
            return
        reservation.settled = True
        delta = spent_nano - reservation.amount_nano
        for line in reservation.lines:
            counter = self._counters.setdefault(line.key, [0, 0, 0])
            counter[0] += delta
            counter[2] = max(counter[2] - reservation.amount_nano, 0)

    async def release(self, reservation: Reservation) -> None:
        if reservation.settled:
            return
        await self.settle(reservation, 0)
        for line in reservation.lines:
            self._counters[line.key][1] -= 1

    async def reserve(self, lines: Sequence[Line], amount_nano: int) -> list[tuple[int, int]]:
        self._check(lines, amount_nano)
        return self._take(lines, amount_nano, held=False)

    async def adjust(self, lines: Sequence[Line], delta_nano: int, delta_calls: int = 0) -> None:
        for line in lines:
            counter = self._counters.setdefault(line.key, [0, 0, 0])
            counter[0] += delta_nano
            counter[1] += delta_calls

    async def read(self, lines: Sequence[Line]) -> list[tuple[int, int]]:
        return [tuple(self._counters.get(line.key, (0, 0))[:2]) for line in lines]  # type: ignore[misc]

    async def close(self) -> None:
        return None


# ------------------------------------------------------------------ Redis

# One hash per line: s = spend nano-USD (reservations included), r = the reservations part,
# c = calls. Leases: a sorted set (token -> expiry in ms, Redis server time, so the replicas'
# clocks do not matter) and one hash per reservation (a = amount, k = its line keys as JSON).
#
# Reserve. KEYS: the lines, then the lease set and this reservation's lease hash.
# ARGV: amount, lease ms (0: no lease), lease hash prefix, held (1: count it in r), token,
# then per line: limit (-1 none), max calls (-1 none), blocks (1/0), ttl (0 none).
# First it releases up to 64 expired leases: reservations of replicas that stopped renewing.
_RESERVE = """
local n = #KEYS - 2
local amount = tonumber(ARGV[1])
local lease_ms = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local released, reaped = 0, 0
local expired = redis.call('ZRANGEBYSCORE', KEYS[n + 1], '-inf', now, 'LIMIT', 0, 64)
for _, token in ipairs(expired) do
  local lease = ARGV[3] .. token
  local held = redis.call('HMGET', lease, 'a', 'k')
  if held[1] then
    local a = tonumber(held[1])
    for _, key in ipairs(cjson.decode(held[2])) do
      if redis.call('EXISTS', key) == 1 then
        redis.call('HINCRBY', key, 's', -a)
        redis.call('HINCRBY', key, 'r', -a)
      end
    end
    released = released + a
    reaped = reaped + 1
    redis.call('DEL', lease)
  end
  redis.call('ZREM', KEYS[n + 1], token)
end
for i = 1, n do
  local base = 5 + (i - 1) * 4
  local limit = tonumber(ARGV[base + 1])
  local maxcalls = tonumber(ARGV[base + 2])
  if ARGV[base + 3] == '1' then
    local got = redis.call('HMGET', KEYS[i], 's', 'c', 'r')
    local spend = tonumber(got[1] or '0')
    local calls = tonumber(got[2] or '0')
    if (limit >= 0 and spend + amount > limit) or (maxcalls >= 0 and calls + 1 > maxcalls) then
      return {1, released, reaped, i, spend, calls, tonumber(got[3] or '0')}
    end
  end
end
local out = {0, released, reaped}
local keys = {}
for i = 1, n do
  local base = 5 + (i - 1) * 4
  out[#out + 1] = redis.call('HINCRBY', KEYS[i], 's', amount)
  out[#out + 1] = redis.call('HINCRBY', KEYS[i], 'c', 1)
  if ARGV[4] == '1' then redis.call('HINCRBY', KEYS[i], 'r', amount) end
  local ttl = tonumber(ARGV[base + 4])
  if ttl > 0 then redis.call('EXPIRE', KEYS[i], ttl) end
  keys[i] = KEYS[i]
end
if lease_ms > 0 then
  redis.call('ZADD', KEYS[n + 1], now + lease_ms, ARGV[5])
  redis.call('HSET', KEYS[n + 2], 'a', amount, 'k', cjson.encode(keys))
end
return out
"""
# Settle. KEYS: the lines, the lease set, the lease hash. ARGV: token ('' none), spent,
# reserved amount, calls delta, then each line's ttl. A lease already released by another
# replica (this one stalled past it) no longer counts in the lines: the whole cost is added.
_SETTLE = """
local n = #KEYS - 2
local live = 0
if ARGV[1] ~= '' then
  live = redis.call('ZREM', KEYS[n + 1], ARGV[1])
  redis.call('DEL', KEYS[n + 2])
end
local ds = tonumber(ARGV[2])
local dr = 0
if live == 1 then
  ds = ds - tonumber(ARGV[3])
  dr = -tonumber(ARGV[3])
end
local dc = tonumber(ARGV[4])
for i = 1, n do
  if ds ~= 0 then redis.call('HINCRBY', KEYS[i], 's', ds) end
  if dr ~= 0 then redis.call('HINCRBY', KEYS[i], 'r', dr) end
  if dc ~= 0 then redis.call('HINCRBY', KEYS[i], 'c', dc) end
  local ttl = tonumber(ARGV[4 + i])
  if ttl > 0 and redis.call('TTL', KEYS[i]) == -1 then redis.call('EXPIRE', KEYS[i], ttl) end
end
return live
"""
# Renew. KEYS: the lease set. ARGV: lease ms, then tokens. Returns how many were gone.
_RENEW = """
local t = redis.call('TIME')
local until_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ARGV[1])
local gone = 0
for i = 2, #ARGV do
  if redis.call('ZSCORE', KEYS[1], ARGV[i]) then
    redis.call('ZADD', KEYS[1], until_ms, ARGV[i])
  else
    gone = gone + 1
  end
end
return gone
"""
_ADJUST = """
for i = 1, #KEYS do
  redis.call('HINCRBY', KEYS[i], 's', ARGV[1])
  if ARGV[2] ~= '0' then redis.call('HINCRBY', KEYS[i], 'c', ARGV[2]) end
end
return 1
"""


def masked_url(url: str) -> str:
    """The Redis URL without its credentials, for logs (in the authority or, as redis-py also
    reads it, `?password=`)."""
    from ..redact import redact_text

    return redact_text(url)


@dataclass
class _Settlement:
    """A settlement waiting for Redis to be reachable again."""

    keys: list[str]
    ttls: list[int]
    token: str
    spent_nano: int
    amount_nano: int
    calls: int


class _Outage:
    """Logs an unreachable budget state once, then every 30 s while it lasts, and its end."""

    def __init__(self, where: str, fail_open: bool) -> None:
        self.where = where
        self.fail_open = fail_open
        self.since: float | None = None
        self.last_log = 0.0
        self.requests = 0

    def failed(self, exc: BaseException, request: bool) -> None:
        now = time.monotonic()
        self.requests += request
        what = "admitted unguarded (fail_open = true)" if self.fail_open else "refused with a 503"
        if self.since is None:
            self.since = self.last_log = now
            log.error(
                "budget state unreachable (Redis %s): %s: %s; requests under a budget are %s "
                "until it is back",
                self.where,
                type(exc).__name__,
                str(exc).rstrip("."),
                what,
            )
        elif now - self.last_log >= 30:
            self.last_log = now
            log.error(
                "budget state still unreachable (Redis %s) after %.0f s: %d requests %s so far: %s",
                self.where,
                now - self.since,
                self.requests,
                what,
                exc,
            )

    def recovered(self) -> None:
        if self.since is not None:
            what = "admitted unguarded" if self.fail_open else "refused"
            log.warning(
                "budget state reachable again (Redis %s) after %.1f s; %d requests were %s meanwhile",
                self.where,
                time.monotonic() - self.since,
                self.requests,
                what,
            )
            self.since, self.requests = None, 0


class RedisBudgetState:
    """Several replicas: the check-and-add is one Lua script, atomic on the Redis server.

    Amounts are integer nano-USD, exact in Lua's doubles up to $9M per budget line. Each
    reservation holds a lease of `lease_s` that this replica renews every `lease_s / 3` while
    the request runs; a lease that runs out (the replica died) is released by the next
    reservation of any replica. Settlements that fail because Redis is unreachable are kept
    and written when it is back, so a call that was answered always reaches the counters.
    """

    def __init__(
        self,
        url: str,
        prefix: str = "unitcost:",
        *,
        lease_s: float = 60.0,
        fail_open: bool = False,
        timeout_s: float = 5.0,
    ) -> None:
        import redis.asyncio as redis
        from redis.exceptions import RedisError

        # A bounded pool that waits for a free connection: a burst of requests queues for a
        # few milliseconds instead of failing with "too many connections". The socket timeouts
        # turn a Redis that stopped answering into a prompt error rather than a hung request;
        # the wait for a free connection is bounded the same way (with Redis hung, every pooled
        # connection is held until its own timeout).
        pool = redis.BlockingConnectionPool.from_url(
            url,
            max_connections=64,
            timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            socket_timeout=timeout_s,
        )
        self._redis = redis.Redis(connection_pool=pool)
        self._reserve = self._redis.register_script(_RESERVE)
        self._settle = self._redis.register_script(_SETTLE)
        self._renew = self._redis.register_script(_RENEW)
        self._adjust = self._redis.register_script(_ADJUST)
        self._errors: tuple[type[BaseException], ...] = (RedisError, OSError, asyncio.TimeoutError)
        self._leases = f"{prefix}budget-leases"
        self._lease_prefix = f"{prefix}budget-lease:"
        self._lease_ms = max(int(lease_s * 1000), 1)
        self._fail_open = fail_open
        self._live: dict[str, None] = {}
        """Tokens of this replica's reservations not settled yet (renewed by the heartbeat)."""
        self._pending: dict[str, _Settlement] = {}
        self._heartbeat: asyncio.Task[None] | None = None
        self.outage = _Outage(masked_url(url), fail_open)

    # ---------------------------------------------------------------- the request path

    def _line_args(self, lines: Sequence[Line]) -> list[Any]:
        args: list[Any] = []
        for line in lines:
            args += [line.limit_nano, line.max_calls, 1 if line.budget.action == "block" else 0, line.ttl_s]
        return args

    async def _run_reserve(
        self, lines: Sequence[Line], amount_nano: int, token: str
    ) -> list[tuple[int, int]]:
        lease_ms = self._lease_ms if token else 0
        keys = [line.key for line in lines] + [self._leases, self._lease_prefix + (token or "-")]
        args: list[Any] = [amount_nano, lease_ms, self._lease_prefix, 1 if token else 0, token or "-"]
        out = await self._reserve(keys=keys, args=args + self._line_args(lines))
        released, reaped = int(out[1]), int(out[2])
        if reaped:
            log.warning(
                "budgets: released $%s held by %d requests of a replica that stopped without "
                "settling them (their %.0f s leases ran out); what those calls cost is not known here",
                usd_text(nano_to_usd(released)),
                reaped,
                self._lease_ms / 1000,
            )
        if int(out[0]) == 1:
            line = lines[int(out[3]) - 1]
            raise BudgetExceededError(line, int(out[4]), int(out[5]), amount_nano, int(out[6]))
        return [(int(out[3 + 2 * i]), int(out[4 + 2 * i])) for i in range(len(lines))]

    async def hold(self, lines: Sequence[Line], amount_nano: int) -> Reservation:
        if not lines:
            return Reservation([], amount_nano, [])
        token = new_event_id()
        try:
            spends = await self._run_reserve(lines, amount_nano, token)
        except self._errors as exc:
            self.outage.failed(exc, request=True)
            self._start_heartbeat()  # it notices when Redis is back and logs it
            if not self._fail_open:
                raise BudgetUnavailableError(
                    "the budget state (Redis) cannot be reached and this gateway refuses requests "
                    "it cannot count against their budgets; try again"
                ) from None
            return Reservation(list(lines), amount_nano, [], guarded=False)
        self.outage.recovered()
        self._live[token] = None
        self._start_heartbeat()
        return Reservation(list(lines), amount_nano, spends, token=token)

    async def settle(self, reservation: Reservation, spent_nano: int) -> None:
        if reservation.settled or not reservation.lines:
            return
        reservation.settled = True
        if reservation.guarded:
            job = self._job(reservation, spent_nano, reservation.amount_nano, 0)
        else:
            # Admitted while Redis was away: nothing was reserved, so the call and its cost are added.
            job = self._job(reservation, spent_nano, 0, 1)
        await self._write(job)

    async def release(self, reservation: Reservation) -> None:
        if reservation.settled or not reservation.lines:
            return
        reservation.settled = True
        if reservation.guarded:
            await self._write(self._job(reservation, 0, reservation.amount_nano, -1))

    def _job(self, reservation: Reservation, spent: int, amount: int, calls: int) -> _Settlement:
        return _Settlement(
            [line.key for line in reservation.lines],
            [line.ttl_s for line in reservation.lines],
            reservation.token or "",
            spent,
            amount,
            calls,
        )

    async def _write(self, job: _Settlement) -> None:
        try:
            await self._run_settle(job)
        except self._errors as exc:
            self.outage.failed(exc, request=False)
            self._keep(job)
            self._start_heartbeat()
            return
        self._live.pop(job.token, None)

    async def _run_settle(self, job: _Settlement) -> None:
        keys = [*job.keys, self._leases, self._lease_prefix + (job.token or "-")]
        await self._settle(keys=keys, args=[job.token, job.spent_nano, job.amount_nano, job.calls, *job.ttls])

    def _keep(self, job: _Settlement) -> None:
        """Queue a settlement; those without a lease (fail-open calls) are merged per line set."""
        if job.token:
            self._pending[job.token] = job
            return
        merged = "\0".join(job.keys)
        known = self._pending.get(merged)
        if known is None:
            self._pending[merged] = job
        else:
            known.spent_nano += job.spent_nano
            known.calls += job.calls

    # ---------------------------------------------------------------- leases

    def _start_heartbeat(self) -> None:
        if self._heartbeat is None or self._heartbeat.done():
            self._heartbeat = asyncio.get_running_loop().create_task(self._beat())

    async def _beat(self) -> None:
        while self._live or self._pending or self.outage.since is not None:
            await asyncio.sleep(self._lease_ms / 3000)
            try:
                await self._flush()
                await self._renew_live()
                await self._redis.ping()
            except self._errors as exc:
                self.outage.failed(exc, request=False)
            else:
                self.outage.recovered()

    async def _flush(self) -> None:
        for name, job in list(self._pending.items()):
            await self._run_settle(job)
            del self._pending[name]
            self._live.pop(job.token, None)

    async def _renew_live(self) -> None:
        tokens = list(self._live)
        gone = 0
        for i in range(0, len(tokens), 500):
            gone += int(await self._renew(keys=[self._leases], args=[self._lease_ms, *tokens[i : i + 500]]))
        if gone:
            log.warning(
                "budgets: %d reservations of requests still running here were released by another "
                "replica (this one did not renew their leases within %.0f s); their cost is added "
                "in full when they end",
                gone,
                self._lease_ms / 1000,
            )

    # ---------------------------------------------------------------- plain counters

    async def reserve(self, lines: Sequence[Line], amount_nano: int) -> list[tuple[int, int]]:
        if not lines:
            return []
        return await self._run_reserve(lines, amount_nano, "")

    async def adjust(self, lines: Sequence[Line], delta_nano: int, delta_calls: int = 0) -> None:
        if lines and (delta_nano or delta_calls):
            await self._adjust(keys=[line.key for line in lines], args=[delta_nano, delta_calls])

    async def read(self, lines: Sequence[Line]) -> list[tuple[int, int]]:
        result = []
        for line in lines:
            values = await self._redis.hmget(line.key, ["s", "c"])
            result.append((int(values[0] or 0), int(values[1] or 0)))
        return result

    async def close(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
        if self._pending:
            try:
                await self._flush()
            except self._errors as exc:
                log.error(
                    "budgets: %d settlements could not be written to Redis before stopping (%s); "
                    "the reservations they replace are released by the other replicas when their "
                    "leases run out, and the calls' costs are in the ledger only",
                    len(self._pending),
                    exc,
                )
        await self._redis.aclose()


class AlertLog:
    """Logs once per line when spend first crosses its alert threshold (default 85 %).

    A line's alert is remembered while the line lives and forgotten after: a calendar line
    when its period ends (the next period is another line, which alerts afresh), a trace or
    session line `ttl_s` after its last alert check (like its counters), so a gateway that runs
    for months does not keep every alert it ever sent. Lines that never end (a "total" budget
    of a team, a key, ...) are few and kept, so they never alert twice."""

    def __init__(self) -> None:
        self._sent: dict[str, datetime | None] = {}
        """line key -> when it may be forgotten (None: never)."""
        self._expiries: list[tuple[datetime, str]] = []
        """A heap of (when, line key) for the entries of _sent that may be forgotten."""

    def __len__(self) -> int:
        return len(self._sent)

    def check(self, reservation: Reservation, now: datetime | None = None) -> list[str]:
        if not reservation.guarded:
            return []
        now = now or datetime.now(UTC)
        self._forget_ended(now)
        fired = []
        for line, (spend, calls) in zip(reservation.lines, reservation.spends, strict=True):
            budget = line.budget
            money = line.limit_nano > 0 and spend >= line.limit_nano * budget.alert_at
            count = line.max_calls > 0 and calls >= math.ceil(line.max_calls * budget.alert_at)
            if not (money or count):
                continue
            if line.key in self._sent:
                self._extend(line, now)
                continue
            self._remember(line, now)
            fired.append(budget.name)
            log.warning("budget alert: %s", line.describe(spend, calls))
        return fired

    @staticmethod
    def _expiry(line: Line, now: datetime) -> datetime | None:
        if line.reset_at is not None:
            return line.reset_at
        return now + timedelta(seconds=line.ttl_s) if line.ttl_s > 0 else None

    def _remember(self, line: Line, now: datetime) -> None:
        expiry = self._expiry(line, now)
        self._sent[line.key] = expiry
        if expiry is not None:
            heapq.heappush(self._expiries, (expiry, line.key))

    def _extend(self, line: Line, now: datetime) -> None:
        """A trace or session still running keeps its alert (its heap entry is moved on when
        it comes up, see _forget_ended)."""
        if line.reset_at is None and line.ttl_s > 0:
            self._sent[line.key] = now + timedelta(seconds=line.ttl_s)

    def _forget_ended(self, now: datetime) -> None:
        while self._expiries and self._expiries[0][0] <= now:
            _, key = heapq.heappop(self._expiries)
            expiry = self._sent.get(key)
            if expiry is not None and expiry > now:
                heapq.heappush(self._expiries, (expiry, key))  # extended since: keep it
            else:
                self._sent.pop(key, None)


@dataclass
class UnpricedNotice:
    """Logs once per budget and model that a model without a price passes a budget unpriced = "allow"."""

    seen: set[tuple[str, str]] = field(default_factory=set)

    def note(self, lines: Sequence[Line], models: Sequence[str]) -> None:
        for line in lines:
            if line.limit_nano < 0:
                continue
            for model in models:
                if (line.budget.name, model) not in self.seen:
                    self.seen.add((line.budget.name, model))
                    log.warning(
                        "budget %r: model %s has no price; its calls are counted by max_calls but "
                        "not against limit_usd (unpriced = %s)",
                        line.budget.name,
                        model,
                        line.budget.unpriced,
                    )
