"""Two gaps a finance team would sign off wrongly.

1. A model priced before it existed: genai-prices' undated price (its price *now*) was read back
   to before the model's first published price (deepseek-reasoner in 2024, at the V3.2 price).
   A `first = true` entry dates the model's first price; before it the call is unpriced and the
   reason names the date.
2. Claude on Vertex AI and Bedrock, 1-hour cache writes: where the data has no 1-hour write price
   the write was charged at the 5-minute price (1.25x input, not 2x), without a word. No provider
   page confirms a price for those models, so the call is unpriced and says why (`[[unpriced]]`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from typer.testing import CliRunner

from unitcost.cli import app
from unitcost.events import events_to_arrow
from unitcost.money import arrow_to_pico, pico_to_usd
from unitcost.pricing.batch import price_table
from unitcost.pricing.book import PriceBook, PricedCall
from unitcost.pricing.history import price_history
from unitcost.pricing.layers import load_layer
from unitcost.pricing.model import PriceError

BOOK = PriceBook()
MTOK = 1_000_000

# DeepSeek-R1's release price (DeepSeek's "DeepSeek-R1 Release" news, 2025/01/20; its pricing page):
# $0.14 cache hit, $0.55 cache miss, $2.19 output per million tokens.
R1_CACHE_HIT = Decimal("0.14")
R1_CACHE_MISS = Decimal("0.55")
R1_OUTPUT = Decimal("2.19")
R1_FIRST = datetime(2025, 1, 19, 16, 0, tzinfo=UTC)  # 2025-01-20 00:00 China Standard Time


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


# ------------------------------------------------------------------ 2. before the first price


@pytest.mark.parametrize("at", ["2024-06-01T12:00", "2024-12-31T23:59", "2025-01-19T15:59:59"])
def test_deepseek_reasoner_before_its_release_is_unpriced_naming_the_date(at: str) -> None:
    call = BOOK.price(
        "deepseek-reasoner", provider="deepseek", input_tokens=1000, output_tokens=100, at=_at(at)
    )
    assert call.cost is None
    assert call.unpriced_reason is not None
    assert "deepseek/deepseek-reasoner has no price before 2025-01-19 16:00 UTC" in call.unpriced_reason
    assert "first published price" in call.unpriced_reason
    assert "https://api-docs.deepseek.com/quick_start/pricing" in call.unpriced_reason


def test_deepseek_reasoner_from_its_release_at_the_published_r1_price() -> None:
    call = BOOK.price(
        "deepseek-reasoner",
        provider="deepseek",
        input_tokens=3 * MTOK,
        cache_read_tokens=MTOK,
        output_tokens=MTOK,
        at=R1_FIRST,
    )
    assert call.cost == R1_CACHE_MISS * 2 + R1_CACHE_HIT + R1_OUTPUT == Decimal("3.43")
    assert call.effective_from == R1_FIRST
    assert call.price_ref == "unitcost:deepseek/deepseek-reasoner@2025-01-19T16:00Z"


def test_the_batch_engine_says_the_same() -> None:
    rows = [
        {
            "event_id": f"e{i}",
            "ts": _at(at),
            "provider": "deepseek",
            "model": "deepseek-reasoner",
            "input_tokens": MTOK,
            "output_tokens": MTOK,
        }
        for i, at in enumerate(["2024-11-01T00:00", "2025-02-01T00:00"])
    ]
    priced = price_table(BOOK, events_to_arrow(rows)).columns
    one = BOOK.price(
        "deepseek-reasoner",
        provider="deepseek",
        input_tokens=MTOK,
        output_tokens=MTOK,
        at=_at("2024-11-01T00:00"),
    )
    assert priced["unpriced_reason"][0].as_py() == one.unpriced_reason
    pico, valid = arrow_to_pico(priced["cost"])
    assert not valid[0]
    assert valid[1] and pico_to_usd(int(pico[1])) == R1_CACHE_MISS + R1_OUTPUT


def test_prices_show_lists_the_period_before_the_first_price_as_no_price() -> None:
    ref = BOOK.require("deepseek", "deepseek-reasoner")
    rows = [r for r in price_history(BOOK, ref, ["standard"]) if r["from"] is None]
    assert len(rows) == 1 and rows[0]["ref"] is None
    assert "has no price before 2025-01-19 16:00 UTC" in rows[0]["note"]


def test_a_correction_that_is_not_the_first_price_keeps_the_data_before_it() -> None:
    """Claude Sonnet 4's 1M-context correction starts 2025-08-12; before it genai-prices' price holds."""
    call = BOOK.price(
        "claude-sonnet-4-0", provider="anthropic", input_tokens=MTOK, at=_at("2025-06-01T00:00")
    )
    assert call.cost == Decimal("3")
    assert call.price_ref == "genai-prices:anthropic/claude-sonnet-4-0"


def _overrides(tmp_path: Path, text: str) -> PriceBook:
    path = tmp_path / "prices.toml"
    path.write_text(text)
    return PriceBook(overrides=load_layer(path, "user"))


def test_a_user_first_price_stops_the_data_being_read_back(tmp_path: Path) -> None:
    book = _overrides(
        tmp_path,
        """
