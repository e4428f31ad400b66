"""`unitcost price`, `prices show|diff` and the overrides file, as a FinOps engineer uses them.

Each test is something found wrong by using the commands: a price whose tier rule or
discount lost its source, a user discount's end reported as a genai-prices change, Azure's
gpt-4o unpriced, pydantic-ai's `anthropic:claude-...` unknown, overrides mistakes that
crashed or were silently kept.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from unitcost.cli import app
from unitcost.events import events_to_arrow
from unitcost.money import arrow_to_pico, pico_to_usd
from unitcost.pricing.batch import price_table
from unitcost.pricing.book import PriceBook
from unitcost.pricing.model import Price, PriceError, compile_price

runner = CliRunner()
BOOK = PriceBook()
M = 1_000_000


def run(*args: str, code: int = 0) -> str:
    result = runner.invoke(app, list(args), catch_exceptions=False, env={"COLUMNS": "300"})
    assert result.exit_code == code, result.output
    return result.output


def run_json(*args: str, code: int = 0) -> dict:
    data: dict = json.loads(run(*args, "--format", "json", code=code))
    return data


def flat(text: str) -> str:
    """Output with table borders and wrapping undone: one space between words."""
    return " ".join(text.replace("│", " ").split())


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "prices.toml"
    path.write_text(text)
    return str(path)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


# ---------------------------------------------------------------------- provenance


def test_a_batch_price_names_the_tier_rule_and_its_source_not_only_the_base_price() -> None:
    """The 50 % came from unitcost's rule (help.openai.com); the output said genai-prices only."""
    data = run_json("price", "gpt-4o", "--input", "1000", "--at", "2025-06-01", "--tier", "batch")
    assert data["layer"] == "genai-prices"
    [rule] = data["adjustments"]
    assert (rule["kind"], rule["layer"]) == ("tier rule", "unitcost")
    assert rule["source"] == "https://help.openai.com/en/articles/9197833"
    assert Decimal(rule["factor"]) == Decimal("0.5")
    table = flat(run("price", "gpt-4o", "--input", "1000", "--at", "2025-06-01", "--tier", "batch"))
    assert "https://help.openai.com/en/articles/9197833" in table


def test_prices_show_gives_both_layers_and_sources_of_a_rule_made_price() -> None:
    rows = run_json("prices", "show", "gpt-4o", "--tier", "batch")
    ruled = next(r for r in rows if r["from"] == "2024-04-15T00:00:00+00:00")
    assert ruled["layer"] == "genai-prices + unitcost"
    assert "https://help.openai.com/en/articles/9197833" in ruled["source"]
    assert ruled["adjustments"][0]["ref"] == "unitcost:openai[batch]x0.5@2024-04-15"
    # A period with no price says why, in JSON too.
    before = next(r for r in rows if r["from"] is None)
    assert before["ref"] is None and "no batch price" in before["note"]


def test_prices_diff_attributes_a_discount_ending_to_the_users_file(tmp_path: Path) -> None:
    """Before, the end of the user's discount read as a genai-prices change with OpenAI's URL."""
    prices = write(
        tmp_path,
        '[[discount]]\nprovider = "openai"\npercent = 12.5\nfrom = 2025-01-01\nto = 2026-01-01\n'
        'source = "contract MSA-2025-014"\n',
    )
    rows = run_json(
        "prices", "diff", "--from", "2025-12-01", "--to", "2026-02-01", "--provider", "openai",
        "--model", "gpt-4o-mini", "--tier", "standard", "--prices", prices,
    )  # fmt: skip
    ended = [r for r in rows if r["model"] == "openai/gpt-4o-mini" and r["component"] == "input"]
    assert len(ended) == 1
    assert ended[0]["layer"] == "user"
    assert ended[0]["source"] == "contract MSA-2025-014 (ended)"
    assert Decimal(ended[0]["old"]) == Decimal("0.13125") and Decimal(ended[0]["new"]) == Decimal("0.15")
    started = run_json(
        "prices", "diff", "--from", "2024-12-01", "--to", "2025-02-01", "--provider", "openai",
        "--model", "gpt-4o-mini", "--tier", "standard", "--prices", prices,
    )  # fmt: skip
    mini = {(r["layer"], r["source"]) for r in started if r["model"] == "openai/gpt-4o-mini"}
    assert mini == {("user", "contract MSA-2025-014")}


