"""The config file: what it sets, and the mistakes in it that are named rather than ignored."""

from __future__ import annotations

from pathlib import Path

import pytest

from unitcost.config import ConfigError, load_config


def test_the_sections_are_read_and_paths_are_relative_to_the_file(tmp_path: Path) -> None:
    path = tmp_path / "unitcost.toml"
    path.write_text(
        '[ledger]\npath = "data/ledger.duckdb"\n[pricing]\noverrides = "prices.toml"\n'
        '[[budget]]\nname = "org"\namount = 100\n[watch]\ninterval_seconds = 30\n'
    )
    config = load_config(path)
    assert config.ledger == str(tmp_path / "data" / "ledger.duckdb")
    assert config.overrides == tmp_path / "prices.toml"
    assert config.raw["budget"][0]["amount"] == 100


@pytest.mark.parametrize(
    "table", ["[[budgets]]\nname = 'org'\namount = 100\n", "[wacth]\ninterval_seconds = 30\n"]
)
def test_a_misspelt_section_is_named(tmp_path: Path, table: str) -> None:
    # Ignored, `[[budgets]]` would leave every budget in the file unwatched without a word.
    path = tmp_path / "unitcost.toml"
    path.write_text(table)
    with pytest.raises(
        ConfigError, match=r"unitcost.toml: unknown section\(s\) (budgets|wacth); the sections are"
    ):
        load_config(path)