[[price]]
provider = "openai"
model = "gpt-4.1"
from = 2025-04-14
first = true
input_mtok = "2"
output_mtok = "8"
""",
    )
    before = book.price("gpt-4.1", provider="openai", input_tokens=MTOK, at=_at("2025-04-13T23:00"))
    assert before.cost is None
    assert "openai/gpt-4.1 has no price before 2025-04-14:" in str(before.unpriced_reason)
    after = book.price("gpt-4.1", provider="openai", input_tokens=MTOK, at=_at("2025-04-14T00:00"))
    assert after.cost == Decimal("2")


def test_a_user_price_before_a_shipped_first_price_still_applies(tmp_path: Path) -> None:
    """Early access on the user's contract: their own entry is on top of the blank period."""
    book = _overrides(
        tmp_path,
        """
[[price]]
provider = "deepseek"
model = "deepseek-reasoner"
from = 2025-01-10
to = 2025-01-19T16:00:00Z
source = "early-access contract"
input_mtok = "0.5"
output_mtok = "2"
""",
    )
    early = book.price(
        "deepseek-reasoner", provider="deepseek", input_tokens=MTOK, at=_at("2025-01-15T00:00")
    )
    assert early.cost == Decimal("0.5")
    earlier = book.price(
        "deepseek-reasoner", provider="deepseek", input_tokens=MTOK, at=_at("2025-01-01T00:00")
    )
    assert earlier.cost is None and "has no price before 2025-01-19 16:00 UTC" in str(earlier.unpriced_reason)


def test_a_self_hosted_model_before_its_first_entry_names_the_date(tmp_path: Path) -> None:
    book = _overrides(
        tmp_path,
        """
[[price]]
provider = "self-hosted"
model = "acme-classifier-v2"
from = 2025-08-01
to = 2025-09-01
input_mtok = "0.05"
""",
    )
    before = book.price(
        "acme-classifier-v2", provider="self-hosted", input_tokens=MTOK, at=_at("2025-07-01T00:00")
    )
    assert "self-hosted/acme-classifier-v2 has no price before 2025-08-01" in str(before.unpriced_reason)
    during = book.price(
        "acme-classifier-v2", provider="self-hosted", input_tokens=MTOK, at=_at("2025-08-15T00:00")
    )
    assert during.cost == Decimal("0.05")
    after = book.price(
        "acme-classifier-v2", provider="self-hosted", input_tokens=MTOK, at=_at("2025-09-15T00:00")
    )
    assert after.unpriced_reason == "self-hosted/acme-classifier-v2 has no price at this date"


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ('first = true\ninput_mtok = "1"', "first = true needs 'from'"),
        ('from = 2025-01-01\nfirst = "yes"\ninput_mtok = "1"', "first must be true or false"),
        (
            'from = 2025-01-01\nfirst = true\ntier = "batch"\ninput_mtok = "1"',
            "first = true is for a standard price",
        ),
    ],
)
def test_first_is_checked(tmp_path: Path, entry: str, message: str) -> None:
    path = tmp_path / "prices.toml"
    path.write_text(f'[[price]]\nprovider = "self-hosted"\nmodel = "m"\n{entry}\n')
    with pytest.raises(PriceError, match=message):
        load_layer(path, "user")


