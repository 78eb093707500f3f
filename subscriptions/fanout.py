"""The local fan-out hub both broker backends share.

A process holds one `FanoutHub`: channel → the local subscribers of that channel. A
message that reaches the process (published in-process, or read from the single Redis
pub/sub connection) is offered to every local subscriber of its channel with
`put_nowait`, so delivery is O(subscribers), never waits on a slow consumer, and never
grows memory: each subscriber has a bounded queue, and one that is full when a message
arrives is cut off with `SubscriberOverflow` while the others carry on.

Iteration contract of a `LocalSubscriber` (what `Broker.subscribe` yields):

- yields the channel's messages in publish order;
- raises `MessagesMayBeLost` when messages may have been dropped (the Redis connection
  was lost and has been re-established). The subscription is still live: backfill from
  the database, then iterate again. The signal is raised at the point in the stream
  where the gap is, after the messages received before it;
- raises `SubscriberOverflow` once the queue overflowed, on every later call too: the
  subscriber fell behind and must end (its client resumes with its cursor);
- ends (`StopAsyncIteration`) when the broker disconnects, after the queued messages.

A consumer therefore loops like this::

    async with broker.subscribe(channel, queue_size=100) as subscription:
        await backfill()
        while True:
            try:
                async for message in subscription:
                    handle(message)
            except MessagesMayBeLost:
                await backfill()
                continue
            break  # the broker disconnected
"""

from __future__ import annotations

import asyncio
import enum
from typing import Final, Self

from subscriptions.broker import SubscriberOverflow


class MessagesMayBeLost(Exception):
    """Messages of this channel may have been dropped: backfill from the database.

    Raised once per gap by a subscription's iteration; the subscription stays usable.
    """


class _Signal(enum.Enum):
    # Markers travel through the same queue as messages so that they keep their place
    # in the stream: a gap comes after the messages received before it.
    GAP = enum.auto()
    CLOSED = enum.auto()


class LocalSubscriber:
    """One local subscription to a channel: a bounded queue of its messages.

    Created by `FanoutHub.add`; see the module docstring for the iteration contract.
    """

    __slots__ = ("_closed", "_gap_queued", "_overflowed", "_queue", "channel")

    def __init__(self, channel: str, queue_size: int) -> None:
        if queue_size < 1:
            raise ValueError(f"queue_size must be at least 1, got {queue_size}")
        self.channel: Final = channel
        self._queue: asyncio.Queue[str | _Signal] = asyncio.Queue(maxsize=queue_size)
        self._overflowed = False
        self._closed = False
        self._gap_queued = False

    @property
    def overflowed(self) -> bool:
        return self._overflowed

    @property
    def pending(self) -> int:
        """Messages (and signals) queued and not yet consumed."""
        return self._queue.qsize()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> str:
        if self._overflowed:
            raise SubscriberOverflow(
                f"subscriber of {self.channel!r} fell behind (queue of "
                f"{self._queue.maxsize} full) and was cut off; resume from the last cursor"
            )
        if self._closed and self._queue.empty():
            raise StopAsyncIteration
        item = await self._queue.get()
        if item is _Signal.CLOSED:
            raise StopAsyncIteration
        if item is _Signal.GAP:
            self._gap_queued = False
            raise MessagesMayBeLost(f"messages of {self.channel!r} may have been lost")
        return item

    def offer(self, message: str) -> None:
        """Queue `message` without waiting; a full queue cuts the subscriber off."""
        self._put(message)

    def signal_gap(self) -> None:
        """Tell the consumer, in stream order, that messages may have been lost."""
        # One pending signal covers any number of gaps: the consumer backfills once.
        if not self._gap_queued and self._put(_Signal.GAP):
            self._gap_queued = True

    def close(self) -> None:
        """End the iteration once the queued messages are consumed."""
        if self._closed:
            return
        self._closed = True
        # Wakes a consumer blocked on an empty queue; a full queue has no one waiting
        # on it, and __anext__ checks the flag once the queue has drained.
        try:
            self._queue.put_nowait(_Signal.CLOSED)
        except asyncio.QueueFull:
            pass

    def _put(self, item: str | _Signal) -> bool:
        if self._overflowed or self._closed:
            return False
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            # No consumer can be waiting on a full queue, so the flag is seen on the
            # next __anext__. The queued messages are dropped with the subscriber: the
            # client resumes from its cursor anyway.
            self._overflowed = True
            return False
        return True


class FanoutHub:
    """Channel → local subscribers, with non-blocking delivery to all of them."""

    def __init__(self) -> None:
        self._subscribers: dict[str, set[LocalSubscriber]] = {}

    def add(self, channel: str, queue_size: int) -> tuple[LocalSubscriber, bool]:
        """Register a subscriber; the flag says it is the channel's first one."""
        subscriber = LocalSubscriber(channel, queue_size)
        local = self._subscribers.setdefault(channel, set())
        local.add(subscriber)
        return subscriber, len(local) == 1

    def remove(self, subscriber: LocalSubscriber) -> bool:
        """Unregister a subscriber (idempotent); True if its channel has none left."""
        subscriber.close()
        local = self._subscribers.get(subscriber.channel)
        if local is None or subscriber not in local:
            return False
        local.discard(subscriber)
        if local:
            return False
        del self._subscribers[subscriber.channel]
        return True

    def deliver(self, channel: str, message: str) -> int:
        """Offer `message` to every local subscriber of `channel`; returns how many."""
        local = self._subscribers.get(channel)
        if not local:
            return 0
        for subscriber in local:
            subscriber.offer(message)
        return len(local)

    def signal_gap(self, channel: str) -> None:
        """Tell every local subscriber of `channel` that messages may have been lost."""
        for subscriber in self._subscribers.get(channel, ()):
            subscriber.signal_gap()

    def close(self) -> None:
        """End every subscription (the broker is shutting down)."""
        for local in self._subscribers.values():
            for subscriber in local:
                subscriber.close()
        self._subscribers.clear()

    def channels(self) -> list[str]:
        """Channels with at least one local subscriber."""
        return list(self._subscribers)

    def subscriber_count(self, channel: str) -> int:
        return len(self._subscribers.get(channel, ()))
