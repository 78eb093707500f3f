"""Brokers and presence stores for the subscription tests, one per backend.

`broker` runs a test once on the in-process broker and once on Redis (`TEST_REDIS_URL`,
default the local server): the same body checks both. Channel and board names carry a
random `prefix` so that concurrent runs on the shared server do not see each other.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from subscriptions.memory import MemoryBroker
from subscriptions.presence import MemoryPresence, PresenceStore, RedisPresence
from subscriptions.redis import RedisBroker
from tests.services import free_port, reachable_redis_url
from tests.subscriptions.helpers import PRESENCE_TTL, RedisProcess, fast_redis_broker

BACKENDS = ["memory", pytest.param("redis", marks=pytest.mark.redis)]


@pytest.fixture
def prefix() -> str:
    return f"test:{uuid.uuid4().hex[:12]}:"


@pytest.fixture
def shared_redis_url() -> str:
    """The shared Redis server's URL, once it answers (else skip, or fail under CI)."""
    # Synchronous, so that the `broker` fixture can request it only for its Redis case.
    return reachable_redis_url()


@pytest.fixture
async def redis_admin(shared_redis_url: str) -> AsyncIterator[Redis]:
    """A plain client on the shared server, to look at what the broker did."""
    client = Redis.from_url(shared_redis_url, decode_responses=True)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture(params=BACKENDS)
async def broker(request: pytest.FixtureRequest) -> AsyncIterator[MemoryBroker | RedisBroker]:
    backend: MemoryBroker | RedisBroker
    if request.param == "memory":
        backend = MemoryBroker()
    else:
        backend = fast_redis_broker(request.getfixturevalue("shared_redis_url"))
    await backend.connect()
    try:
        yield backend
    finally:
        await backend.disconnect()


@pytest.fixture
async def presence(broker: MemoryBroker | RedisBroker, prefix: str) -> AsyncIterator[PresenceStore]:
    """A presence store with a short TTL, on the same backend as `broker`."""
    store: PresenceStore
    if isinstance(broker, RedisBroker):
        store = RedisPresence(broker.url, broker, ttl=PRESENCE_TTL, key_prefix=f"{prefix}presence")
    else:
        store = MemoryPresence(broker, ttl=PRESENCE_TTL)
    try:
        yield store
    finally:
        await store.aclose()


@pytest.fixture
async def own_redis(tmp_path: Path) -> AsyncIterator[RedisProcess]:
    """A redis-server of this test's own (started), killed by its pid afterwards."""
    server = RedisProcess(free_port(), tmp_path)
    try:
        await server.start()
        yield server
    finally:
        await server.stop()