def test_first_must_be_the_earliest_entry(tmp_path: Path) -> None:
    path = tmp_path / "prices.toml"
    path.write_text(
        """
[[price]]
provider = "self-hosted"
model = "m"
to = 2025-01-01
input_mtok = "1"

[[price]]
provider = "self-hosted"
model = "m"
from = 2025-01-01
first = true
input_mtok = "2"
"""
    )
    with pytest.raises(PriceError, match=r"says first = true but \[\[price\]\] #1"):
        load_layer(path, "user")


# ------------------------------------------------------------------ 1. 1-hour cache writes


def _claude_call(
    book: PriceBook, model: str, provider: str, at: str = "2025-11-01T00:00", **extra: int
) -> PricedCall:
    return book.price(model, provider=provider, at=_at(at), input_tokens=30_000, output_tokens=800, **extra)


@pytest.mark.parametrize(
    ("model", "provider", "reason"),
    [
        (
            "claude-sonnet-4@20250514",
            "google",
            "genai-prices:google/claude-4-sonnet has no price for cache_write_1h: vertex: no published price "
            "for 1-hour cache writes of claude-4-sonnet (source: https://cloud.google.com/vertex-ai/generative-ai/pricing)",
        ),
        (
            "claude-opus-4-1@20250805",
            "google",
            "genai-prices:google/claude-4-opus has no price for cache_write_1h: vertex: no published price "
            "for 1-hour cache writes of claude-4-opus (source: https://cloud.google.com/vertex-ai/generative-ai/pricing)",
        ),
        (
            "us.anthropic.claude-sonnet-4-20250514-v1:0",
            "aws",
            "genai-prices:aws/regional.anthropic.claude-sonnet-4-20250514-v1:0 has no price for cache_write_1h: "
            "bedrock: no published price for 1-hour cache writes of "
            "regional.anthropic.claude-sonnet-4-20250514-v1:0 (source: https://aws.amazon.com/bedrock/pricing/)",
        ),
        (
            "global.anthropic.claude-sonnet-4-20250514-v1:0",
            "aws",
            "genai-prices:aws/global.anthropic.claude-sonnet-4-20250514-v1:0 has no price for cache_write_1h: "
            "bedrock: no published price for 1-hour cache writes of "
            "global.anthropic.claude-sonnet-4-20250514-v1:0 (source: https://aws.amazon.com/bedrock/pricing/)",
        ),
        (
            "anthropic.claude-3-7-sonnet-20250219-v1:0",
            "aws",
            "genai-prices:aws/regional.anthropic.claude-3-7-sonnet-20250219-v1:0 has no price for cache_write_1h: "
            "bedrock: no published price for 1-hour cache writes of "
            "regional.anthropic.claude-3-7-sonnet-20250219-v1:0 (source: https://aws.amazon.com/bedrock/pricing/)",
        ),
    ],
)
def test_one_hour_writes_without_a_published_price_are_unpriced_saying_why(
    model: str, provider: str, reason: str
) -> None:
    call = _claude_call(BOOK, model, provider, cache_write_1h_tokens=25_000)
    assert call.cost is None
    assert call.unpriced_reason == reason
    # The batch engine gives the same words.
    row = {"event_id": "e", "ts": _at("2025-11-01T00:00"), "provider": provider, "model": model}
    row |= {"input_tokens": 30_000, "output_tokens": 800, "cache_write_1h_tokens": 25_000}
    priced = price_table(BOOK, events_to_arrow([row])).columns
    assert priced["unpriced_reason"][0].as_py() == reason


