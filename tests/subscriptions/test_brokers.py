"""The broker contract, the same bodies on the in-process broker and on Redis.

Then what only Redis has: one pub/sub connection per process, delivery between
processes, and surviving a Redis restart (on a redis-server of the test's own).
"""

from __future__ import annotations

import asyncio
import uuid
from contextlib import AsyncExitStack

import pytest
from prometheus_client import REGISTRY
from redis.asyncio import Redis

from models.breaker import Breaker
from subscriptions.backends import broker_from_url
from subscriptions.broker import BrokerUnavailable, SubscriberOverflow
from subscriptions.fanout import MessagesMayBeLost
from subscriptions.memory import MemoryBroker
from subscriptions.redis import RedisBroker
from tests.services import free_port
from tests.subscriptions.helpers import (
    RedisProcess,
    fast_redis_broker,
    next_message,
    take,
    wait_until,
)

AnyBroker = MemoryBroker | RedisBroker


async def redis_subscribers(admin: Redis, channel: str) -> int:
    [(_, count)] = await admin.pubsub_numsub(channel)
    return int(count)


# --- the contract, on every backend ---------------------------------------------------


async def test_publish_reaches_every_subscriber_in_order(broker: AnyBroker, prefix: str) -> None:
    channel = f"{prefix}board"
    messages = [f"event {n}" for n in range(20)]
    async with (
        broker.subscribe(channel, queue_size=50) as first,
        broker.subscribe(channel, queue_size=50) as second,
    ):
        for message in messages:
            await broker.publish(channel, message)

        assert await take(first, 20) == messages
        assert await take(second, 20) == messages


async def test_other_channels_get_nothing(broker: AnyBroker, prefix: str) -> None:
    async with (
        broker.subscribe(f"{prefix}a", queue_size=50) as on_a,
        broker.subscribe(f"{prefix}b", queue_size=50) as on_b,
    ):
        for n in range(5):
            await broker.publish(f"{prefix}a", f"a{n}")
        await broker.publish(f"{prefix}b", "b0")

        # Messages arrive in publish order, so b0 coming first proves a* never came.
        assert await take(on_b, 1) == ["b0"]
        assert await take(on_a, 5) == [f"a{n}" for n in range(5)]
        assert on_a.pending == on_b.pending == 0


async def test_leaving_cleans_up(broker: AnyBroker, prefix: str) -> None:
    channel = f"{prefix}board"
    async with AsyncExitStack() as stack:
        admin = Redis.from_url(broker.url) if isinstance(broker, RedisBroker) else None
        if admin is not None:
            stack.push_async_callback(admin.aclose)

        async with broker.subscribe(channel, queue_size=5):
            async with broker.subscribe(channel, queue_size=5):
                assert broker.hub.subscriber_count(channel) == 2
            assert broker.hub.subscriber_count(channel) == 1
            if admin is not None:  # one Redis subscriber per process, not per subscriber
                assert await redis_subscribers(admin, channel) == 1

        assert channel not in broker.hub.channels()
        if admin is not None:

            async def unsubscribed() -> bool:
                return await redis_subscribers(admin, channel) == 0

            await wait_until(unsubscribed, f"Redis unsubscribed {channel}")


async def test_subscribing_again_after_the_last_left(broker: AnyBroker, prefix: str) -> None:
    channel = f"{prefix}board"
    for round_ in range(3):
        async with broker.subscribe(channel, queue_size=5) as subscription:
            await broker.publish(channel, f"round {round_}")
            assert await take(subscription, 1) == [f"round {round_}"]


async def test_slow_subscriber_overflows_while_a_fast_one_gets_everything(
    broker: AnyBroker, prefix: str
) -> None:
    channel = f"{prefix}board"
    messages = [f"event {n}" for n in range(10)]
    async with (
        broker.subscribe(channel, queue_size=2) as slow,
        broker.subscribe(channel, queue_size=100) as fast,
    ):
        for message in messages:
            await broker.publish(channel, message)

        assert await take(fast, 10) == messages
        with pytest.raises(SubscriberOverflow):
            await next_message(slow)

        await broker.publish(channel, "later")
        assert await take(fast, 1) == ["later"]
        with pytest.raises(SubscriberOverflow):
            await next_message(slow)