def test_a_genai_tier_price_replacing_a_rule_is_genai_prices_change() -> None:
    """From 2026-10-14 genai-prices has its own batch price: that change is not the rule's."""
    rows = run_json(
        "prices", "diff", "--from", "2026-10-01", "--to", "2026-11-01", "--provider", "openai",
        "--model", "gpt-4o-mini", "--tier", "batch",
    )  # fmt: skip
    assert rows and {r["layer"] for r in rows} == {"genai-prices"}


def test_a_tier_price_that_a_rule_creates_is_the_rules_change() -> None:
    """OpenAI's Batch API from 2024-04-15: no price -> half price, by unitcost's rule."""
    rows = run_json(
        "prices", "diff", "--from", "2024-04-01", "--to", "2024-05-01", "--provider", "openai",
        "--model", "gpt-4o-mini", "--tier", "batch",
    )  # fmt: skip
    mini = [r for r in rows if r["model"] == "openai/gpt-4o-mini"]
    assert mini and {(r["layer"], r["source"]) for r in mini} == {
        ("unitcost", "https://help.openai.com/en/articles/9197833")
    }


# ---------------------------------------------------------------------- names


def test_azure_resells_openai_models_at_openais_price() -> None:
    """genai-prices gives Azure OpenAI's prices; unitcost said "no price at this date"."""
    azure = BOOK.price("gpt-4o", provider="azure", input_tokens=M, output_tokens=M, at=at("2025-06-01"))
    openai = BOOK.price("gpt-4o", provider="openai", input_tokens=M, output_tokens=M, at=at("2025-06-01"))
    assert azure.cost == openai.cost == Decimal("12.5")
    assert azure.provider == "azure" and azure.price is not None
    assert "azure sells gpt-4o at openai's price" in azure.price.note
    rows = run_json("prices", "show", "gpt-4o", "--provider", "azure", "--tier", "standard")
    assert rows and Decimal(rows[0]["input"]) == Decimal("2.5")


@pytest.mark.parametrize(
    ("name", "provider", "model"),
    [
        ("anthropic:claude-sonnet-4-5", "anthropic", "claude-sonnet-4-5"),  # pydantic-ai
        ("openai:gpt-4o", "openai", "gpt-4o"),
        ("google-gla:gemini-2.5-pro", "google", "gemini-2.5-pro"),
        ("openrouter/openai/gpt-4o", "openrouter", "openai/gpt-4o"),  # LiteLLM's OpenRouter spelling
    ],
)
def test_provider_prefixed_names_as_sdks_write_them(name: str, provider: str, model: str) -> None:
    data = run_json("price", name, "--input", "1000", "--at", "2025-09-01")
    assert (data["provider"], data["model"]) == (provider, model)


@pytest.mark.parametrize(
    "name", ["ft:gpt-4o-mini:acme::abc123", "anthropic.claude-3-haiku-20240307-v1:0", "mistral:latest"]
)
def test_a_colon_inside_a_model_id_is_not_a_provider_prefix(name: str) -> None:
    """Fine-tunes, Bedrock ids and Ollama tags stay unknown: never priced as the API model."""
    assert BOOK.resolve(None, name).ref is None


def test_a_misspelt_model_gets_suggestions() -> None:
    out = flat(run("price", "gpt4o", "--input", "10", code=1))
    assert "did you mean gpt-4o (openai)" in out
    data = run_json("price", "claude-sonet-4-5", "--input", "10", code=1)
    assert data["cost"] is None and data["suggestions"][0] == "claude-sonnet-4-5 (anthropic)"
    shown = flat(run("prices", "show", "gpt4o", code=2))
    assert "unknown model 'gpt4o'" in shown and "did you mean gpt-4o (openai)" in shown


