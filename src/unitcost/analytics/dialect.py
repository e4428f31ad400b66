"""The few SQL spellings that differ between DuckDB and ClickHouse.

Queries are written once in `unitcost.analytics` and rendered through a dialect, so the
embedded ledger and the ClickHouse ledger answer the same questions the same way.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Dialect:
    name: str

    def literal(self, value: str) -> str:
        escaped = value.replace("'", "''")
        if self.name == "clickhouse":
            escaped = escaped.replace("\\", "\\\\")
        return f"'{escaped}'"

    def ts_literal(self, iso: str) -> str:
        if self.name == "clickhouse":
            return f"toDateTime64({self.literal(iso.replace('+00:00', ''))}, 6, 'UTC')"
        return f"TIMESTAMPTZ {self.literal(iso)}"

    def quantile(self, expr: str, q: float) -> str:
        # Both interpolate linearly at rank (n - 1) * q (R7, Excel PERCENTILE.INC), but the
        # engines round the last bit differently; to the nanosecond the numbers are equal.
        if self.name == "clickhouse":
            return f"round(quantileExactInclusive({q})({expr}), 6)"
        return f"round(quantile_cont({expr}, {q}), 6)"

    def trunc(self, period: str, expr: str) -> str:
        if self.name == "clickhouse":
            fn = {
                "hour": "toStartOfHour",
                "day": "toStartOfDay",
                "week": "toMonday",
                "month": "toStartOfMonth",
            }[period]
            # toStartOfDay/Hour return DateTime and toMonday/toStartOfMonth a Date: bring
            # every period back to the column's type so both engines return timestamps.
            return f"toDateTime64({fn}({expr}), 6, 'UTC')"
        # Truncating a TIMESTAMPTZ goes through the ICU calendar, ten times slower than integer
        # arithmetic on the epoch; time is UTC here, so hours, days and Monday-weeks are plain
        # multiples of seconds (1970-01-01 was a Thursday, three days after a Monday).
        if period in ("hour", "day"):
            step = 3600 if period == "hour" else 86400
            return f"to_timestamp((epoch_us({expr}) // {step * 1_000_000}) * {step})"
        if period == "week":
            days = f"(epoch_us({expr}) // 86400000000)"
            return f"to_timestamp(({days} - ({days} + 3) % 7) * 86400)"
        return f"date_trunc('{period}', {expr})"

    def local_date(self, expr: str, zone: str) -> str:
        """The calendar date of the instant `expr` on the clocks of time zone `zone` (IANA name)."""
        if self.name == "clickhouse":
            return f"toDate(toTimeZone({expr}, {self.literal(zone)}))"
        return f"CAST(timezone({self.literal(zone)}, {expr}) AS DATE)"

    def local_hour(self, expr: str, zone: str) -> str:
        """The clock hour (0-23) of the instant `expr` in time zone `zone`."""
        if self.name == "clickhouse":
            return f"toHour(toTimeZone({expr}, {self.literal(zone)}))"
        return f"hour(timezone({self.literal(zone)}, {expr}))"

    def count_if(self, condition: str) -> str:
        """How many rows of the group satisfy `condition` (0 for none, on both engines)."""
        return f"sum(CASE WHEN {condition} THEN 1 ELSE 0 END)"

    def tag(self, key: str) -> str:
        if self.name == "clickhouse":
            return f"nullIf(tags[{self.literal(key)}], '')"
        return f"tags[{self.literal(key)}]"

    def starts_with(self, expr: str, prefix: str) -> str:
        """`expr` begins with `prefix` (both SQL expressions, e.g. a column and `?`); no LIKE
        wildcards, so a prefix holding `%` or `_` matches only itself."""
        if self.name == "clickhouse":
            return f"startsWith({expr}, {prefix})"
        return f"starts_with({expr}, {prefix})"

    def concat(self, *parts: str) -> str:
        return "concat(" + ", ".join(parts) + ")"

    def null_if_empty(self, aggregate: str) -> str:
        """SQL's sum/min/max of no rows is NULL; ClickHouse's is 0 (or 1970) unless told -OrNull."""
        if self.name == "clickhouse":
            cast = "CAST(" if aggregate.startswith("CAST(") else ""
            inner = aggregate[len(cast) :]
            for name in ("sum(", "min(", "max("):
                if inner.startswith(name):
                    return f"{cast}{name[:-1]}OrNull({inner[len(name) :]}"
        return aggregate


DUCKDB = Dialect("duckdb")
CLICKHOUSE = Dialect("clickhouse")


def dialect_for(name: str) -> Dialect:
    return CLICKHOUSE if name == "clickhouse" else DUCKDB
