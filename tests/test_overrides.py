"""The user's layer: negotiated discounts, custom and self-hosted models, aliases, dated overrides."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from unitcost.pricing.book import PriceBook
from unitcost.pricing.model import PriceError

M = 1_000_000


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def book_with(tmp_path: Path, text: str) -> PriceBook:
    path = tmp_path / "prices.toml"
    path.write_text(text)
    return PriceBook.load(path)


def test_discount_by_provider_within_its_dates(tmp_path: Path) -> None:
    book = book_with(
        tmp_path,
        """
[[discount]]
provider = "openai"
percent = 15
from = 2025-07-01
to = 2026-01-01
note = "EA 2025"
""",
    )

    def cost(when: str, tier: str = "standard") -> Decimal | None:
        return book.price("gpt-4o", input_tokens=M, output_tokens=M, at=at(when), tier=tier).cost

    assert cost("2025-06-30T23:59:59") == Decimal("12.5")
    assert cost("2025-07-01") == Decimal("12.5") * Decimal("0.85")
    assert cost("2025-09-01", "batch") == Decimal("6.25") * Decimal("0.85")
    assert cost("2026-01-01") == Decimal("12.5")
    call = book.price("gpt-4o", input_tokens=M, at=at("2025-09-01"))
    assert call.price_ref is not None and "user:discount(openai -15%" in call.price_ref
    assert "EA 2025" in call.price.note if call.price else False
    # Other providers are untouched.
    assert book.price("claude-sonnet-4-5", input_tokens=100_000, at=at("2025-09-01")).cost == Decimal("0.3")


def test_discount_by_model_stacks_with_a_provider_discount(tmp_path: Path) -> None:
    book = book_with(
        tmp_path,
        """
[[discount]]
provider = "openai"
percent = 10
[[discount]]
model = "gpt-4o"
percent = 20
""",
    )
    assert book.price("gpt-4o", input_tokens=M, at=at("2025-09-01")).cost == Decimal("2.5") * Decimal(
        "0.9"
    ) * Decimal("0.8")
    assert book.price("gpt-4o-mini", input_tokens=M, at=at("2025-09-01")).cost == Decimal("0.15") * Decimal(
        "0.9"
    )


def test_self_hosted_model_with_dated_prices_and_aliases(tmp_path: Path) -> None:
    book = book_with(
        tmp_path,
        """
[[price]]
provider = "self-hosted"
model = "llama-3.1-70b-vllm"
aliases = ["meta-llama/Llama-3.1-70B-Instruct"]
from = 2025-01-01
source = "TCO profile: 2x L40S at 70% utilisation"
input_mtok = 0.12
output_mtok = 0.40

[[price]]
provider = "self-hosted"
model = "llama-3.1-70b-vllm"
from = 2025-09-01
source = "TCO profile after the GPU lease renewal"
input_mtok = 0.10
output_mtok = 0.30
""",
    )
    august = book.price(
        "meta-llama/Llama-3.1-70B-Instruct", input_tokens=M, output_tokens=M, at=at("2025-08-15")
    )
    september = book.price("llama-3.1-70b-vllm", input_tokens=M, output_tokens=M, at=at("2025-09-15"))
    before = book.price("llama-3.1-70b-vllm", input_tokens=M, at=at("2024-12-31"))
    assert august.cost == Decimal("0.52") and august.price is not None
    assert august.price.layer == "user" and august.price.source.startswith("TCO profile")
    assert september.cost == Decimal("0.40")
    assert before.cost is None and before.unpriced_reason


def test_an_override_replaces_a_published_price_from_its_date(tmp_path: Path) -> None:
    book = book_with(
        tmp_path,
        """
[[price]]
provider = "anthropic"
model = "claude-sonnet-4-5"
from = 2025-10-01
source = "contract 42"
input_mtok = 2.4
output_mtok = 12
cache_read_mtok = 0.24
""",
    )
    assert book.price("claude-sonnet-4-5", input_tokens=100_000, at=at("2025-09-30")).cost == Decimal("0.3")
    assert book.price("claude-sonnet-4-5", input_tokens=100_000, at=at("2025-10-01")).cost == Decimal("0.24")
    # The contract has no long-context tier: a 1M-token prompt is billed at the contract rate.
    assert book.price("claude-sonnet-4-5", input_tokens=M, at=at("2025-10-01")).cost == Decimal("2.4")


def test_aliases_section(tmp_path: Path) -> None:
    book = book_with(
        tmp_path,
        """
