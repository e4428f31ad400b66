"""Newer genai-prices data, fetched only when the user asks (`unitcost prices update`).

A fetched snapshot is stored with its URL, time and SHA-256 in the user data directory and
used by every PriceBook from then on, until `unitcost prices update --bundled` goes back to
the data of the installed package. Existing ledger rows keep the price they were priced
with until `unitcost reprice` is run, which records old -> new totals.
"""

from __future__ import annotations

import hashlib
import json
import os
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from platformdirs import user_data_path

from .genai_layer import GenaiLayer

DEFAULT_URL = (
    "https://raw.githubusercontent.com/pydantic/genai-prices/refs/heads/main/prices/new_data/v2/data.json"
)
PRICES_DIR_ENV = "UNITCOST_PRICES_DIR"


@dataclass(frozen=True)
class Snapshot:
    path: Path
    url: str
    fetched_at: str
    sha256: str
    providers: int
    models: int


def prices_dir() -> Path:
    override = os.environ.get(PRICES_DIR_ENV)
    return Path(override) if override else user_data_path("unitcost", appauthor=False) / "prices"


def _parse(payload: Any, origin: str) -> GenaiLayer:
    from genai_prices.types import _providers_from_raw

    if not isinstance(payload, list):
        raise ValueError(f"{origin}: expected a JSON array of providers (genai-prices data format)")
    try:
        providers = _providers_from_raw(payload)
    except Exception as exc:  # pydantic's validation error lists every bad field
        raise ValueError(f"{origin}: not valid genai-prices data: {exc}") from exc
    return GenaiLayer(providers, label=f"genai-prices snapshot from {origin}")


def fetch_snapshot(url: str = DEFAULT_URL, timeout: float = 30.0) -> Snapshot:
    """Download, validate and activate a snapshot. Raises ValueError if it cannot be used."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            body = response.read()
    except OSError as exc:
        raise ValueError(f"could not fetch {url}: {exc}") from exc
    try:
        payload = json.loads(body)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{url}: not JSON: {exc}") from exc
    layer = _parse(payload, url)
    folder = prices_dir()
    folder.mkdir(parents=True, exist_ok=True)
    now = datetime.now(UTC)
    digest = hashlib.sha256(body).hexdigest()
    path = folder / f"genai-prices-{now:%Y%m%dT%H%M%SZ}.json"
    path.write_bytes(body)
    snapshot = Snapshot(
        path, url, now.isoformat(), digest, len(layer.providers), sum(len(p.models) for p in layer.providers)
    )
    (folder / "active.json").write_text(json.dumps({**snapshot.__dict__, "path": str(path)}, indent=2))
    return snapshot


def use_bundled() -> None:
    active = prices_dir() / "active.json"
    if active.exists():
        active.unlink()


def active_layer() -> GenaiLayer | None:
    """The fetched snapshot in use, or None for the bundled data."""
    active = prices_dir() / "active.json"
    if not active.exists():
        return None
    meta = json.loads(active.read_text())
    path = Path(meta["path"])
    body = path.read_bytes()
    if hashlib.sha256(body).hexdigest() != meta["sha256"]:
        raise ValueError(
            f"{path} does not match the checksum recorded when it was fetched; "
            "run `unitcost prices update` again or `--bundled`"
        )
    layer = _parse(json.loads(body), meta["url"])
    layer.label = (
        f"genai-prices snapshot {meta['fetched_at'][:10]} ({meta['url']}, sha256 {meta['sha256'][:12]})"
    )
    return layer
