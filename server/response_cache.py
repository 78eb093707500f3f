"""Reusing the answers of reads until something they read changes.

What is cached: the `data` of a query answered by the compiled read path whose only root
field is confined to one workspace (`workspace`, `board`, `card`, `events`,
`cardHistory`). Never cached: mutations, subscriptions, `me`, `workspaces`, anything
answered with an error, anything the general path answered.

The key is a hash of the document, the operation name, the variables and the read's scope
(`resolvers.read_scope`): the workspace, its last sequence number and the caller's role
there, and the oldest event its log still keeps (pruning deletes events without appending
one). A commit in the workspace advances the sequence number, so every process computes a
new key at once and the old entry is never read again; nothing has to be deleted. Entries
also expire (a TTL) and memory is bounded: an LRU of at most `max_bytes` in the process, or
Redis (shared by all processes) when `REDIS_URL` is set, with the TTL bounding its size.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import OrderedDict
from typing import Protocol

import orjson
from prometheus_client import Counter
from redis.asyncio import Redis

from resolvers.read_scope import Scope

log = logging.getLogger(__name__)

CACHE_LOOKUPS = Counter(
    "concord_response_cache_total", "Response cache lookups by result.", ["result"]
)
PREFIX = "concord:response:"


class CacheStore(Protocol):
    async def get(self, key: str) -> bytes | None: ...

    async def set(self, key: str, value: bytes) -> None: ...

    async def aclose(self) -> None: ...


class MemoryStore:
    """An LRU of encoded answers, at most `max_bytes` in all (entries expire after `ttl`)."""

    def __init__(self, max_bytes: int, ttl: float) -> None:
        self.max_bytes = max_bytes
        self.ttl = ttl
        self._now = time.monotonic
        self._entries: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._size = 0

    async def get(self, key: str) -> bytes | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, value = entry
        if expires < self._now():
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        return value

    async def set(self, key: str, value: bytes) -> None:
        if len(value) > self.max_bytes:
            return
        self._drop(key)
        self._entries[key] = (self._now() + self.ttl, value)
        self._size += len(value)
        while self._size > self.max_bytes:
            oldest = next(iter(self._entries))
            self._drop(oldest)

    def _drop(self, key: str) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self._size -= len(entry[1])

    async def aclose(self) -> None:
        self._entries.clear()
        self._size = 0


class RedisStore:
    """Answers shared by every process through Redis, each with a TTL.

    A Redis error is a miss (or a skipped store), never a failed request: the cache only
    ever saves work.
    """

    def __init__(self, url: str, ttl: float, max_entry_bytes: int) -> None:
        self.redis: Redis = Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0)
        self.ttl_ms = max(1, round(ttl * 1000))
        self.max_entry_bytes = max_entry_bytes

    async def get(self, key: str) -> bytes | None:
        try:
            value = await self.redis.get(PREFIX + key)
        except Exception as exc:
            log.warning("response cache read failed", extra={"error": repr(exc)})
            return None
        return value if isinstance(value, bytes) else None

    async def set(self, key: str, value: bytes) -> None:
        if len(value) > self.max_entry_bytes:
            return
        try:
            await self.redis.set(PREFIX + key, value, px=self.ttl_ms)
        except Exception as exc:
            log.warning("response cache write failed", extra={"error": repr(exc)})

    async def aclose(self) -> None:
        await self.redis.aclose()


class ResponseCache:
    """Keys and the store behind them."""

    def __init__(self, store: CacheStore) -> None:
        self.store = store

    @staticmethod
    def key(query: str, operation_name: str | None, variables: object, scope: Scope) -> str:
        material = orjson.dumps(
            [
                query,
                operation_name,
                variables,
                str(scope.workspace_id),
                scope.last_seq,
                scope.role,
                scope.first_seq,
            ],
            option=orjson.OPT_SORT_KEYS,
        )
        return hashlib.sha256(material).hexdigest()

    async def get(self, key: str) -> bytes | None:
        value = await self.store.get(key)
        CACHE_LOOKUPS.labels("hit" if value is not None else "miss").inc()
        return value

    async def set(self, key: str, data: object) -> None:
        await self.store.set(key, orjson.dumps(data))

    async def aclose(self) -> None:
        await self.store.aclose()


def response_cache(
    redis_url: str | None, *, max_bytes: int, ttl: float, max_entry_bytes: int
) -> ResponseCache:
    if redis_url:
        return ResponseCache(RedisStore(redis_url, ttl, max_entry_bytes))
    return ResponseCache(MemoryStore(max_bytes, ttl))
