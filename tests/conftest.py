from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

# Tests must never see a user's price snapshot, config or ledger.
os.environ.setdefault("UNITCOST_PRICES_DIR", "/nonexistent-unitcost-prices")
os.environ.pop("UNITCOST_CONFIG", None)
os.environ.pop("UNITCOST_LEDGER", None)
os.environ.pop("UNITCOST_PRICES", None)


@pytest.fixture(scope="session")
def book():
    from unitcost.pricing.book import PriceBook

    return PriceBook()


@pytest.fixture
def ledger_path(tmp_path: Path) -> Path:
    return tmp_path / "ledger.duckdb"


@pytest.fixture
def ledger(ledger_path: Path, book) -> Iterator:
    from unitcost.api import Ledger
    from unitcost.config import Config

    with Ledger(ledger_path, book=book, config=Config()) as opened:
        yield opened


@pytest.fixture
def recorded(tmp_path: Path) -> Iterator[tuple[object, Path]]:
    """`unitcost.instrument()` into a recorder of a fresh ledger: (recorder, ledger path)."""
    import unitcost
    from unitcost.connectors.recorder import Recorder

    path = tmp_path / "l.duckdb"
    recorder = Recorder(path)
    unitcost.instrument(into=recorder)
    try:
        yield recorder, path
    finally:
        unitcost.uninstrument()
        recorder.close()


@pytest.fixture(autouse=True)
def _isolated_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # No ./unitcost.toml from the developer's checkout leaks into a test.
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def otlp_receiver(tmp_path: Path) -> Iterator[tuple[str, object, Path]]:
    """A real OTLP receiver on 127.0.0.1 writing a fresh ledger: (base URL, receiver, ledger path)."""
    from fake_providers import serve_app
    from unitcost.config import Config
    from unitcost.otlp.server import otlp_app

    path = tmp_path / "otlp.duckdb"
    app, rec = otlp_app(path, config=Config())
    with serve_app(app) as url:
        yield url, rec, path