async def test_disconnect_ends_subscriptions(broker: AnyBroker, prefix: str) -> None:
    async with broker.subscribe(f"{prefix}board", queue_size=5) as subscription:
        waiting = asyncio.create_task(next_message(subscription))
        await asyncio.sleep(0)
        await broker.disconnect()
        with pytest.raises(StopAsyncIteration):
            await waiting


async def test_ping(broker: AnyBroker) -> None:
    await broker.ping()


# --- Redis only -------------------------------------------------------------------------


@pytest.mark.redis
async def test_one_pubsub_connection_for_many_subscribers(
    shared_redis_url: str, redis_admin: Redis, prefix: str
) -> None:
    broker = fast_redis_broker(shared_redis_url)
    channels = [f"{prefix}board{n}" for n in range(10)]

    async def connections() -> int:
        clients = await redis_admin.client_list()
        return sum(client["name"] == broker.client_name for client in clients)

    await broker.connect()
    try:
        async with AsyncExitStack() as stack:
            subscriptions = [
                await stack.enter_async_context(broker.subscribe(channels[n % 10], queue_size=5))
                for n in range(50)
            ]
            assert await connections() == 1
            assert await redis_admin.pubsub_numsub(*channels) == [(c, 1) for c in channels]

            for channel in channels:
                await broker.publish(channel, f"to {channel}")
            for n, subscription in enumerate(subscriptions):
                assert await take(subscription, 1) == [f"to {channels[n % 10]}"]

        async def all_unsubscribed() -> bool:
            return await redis_admin.pubsub_numsub(*channels) == [(c, 0) for c in channels]

        await wait_until(all_unsubscribed, "every channel unsubscribed")
        assert await connections() == 1
    finally:
        await broker.disconnect()
    assert await connections() == 0


@pytest.mark.redis
async def test_a_message_published_by_one_process_reaches_the_others(
    shared_redis_url: str, prefix: str
) -> None:
    channel = f"{prefix}board"
    publisher, receiver = fast_redis_broker(shared_redis_url), fast_redis_broker(shared_redis_url)
    await publisher.connect()
    await receiver.connect()
    try:
        async with (
            publisher.subscribe(channel, queue_size=5) as local,
            receiver.subscribe(channel, queue_size=5) as remote,
        ):
            await publisher.publish(channel, "hello")
            assert await take(local, 1) == ["hello"]
            assert await take(remote, 1) == ["hello"]
    finally:
        await publisher.disconnect()
        await receiver.disconnect()


