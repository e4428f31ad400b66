"""unitcost's engine against genai-prices itself, on random usage, wherever no correction applies."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import genai_prices
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from unitcost.pricing.book import PriceBook
from unitcost.pricing.genai_layer import ModelRef
from unitcost.pricing.model import PriceError

TOLERANCE = Decimal("1e-9")
PROVIDERS = (
    "openai",
    "anthropic",
    "google",
    "mistral",
    "x-ai",
    "deepseek",
    "groq",
    "cohere",
    "fireworks",
    "together",
    "aws",
    "perplexity",
    "moonshotai",
    "cerebras",
)


def _eligible(book: PriceBook) -> list[ModelRef]:
    """Models whose every price in the bundled data compiles to exact integer rates and that
    no unitcost correction touches."""
    chosen = []
    for provider in book.genai.providers:
        if provider.id not in PROVIDERS:
            continue
        for info in provider.models:
            ref = ModelRef(provider.id, info.id)
            if book.corrections.periods_for(ref.provider, ref.model, "standard"):
                continue
            timeline = book.timeline(ref, "standard")
            try:
                plans = [book.plan(o.price) for s in timeline.segments for o in s.options if o.price]
            except PriceError:
                continue
            # A model with an empty price is unpriced in unitcost (genai-prices says $0): not comparable.
            if plans and all(p.exact and "input_text" not in p.missing for p in plans):
                chosen.append(ref)
    return chosen


_BOOK = PriceBook()
MODELS = _eligible(_BOOK)


def test_the_sample_is_broad() -> None:
    providers = {m.provider for m in MODELS}
    assert len(MODELS) >= 50, len(MODELS)
    assert len(providers) >= 8, providers


@st.composite
def usages(draw: st.DrawFn) -> dict[str, int]:
    small = st.integers(0, 5_000)
    big = st.integers(0, 400_000)
    cache_read = draw(st.one_of(small, big))
    cw5, cw1 = draw(small), draw(small)
    audio, image = draw(small), draw(small)
    cache_audio = draw(st.integers(0, min(audio, cache_read)))
    cache_image = draw(st.integers(0, min(image, cache_read - cache_audio)))
    text = draw(st.one_of(small, big))
    inp = text + cache_read + cw5 + cw1 + audio - cache_audio + image - cache_image
    reasoning, out_audio, out_image = draw(small), draw(st.integers(0, 2_000)), draw(st.integers(0, 2_000))
    out = draw(small) + reasoning + out_audio + out_image
    return {
        "input_tokens": inp,
        "cache_read_tokens": cache_read,
        "cache_write_5m_tokens": cw5,
        "cache_write_1h_tokens": cw1,
        "input_audio_tokens": audio,
        "cache_audio_read_tokens": cache_audio,
        "input_image_tokens": image,
        "cache_image_read_tokens": cache_image,
        "output_tokens": out,
        "reasoning_tokens": reasoning,
        "output_audio_tokens": out_audio,
        "output_image_tokens": out_image,
        "web_searches": draw(st.integers(0, 3)),
    }


def _genai(model: ModelRef, usage: genai_prices.Usage, at: datetime) -> genai_prices.types.PriceCalculation:
    """genai-prices' own calculation for this exact model entry (by id, not by name matching)."""
    provider = _BOOK.genai.provider(model.provider)
    info = _BOOK.genai.model_info(model)
    assert provider is not None and info is not None
    return info.calc_price(usage, provider, genai_request_timestamp=at)


def genai_usage(u: dict[str, int]) -> genai_prices.Usage:
    return genai_prices.Usage(
        input_tokens=u["input_tokens"],
        cache_read_tokens=u["cache_read_tokens"],
        cache_write_tokens=u["cache_write_5m_tokens"] + u["cache_write_1h_tokens"],
        cache_write_5m_tokens=u["cache_write_5m_tokens"],
        cache_write_1h_tokens=u["cache_write_1h_tokens"],
        input_audio_tokens=u["input_audio_tokens"],
        cache_audio_read_tokens=u["cache_audio_read_tokens"],
        input_image_tokens=u["input_image_tokens"],
        cache_image_read_tokens=u["cache_image_read_tokens"],
        output_tokens=u["output_tokens"],
        output_reasoning_tokens=u["reasoning_tokens"],
        output_audio_tokens=u["output_audio_tokens"],
        output_image_tokens=u["output_image_tokens"],
        web_searches=u["web_searches"],
    )


moments = st.datetimes(
    min_value=datetime(2023, 1, 1), max_value=datetime(2026, 11, 1), timezones=st.just(UTC)
)


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(model=st.sampled_from(MODELS), usage=usages(), at=moments)
def test_total_equals_genai_prices(model: ModelRef, usage: dict[str, int], at: datetime) -> None:
    ours = _BOOK.price(model.model, usage, provider=model.provider, at=at)
    try:
        theirs = _genai(model, genai_usage(usage), at)
    except ValueError as exc:  # a combination genai-prices itself refuses (e.g. an unpriced overlap)
        pytest.skip(f"genai-prices refuses this usage: {exc}")
    if ours.cost is None:
        # unitcost refuses to guess a component with no price (e.g. web searches); genai-prices charges $0.
        assert ours.unpriced_reason and "has no price for" in ours.unpriced_reason
        return
    assert abs(ours.cost - theirs.total_price) <= TOLERANCE, (ours.cost, theirs.total_price, ours.price_ref)


def test_every_sampled_model_prices_a_plain_call() -> None:
    at = datetime(2026, 6, 1, tzinfo=UTC)
    for model in MODELS:
        option = _BOOK.timeline(model).option_at(at)
        assert option.price is not None
        # Embedding models have no output price: no output to charge.
        out = 0 if "output_text" in _BOOK.plan(option.price).missing else 100
        call = _BOOK.price(
            model.model, {"input_tokens": 1000, "output_tokens": out}, provider=model.provider, at=at
        )
        theirs = _genai(model, genai_prices.Usage(input_tokens=1000, output_tokens=out), at)
        assert call.cost is not None, (model, call.unpriced_reason)
        assert abs(call.cost - theirs.total_price) <= TOLERANCE, model


def test_dates_before_and_after_a_genai_price_change() -> None:
    """A model whose bundled data carries a dated price change is priced by date, like genai-prices."""
    dated = [m for m in MODELS if len(_BOOK.timeline(m).segments) > 1]
    assert dated, "the bundled data should hold at least one dated price change"
    for model in dated[:20]:
        for segment in _BOOK.timeline(model).segments[1:]:
            assert segment.start is not None
            for at in (segment.start - timedelta(seconds=1), segment.start):
                ours = _BOOK.price(
                    model.model,
                    {"input_tokens": 100_000, "output_tokens": 10_000},
                    provider=model.provider,
                    at=at,
                )
                theirs = _genai(model, genai_prices.Usage(input_tokens=100_000, output_tokens=10_000), at)
                assert ours.cost is not None
                assert abs(ours.cost - theirs.total_price) <= TOLERANCE, (model, at)