def test_a_model_listed_by_several_providers_says_which_was_chosen() -> None:
    data = run_json("price", "gpt-4o", "--input", "10", "--at", "2025-06-01")
    assert data["provider"] == "openai" and "github-copilot" in data["also_listed_for"]
    assert run_json("price", "gpt-4o", "-p", "openai", "--input", "10")["also_listed_for"] == []


# ---------------------------------------------------------------------- the call itself


def test_an_unknown_tier_is_a_usage_error_not_a_call_without_price() -> None:
    out = flat(run("price", "gpt-4o", "--input", "10", "--tier", "turbo", code=2))
    assert "unknown service tier 'turbo'; expected one of standard, batch, flex, priority" in out


def test_parts_larger_than_their_total_name_the_flags() -> None:
    out = flat(
        run("price", "gpt-4o", "--input", "1000", "--cache-read", "2000", "--cache-write", "5", code=2)
    )
    assert "--input 1,000 is less than its parts (--cache-read 2,000 + --cache-write 5)" in out
    out = flat(run("price", "o3", "--output", "10", "--reasoning", "20", code=2))
    assert "--output 10 is less than its parts (--reasoning 20)" in out


def test_audio_costs_are_itemised_under_other() -> None:
    args = ("price", "gpt-4o-audio-preview", "--input", "10000", "--input-audio", "8000")
    args += ("--output", "500", "--output-audio", "400", "--at", "2025-01-10")
    table = flat(run(*args))
    assert "audio input 8,000 $40.0000 $0.320000" in table
    assert "audio output 400 $80.0000 $0.032000" in table
    data = run_json(*args)
    lines = {line["quantity"]: line for line in data["lines"]}
    assert Decimal(lines["input_audio"]["cost"]) == Decimal("0.32")
    assert Decimal(lines["input_audio"]["rate_usd"]) == Decimal("40")


def test_per_request_fees_have_a_flag_and_a_line() -> None:
    data = run_json(
        "price", "sonar", "--input", "1000", "--output", "100", "--requests", "3", "--at", "2025-06-01"
    )
    lines = {line["quantity"]: line for line in data["lines"]}
    assert lines["requests"]["count"] == 3 and lines["requests"]["per"] == 1000
    assert Decimal(lines["requests"]["cost"]) == Decimal("0.036")
    assert Decimal(data["cost"]) == Decimal("0.0371")


def test_the_long_context_tier_and_the_window_hours_are_stated() -> None:
    data = run_json("price", "gemini-2.5-pro", "--input", "250000", "--output", "1000", "--at", "2025-08-01")
    assert data["context_tier_above"] == 200000
    assert "prompt above 200,000 tokens" in flat(
        run("price", "gemini-2.5-pro", "--input", "250000", "--at", "2025-08-01")
    )
    assert (
        run_json("price", "gemini-2.5-pro", "--input", "200000", "--at", "2025-08-01")["context_tier_above"]
        is None
    )
    off_peak = run_json("price", "deepseek-chat", "--input", "1000", "--at", "2025-03-01T17:00")
    assert off_peak["window"] == "off-peak" and off_peak["window_utc"] == "off-peak, 16:30-00:30 UTC"


def test_diff_with_an_empty_interval_names_the_dates() -> None:
    out = flat(run("prices", "diff", "--from", "2025-10-05", "--to", "2025-10-05", code=2))
    assert "--to (2025-10-05 00:00 UTC) must be after --from (2025-10-05 00:00 UTC)" in out


_USAGE_MODELS = [
    ("openai", "gpt-4o"),
    ("openai", "gpt-4o-audio-preview"),
    ("anthropic", "claude-sonnet-4-5"),
    ("google", "gemini-2.5-pro"),
    ("deepseek", "deepseek-chat"),
    ("perplexity", "sonar"),
    ("azure", "gpt-4o"),
]