@pytest.mark.redis
async def test_redis_restart(
    own_redis: RedisProcess, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    broker = fast_redis_broker(own_redis.url, timeout=1.0, health_check_interval=0.5)
    channel, joined_while_down = f"{prefix}board", f"{prefix}other"
    reconnects = REGISTRY.get_sample_value("concord_broker_reconnects_total") or 0.0
    await broker.connect()
    try:
        async with broker.subscribe(channel, queue_size=10) as subscription:
            await broker.publish(channel, "before")
            assert await take(subscription, 1) == ["before"]

            await own_redis.stop()
            # Subscribers hear of the loss at once, so they can read the log meanwhile.
            with pytest.raises(MessagesMayBeLost):
                await next_message(subscription)
            with pytest.raises(BrokerUnavailable, match="cannot publish"):
                await broker.publish(channel, "while down")
            with pytest.raises(BrokerUnavailable):
                await broker.ping()

            async def reconnect_failed() -> bool:
                return "cannot connect to Redis pub/sub" in caplog.text

            await wait_until(reconnect_failed, "a failed reconnect attempt")
            assert not broker.pubsub_connected

            async with broker.subscribe(joined_while_down, queue_size=10) as late:
                await own_redis.start()

                # After the reconnect both learn that they may have missed messages...
                with pytest.raises(MessagesMayBeLost):
                    await next_message(subscription)
                with pytest.raises(MessagesMayBeLost):
                    await next_message(late)
                # ...and live delivery goes on.
                await broker.publish(channel, "after")
                await broker.publish(joined_while_down, "after too")
                assert await take(subscription, 1) == ["after"]
                assert await take(late, 1) == ["after too"]
                await broker.ping()
                # Operators see it on /metrics: one reconnect (failed attempts are not).
                after = REGISTRY.get_sample_value("concord_broker_reconnects_total")
                assert after == reconnects + 1
    finally:
        await broker.disconnect()


@pytest.mark.redis
async def test_a_silent_connection_is_noticed(
    own_redis: RedisProcess, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    broker = fast_redis_broker(own_redis.url, timeout=0.5, health_check_interval=0.2)
    channel = f"{prefix}board"
    await broker.connect()
    try:
        async with broker.subscribe(channel, queue_size=10) as subscription:
            own_redis.pause()
            try:

                async def given_up() -> bool:
                    return "no reply to PING" in caplog.text

                await wait_until(given_up, "the reader gave up on the silent connection")
                assert not broker.pubsub_connected
            finally:
                own_redis.resume()

            # The loss was signalled at once (and the reconnect signals again, unless the
            # first signal was still unread: one pending signal covers any number).
            with pytest.raises(MessagesMayBeLost):
                await next_message(subscription)

            async def resubscribed() -> bool:
                client = Redis.from_url(own_redis.url)
                try:
                    counts = await client.pubsub_numsub(channel)
                    return bool(counts and counts[0][1] >= 1)
                finally:
                    await client.aclose()

            await wait_until(resubscribed, "the channel is subscribed again after the pause")
            await broker.publish(channel, "after")
            try:
                assert await take(subscription, 1) == ["after"]
            except MessagesMayBeLost:
                assert await take(subscription, 1) == ["after"]
    finally:
        await broker.disconnect()


async def test_publishes_to_a_frozen_redis_fail_at_once_after_a_few_timeouts(
    own_redis: RedisProcess,
) -> None:
    breaker = Breaker(
        "redis", threshold=2, recovery_seconds=60, trial_seconds=5, is_failure=lambda e: True
    )
    broker = RedisBroker(
        own_redis.url,
        client_name=f"concord-pubsub-test-{uuid.uuid4().hex}",
        timeout=0.5,
        health_check_interval=30,
        min_backoff=0.02,
        max_backoff=0.2,
        breaker=breaker,
    )
    await broker.connect()
    try:
        await broker.publish("board", "before")
        own_redis.pause()
        try:
            loop = asyncio.get_running_loop()
            for _ in range(2):  # each waits for its timeout
                with pytest.raises(BrokerUnavailable, match="cannot publish"):
                    await broker.publish("board", "frozen")
            assert breaker.state == "open"
            started = loop.time()
            with pytest.raises(BrokerUnavailable, match="circuit open"):
                await broker.publish("board", "frozen")
            assert loop.time() - started < 0.3  # no wait on the frozen server
        finally:
            own_redis.resume()
        # A health check that gets an answer closes the breaker without waiting 60 s.
        await broker.ping()
        assert breaker.state == "closed"
        await broker.publish("board", "after")
    finally:
        await broker.disconnect()


async def test_unreachable_redis() -> None:
    broker = fast_redis_broker(f"redis://127.0.0.1:{free_port()}/0", timeout=1.0)
    await broker.connect()  # does not fail: the reader keeps trying
    try:
        with pytest.raises(BrokerUnavailable, match="cannot publish"):
            await broker.publish("board", "event")
        with pytest.raises(BrokerUnavailable, match="unreachable"):
            await broker.ping()
        async with broker.subscribe("board", queue_size=1) as subscription:
            assert not broker.pubsub_connected
            assert subscription.pending == 0
    finally:
        await broker.disconnect()


# --- choosing the backend ------------------------------------------------------------------


def test_broker_from_url() -> None:
    assert isinstance(broker_from_url(None), MemoryBroker)
    assert isinstance(broker_from_url("redis://localhost:6379/0"), RedisBroker)
    assert isinstance(broker_from_url("rediss://user:pw@redis.example:6380/1"), RedisBroker)
    for url in ("", "memory://", "http://localhost:6379", "localhost:6379"):
        with pytest.raises(ValueError, match="unsupported broker URL"):
            broker_from_url(url)


async def test_resp3_urls_are_refused() -> None:
    broker = RedisBroker("redis://127.0.0.1:6379/0?protocol=3")
    with pytest.raises(ValueError, match="RESP2"):
        await broker.connect()
    await broker.disconnect()


def test_broker_from_url_hides_the_password() -> None:
    with pytest.raises(ValueError, match="unsupported") as error:
        broker_from_url("amqp://user:secret@host/")
    assert "secret" not in str(error.value)
