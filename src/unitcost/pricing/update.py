"""Newer genai-prices data, fetched only when the user asks (`unitcost prices update`).

A fetched snapshot is stored with its URL, time and SHA-256 in the user data directory and
used by every PriceBook from then on, until `unitcost prices update --bundled` goes back to
the data of the installed package. Existing ledger rows keep the price they were priced
with until `unitcost reprice` is run, which records old -> new totals.

Nothing is activated before it is validated, and every file is written whole (to a
temporary name, then renamed): a failed or interrupted update leaves the data in use as it
was. A machine with no internet takes a file downloaded elsewhere: `--url PATH`.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import tempfile
import urllib.error
import urllib.parse
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
ACTIVE = "active.json"
_SHOWN_ERRORS = 5
_REVERT = (
    "run `unitcost prices update --bundled` to go back to the bundled data, or `unitcost prices update` again"
)


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
    from pydantic import ValidationError

    if not isinstance(payload, list):
        raise ValueError(f"{origin}: expected a JSON array of providers (genai-prices data format)")
    try:
        providers = _providers_from_raw(payload)
    except ValidationError as exc:  # a foreign file fails on every item: name the first few
        shown = "; ".join(
            f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}"
            for error in exc.errors()[:_SHOWN_ERRORS]
        )
        more = exc.error_count() - _SHOWN_ERRORS
        raise ValueError(
            f"{origin}: not valid genai-prices data: {shown}" + (f" (and {more} more)" if more > 0 else "")
        ) from exc
    except Exception as exc:
        raise ValueError(f"{origin}: not valid genai-prices data: {exc}") from exc
    if not any(provider.models for provider in providers):
        # Activating it would leave every new call unpriced.
        raise ValueError(f"{origin}: genai-prices data with no model in it")
    return GenaiLayer(providers, label=f"genai-prices snapshot from {origin}")


def _read(source: str, timeout: float) -> tuple[str, bytes]:
    """The bytes at a URL, or in a local file (a path, or a file: URL). Returns (origin, body)."""
    if len(urllib.parse.urlsplit(source).scheme) <= 1:  # a path (`C:\...` parses as scheme `c`)
        path = Path(source).expanduser()
        try:
            return str(path.resolve()), path.read_bytes()
        except OSError as exc:
            raise ValueError(f"could not read {path}: {exc.strerror or exc}") from exc
    try:
        with urllib.request.urlopen(source, timeout=timeout) as response:
            return source, bytes(response.read())
    except (OSError, http.client.HTTPException, ValueError) as exc:
        unreachable = isinstance(exc, TimeoutError) or (
            isinstance(exc, urllib.error.URLError)
            and not isinstance(exc, urllib.error.HTTPError)
            and isinstance(exc.reason, OSError)
        )
        hint = (
            " (no network? download the file elsewhere and pass its path: --url PATH)" if unreachable else ""
        )
        raise ValueError(f"could not fetch {source}: {exc}{hint}") from exc


def _write_whole(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that readers see the old file or the new one, never a part."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def fetch_snapshot(url: str = DEFAULT_URL, timeout: float = 30.0) -> Snapshot:
    """Download (or read), validate and activate a snapshot. Raises ValueError if it cannot be used;
    then the data in use stays as it was."""
    origin, body = _read(url, timeout)
    try:
        payload = json.loads(body)
    except ValueError as exc:  # not JSON, or not text at all (a gzip file)
        raise ValueError(f"{origin}: not JSON: {exc}") from exc
    layer = _parse(payload, origin)
    folder = prices_dir()
    now = datetime.now(UTC)
    digest = hashlib.sha256(body).hexdigest()
    path = folder / f"genai-prices-{now:%Y%m%dT%H%M%SZ}-{digest[:12]}.json"
    models = sum(len(p.models) for p in layer.providers)
    snapshot = Snapshot(path, origin, now.isoformat(), digest, len(layer.providers), models)
    record = {**snapshot.__dict__, "path": str(path)}
    try:
        folder.mkdir(parents=True, exist_ok=True)
        _write_whole(path, body)
        _write_whole(folder / ACTIVE, json.dumps(record, indent=2).encode())  # the switch, last
    except OSError as exc:  # a full disk, a read-only directory
        raise ValueError(
            f"could not store the snapshot in {folder}: {exc.strerror or exc}; the price data in use "
            f"is unchanged (${PRICES_DIR_ENV} moves the directory)"
        ) from exc
    return snapshot


def use_bundled() -> None:
    active = prices_dir() / ACTIVE
    if active.exists():
        active.unlink()


def active_snapshot() -> dict[str, Any] | None:
    """The record of the fetched snapshot in use (path, url, fetched_at, sha256, ...), or None."""
    active = prices_dir() / ACTIVE
    try:
        text = active.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ValueError(f"cannot read {active}: {exc.strerror or exc}; {_REVERT}") from exc
    try:
        meta = json.loads(text)
        if not isinstance(meta, dict) or not all(
            isinstance(meta.get(key), str) for key in ("path", "url", "fetched_at", "sha256")
        ):
            raise ValueError("missing path, url, fetched_at or sha256")
    except ValueError as exc:
        raise ValueError(
            f"{active} (which snapshot `unitcost prices update` activated) is damaged: {exc}; {_REVERT}"
        ) from exc
    return meta


def active_layer() -> GenaiLayer | None:
    """The fetched snapshot in use, or None for the bundled data."""
    meta = active_snapshot()
    if meta is None:
        return None
    path = Path(meta["path"])
    try:
        body = path.read_bytes()
    except OSError as exc:
        raise ValueError(
            f"the price snapshot in use, {path}, cannot be read ({exc.strerror or exc}); {_REVERT}"
        ) from exc
    if hashlib.sha256(body).hexdigest() != meta["sha256"]:
        raise ValueError(f"{path} does not match the checksum recorded when it was fetched; {_REVERT}")
    layer = _parse(json.loads(body), meta["url"])
    layer.label = (
        f"genai-prices snapshot {meta['fetched_at'][:10]} ({meta['url']}, sha256 {meta['sha256'][:12]})"
    )
    return layer
