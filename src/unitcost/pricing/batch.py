"""Batch pricing: millions of events priced with array operations, no Python per event.

Python runs once per distinct (provider, model, tier) and once per price segment; every
per-event step is a NumPy array operation: find the segment with a sorted search, apply
time-of-day windows and prompt-length tiers with masks, and multiply integer quantities
by integer pico-USD rates. The result is identical, to the pico-dollar, to pricing each
event with `PriceBook.price` (a property test holds the two together).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .. import arrow_values
from ..events import USAGE_FIELDS, USAGE_UNKNOWN_TAG
from ..money import MAX_EVENT_PICO, TOO_BIG_REASON, pico_array_to_arrow
from .book import PriceBook, cached_pair_indexes
from .genai_layer import ModelRef
from .layers import TIERS
from .model import Option, PriceError, RatePlan, missing_reason
from .quantities import BREAKDOWN_COLUMNS, BREAKDOWN_OF_QUANTITY, N_QUANTITIES, QUANTITIES, split_usage

_SPAN = np.int64(1) << np.int64(36)  # seconds per timeline slot in the composite search key (~2177 years)
_NO_THRESHOLD = np.iinfo(np.int64).max
_INT64_SAFE = 2**62  # below this bound every sum of products fits int64 with room to spare


@dataclass
class PricedColumns:
    """Cost columns for a batch, aligned with its rows."""

    columns: dict[str, pa.Array]
    priced: int
    unpriced: int


def price_table(book: PriceBook, table: pa.Table) -> PricedColumns:
    """Price every row of an events table (EVENT_SCHEMA columns; validated usage)."""
    n = table.num_rows
    if n == 0:
        return PricedColumns(_empty_columns(), 0, 0)

    key_index, keys = _distinct_keys(table)
    resolved = _Resolved(book, keys)

    ts_sec = _seconds(table.column("ts"))
    usage = {name: _int_column(table.column(name)) for name in USAGE_FIELDS}
    quantities = split_usage(usage)
    input_tokens = usage["input_tokens"]

    option = resolved.options_for(key_index, ts_sec)  # -1 where the key has no timeline
    reason_code = np.where(option >= 0, -1, resolved.key_reason[key_index])

    # Prompt-length tier: count the option's thresholds the prompt exceeds.
    safe_opt = np.maximum(option, 0)
    no_price = (option >= 0) & (resolved.row_base[safe_opt] < 0)
    has_rates = (option >= 0) & ~no_price
    row = resolved.row_base[safe_opt]
    for level in range(resolved.thresholds.shape[1]):
        level_threshold = resolved.thresholds[:, level]
        if (level_threshold != _NO_THRESHOLD).any():
            row = row + (input_tokens > level_threshold[safe_opt])

    # An option whose price is missing, or has no rate for a quantity the event used, is unpriced.
    reason_code = np.where(no_price, resolved.option_reason[safe_opt], reason_code)
    used = np.zeros(n, dtype=np.int64)
    for q_index in _active(quantities):
        used |= (quantities[q_index] > 0).astype(np.int64) << q_index
    missing = resolved.missing_bits[safe_opt] & used
    has_missing = has_rates & (missing != 0)
    if has_missing.any():
        reason_code = np.where(
            has_missing, resolved.missing_reason(safe_opt, missing, has_missing), reason_code
        )

    reason_code = _usage_unknown(table, resolved, reason_code)
    priced = reason_code < 0
    parts, total, savings, absurd = _multiply(quantities, resolved, np.where(has_rates, row, 0))
    too_big = priced & (absurd | (total > MAX_EVENT_PICO))
    if too_big.any():
        reason_code = np.where(too_big, resolved.add_reason(TOO_BIG_REASON), reason_code)
        priced = reason_code < 0

    # A response served from unitcost's own cache costs nothing; what it would have cost is kept.
    cache_hit = (
        _bool_column(table.column("cache_hit")) if "cache_hit" in table.column_names else np.zeros(n, bool)
    )
    avoided = np.zeros(n, dtype=np.int64)
    if cache_hit.any():
        avoided = np.where(cache_hit, total, 0)
        parts[:, cache_hit] = 0
        total[cache_hit] = 0
        savings[cache_hit] = 0

    unpriced = ~priced
    if unpriced.any():
        for values in (total, parts, savings, avoided):
            values[..., unpriced] = 0
    columns: dict[str, pa.Array] = {"cost": pico_array_to_arrow(total, priced)}
    for b_index, name in enumerate(BREAKDOWN_COLUMNS):
        columns[name] = pico_array_to_arrow(parts[b_index], priced)
    columns["cache_savings"] = pico_array_to_arrow(savings, priced)
    columns["avoided_cost"] = pico_array_to_arrow(avoided, priced)
    columns["price_ref"] = _take_strings(resolved.option_refs, np.where(priced, option, -1))
    columns["unpriced_reason"] = _take_strings(resolved.reasons, np.where(priced, -1, reason_code))
    columns["priced_provider"] = _take_strings(resolved.key_provider, key_index)
    columns["priced_model"] = _take_strings(resolved.key_model, key_index)
    n_priced = int(np.count_nonzero(priced))
    return PricedColumns(columns, n_priced, n - n_priced)


def _usage_unknown(table: pa.Table, resolved: _Resolved, reason_code: np.ndarray) -> np.ndarray:
    """Calls whose source said the provider reported no usage: unpriced with that reason. Their
    token counts are zero because nothing was reported, not because nothing was used."""
    if "tags" not in table.column_names:
        return reason_code
    said = pc.map_lookup(table.column("tags"), arrow_values.string_scalar(USAGE_UNKNOWN_TAG), "first")
    if not pc.any(pc.is_valid(said)).as_py():
        return reason_code
    encoded = pc.dictionary_encode(said).combine_chunks()
    codes = np.asarray(
        [resolved.add_reason(f"usage unknown: {why}") for why in encoded.dictionary.to_pylist()]
    )
    known = arrow_values.to_numpy(pc.is_null(encoded.indices))
    indices = arrow_values.to_numpy(pc.fill_null(encoded.indices, arrow_values.zero(encoded.indices.type)))
    return np.where(known, reason_code, codes[np.where(known, 0, indices).astype(np.int64)])


class _Resolved:
    """Everything Python decides once per distinct key and price, laid out as arrays."""

    def __init__(self, book: PriceBook, keys: list[tuple[str | None, str | None, str | None, str | None]]):
        self.book = book
        self.reasons: list[str] = []
        self._reason_ids: dict[str, int] = {}
        self.key_provider: list[str | None] = []
        self.key_model: list[str | None] = []
        key_timeline: list[int] = []
        key_reason: list[int] = []
        timelines: list[tuple[ModelRef, str]] = []
        timeline_ids: dict[tuple[ModelRef, str], int] = {}
        for provider, model, served, tier in keys:
            resolution = book.resolve(provider, served) if served else None
            if resolution is None or resolution.ref is None:
                resolution = book.resolve(provider, model or "")
            tier_name = tier or "standard"
            if resolution.ref is None:
                self.key_provider.append(provider)
                self.key_model.append(served or model)
                key_timeline.append(-1)
                key_reason.append(self.add_reason(resolution.reason or "unknown model"))
                continue
            self.key_provider.append(resolution.ref.provider)
            self.key_model.append(resolution.ref.model)
            if tier_name not in TIERS:
                key_timeline.append(-1)
                key_reason.append(self.add_reason(f"unknown service tier {tier_name!r}"))
                continue
            slot = (resolution.ref, tier_name)
            if slot not in timeline_ids:
                timeline_ids[slot] = len(timelines)
                timelines.append(slot)
            key_timeline.append(timeline_ids[slot])
            key_reason.append(-1)
        self.key_timeline = np.asarray(key_timeline, dtype=np.int64)
        self.key_reason = np.asarray(key_reason, dtype=np.int64)
        self._lay_out(timelines)

    def add_reason(self, reason: str) -> int:
        if reason not in self._reason_ids:
            self._reason_ids[reason] = len(self.reasons)
            self.reasons.append(reason)
        return self._reason_ids[reason]

    def _lay_out(self, timelines: list[tuple[ModelRef, str]]) -> None:
        seg_keys: list[int] = []
        seg_default: list[int] = []
        self.windowed: dict[int, list[tuple[int, int, int]]] = {}  # segment -> [(start, end, option)]
        options: list[Option] = []
        for t_index, (ref, tier) in enumerate(timelines):
            timeline = self.book.timeline(ref, tier)
            for segment in timeline.segments:
                start = 0 if segment.start is None else max(int(segment.start.timestamp()), 0)
                seg_index = len(seg_keys)
                seg_keys.append(t_index * int(_SPAN) + start)
                for option in segment.options:
                    options.append(option)
                    if option.window is not None:
                        self.windowed.setdefault(seg_index, []).append(
                            (option.window.start, option.window.end, len(options) - 1)
                        )
                seg_default.append(len(options) - 1)
        self.seg_keys = np.asarray(seg_keys, dtype=np.int64)
        self.seg_default = np.asarray(seg_default, dtype=np.int64)

        plans: list[RatePlan | None] = []
        self.option_refs: list[str | None] = []
        option_reason: list[int] = []
        for option in options:
            plan = None
            reason = -1
            if option.price is None:
                reason = self.add_reason(option.reason or "no price")
            else:
                try:
                    plan = self.book.plan(option.price)
                except PriceError as exc:
                    reason = self.add_reason(str(exc))
            plans.append(plan)
            self.option_refs.append(option.price.ref if option.price and plan else None)
            option_reason.append(reason)
        self.options = options
        self.plans = plans
        self.option_reason = np.asarray(option_reason or [-1], dtype=np.int64)

        max_tiers = max((len(p.thresholds) for p in plans if p), default=0)
        rate_rows: list[tuple[int, ...]] = []
        row_base = []
        thresholds = np.full((max(len(plans), 1), max(max_tiers, 1)), _NO_THRESHOLD, dtype=np.int64)
        missing_bits = np.zeros(max(len(plans), 1), dtype=np.int64)
        for o_index, plan in enumerate(plans):
            if plan is None:
                row_base.append(-1)
                continue
            row_base.append(len(rate_rows))
            rate_rows.extend(plan.rows)
            thresholds[o_index, : len(plan.thresholds)] = plan.thresholds
            for name in plan.missing:
                missing_bits[o_index] |= 1 << _quantity_position(name)
        self.row_base = np.asarray(row_base or [-1], dtype=np.int64)
        self.thresholds = thresholds
        self.missing_bits = missing_bits
        # Row 0 is a zero-rate row that unpriced events point at harmlessly.
        self.rates = np.asarray([(0,) * N_QUANTITIES, *rate_rows], dtype=np.int64)
        self.row_base = np.where(self.row_base >= 0, self.row_base + 1, -1)

    def options_for(self, key_index: np.ndarray, ts_sec: np.ndarray) -> np.ndarray:
        timeline = self.key_timeline[key_index]
        has = timeline >= 0
        option = np.full(len(key_index), -1, dtype=np.int64)
        if not has.any() or len(self.seg_keys) == 0:
            return option
        search = timeline[has] * _SPAN + np.maximum(ts_sec[has], 0)
        seg = np.searchsorted(self.seg_keys, search, side="right") - 1
        chosen = self.seg_default[seg]
        if self.windowed:
            second_of_day = ts_sec[has] % 86400
            for seg_index, windows in self.windowed.items():
                in_seg = seg == seg_index
                if not in_seg.any():
                    continue
                sod = second_of_day[in_seg]
                picked = chosen[in_seg]
                decided = np.zeros(len(sod), dtype=bool)
                for start, end, opt in windows:
                    inside = (sod >= start) | (sod < end) if end < start else (sod >= start) & (sod < end)
                    take = inside & ~decided
                    picked = np.where(take, opt, picked)
                    decided |= take
                chosen[in_seg] = picked
        option[has] = chosen
        return option

    def missing_reason(self, option: np.ndarray, missing: np.ndarray, mask: np.ndarray) -> np.ndarray:
        out = np.full(len(option), -1, dtype=np.int64)
        pairs = np.unique(np.stack([option[mask], missing[mask]], axis=1), axis=0)
        for opt, bits in pairs:
            names = [q.name for i, q in enumerate(QUANTITIES) if int(bits) & (1 << i)]
            price = self.options[int(opt)].price
            reason = (
                missing_reason(price, names)
                if price is not None
                else f"? has no price for {', '.join(names)}"
            )
            code = self.add_reason(reason)
            out[mask & (option == opt) & (missing == bits)] = code
        return out


def _active(quantities: np.ndarray) -> list[int]:
    """Quantities some event in the batch uses; most batches use a handful of the fourteen."""
    return [q for q in range(N_QUANTITIES) if quantities[q].any()]


def _multiply(
    quantities: np.ndarray, resolved: _Resolved, row: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Breakdown (B × n), total, cache savings, and which events are absurdly expensive.

    Integer pico-USD throughout. Overflow cannot happen: a float estimate of each event's
    largest sum flags events far beyond what a DECIMAL(18, 12) can hold before the exact
    int64 arithmetic runs, and their quantities are left out of it.
    """
    n = quantities.shape[1]
    active = _active(quantities)
    rates = {q: resolved.rates[:, q][row] for q in active}
    uncached_rates = {c: resolved.rates[:, u][row] for c, u in cached_pair_indexes() if c in rates}
    bound = sum(int(quantities[q].max()) * int(rates[q].max(initial=0)) for q in active) + sum(
        int(quantities[c].max()) * int(r.max(initial=0)) for c, r in uncached_rates.items()
    )
    absurd = np.zeros(n, dtype=bool)
    if bound >= _INT64_SAFE:
        estimate = np.zeros(n, dtype=np.float64)
        for q in active:
            estimate += quantities[q] * rates[q].astype(np.float64)
        for c, r in uncached_rates.items():
            estimate += quantities[c] * r.astype(np.float64)
        absurd = estimate > 2.0 * MAX_EVENT_PICO
        quantities = np.where(absurd, 0, quantities)
    parts = np.zeros((len(BREAKDOWN_COLUMNS), n), dtype=np.int64)
    for q in active:
        parts[BREAKDOWN_OF_QUANTITY[q]] += quantities[q] * rates[q]
    total = parts.sum(axis=0)
    savings = np.zeros(n, dtype=np.int64)
    for c, uncached in uncached_rates.items():
        savings += quantities[c] * (uncached - rates[c])
    return parts, total, savings, absurd


