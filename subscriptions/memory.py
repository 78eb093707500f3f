"""The in-process broker (the default, when no `REDIS_URL` is set).

Publishing hands the message straight to the local fan-out hub, so it only reaches
subscribers of this process: right for one process and for tests, not for several API
processes behind a load balancer.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from subscriptions.fanout import FanoutHub, LocalSubscriber


class MemoryBroker:
    """A `Broker` whose subscribers all live in this process."""

    def __init__(self) -> None:
        self.hub = FanoutHub()

    async def connect(self) -> None:
        """Nothing to connect to; present for the `Broker` contract."""

    async def disconnect(self) -> None:
        """End every subscription."""
        self.hub.close()

    async def publish(self, channel: str, message: str) -> None:
        self.hub.deliver(channel, message)

    @asynccontextmanager
    async def subscribe(self, channel: str, *, queue_size: int) -> AsyncIterator[LocalSubscriber]:
        subscriber, _first = self.hub.add(channel, queue_size)
        try:
            yield subscriber
        finally:
            self.hub.remove(subscriber)

    def signal_gap(self, channel: str) -> None:
        self.hub.signal_gap(channel)

    async def ping(self) -> None:
        """Always reachable."""
