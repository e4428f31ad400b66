"""Exact-match response cache: the same normalised request gets the stored response.

The key is the SHA-256 of the endpoint and the request body with keys sorted and the fields
that do not change the answer removed (stream flags, user and metadata). Only complete,
successful, non-streamed responses are stored. A hit is recorded with cost 0 and the cost
it avoided.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any, Protocol

import orjson

_IGNORED = frozenset({"stream", "stream_options", "user", "metadata"})
OPT_OUT_HEADER = "x-unitcost-cache"
"""`x-unitcost-cache: no` (or `off`, `bypass`) skips the cache for one request."""


def cache_key(endpoint: str, body: Mapping[str, Any], upstream_model: str) -> str:
    kept = {k: v for k, v in body.items() if k not in _IGNORED}
    kept["model"] = upstream_model
    digest = hashlib.sha256(endpoint.encode() + b"\0" + orjson.dumps(kept, option=orjson.OPT_SORT_KEYS))
    return digest.hexdigest()


class ResponseCache(Protocol):
    async def get(self, key: str) -> bytes | None: ...

    async def put(self, key: str, value: bytes) -> None: ...

    async def close(self) -> None: ...


class MemoryCache:
    def __init__(self, ttl_s: int, max_entries: int) -> None:
        self._ttl = ttl_s
        self._max = max_entries
        self._items: OrderedDict[str, tuple[float, bytes]] = OrderedDict()

    async def get(self, key: str) -> bytes | None:
        item = self._items.get(key)
        if item is None:
            return None
        if item[0] < time.monotonic():
            del self._items[key]
            return None
        self._items.move_to_end(key)
        return item[1]

    async def put(self, key: str, value: bytes) -> None:
        self._items[key] = (time.monotonic() + self._ttl, value)
        self._items.move_to_end(key)
        while len(self._items) > self._max:
            self._items.popitem(last=False)

    async def close(self) -> None:
        self._items.clear()


class RedisCache:
    def __init__(self, url: str, prefix: str, ttl_s: int) -> None:
        import redis.asyncio as redis

        pool = redis.BlockingConnectionPool.from_url(url, max_connections=64, timeout=10)
        self._redis = redis.Redis(connection_pool=pool)
        self._prefix = prefix + "cache:"
        self._ttl = ttl_s

    async def get(self, key: str) -> bytes | None:
        value = await self._redis.get(self._prefix + key)
        return value.encode() if isinstance(value, str) else value

    async def put(self, key: str, value: bytes) -> None:
        await self._redis.set(self._prefix + key, value, ex=self._ttl)

    async def close(self) -> None:
        await self._redis.aclose()
