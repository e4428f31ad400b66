"""Virtual API keys: clients hold the key, the config holds only its SHA-256."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable

from .config import VirtualKey

KEY_PREFIX = "uc-"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> tuple[str, str]:
    """A fresh random key and the hash to put in the config."""
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    return key, hash_key(key)


class KeyRing:
    def __init__(self, keys: Iterable[VirtualKey]) -> None:
        self._by_hash = {k.sha256: k for k in keys}

    def __len__(self) -> int:
        return len(self._by_hash)

    def lookup(self, presented: str | None) -> VirtualKey | None:
        if not presented:
            return None
        # Dictionary lookup by digest: the comparison is on hashes, so no timing leak of the key.
        return self._by_hash.get(hash_key(presented))
