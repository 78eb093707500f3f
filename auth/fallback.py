"""Redis, or this process's memory while Redis does not answer.

The rate limits and the sign-out denylist live in Redis when REDIS_URL is set, so that
every process shares them, and keep a copy in memory. When Redis fails to answer, a
request must neither fail nor wait on it again and again: `RedisOrMemory` answers from
memory for `retry_seconds`, then tries Redis again, and logs each change once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

# After Redis failed to answer, how long memory answers before Redis is tried again.
RETRY_SECONDS = 5.0


class RedisOrMemory:
    """Which of two ways answers a call: Redis's, or memory's while Redis is down."""

    def __init__(
        self,
        what: str,
        errors: tuple[type[BaseException], ...],
        retry_seconds: float = RETRY_SECONDS,
    ) -> None:
        self.what = what
        self.errors = errors
        self.retry_seconds = retry_seconds
        self.down_until = 0.0
        self._degraded = False

    async def call(
        self, shared: Callable[[], Awaitable[T]], local: Callable[[], Awaitable[T]]
    ) -> T:
        if time.monotonic() < self.down_until:
            return await local()
        try:
            result = await shared()
        except self.errors as exc:
            if not self._degraded:
                log.warning(
                    "%s from this process's memory: Redis did not answer (%s)", self.what, exc
                )
            self._degraded = True
            self.down_until = time.monotonic() + self.retry_seconds
            return await local()
        if self._degraded:
            self._degraded = False
            log.warning("%s from Redis again", self.what)
        return result