[aliases]
"corp-gpt" = "openai/gpt-4o"
""",
    )
    call = book.price("corp-gpt", input_tokens=M, at=at("2025-09-01"))
    assert (call.provider, call.model, call.cost) == ("openai", "gpt-4o", Decimal("2.5"))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '[[price]]\nprovider = "x"\nmodel = "m"\ninput_mtokens = 1\n',
            """unknown key 'input_mtokens' \\(did you mean "input_mtok"\\?\\)""",
        ),
        (
            '[[price]]\nprovider = "x"\nmodel = "m"\ninput_mtok = 1\nuntil = 2025-01-01\n',
            """unknown key 'until' \\(did you mean "to"\\?\\)""",
        ),
        # A misspelt key in a discount was dropped: `until` made a dated discount last for ever,
        # `models` gave one model's discount to the whole provider.
        (
            '[[discount]]\nprovider = "openai"\npercent = 10\nfrom = 2025-01-01\nuntil = 2025-03-01\n',
            """\\[\\[discount\\]\\] #1: unknown key 'until' \\(did you mean "to"\\?\\)""",
        ),
        (
            '[[discount]]\nprovider = "openai"\nmodels = ["gpt-4o-mini"]\npercent = 30\n',
            """unknown key 'models' \\(did you mean "model"\\?\\)""",
        ),
        (
            '[[discount]]\nprovider = "openai"\npercent = 10\nfrom = 2025-03-01\nto = 2025-01-01\n',
            "must be after",
        ),
        (
            '[[tier_rule]]\nprovider = "openai"\nmodel = "gpt-4o"\ntier = "batch"\nfactor = 0.5\n',
            """\\[\\[tier_rule\\]\\] #1: unknown key 'model' \\(did you mean "models"\\?\\)""",
        ),
        (
            '[[tier_rule]]\nprovider = "openai"\nmodels = "gpt-4o"\ntier = "batch"\nfactor = 0.5\n',
            'models must be "\\*" or a list of model ids',
        ),
        (
            '[[tier_rule]]\nprovider = "openai"\ntier = "batch"\nfactor = 0.5\ndata_first = "yes"\n',
            "data_first must be true or false",
        ),
        ('[[price]]\nprovider = "x"\nmodel = "m"\ntier = "cheap"\ninput_mtok = 1\n', "tier must be one of"),
        ('[[price]]\nprovider = "x"\nmodel = "m"\ninput_mtok = -1\n', "finite non-negative"),
        (
            '[[price]]\nprovider = "x"\nmodel = "m"\ninput_mtok = "1"\n[[price]]\nprovider = "x"\nmodel = "n"\n'
            'output_mtok = "1,50"\n',
            r"\[\[price\]\] #2: output_mtok: expected a number, got '1,50'",
        ),
        (
            '[[price]]\nprovider = "x"\nmodel = "m"\nfrom = 2025-02-01\nto = 2025-01-01\ninput_mtok = 1\n',
            "must be after",
        ),
        (
            '[[price]]\nprovider = "x"\nmodel = "m"\nfrom = 2025-01-01\nto = 2025-03-01\ninput_mtok = 1\n'
            '[[price]]\nprovider = "x"\nmodel = "m"\nfrom = 2025-02-01\ninput_mtok = 2\n',
            "overlap",
        ),
        ("[[discount]]\npercent = 10\n", "needs a provider, a model or both"),
        ('[[discount]]\nprovider = "openai"\npercent = 120\n', "between 0 and 100"),
        ("[prices]\n", "unknown section"),
        (
            '[[price]]\nprovider = "x"\nmodel = "m"\ninput_mtok = 1\n[[price.window]]\nfrom = "25:00"\nto = "01:00"\n',
            "not a time of day",
        ),
    ],
)
def test_mistakes_in_the_overrides_file_are_named(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(PriceError, match=message) as info:
        book_with(tmp_path, text)
    assert "prices.toml" in str(info.value)


def test_models_in_the_file_are_named_as_in_a_call(tmp_path: Path) -> None:
    """`claude-sonnet-4` is what Anthropic calls the model genai-prices files as `claude-sonnet-4-0`:
    a discount written with it never applied, and a price pinned to it missed dated snapshots."""
    book = book_with(
        tmp_path,
        """
[[discount]]
provider = "anthropic"
model = "claude-sonnet-4"
percent = 20

[[price]]
provider = "openai"
model = "gpt-4o-2024-08-06"
from = 2025-01-01
input_mtok = 2
output_mtok = 8

[[tier_rule]]
provider = "openai"
models = ["gpt-4.1-2025-04-14"]
tier = "flex"
factor = 0.5
from = 2025-01-01
""",
    )
    for name in ("claude-sonnet-4", "claude-sonnet-4-20250514", "claude-sonnet-4-0"):
        call = book.price(name, input_tokens=100_000, at=at("2025-10-01"))  # under the 200k tier
        assert call.cost == Decimal("0.3") * Decimal("0.8"), name
    for name in ("gpt-4o", "gpt-4o-2024-08-06"):
        assert book.price(name, input_tokens=M, output_tokens=M, at=at("2025-10-01")).cost == Decimal("10"), (
            name
        )
    flex = book.price("gpt-4.1", input_tokens=M, at=at("2025-10-01"), tier="flex")
    assert flex.cost == Decimal("1"), flex.unpriced_reason


@pytest.mark.parametrize(
    "entry",
    [
        '[[discount]]\nprovider = "openai"\nmodel = "gpt-4oo"\npercent = 10\n',
        '[[tier_rule]]\nprovider = "openai"\nmodels = ["gpt-4o", "gtp-4.1"]\ntier = "flex"\nfactor = 0.5\n',
    ],
)
def test_a_discount_or_rule_for_a_model_nobody_knows_is_a_mistake(tmp_path: Path, entry: str) -> None:
    with pytest.raises(PriceError, match="names a model no price layer knows"):
        book_with(tmp_path, entry)


def test_time_of_day_window_in_user_prices(tmp_path: Path) -> None:
    book = book_with(
        tmp_path,
        """
[[price]]
provider = "self-hosted"
model = "night-batch"
input_mtok = 1
output_mtok = 2
[[price.window]]
from = "22:00"
to = "06:00"
label = "night"
input_mtok = 0.5
""",
    )
    day = book.price("night-batch", input_tokens=M, output_tokens=M, at=at("2025-09-01T12:00"))
    night = book.price("night-batch", input_tokens=M, output_tokens=M, at=at("2025-09-01T23:00"))
    assert day.cost == Decimal(3) and night.cost == Decimal("2.5") and night.window == "night"


@pytest.mark.parametrize(
    ("second", "in_all"),
    [
        ('provider = "OpenAI"\npercent = 10\nfrom = 2025-01-01', "19%"),  # a copy, differently spelt
        (
            'provider = "openai"\npercent = 15\nfrom = 2025-01-01\nnote = "renewal"',
            "23.5%",
        ),  # an update as a new entry
    ],
)
def test_two_discounts_on_one_scope_from_the_same_date_are_refused(
    tmp_path: Path, second: str, in_all: str
) -> None:
    """Both would apply one after the other and bill less than either says: the file is refused,
    naming both entries and what they would make together."""
    text = f'[[discount]]\nprovider = "openai"\npercent = 10\nfrom = 2025-01-01\n\n[[discount]]\n{second}\n'
    with pytest.raises(PriceError, match=r"\[\[discount\]\] #2: a second discount on openai") as info:
        book_with(tmp_path, text)
    assert "[[discount]] #1" in str(info.value) and f"{in_all} off in all" in str(info.value)


def test_discounts_on_one_scope_from_different_dates_still_stack(tmp_path: Path) -> None:
    book = book_with(
        tmp_path,
        '[[discount]]\nprovider = "openai"\npercent = 10\nfrom = 2025-01-01\n\n'
        '[[discount]]\nprovider = "openai"\npercent = 10\nfrom = 2025-06-01\n',
    )
    assert book.price("gpt-4o", input_tokens=M, at=at("2024-12-01")).cost == Decimal("2.5")
    assert book.price("gpt-4o", input_tokens=M, at=at("2025-07-01")).cost == Decimal("2.5") * Decimal("0.81")
