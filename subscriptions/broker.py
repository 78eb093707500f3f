"""The broker contract: publish a message on a channel, subscribe to a channel.

One backend per module (`subscriptions/memory.py`, `subscriptions/redis.py`), chosen by
`REDIS_URL`. Messages are strings (JSON in practice). Delivery is best effort: the event
log in the database is the source of truth, and subscribers fill gaps from it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from typing import Protocol


class SubscriberOverflow(Exception):
    """The subscriber's bounded queue filled up: it fell behind and is cut off."""


class BrokerUnavailable(Exception):
    """The broker (or the Redis presence store) cannot be reached.

    Publishers log this and carry on: the event is already in the database, and
    subscribers backfill from there once the broker is back.
    """


class Subscription(Protocol):
    """Messages of one channel, in publish order, until the subscription ends."""

    def __aiter__(self) -> AsyncIterator[str]: ...


class Broker(Protocol):
    """Pub/sub between API processes (or within one)."""

    async def connect(self) -> None: ...

    async def disconnect(self) -> None: ...

    async def publish(self, channel: str, message: str) -> None:
        """Send `message` to every subscriber of `channel`, in this process and others."""
        ...

    def subscribe(
        self, channel: str, *, queue_size: int
    ) -> AbstractAsyncContextManager[Subscription]:
        """Receive the channel's messages through a queue of at most `queue_size`.

        Iterating raises SubscriberOverflow once the queue has overflowed, and
        `subscriptions.fanout.MessagesMayBeLost` (after which iteration may go on) when
        messages may have been dropped, e.g. after a Redis reconnect: backfill from the
        database, then keep iterating. Iteration ends when the broker disconnects.
        """
        ...

    def signal_gap(self, channel: str) -> None:
        """Tell this process's subscribers of `channel` that messages may have been lost.

        For a watcher that found the log ahead of what the broker delivered.
        """
        ...

    async def ping(self) -> None:
        """Raise unless the broker is reachable (for /readyz)."""
        ...