@st.composite
def calls(draw: st.DrawFn) -> tuple[str, str, datetime, str, dict[str, int]]:
    provider, model = draw(st.sampled_from(_USAGE_MODELS))
    parts = {
        "cache_read_tokens": draw(st.integers(0, 300_000)),
        "cache_write_5m_tokens": draw(st.integers(0, 20_000)),
        "cache_write_1h_tokens": draw(st.integers(0, 20_000)),
        "input_audio_tokens": draw(st.integers(0, 20_000)),
        "input_image_tokens": draw(st.integers(0, 20_000)),
    }
    out_parts = {
        "reasoning_tokens": draw(st.integers(0, 30_000)),
        "output_audio_tokens": draw(st.integers(0, 5_000)),
        "output_image_tokens": draw(st.integers(0, 5_000)),
    }
    usage = {
        **parts,
        **out_parts,
        "input_tokens": sum(parts.values()) + draw(st.integers(0, 400_000)),
        "output_tokens": sum(out_parts.values()) + draw(st.integers(0, 10_000)),
        "web_searches": draw(st.integers(0, 3)),
        "requests": draw(st.integers(1, 5)),
    }
    ts = draw(
        st.datetimes(min_value=datetime(2024, 6, 1), max_value=datetime(2026, 11, 1), timezones=st.just(UTC))
    )
    tier = draw(st.sampled_from(["standard", "batch", "priority"]))
    return provider, model, ts, tier, usage


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(calls())
def test_itemised_costs_add_up_to_the_total_exactly(
    call: tuple[str, str, datetime, str, dict[str, int]],
) -> None:
    provider, model, ts, tier, usage = call
    priced = BOOK.price(model, usage, provider=provider, at=ts, tier=tier)
    if priced.cost is None:
        assert priced.unpriced_reason  # never a silent $0
        return
    assert sum(priced.quantity_costs.values(), Decimal(0)) == priced.cost
    assert priced.breakdown is not None
    parts = priced.breakdown.as_dict()
    assert sum(v for k, v in parts.items() if k not in ("total", "cache_savings")) == priced.cost


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(calls(), min_size=1, max_size=20))
def test_the_array_engine_prices_resold_and_prefixed_names_as_one_call_does(
    batch: list[tuple[str, str, datetime, str, dict[str, int]]],
) -> None:
    """Azure's gpt-4o and `anthropic:...` names price the same in ingestion as in `unitcost price`."""
    events = []
    for index, (drawn_provider, drawn_model, ts, tier, usage) in enumerate(batch):
        provider: str | None = drawn_provider
        model = drawn_model
        if provider == "anthropic":
            provider, model = None, f"anthropic:{model}"
        events.append(
            {
                "event_id": f"e{index}",
                "ts": ts,
                "provider": provider,
                "model": model,
                "service_tier": tier,
                **usage,
            }
        )
    pico, valid = arrow_to_pico(price_table(BOOK, events_to_arrow(events)).columns["cost"])
    for event, amount, ok in zip(events, pico.tolist(), valid.tolist(), strict=True):
        usage = {k: v for k, v in event.items() if k.endswith("_tokens") or k in ("web_searches", "requests")}
        one = BOOK.price(
            event["model"], usage, provider=event["provider"], at=event["ts"], tier=event["service_tier"]
        )
        assert (pico_to_usd(int(amount)) if ok else None) == one.cost
        if event["service_tier"] == "standard":
            # Azure's gpt-4o and `anthropic:...` have prices; unpriced only for a component the
            # model does not sell (image output from Claude), never as an unknown or dateless model.
            assert one.cost is not None or "has no price for" in str(one.unpriced_reason), one.unpriced_reason


# ---------------------------------------------------------------------- the overrides file


