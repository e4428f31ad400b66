"""Budgets that hold under concurrency: reserve the worst case before the call, settle after.

Every budget line (one budget, one scope value, one calendar period) keeps two counters:
spend in integer nano-USD (reservations included) and calls. Before forwarding, the gateway
reserves the request's worst-case cost on every line that applies, in one atomic step that
first checks every blocking line: either all lines take the reservation or none does. After
the call it settles each line by (real cost - reservation). So concurrent requests can push
spend past a limit only by what a reservation underestimated.

State lives in this process (`MemoryBudgetState`: the asyncio loop makes check-and-add
atomic) or in Redis (`RedisBudgetState`: Lua scripts run atomically on the server) when
several gateway replicas share budgets.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Protocol

from ..events import ATTRIBUTION_FIELDS
from .config import Budget

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

    def describe(self, spend_nano: int, calls: int) -> dict[str, Any]:
        return {
            "name": self.budget.name,
            "scope": self.budget.scope,
            "value": self.value,
            "period": self.budget.period,
            "limit_usd": None if self.budget.limit_usd is None else str(self.budget.limit_usd),
            "spend_usd": usd_text(nano_to_usd(spend_nano)),
            "max_calls": self.budget.max_calls,
            "calls": calls,
            "reset_at": self.reset_at.isoformat().replace("+00:00", "Z") if self.reset_at else None,
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


@dataclass
class Reservation:
    lines: list[Line]
    amount_nano: int
    spends: list[tuple[int, int]]
    """(spend nano-USD, calls) of each line just after the reservation."""

    def over(self, action: str) -> list[Line]:
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
        best: tuple[Line, Decimal] | None = None
        for line, (spend, _) in zip(self.lines, self.spends, strict=True):
            if line.limit_nano < 0:
                continue
            left = nano_to_usd(max(line.limit_nano - spend, 0))
            if best is None or left < best[1]:
                best = (line, left)
        return best


class BudgetExceededError(Exception):
    def __init__(self, line: Line, spend_nano: int, calls: int, amount_nano: int) -> None:
        super().__init__(line.budget.name)
        self.line = line
        self.spend_nano = spend_nano
        self.calls = calls
        self.amount_nano = amount_nano

    def message(self) -> str:
        budget = self.line.budget
        if budget.max_calls is not None and self.calls + 1 > budget.max_calls:
            what = f"{self.calls} of {budget.max_calls} calls used"
        else:
            what = f"spend ${usd_text(nano_to_usd(self.spend_nano))} + this request's worst case "
            what += f"${usd_text(nano_to_usd(self.amount_nano))}"
            what += f" would pass the limit ${budget.limit_usd}"
        reset = f"; resets {self.line.describe(0, 0)['reset_at']}" if self.line.reset_at else ""
        return f"budget {budget.name!r} ({budget.scope}={self.line.value}, {budget.period}): {what}{reset}"


class BudgetState(Protocol):
    async def reserve(self, lines: Sequence[Line], amount_nano: int) -> list[tuple[int, int]]:
        """Atomically take `amount_nano` and one call on every line, or raise BudgetExceededError."""
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
    """One replica: a dict; check-and-add runs without an await in between, so it is atomic."""

    def __init__(self) -> None:
        self._counters: dict[str, list[int]] = {}

    def seed(self, key: str, spend_nano: int, calls: int) -> None:
        self._counters[key] = [spend_nano, calls]

    async def reserve(self, lines: Sequence[Line], amount_nano: int) -> list[tuple[int, int]]:
        for line in lines:
            spend, calls = self._counters.get(line.key, (0, 0))
            if _blocks(line, spend, calls, amount_nano):
                raise BudgetExceededError(line, spend, calls, amount_nano)
        result = []
        for line in lines:
            counter = self._counters.setdefault(line.key, [0, 0])
            counter[0] += amount_nano
            counter[1] += 1
            result.append((counter[0], counter[1]))
        return result

    async def adjust(self, lines: Sequence[Line], delta_nano: int, delta_calls: int = 0) -> None:
        for line in lines:
            counter = self._counters.setdefault(line.key, [0, 0])
            counter[0] += delta_nano
            counter[1] += delta_calls

    async def read(self, lines: Sequence[Line]) -> list[tuple[int, int]]:
        return [tuple(self._counters.get(line.key, (0, 0))) for line in lines]  # type: ignore[misc]

    async def close(self) -> None:
        return None


# KEYS: one hash per line (fields s = spend nano-USD, c = calls).
# ARGV: amount, then per line: limit (-1 none), max calls (-1 none), blocks (1/0), ttl (0 none).
_RESERVE = """
local amount = tonumber(ARGV[1])
for i = 1, #KEYS do
  local base = 1 + (i - 1) * 4
  local limit = tonumber(ARGV[base + 1])
  local maxcalls = tonumber(ARGV[base + 2])
  if ARGV[base + 3] == '1' then
    local spend = tonumber(redis.call('HGET', KEYS[i], 's') or '0')
    local calls = tonumber(redis.call('HGET', KEYS[i], 'c') or '0')
    if (limit >= 0 and spend + amount > limit) or (maxcalls >= 0 and calls + 1 > maxcalls) then
      return {1, i, spend, calls}
    end
  end