def test_the_same_models_without_one_hour_writes_are_priced_as_before() -> None:
    # Vertex AI Claude Sonnet 4 (genai-prices): $3 input, $3.75 5-minute write, $15 output.
    call = _claude_call(BOOK, "claude-sonnet-4@20250514", "google", cache_write_5m_tokens=25_000)
    assert call.cost == Decimal(5_000 * 3 + 25_000 * Decimal("3.75") + 800 * 15) / MTOK
    assert call.rates["cache_write_1h"] is not None


@pytest.mark.parametrize(
    ("model", "provider", "rate_1h"),
    [
        # genai-prices' own 1-hour prices (2x input): Vertex AI $6; Bedrock regional endpoint $6.60.
        ("claude-sonnet-4-5@20250929", "google", Decimal("6")),
        ("anthropic.claude-sonnet-4-5-20250929-v1:0", "aws", Decimal("6.6")),
        ("global.anthropic.claude-sonnet-4-5-20250929-v1:0", "aws", Decimal("6")),
    ],
)
def test_models_whose_one_hour_price_is_in_the_data_stay_priced(
    model: str, provider: str, rate_1h: Decimal
) -> None:
    call = _claude_call(BOOK, model, provider, cache_write_1h_tokens=25_000)
    assert call.cost is not None, call.unpriced_reason
    assert call.rates["cache_write_1h"] == rate_1h
    assert call.breakdown is not None and call.breakdown.cache_write_1h == rate_1h * 25_000 / MTOK


def test_a_one_hour_price_the_data_dates_is_used_from_its_date() -> None:
    """Vertex AI Claude Opus 4.6: genai-prices has its 1-hour write price ($10) from 2026-03-13 only."""
    before = _claude_call(
        BOOK, "claude-opus-4-6", "google", at="2026-03-12T00:00", cache_write_1h_tokens=1000
    )
    assert before.cost is None and "vertex: no published price" in str(before.unpriced_reason)
    after = _claude_call(BOOK, "claude-opus-4-6", "google", at="2026-03-13T00:00", cache_write_1h_tokens=1000)
    assert after.rates["cache_write_1h"] == Decimal("10")


def test_a_price_of_your_own_for_one_hour_writes_prices_them(tmp_path: Path) -> None:
    book = _overrides(
        tmp_path,
        """
[[price]]
provider = "google"
model = "claude-4-sonnet"
from = 2025-01-01
source = "our Google Cloud contract"
input_mtok = "3"
cache_write_mtok = "3.75"
cache_write_1h_mtok = "6"
cache_read_mtok = "0.3"
output_mtok = "15"
""",
    )
    call = _claude_call(book, "claude-sonnet-4@20250514", "google", cache_write_1h_tokens=25_000)
    assert call.cost == Decimal(5_000 * 3 + 25_000 * 6 + 800 * 15) / MTOK


def test_unpriced_entries_are_checked(tmp_path: Path) -> None:
    path = tmp_path / "prices.toml"
    path.write_text('[[unpriced]]\nprovider = "aws"\nquantity = "cache_write_2h"\nreason = "x"\n')
    with pytest.raises(PriceError, match="unknown quantity 'cache_write_2h'"):
        load_layer(path, "user")
    path.write_text('[[unpriced]]\nprovider = "aws"\nquantity = "cache_write_1h"\n')
    with pytest.raises(PriceError, match="'reason' is required"):
        load_layer(path, "user")


def test_unitcost_price_cli_says_why() -> None:
    result = CliRunner().invoke(
        app,
        [
            "price",
            "claude-sonnet-4@20250514",
            "-p",
            "google",
            "--input",
            "30000",
            "--cache-write-1h",
            "25000",
            "--output",
            "800",
            "--at",
            "2025-11-01",
        ],
    )
    assert "vertex: no published price for 1-hour cache writes of claude-4-sonnet" in " ".join(
        result.output.split()
    )