def book_with(tmp_path: Path, text: str) -> PriceBook:
    return PriceBook.load(write(tmp_path, text))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        # A discount for a misspelt provider discounted nothing, without a word.
        (
            '[[discount]]\nprovider = "opneai"\npercent = 10\n',
            "names a provider no price layer knows: 'opneai'",
        ),
        ('[[tier_rule]]\nprovider = "opnai"\ntier = "batch"\nfactor = 0.5\n', 'did you mean "openai"'),
        # `[price]` for `[[price]]` was an AttributeError traceback.
        ('[price]\nprovider = "openai"\n', "write each price entry under its own [[price]] header"),
        # A long-context tier without `start` was a KeyError traceback.
        (
            '[[price]]\nprovider = "x"\nmodel = "m"\n'
            'input_mtok = {base = "1", tiers = [{begin = 200000, price = "2"}]}\n',
            "input_mtok.tiers[0]: expected {start = <prompt tokens>, price = ...}",
        ),
        # 1e30 $/MTok loaded, then crashed the array engine (int64 overflow) at ingestion.
        (
            '[[price]]\nprovider = "x"\nmodel = "m"\ninput_mtok = "1e30"\n',
            "makes one unit cost $1M or more",
        ),
        # A window of zero length never applied.
        (
            '[[price]]\nprovider = "x"\nmodel = "m"\ninput_mtok = 1\n[[price.window]]\nfrom = "10:00"\nto = "10:00"\n',
            "'from' and 'to' are the same time",
        ),
        (
            '[[price]]\nprovider = "x"\nmodel = "m"\ninput_mtok = 1\n[price.window]\nfrom = "10:00"\n',
            "[[price.window]]",
        ),
    ],
)
def test_overrides_mistakes_are_refused_with_the_reason(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(PriceError) as caught:
        book_with(tmp_path, text)
    assert message in str(caught.value)


def test_two_prices_from_the_same_instant_are_an_overlap_naming_both_entries(tmp_path: Path) -> None:
    """`gpt-4o` and `gpt-4o-2024-08-06` are one model: one of the two prices was silently dropped."""
    text = (
        '[[price]]\nprovider = "openai"\nmodel = "gpt-4o"\nfrom = 2025-01-01\ninput_mtok = 1\n\n'
        '[[price]]\nprovider = "openai"\nmodel = "gpt-4o-2024-08-06"\nfrom = 2025-01-01\ninput_mtok = 2\n'
    )
    with pytest.raises(PriceError) as caught:
        book_with(tmp_path, text)
    assert (
        "overlap at 2025-01-01T00:00:00+00:00: [[price]] #1 (at line 1) and [[price]] #2 (at line 7)"
        in str(caught.value)
    )
    with pytest.raises(PriceError, match="overlap at the beginning"):
        book_with(tmp_path, '[[price]]\nprovider = "x"\nmodel = "a"\ninput_mtok = 1\n' * 2)


def test_an_error_in_a_long_file_names_the_line_of_its_entry(tmp_path: Path) -> None:
    text = (
        "# negotiated prices\n\n"
        '[[price]]\nprovider = "self-hosted"\nmodel = "m0"\ninput_mtok = "0.05"\n\n'
        '[[price]]\nprovider = "self-hosted"\nmodel = "m1"\ninput_mtok = "-0.05"\n'
    )
    out = flat(run("price", "gpt-4o", "--prices", write(tmp_path, text), code=2))
    assert "[[price]] #2: input_mtok: must be a finite non-negative number, got '-0.05' (at line 8)" in out


def test_an_absurd_price_in_any_layer_cannot_be_compiled() -> None:
    """compile_price guards every layer (a fetched snapshot too), not only the user's file: the
    engines turn its PriceError into an unpriced call, where an int64 overflow crashed ingestion."""
    from types import MappingProxyType

    price = Price(MappingProxyType({"input_mtok": Decimal("1e30")}), "genai-prices", "x", "genai-prices:x/m")
    with pytest.raises(PriceError, match=r"\$1M or more"):
        compile_price(price)


def test_a_discounts_source_is_kept_and_discounts_stack(tmp_path: Path) -> None:
    book = book_with(
        tmp_path,
        '[[discount]]\nprovider = "openai"\npercent = 12.5\nsource = "MSA-2025"\n\n'
        '[[discount]]\nmodel = "gpt-4o"\npercent = 10\n',
    )
    call = book.price("gpt-4o", input_tokens=M, at=at("2025-06-01"))
    assert call.cost == Decimal("2.5") * Decimal("0.875") * Decimal("0.9")
    assert call.price is not None
    assert call.price.adjustments[0].source == "MSA-2025"
    assert call.price.layers == "genai-prices + user"