end
local out = {0}
for i = 1, #KEYS do
  local base = 1 + (i - 1) * 4
  out[#out + 1] = redis.call('HINCRBY', KEYS[i], 's', amount)
  out[#out + 1] = redis.call('HINCRBY', KEYS[i], 'c', 1)
  local ttl = tonumber(ARGV[base + 4])
  if ttl > 0 then redis.call('EXPIRE', KEYS[i], ttl) end
end
return out
"""
_ADJUST = """
for i = 1, #KEYS do
  redis.call('HINCRBY', KEYS[i], 's', ARGV[1])
  if ARGV[2] ~= '0' then redis.call('HINCRBY', KEYS[i], 'c', ARGV[2]) end
end
return 1
"""


class RedisBudgetState:
    """Several replicas: the check-and-add is one Lua script, atomic on the Redis server.

    Amounts are integer nano-USD, exact in Lua's doubles up to $9M per budget line.
    """

    def __init__(self, url: str) -> None:
        import redis.asyncio as redis

        # A bounded pool that waits for a free connection: a burst of requests queues for a
        # few milliseconds instead of failing with "too many connections".
        pool = redis.BlockingConnectionPool.from_url(url, max_connections=64, timeout=10)
        self._redis = redis.Redis(connection_pool=pool)
        self._reserve = self._redis.register_script(_RESERVE)
        self._adjust = self._redis.register_script(_ADJUST)

    async def reserve(self, lines: Sequence[Line], amount_nano: int) -> list[tuple[int, int]]:
        if not lines:
            return []
        args: list[Any] = [amount_nano]
        for line in lines:
            args += [line.limit_nano, line.max_calls, 1 if line.budget.action == "block" else 0, line.ttl_s]
        out = await self._reserve(keys=[line.key for line in lines], args=args)
        if int(out[0]) == 1:
            raise BudgetExceededError(lines[int(out[1]) - 1], int(out[2]), int(out[3]), amount_nano)
        return [(int(out[1 + 2 * i]), int(out[2 + 2 * i])) for i in range(len(lines))]

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
        await self._redis.aclose()


class AlertLog:
    """Logs once per line when spend first crosses its alert threshold (default 85 %)."""

    def __init__(self) -> None:
        self._sent: set[str] = set()

    def check(self, reservation: Reservation) -> list[str]:
        fired = []
        for line, (spend, calls) in zip(reservation.lines, reservation.spends, strict=True):
            budget = line.budget
            money = line.limit_nano > 0 and spend >= line.limit_nano * budget.alert_at
            count = line.max_calls > 0 and calls >= math.ceil(line.max_calls * budget.alert_at)
            if (money or count) and line.key not in self._sent:
                self._sent.add(line.key)
                fired.append(budget.name)
                log.warning("budget alert: %s", line.describe(spend, calls))
        return fired