def _quantity_position(name: str) -> int:
    return next(i for i, q in enumerate(QUANTITIES) if q.name == name)


def _distinct_keys(
    table: pa.Table,
) -> tuple[np.ndarray, list[tuple[str | None, str | None, str | None, str | None]]]:
    cols = [table.column(c) for c in ("provider", "model", "served_model", "service_tier")]
    sep = "\x1f"
    absent = arrow_values.string_scalar("\x00")
    joined = pc.binary_join_element_wise(
        *[pc.fill_null(c, absent) for c in cols], arrow_values.string_scalar(sep)
    )
    encoded = pc.dictionary_encode(joined).combine_chunks()
    indices = arrow_values.to_numpy(encoded.indices).astype(np.int64)
    keys = []
    for text in encoded.dictionary.to_pylist():
        parts = [None if p == "\x00" else p for p in text.split(sep)]
        keys.append((parts[0], parts[1], parts[2], parts[3]))
    return indices, keys


def _seconds(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    micros = pc.cast(column, pa.int64()) if not pa.types.is_integer(column.type) else column
    values = arrow_values.to_numpy(micros).astype(np.int64, copy=False)
    return np.floor_divide(values, 1_000_000)


def _int_column(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    filled = pc.fill_null(column, arrow_values.zero(column.type))
    return arrow_values.to_numpy(filled).astype(np.int64, copy=False)


def _bool_column(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    filled = pc.fill_null(column, arrow_values.zero(pa.bool_()))
    return arrow_values.to_numpy(filled)


def _take_strings(values: Sequence[str | None], index: np.ndarray) -> pa.Array:
    dictionary = arrow_values.strings([*values, None])
    safe = np.where(index < 0, len(values), index).astype(np.int64)
    return dictionary.take(arrow_values.numbers(safe, pa.int64()))


def _empty_columns() -> dict[str, pa.Array]:
    from ..money import MONEY_ARROW_TYPE

    cols: dict[str, pa.Array] = {
        name: pa.array([], type=MONEY_ARROW_TYPE)
        for name in ("cost", *BREAKDOWN_COLUMNS, "cache_savings", "avoided_cost")
    }
    for name in ("price_ref", "unpriced_reason", "priced_provider", "priced_model"):
        cols[name] = pa.array([], type=pa.string())
    return cols
