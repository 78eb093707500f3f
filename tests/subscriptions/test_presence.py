"""Presence on both backends: join, leave, expiry, and the notifications on the broker."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC

import pytest

from subscriptions.memory import MemoryBroker
from subscriptions.presence import (
    MemoryPresence,
    PresenceStore,
    RedisPresence,
    presence_channel,
    presence_from_url,
)
from subscriptions.redis import RedisBroker
from tests.subscriptions.helpers import PRESENCE_TTL, fast_redis_broker, take, wait_until

AnyBroker = MemoryBroker | RedisBroker


async def users(store: PresenceStore, board_id: str) -> list[str]:
    return [viewer.user_id for viewer in await store.present(board_id)]


async def changes(subscription: AsyncIterator[str], count: int) -> list[tuple[str, str]]:
    notes = [json.loads(message) for message in await take(subscription, count)]
    return [(note["change"], note["userId"]) for note in notes]


async def next_tick() -> None:
    # `since` has microsecond resolution: make joins in a row distinguishable.
    await asyncio.sleep(0.002)


async def test_join_and_leave(broker: AnyBroker, presence: PresenceStore) -> None:
    board = uuid.uuid4().hex
    async with broker.subscribe(presence_channel(board), queue_size=20) as notes:
        await presence.join(board, "zoe", "tab-1")
        await next_tick()
        await presence.join(board, "adam", "tab-2")
        await next_tick()
        await presence.join(board, "zoe", "tab-3")  # a second tab: zoe was already here
        await presence.join(board, "zoe", "tab-3")  # joining twice changes nothing

        viewers = await presence.present(board)
        assert [v.user_id for v in viewers] == ["zoe", "adam"]
        assert viewers[0].since < viewers[1].since
        assert viewers[0].since.tzinfo == UTC

        await presence.leave(board, "tab-1")  # zoe is still here, since tab-3 joined
        assert await users(presence, board) == ["adam", "zoe"]
        await presence.leave(board, "tab-3")
        assert await users(presence, board) == ["adam"]
        await presence.leave(board, "tab-3")  # leaving twice changes nothing
        await presence.leave(board, "tab-2")
        assert await presence.present(board) == []

        assert await changes(notes, 4) == [
            ("joined", "zoe"),
            ("joined", "adam"),
            ("left", "zoe"),
            ("left", "adam"),
        ]
        assert notes.pending == 0


async def test_a_connection_without_heartbeats_expires(
    broker: AnyBroker, presence: PresenceStore
) -> None:
    board = uuid.uuid4().hex
    assert presence.heartbeat_interval == pytest.approx(PRESENCE_TTL / 3)
    async with broker.subscribe(presence_channel(board), queue_size=20) as notes:
        await presence.join(board, "crashed", "tab-1")  # its process dies: no heartbeat
        await presence.join(board, "alive", "tab-2")

        async def only_alive_left() -> bool:
            await presence.heartbeat(board, "alive", "tab-2")
            return await users(presence, board) == ["alive"]

        await wait_until(only_alive_left, "the silent connection expired")
        assert await changes(notes, 3) == [
            ("joined", "crashed"),
            ("joined", "alive"),
            ("left", "crashed"),
        ]
        await presence.leave(board, "tab-2")


async def test_a_late_heartbeat_joins_again(broker: AnyBroker, presence: PresenceStore) -> None:
    board = uuid.uuid4().hex
    await presence.join(board, "sleepy", "tab-1")
    first = await presence.present(board)

    async def expired() -> bool:
        return await presence.present(board) == []

    await wait_until(expired, "the connection expired")
    await presence.heartbeat(board, "sleepy", "tab-1")
    again = await presence.present(board)
    assert [v.user_id for v in again] == ["sleepy"]
    assert again[0].since > first[0].since
    await presence.leave(board, "tab-1")


@pytest.mark.redis
async def test_processes_share_presence(shared_redis_url: str, prefix: str) -> None:
    board = uuid.uuid4().hex
    brokers = [fast_redis_broker(shared_redis_url) for _ in range(2)]
    stores = [RedisPresence(shared_redis_url, b, key_prefix=f"{prefix}presence") for b in brokers]
    for broker in brokers:
        await broker.connect()
    try:
        async with brokers[1].subscribe(presence_channel(board), queue_size=5) as notes:
            await stores[0].join(board, "ann", "process-0-tab")
            assert await users(stores[1], board) == ["ann"]
            await stores[1].join(board, "ann", "process-1-tab")
            await stores[0].leave(board, "process-0-tab")
            assert await users(stores[0], board) == ["ann"]
            await stores[1].leave(board, "process-1-tab")
            assert await changes(notes, 2) == [("joined", "ann"), ("left", "ann")]
    finally:
        for store in stores:
            await store.aclose()
        for broker in brokers:
            await broker.disconnect()


def test_presence_from_url() -> None:
    broker = MemoryBroker()
    assert isinstance(presence_from_url(None, broker), MemoryPresence)
    with pytest.raises(ValueError, match="unsupported presence URL"):
        presence_from_url("http://localhost", broker)


async def test_presence_from_redis_url() -> None:
    store = presence_from_url("redis://localhost:6379/0", MemoryBroker(), ttl=6)
    try:
        assert isinstance(store, RedisPresence)
        assert store.heartbeat_interval == 2
    finally:
        await store.aclose()


async def test_a_cancelled_redis_presence_call_stays_cancelled(
    shared_redis_url: str, prefix: str
) -> None:
    """redis-py can swallow a cancellation that arrives mid-command; the store re-raises it,
    so a subscription whose client went away ends instead of living on."""
    broker = fast_redis_broker(shared_redis_url)
    await broker.connect()
    store = RedisPresence(shared_redis_url, broker, ttl=PRESENCE_TTL, key_prefix=prefix)
    board = str(uuid.uuid4())
    returned = cancelled = 0
    try:
        for attempt in range(200):
            task = asyncio.ensure_future(store.present(board))
            for _ in range(attempt % 8):  # cancel at different points of the command
                await asyncio.sleep(0)
            if not task.cancel():
                continue  # already finished: nothing to cancel
            try:
                await task
                returned += 1
            except asyncio.CancelledError:
                cancelled += 1
    finally:
        await store.aclose()
        await broker.disconnect()
    assert returned == 0, f"{returned} cancelled calls returned normally ({cancelled} raised)"
    assert cancelled > 0
