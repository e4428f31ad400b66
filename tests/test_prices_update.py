"""`unitcost prices update` and `prices layers`: only validated data is ever activated, a failed
update leaves the data in use as it was, and every error says which file and what to do."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest
from typer.testing import CliRunner

from unitcost.api import Ledger
from unitcost.cli import app

runner = CliRunner()

# genai-prices' data format, with gpt-4o at $1 / $2 per million tokens (bundled: $2.50 / $10).
FEED = [
    {
        "id": "openai",
        "name": "OpenAI",
        "api_pattern": "https://api\\.openai\\.com",
        "pricing_urls": ["https://example.test/pricing"],
        "models": [
            {"id": "gpt-4o", "match": {"equals": "gpt-4o"}, "prices": {"input_mtok": 1, "output_mtok": 2}}
        ],
    }
]


def run(*args: str, code: int = 0) -> str:
    result = runner.invoke(app, list(args), catch_exceptions=False)
    assert result.exit_code == code, result.output
    return " ".join(result.output.split())  # an error line may wrap anywhere


def gpt4o_cost() -> Decimal:
    out = runner.invoke(app, ["price", "gpt-4o", "--input", "1000000", "--format", "json"])
    assert out.exit_code == 0, out.output
    return Decimal(json.loads(out.output)["cost"])


@pytest.fixture
def prices_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "prices"
    monkeypatch.setenv("UNITCOST_PRICES_DIR", str(folder))
    return folder


@pytest.fixture
def feed(tmp_path: Path) -> Path:
    path = tmp_path / "data.json"
    path.write_text(json.dumps(FEED))
    return path


def test_an_offline_machine_updates_from_a_file_downloaded_elsewhere(prices_dir: Path, feed: Path) -> None:
    out = run("prices", "update", "--url", str(feed))
    assert "Fetched 1 models from 1 providers" in out and "unitcost reprice" in out
    assert gpt4o_cost() == Decimal("1")
    layers = json.loads(runner.invoke(app, ["prices", "layers", "--format", "json"]).output)
    genai = next(row for row in layers if row["layer"] == "genai-prices")
    assert str(feed.resolve()) in genai["what"]  # where the data came from, dated, with its checksum
    assert "snapshot" in genai["what"] and "sha256" in genai["what"]


def test_prices_layers_says_a_fetched_snapshot_is_in_use_not_the_pinned_data(
    prices_dir: Path, feed: Path
) -> None:
    def genai_row() -> dict[str, str]:
        rows = json.loads(runner.invoke(app, ["prices", "layers", "--format", "json"]).output)
        row: dict[str, str] = next(r for r in rows if r["layer"] == "genai-prices")
        return row

    assert "pinned" in genai_row()["updated"] and "(bundled)" in genai_row()["what"]
    run("prices", "update", "--url", feed.as_uri())
    fetched = genai_row()
    assert "pinned" not in fetched["updated"]
    assert fetched["updated"].startswith("fetched ") and "--bundled" in fetched["updated"]
    run("prices", "update", "--bundled")
    assert "pinned" in genai_row()["updated"]


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"[]", "genai-prices data with no model in it"),
        (gzip.compress(json.dumps(FEED).encode()), ": not JSON:"),
        (json.dumps([{"x": i} for i in range(300)]).encode(), "0.id: Field required"),
        (b'{"openai": {}}', "expected a JSON array of providers"),
    ],
    ids=["empty", "gzip", "foreign-array", "foreign-object"],
)
def test_a_file_that_is_not_usable_data_is_refused_and_the_snapshot_in_use_stays(
    prices_dir: Path, feed: Path, tmp_path: Path, content: bytes, expected: str
) -> None:
    run("prices", "update", "--url", feed.as_uri())
    bad = tmp_path / "bad.json"
    bad.write_bytes(content)
    out = run("prices", "update", "--url", bad.as_uri(), code=2)
    assert out.startswith("error: ") and expected in out
    assert "bad.json" in out  # which file
    assert len(out) < 600  # a foreign file is named by its first errors, not by all 900 of them
    assert gpt4o_cost() == Decimal("1")  # still the snapshot fetched before


def test_a_damaged_activation_record_is_named_with_the_way_back(prices_dir: Path, feed: Path) -> None:
    run("prices", "update", "--url", feed.as_uri())
    (prices_dir / "active.json").write_text("")  # as an interrupted write would leave it
    out = run("prices", "layers", code=2)
    assert str(prices_dir / "active.json") in out and "unitcost prices update --bundled" in out
    run("prices", "update", "--bundled")
    assert gpt4o_cost() == Decimal("2.5")


def test_a_deleted_snapshot_is_named_with_the_way_back(prices_dir: Path, feed: Path) -> None:
    run("prices", "update", "--url", feed.as_uri())
    for snapshot in prices_dir.glob("genai-prices-*.json"):
        snapshot.unlink()
    out = run("price", "gpt-4o", "--input", "10", code=2)
    assert "the price snapshot in use" in out and "unitcost prices update --bundled" in out


def test_a_full_disk_during_an_update_leaves_the_snapshot_in_use(prices_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("resource")
    first = tmp_path / "first.json"
    first.write_text(json.dumps(FEED))
    run("prices", "update", "--url", first.as_uri())
    second = tmp_path / "second.json"
    dearer = json.loads(json.dumps(FEED))
    dearer[0]["models"][0]["prices"]["input_mtok"] = 3
    second.write_text(json.dumps(dearer))
    # The file-size limit lets the new data file be written whole but not the (larger) record
    # that activates it: the disk is full at the worst moment.
    limit = second.stat().st_size + 8
    assert len((prices_dir / "active.json").read_bytes()) > limit
    script = (
        "import resource, signal, sys\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        f"resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))\n"
        "from unitcost.cli import main\n"
        f"sys.argv = ['unitcost', 'prices', 'update', '--url', {second.as_uri()!r}]\n"
        "main()\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False)
    assert done.returncode == 2, done.stderr
    assert "could not store the snapshot" in " ".join(done.stdout.split())
    assert gpt4o_cost() == Decimal("1")  # the first snapshot, whole, still in use
    assert not list(prices_dir.glob(".*.tmp"))


def test_an_update_changes_no_stored_cost_until_reprice(prices_dir: Path, feed: Path, tmp_path: Path) -> None:
    target = tmp_path / "ledger.duckdb"
    with Ledger(target) as ledger:
        ledger.record(
            {"event_id": "e1", "ts": "2025-09-10T10:00:00Z", "model": "gpt-4o", "input_tokens": 1_000_000}
        )
    run("prices", "update", "--url", str(feed))
    with Ledger(target, read_only=True) as ledger:
        assert ledger.sql("SELECT cost FROM events")["cost"].tolist() == [Decimal("2.5")]
    run("reprice", "--since", "2025-09-01", "-l", str(target))
    with Ledger(target, read_only=True) as ledger:
        assert ledger.sql("SELECT cost FROM events")["cost"].tolist() == [Decimal("1")]
