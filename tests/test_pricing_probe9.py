"""`unitcost price` and `prices show` on calls dated before their model existed, as a finance
team reads them.

gpt-4o at $2.50 is known from its 2024-08-06 snapshot; o3 from 2025-04-16. A call dated
2023-01-01 was priced at that price and the output said "valid from the start of the data",
as if it had been billed that day. The call stays priced (an unpriced call is for "no price
applies"), but every output says the price is only the earliest known one.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

from typer.testing import CliRunner

from unitcost.cli import app
from unitcost.pricing.book import PriceBook
from unitcost.pricing.layers import parse_layer

runner = CliRunner()
BOOK = PriceBook()


def run(*args: str, code: int = 0) -> str:
    result = runner.invoke(app, list(args), catch_exceptions=False, env={"COLUMNS": "300"})
    assert result.exit_code == code, result.output
    return result.output


def flat(text: str) -> str:
    return " ".join(text.replace("│", " ").split())


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def test_a_call_before_the_model_existed_says_the_price_is_only_the_earliest_known() -> None:
    table = flat(run("price", "gpt-4o", "--input", "1000", "--output", "500", "--at", "2023-01-01"))
    assert "earliest known price, from 2024-08-06 (the date of gpt-4o-2024-08-06)" in table
    assert "not in force on 2023-01-01" in table
    assert "from the start of the data" not in table
    # Still priced, at that earliest price: 1000 x $2.50 + 500 x $10 per million.
    assert "$0.007500" in table


def test_the_json_quote_carries_the_same_warning_in_its_note() -> None:
    data = json.loads(run("price", "o3", "--input", "1000", "--at", "2025-01-01", "--format", "json"))
    assert data["cost"] == "0.010000000000"  # o3's launch price, $10 per million input
    assert data["note"].startswith(
        "earliest known price, from 2025-04-16 (the date of o3-2025-04-16): not in force on 2025-01-01"
    )
    # The price's own note is kept after it.
    assert "o3 launch price" in data["note"]


def test_a_dated_snapshot_name_called_before_its_date_is_flagged() -> None:
    call = BOOK.price("claude-3-5-sonnet-20241022", input_tokens=1000, at=at("2024-07-01"))
    assert call.cost == Decimal("0.003")
    assert call.earliest_known is not None
    assert call.earliest_known.since == at("2024-10-22")
    # Vertex AI's spelling, with `@` before the snapshot date.
    vertex = BOOK.price(
        "claude-3-5-sonnet-v2@20241022", provider="google", input_tokens=1000, at=at("2024-07-01")
    )
    assert (vertex.provider, vertex.cost) == ("google", Decimal("0.003"))
    assert vertex.earliest_known is not None
    assert vertex.earliest_known.dated_by == "claude-3-5-sonnet-v2@20241022"


def test_calls_inside_the_known_life_of_the_price_are_not_flagged() -> None:
    assert BOOK.price("gpt-4o", input_tokens=10, at=at("2025-01-01")).earliest_known is None
    assert BOOK.price("o3", input_tokens=10, at=at("2025-05-01")).earliest_known is None
    # gpt-4-turbo also matches gpt-4-1106-preview (November 2023), dated without its year:
    # its 2024-04-09 snapshot does not date the model.
    assert BOOK.price("gpt-4-turbo", input_tokens=10, at=at("2023-12-01")).earliest_known is None
    table = flat(run("price", "gpt-4o", "--input", "10", "--at", "2025-01-01"))
    assert "earliest known" not in table


def test_a_price_the_user_dates_is_in_force_by_their_word() -> None:
    layer = parse_layer(
        {
            "price": [
                {
                    "provider": "openai",
                    "model": "gpt-4o",
                    "from": datetime(2023, 6, 1, tzinfo=UTC),
                    "input_mtok": "2",
                    "output_mtok": "8",
                }
            ]
        },
        "user",
        "prices.toml",
    )
    book = PriceBook(overrides=layer)
    call = book.price("gpt-4o", input_tokens=1_000_000, at=at("2023-07-01"))
    assert (call.cost, call.earliest_known) == (Decimal("2"), None)
    before = book.price("gpt-4o", input_tokens=1_000_000, at=at("2023-01-01"))
    assert before.cost == Decimal("2.5") and before.earliest_known is not None


def test_prices_show_says_the_undated_first_price_is_the_earliest_known() -> None:
    rows = json.loads(run("prices", "show", "o3", "--tier", "standard", "--format", "json"))
    first, later = rows
    assert first["from"] is None
    assert first["note"].startswith("earliest known price, from 2025-04-16 (the date of o3-2025-04-16)")
    assert later["note"] is None
    table = flat(run("prices", "show", "o3", "--tier", "standard"))
    assert "No 'from' date: earliest known price, from 2025-04-16" in table


def test_markdown_output_names_the_price_and_its_dates() -> None:
    """A quote pasted into a finance ticket must say which price, from when: the markdown
    output was the bare component table."""
    out = run("price", "deepseek-chat", "--input", "1000", "--at", "2025-09-15T17:00", "--format", "markdown")
    assert "- price   unitcost:deepseek/deepseek-chat@2025-09-05T16:00Z" in out
    assert "- valid   from 2025-09-05 16:00 UTC until 2025-09-29 00:00 UTC" in out
    assert "| uncached input | 1,000 | $0.560000 | $0.000560 |" in out


def test_an_unpriced_tier_of_a_known_model_names_its_provider() -> None:
    out = run("price", "deepseek-chat", "--input", "10", "--tier", "batch", "--format", "json", code=1)
    data = json.loads(out)
    assert (data["provider"], data["cost"]) == ("deepseek", None)
    assert "no batch price for deepseek/deepseek-chat" in data["unpriced_reason"]


def test_a_date_in_the_users_alias_does_not_date_the_model(tmp_path: Path) -> None:
    prices = tmp_path / "prices.toml"
    prices.write_text('[aliases]\n"corp-4o-20260101" = "openai/gpt-4o"\n')
    # An alias is the user's own name: a date in it says nothing of the model.
    data = json.loads(
        run(
            "price",
            "corp-4o-20260101",
            "--input",
            "10",
            "--at",
            "2025-01-01",
            "--prices",
            str(prices),
            "--format",
            "json",
        )
    )
    assert data["note"] is None
