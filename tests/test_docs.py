"""Documentation that is generated must match what generates it."""

from __future__ import annotations

from pathlib import Path

from unitcost.schema_doc import render

ROOT = Path(__file__).resolve().parents[1]


def test_event_schema_page_is_current() -> None:
    page = (ROOT / "docs" / "event-schema.md").read_text(encoding="utf-8")
    assert page == render(), "run: python -m unitcost.schema_doc > docs/event-schema.md"
