"""The local fan-out hub: bounded queues, overflow, the may-be-lost signal, closing."""

from __future__ import annotations

import asyncio

import pytest

from subscriptions.broker import SubscriberOverflow
from subscriptions.fanout import FanoutHub, LocalSubscriber, MessagesMayBeLost
from tests.subscriptions.helpers import next_message, take


async def collect(subscriber: LocalSubscriber) -> list[str]:
    return [message async for message in subscriber]


async def test_delivers_to_every_subscriber_of_the_channel_in_order() -> None:
    hub = FanoutHub()
    first, is_first = hub.add("a", 10)
    second, is_second_first = hub.add("a", 10)
    other, _ = hub.add("b", 10)
    assert (is_first, is_second_first) == (True, False)

    assert [hub.deliver("a", m) for m in ("1", "2", "3")] == [2, 2, 2]

    assert await take(first, 3) == ["1", "2", "3"]
    assert await take(second, 3) == ["1", "2", "3"]
    assert other.pending == 0
    assert hub.deliver("nobody", "x") == 0


async def test_a_full_queue_cuts_off_only_that_subscriber() -> None:
    hub = FanoutHub()
    slow, _ = hub.add("a", 2)
    fast, _ = hub.add("a", 10)
    for message in ("1", "2", "3", "4"):
        hub.deliver("a", message)

    assert slow.overflowed
    assert slow.pending == 2  # bounded: nothing was queued past the limit
    with pytest.raises(SubscriberOverflow, match="fell behind"):
        await anext(slow)
    with pytest.raises(SubscriberOverflow):  # and it stays cut off
        await anext(slow)
    assert await take(fast, 4) == ["1", "2", "3", "4"]


async def test_gap_signal_keeps_its_place_and_iteration_goes_on() -> None:
    hub = FanoutHub()
    subscriber, _ = hub.add("a", 10)
    hub.deliver("a", "before")
    hub.signal_gap("a")
    hub.signal_gap("a")  # a second gap before the first is seen: one backfill covers both
    hub.deliver("a", "after")

    assert await next_message(subscriber) == "before"
    with pytest.raises(MessagesMayBeLost):
        await next_message(subscriber)
    assert await next_message(subscriber) == "after"
    assert subscriber.pending == 0


async def test_gap_signal_on_a_full_queue_overflows() -> None:
    hub = FanoutHub()
    subscriber, _ = hub.add("a", 1)
    hub.deliver("a", "1")
    hub.signal_gap("a")
    with pytest.raises(SubscriberOverflow):
        await anext(subscriber)


async def test_closing_ends_iteration_after_the_queued_messages() -> None:
    hub = FanoutHub()
    full, _ = hub.add("a", 2)
    waiting, _ = hub.add("b", 2)
    hub.deliver("a", "1")
    hub.deliver("a", "2")
    blocked = asyncio.create_task(collect(waiting))
    await asyncio.sleep(0)  # let it block on the empty queue

    hub.close()

    assert await collect(full) == ["1", "2"]
    assert await asyncio.wait_for(blocked, 5) == []
    assert hub.channels() == []


async def test_remove_reports_the_last_subscriber_and_is_idempotent() -> None:
    hub = FanoutHub()
    first, _ = hub.add("a", 1)
    second, _ = hub.add("a", 1)
    assert hub.subscriber_count("a") == 2

    assert hub.remove(first) is False
    assert hub.remove(first) is False
    assert hub.remove(second) is True
    assert hub.channels() == []
    assert await collect(second) == []  # removal ends its iteration


def test_queue_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="queue_size"):
        FanoutHub().add("a", 0)
