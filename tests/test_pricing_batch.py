"""Batch pricing (arrays) and one-call pricing (Python) give the same pico-dollars."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from unitcost.events import EVENT_SCHEMA, events_to_arrow
from unitcost.money import arrow_to_pico, pico_to_usd, usd_to_pico
from unitcost.pricing.batch import price_table
from unitcost.pricing.book import PriceBook
from unitcost.pricing.quantities import split_one, split_usage

BOOK = PriceBook()
MODELS = [
    ("openai", "gpt-4o"),
    ("openai", "o3"),
    ("openai", "gpt-4o-mini"),
    ("anthropic", "claude-sonnet-4-5"),
    ("anthropic", "claude-3-5-haiku-latest"),
    ("google", "gemini-2.5-pro"),
    ("google", "gemini-2.5-flash"),
    ("deepseek", "deepseek-chat"),
    ("deepseek", "deepseek-reasoner"),
    ("mistral", "mistral-large-latest"),
    (None, "gpt-4.1"),
    (None, "no-such-model"),
    ("openai", "no-such-model"),
    ("self-hosted", "llama"),
]
TIERS = ("standard", "standard", "batch", "flex", "priority")


@st.composite
def events(draw: st.DrawFn) -> dict:
    provider, model = draw(st.sampled_from(MODELS))
    cache_read = draw(st.integers(0, 300_000))
    cw5, cw1 = draw(st.integers(0, 20_000)), draw(st.integers(0, 20_000))
    text = draw(st.integers(0, 400_000))
    reasoning = draw(st.integers(0, 30_000))
    return {
        "event_id": draw(st.uuids()).hex,
        "ts": draw(
            st.datetimes(
                min_value=datetime(2024, 1, 1), max_value=datetime(2026, 11, 1), timezones=st.just(UTC)
            )
        ),
        "provider": provider,
        "model": model,
        "service_tier": draw(st.sampled_from(TIERS)),
        "input_tokens": text + cache_read + cw5 + cw1,
        "cache_read_tokens": cache_read,
        "cache_write_5m_tokens": cw5,
        "cache_write_1h_tokens": cw1,
        "output_tokens": reasoning + draw(st.integers(0, 10_000)),
        "reasoning_tokens": reasoning,
        "cache_hit": draw(st.booleans()) and draw(st.booleans()),
    }


def _decimal(column: pa.Array, i: int) -> Decimal | None:
    pico, valid = arrow_to_pico(column)
    return pico_to_usd(int(pico[i])) if valid[i] else None


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(events(), min_size=1, max_size=40))
def test_batch_equals_one_by_one(batch: list[dict]) -> None:
    table = events_to_arrow(batch)
    assert table.schema == EVENT_SCHEMA
    priced = price_table(BOOK, table).columns
    usage_keys = (
        "input_tokens",
        "cache_read_tokens",
        "cache_write_5m_tokens",
        "cache_write_1h_tokens",
        "output_tokens",
        "reasoning_tokens",
    )
    for i, event in enumerate(batch):
        one = BOOK.price(
            event["model"],
            {k: event[k] for k in usage_keys},
            provider=event["provider"],
            at=event["ts"],
            tier=event["service_tier"],
        )
        total = _decimal(priced["cost"], i)
        quick = BOOK.total_pico(
            event["model"],
            {k: event[k] for k in usage_keys},
            provider=event["provider"],
            at=event["ts"],
            tier=event["service_tier"],
        )
        assert quick == (None if one.cost is None else usd_to_pico(one.cost))
        if one.breakdown is None:
            assert total is None
            assert priced["unpriced_reason"][i].as_py() == one.unpriced_reason
            continue
        assert priced["price_ref"][i].as_py() == one.price_ref
        if event["cache_hit"]:
            # Served by unitcost's own cache: nothing paid, the would-be cost kept as avoided.
            assert total == 0
            assert _decimal(priced["avoided_cost"], i) == one.cost
            continue
        assert total == one.cost
        assert _decimal(priced["cost_input"], i) == one.breakdown.input
        assert _decimal(priced["cost_cache_read"], i) == one.breakdown.cache_read
        assert _decimal(priced["cost_cache_write_1h"], i) == one.breakdown.cache_write_1h
        assert _decimal(priced["cost_reasoning"], i) == one.breakdown.reasoning
        assert _decimal(priced["cache_savings"], i) == one.breakdown.cache_savings


@given(
    text=st.integers(0, 10**6),
    cached=st.integers(0, 10**5),
    audio=st.integers(0, 10**5),
    cached_audio=st.integers(0, 10**4),
    image=st.integers(0, 10**5),
    cached_image=st.integers(0, 10**4),
    writes=st.tuples(st.integers(0, 10**5), st.integers(0, 10**5)),
    outputs=st.tuples(
        st.integers(0, 10**5), st.integers(0, 10**5), st.integers(0, 10**4), st.integers(0, 10**4)
    ),
    extras=st.tuples(st.integers(0, 100), st.integers(0, 100)),
)
def test_split_one_equals_split_usage(
    text: int,
    cached: int,
    audio: int,
    cached_audio: int,
    image: int,
    cached_image: int,
    writes: tuple[int, int],
    outputs: tuple[int, int, int, int],
    extras: tuple[int, int],
) -> None:
    """The request path's integer split and the array split used by batch pricing agree on every quantity."""
    cached_audio, cached_image = min(cached_audio, audio), min(cached_image, image)
    usage = {
        "input_tokens": text + cached + audio + image + writes[0] + writes[1],
        "cache_read_tokens": cached + cached_audio + cached_image,
        "cache_write_5m_tokens": writes[0],
        "cache_write_1h_tokens": writes[1],
        "input_audio_tokens": audio,
        "cache_audio_read_tokens": cached_audio,
        "input_image_tokens": image,
        "cache_image_read_tokens": cached_image,
        "output_tokens": sum(outputs),
        "reasoning_tokens": outputs[1],
        "output_audio_tokens": outputs[2],
        "output_image_tokens": outputs[3],
        "web_searches": extras[0],
        "requests": extras[1],
    }
    arrays = split_usage({k: [v] for k, v in usage.items()})
    assert split_one(usage) == [int(x) for x in arrays[:, 0]]


def test_empty_table() -> None:
    result = price_table(BOOK, events_to_arrow([]))
    assert result.priced == 0 and result.unpriced == 0
    assert len(result.columns["cost"]) == 0
