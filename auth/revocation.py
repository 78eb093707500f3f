"""Signed-out logins: a denylist of session ids, and the sockets that must close with them.

An access token is a signature, valid until its `exp` whatever happens meanwhile; signing
out (and the revocation of a refresh-token family whose rotated token was reused) must
also stop the access tokens already handed out for that login. Every access token carries
its login's session id (`sid`, the refresh-token family), so one denylist entry per login
covers all of them. An entry lives as long as a token of that login can: the access-token
lifetime (plus a margin for clocks), after which the tokens are expired anyway.

* `RedisRevocations` (REDIS_URL set): the entry is a Redis key with that TTL, checked by
  every authenticated HTTP request on every process — a logout answered by one process
  holds for the very next request to any other. The check is one `EXISTS`; when Redis
  cannot answer, the process falls back to the revocations it has heard of (logged).
* `MemoryRevocations` (no REDIS_URL): in process memory. Without Redis there is a single
  process (`concord serve --workers` refuses more), so the memory is the whole truth.

Open sockets and event streams are closed by `RevocationWatch`: a revocation is published
on the broker (Redis pub/sub between processes, in-process otherwise), every process
listens, and the process holding a socket of that login closes it (4403 on WebSocket)
as soon as the message arrives — milliseconds, not a polling period. A process that may
have missed messages (Redis reconnected) checks its open sessions against the denylist.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable
from typing import Protocol

from redis.asyncio import Redis
from redis.exceptions import RedisError

from auth.fallback import RedisOrMemory
from subscriptions.broker import Broker, SubscriberOverflow
from subscriptions.fanout import MessagesMayBeLost

log = logging.getLogger(__name__)

CHANNEL = "concord:revoked-sessions"
KEY_PREFIX = "concord:revoked-session:"
# Entries outlive the tokens they deny by this much, for clocks that disagree a little.
MARGIN_SECONDS = 30


class Revocations(Protocol):
    """Where signed-out sessions are remembered."""

    async def revoke(self, session_id: uuid.UUID, ttl_seconds: float) -> None: ...

    async def is_revoked(self, session_id: uuid.UUID) -> bool: ...

    def heard(self, session_id: uuid.UUID, ttl_seconds: float) -> None:
        """Remember a revocation announced by another process (the Redis fallback)."""
        ...

    async def aclose(self) -> None: ...


class MemoryRevocations:
    """The denylist in this process's memory, each entry dropped when it expires."""

    def __init__(self) -> None:
        self._until: dict[uuid.UUID, float] = {}

    def heard(self, session_id: uuid.UUID, ttl_seconds: float) -> None:
        now = time.monotonic()
        if len(self._until) > 1000:  # drop the expired ones now and then
            self._until = {k: v for k, v in self._until.items() if v > now}
        self._until[session_id] = max(self._until.get(session_id, 0.0), now + ttl_seconds)

    async def revoke(self, session_id: uuid.UUID, ttl_seconds: float) -> None:
        self.heard(session_id, ttl_seconds)

    async def is_revoked(self, session_id: uuid.UUID) -> bool:
        until = self._until.get(session_id)
        if until is None:
            return False
        if until <= time.monotonic():
            del self._until[session_id]
            return False
        return True

    async def aclose(self) -> None:
        return None


class RedisRevocations:
    """The denylist as Redis keys with a TTL, shared by every process."""

    def __init__(self, url: str, key_prefix: str = KEY_PREFIX) -> None:
        self.redis: Redis = Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0)
        self.key_prefix = key_prefix
        self.local = MemoryRevocations()
        self.fallback = RedisOrMemory("sign-outs checked", (RedisError, OSError))

    def _key(self, session_id: uuid.UUID) -> str:
        return f"{self.key_prefix}{session_id}"

    def heard(self, session_id: uuid.UUID, ttl_seconds: float) -> None:
        self.local.heard(session_id, ttl_seconds)

    async def revoke(self, session_id: uuid.UUID, ttl_seconds: float) -> None:
        self.local.heard(session_id, ttl_seconds)
        await self.redis.set(self._key(session_id), "1", ex=max(1, int(ttl_seconds)))

    async def is_revoked(self, session_id: uuid.UUID) -> bool:
        async def shared() -> bool:
            return bool(await self.redis.exists(self._key(session_id)))

        return await self.fallback.call(shared, lambda: self.local.is_revoked(session_id))

    async def aclose(self) -> None:
        await self.redis.aclose()


def revocations_from_url(redis_url: str | None) -> Revocations:
    return RedisRevocations(redis_url) if redis_url else MemoryRevocations()


class RevocationWatch:
    """Signs out logins everywhere: the denylist, and what is open for them on any process.

    `watch(session_id, close)` registers what to do when that session is revoked (close a
    WebSocket, end an SSE stream); `run()` is the listener, started with the app.
    """

    def __init__(self, store: Revocations, broker: Broker, ttl_seconds: float) -> None:
        self.store = store
        self.broker = broker
        self.ttl_seconds = ttl_seconds + MARGIN_SECONDS
        self._watchers: dict[uuid.UUID, set[Callable[[], None]]] = {}
        self._task: asyncio.Task[None] | None = None

    async def revoke(self, session_id: uuid.UUID) -> None:
        """Deny the session's access tokens, then tell every process to close its sockets."""
        await self.store.revoke(session_id, self.ttl_seconds)
        try:
            await self.broker.publish(CHANNEL, str(session_id))
        except Exception as exc:  # the denylist holds; sockets close when they next check
            log.warning("revocation not announced: %s", exc)
            self._fire(session_id)

    async def is_revoked(self, session_id: uuid.UUID) -> bool:
        return await self.store.is_revoked(session_id)

    def watch(self, session_id: uuid.UUID, close: Callable[[], None]) -> Callable[[], None]:
        """Call `close` when the session is revoked; returns what stops watching."""
        self._watchers.setdefault(session_id, set()).add(close)

        def unwatch() -> None:
            watchers = self._watchers.get(session_id)
            if watchers is not None:
                watchers.discard(close)
                if not watchers:
                    del self._watchers[session_id]

        return unwatch

    def _fire(self, session_id: uuid.UUID) -> None:
        for close in list(self._watchers.pop(session_id, ())):
            try:
                close()
            except Exception:  # one socket's failure must not keep the others open
                log.exception("closing a revoked session's socket failed")

    async def _recheck(self) -> None:
        """After messages may have been lost: the denylist decides for each open session."""
        for session_id in list(self._watchers):
            if await self.store.is_revoked(session_id):
                self._fire(session_id)

    async def _listen(self) -> None:
        while True:
            try:
                async with self.broker.subscribe(CHANNEL, queue_size=10_000) as messages:
                    await self._recheck()
                    iterator = aiter(messages)
                    while True:
                        try:
                            message = await anext(iterator)
                        except MessagesMayBeLost:
                            await self._recheck()
                            continue
                        except StopAsyncIteration:
                            return  # the broker disconnected: the app is stopping
                        try:
                            session_id = uuid.UUID(message)
                        except ValueError:
                            continue
                        self.store.heard(session_id, self.ttl_seconds)
                        self._fire(session_id)
            except SubscriberOverflow:
                continue  # subscribe again; the recheck covers what was dropped
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the broker is down: the denylist still holds
                log.warning("revocation listener stopped (%s); listening again in a second", exc)
                await asyncio.sleep(1.0)

    def start(self) -> None:
        self._task = asyncio.create_task(self._listen(), name="revocation-listener")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.store.aclose()
