"""The garbage collector after connection bursts: freeze what the subscriptions keep.

Every connection leaves a few hundred long-lived container objects (its protocol, task,
handler, scope). Python's full collections traverse all of them, so with 10,000 idle
subscribers each full collection of a busy process paused it for seconds. Once a burst
of subscriptions has settled (no new one for `QUIET_SECONDS`), `CollectorTuning` moves
everything alive into the permanent generation (`gc.freeze()`): later collections only
look at what is new. Objects frozen and later released are freed by reference counting
as usual; only reference cycles among them wait for an `unfreeze`, which happens once
as many subscriptions have ended since the freeze as were alive at it, bounding that.
"""

from __future__ import annotations

import asyncio
import gc

QUIET_SECONDS = 1.0


class CollectorTuning:
    """Counts subscriptions starting and ending; freezes after bursts (one per process)."""

    def __init__(self) -> None:
        self.live = 0
        self.frozen_at = 0  # live subscriptions at the last freeze (0: not frozen)
        self.ended_since = 0
        self._last_start = 0.0
        self._timer: asyncio.TimerHandle | None = None

    def subscribed(self) -> None:
        self.live += 1
        loop = asyncio.get_running_loop()
        self._last_start = loop.time()
        if self._timer is None:
            self._timer = loop.call_later(QUIET_SECONDS, self._settle)

    def unsubscribed(self, count: int = 1) -> None:
        self.live = max(0, self.live - count)
        if not self.frozen_at:
            return
        self.ended_since += count
        if self.ended_since >= max(self.frozen_at, 1000):
            # Enough of what was frozen may be garbage now: let the collector see it.
            gc.unfreeze()
            self.frozen_at = self.ended_since = 0

    def _settle(self) -> None:
        loop = asyncio.get_running_loop()
        wait = self._last_start + QUIET_SECONDS - loop.time()
        if wait > 0:
            self._timer = loop.call_later(wait, self._settle)
            return
        self._timer = None
        if self.live:
            gc.collect(1)  # the young garbage of the burst, cheaply, before freezing
            gc.freeze()
            self.frozen_at = self.live
            self.ended_since = 0


collector = CollectorTuning()
