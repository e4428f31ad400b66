"""The watch tables of the ledger: hourly rollups, detector watermarks and the alert history.

Detectors never read the events table for history: each watch cycle rolls the events
ingested since the last cycle into small hourly aggregates, and detectors read those.
Money sums use 38 digits: an hour of a large organisation's spend does not fit the
18 digits of one event's cost.
"""

from __future__ import annotations

import pyarrow as pa

ROLLUP_MONEY = pa.decimal128(38, 12)

ROLLUP_DIMS: tuple[str, ...] = ("team", "app", "feature", "provider", "model")
"""The attribution kept in hourly rollups; budgets on other dimensions read the events."""

HOURLY_SCHEMA = pa.schema(
    [
        pa.field("hour", pa.timestamp("us", tz="UTC"), nullable=False),
        *(pa.field(d, pa.string()) for d in ROLLUP_DIMS),
        pa.field("calls", pa.int64()),
        pa.field("priced_calls", pa.int64()),
        pa.field("unpriced_calls", pa.int64()),
        pa.field("tokens", pa.int64()),
        pa.field("input_tokens", pa.int64()),
        pa.field("output_tokens", pa.int64()),
        pa.field("cost", ROLLUP_MONEY),
        pa.field("cost_sq", pa.float64()),  # sum of squared call costs: the spread of cost per request
        pa.field("waste_calls", pa.int64()),
        pa.field("waste_cost", ROLLUP_MONEY),
        pa.field("billed_calls", pa.int64()),
        pa.field("billed_cost", ROLLUP_MONEY),
        pa.field("billed_computed_cost", ROLLUP_MONEY),
    ]
)

TRACE_SCHEMA = pa.schema(
    [
        pa.field("hour", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("key_kind", pa.string(), nullable=False),  # trace | session
        pa.field("key", pa.string(), nullable=False),
        pa.field("feature", pa.string()),
        pa.field("team", pa.string()),
        pa.field("calls", pa.int64()),
        pa.field("cost", ROLLUP_MONEY),
        pa.field("first_ts", pa.timestamp("us", tz="UTC")),
        pa.field("last_ts", pa.timestamp("us", tz="UTC")),
    ]
)

STATE_SCHEMA = pa.schema(
    [
        pa.field("name", pa.string(), nullable=False),
        pa.field("watermark", pa.timestamp("us", tz="UTC")),
        pa.field("state", pa.string()),  # JSON, detector-specific
        pa.field("updated_at", pa.timestamp("us", tz="UTC")),
    ]
)

ALERT_SCHEMA = pa.schema(
    [
        pa.field("alert_id", pa.string(), nullable=False),
        pa.field("key", pa.string(), nullable=False),  # detector + scope: one open incident per key
        pa.field("detector", pa.string(), nullable=False),
        pa.field("scope", pa.string()),
        pa.field("status", pa.string(), nullable=False),  # open | acknowledged | resolved
        pa.field("severity", pa.string()),
        pa.field("title", pa.string()),
        pa.field("message", pa.string()),
        pa.field("details", pa.string()),  # JSON: observed, expected, change, contributors
        pa.field("since", pa.timestamp("us", tz="UTC")),
        pa.field("first_seen", pa.timestamp("us", tz="UTC")),
        pa.field("last_seen", pa.timestamp("us", tz="UTC")),
        pa.field("last_notified", pa.timestamp("us", tz="UTC")),
        pa.field("updates", pa.int64()),
        pa.field("acked_by", pa.string()),
        pa.field("acked_at", pa.timestamp("us", tz="UTC")),
        pa.field("resolved_at", pa.timestamp("us", tz="UTC")),
    ]
)

ALERT_LOG_SCHEMA = pa.schema(
    [
        pa.field("alert_id", pa.string(), nullable=False),
        pa.field("at", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field(
            "kind", pa.string(), nullable=False
        ),  # opened | updated | resolved | acknowledged | delivered | failed
        pa.field("sink", pa.string()),
        pa.field("message", pa.string()),
    ]
)

WATCH_TABLES: dict[str, pa.Schema] = {
    "watch_hourly": HOURLY_SCHEMA,
    "watch_traces": TRACE_SCHEMA,
    "watch_state": STATE_SCHEMA,
    "alerts": ALERT_SCHEMA,
    "alert_log": ALERT_LOG_SCHEMA,
}
