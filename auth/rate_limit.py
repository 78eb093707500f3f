"""Rate limits, with the `limits` library: the entry points that guess at accounts, and
every GraphQL operation.

Four limits on guessing, each a moving window:
* per client IP, every login and register attempt (`RATE_LIMIT_AUTH_PER_IP`);
* per account, failed logins (`RATE_LIMIT_LOGIN_FAILURES`): guessing one account's
  password from many addresses is slowed down too, and a correct password never counts;
* per user, `addMember` answers "no one has registered with this email"
  (`RATE_LIMIT_UNKNOWN_EMAILS`): that answer tells whether an email has an account, so
  probing many emails is cut off while inviting colleagues is not;
* per client IP, `register` answers "this email is already registered"
  (`RATE_LIMIT_REGISTERED_EMAILS`), the same answer from the other side. Once over, every
  registration from that address is refused, whatever the email, so that the refusal
  tells nothing either.

And one on everything (`RATE_LIMIT_OPERATIONS`): every GraphQL operation, whatever the
transport, per user (per client address when anonymous). It is counted on every request,
so it is a sliding window *counter* (two integers per caller and window, one round trip)
rather than a moving window (one timestamp per operation).

With `REDIS_URL` the counters live in Redis (limits' async storage on redis-py), shared by
every API process; otherwise in this process's memory. When Redis cannot answer (down,
or slower than a second), the limits are counted in this process's memory instead for
a few seconds (`auth.fallback`), then Redis is tried again: an outage of Redis weakens the limits
to per-process ones for its length, and never turns requests into errors.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter, SlidingWindowCounterRateLimiter
from limits.errors import StorageError

from auth.fallback import RedisOrMemory

T = TypeVar("T")

# How long a Redis command of the limiter may take before it counts as failed.
REDIS_TIMEOUT_SECONDS = 1.0


@dataclass(frozen=True)
class Refusal:
    """Over a limit: which one, and how long until the next attempt may pass."""

    limit: str
    retry_after: int


class AuthRateLimiter:
    """`limits` moving windows for the per-IP and per-account login limits, and the
    sliding window counter of operations per caller."""

    def __init__(
        self,
        redis_url: str | None,
        *,
        per_ip: str,
        login_failures: str,
        unknown_emails: str = "20 per hour",
        registered_emails: str = "20 per hour",
        operations: str = "600/minute",
        key_prefix: str = "concord",
    ) -> None:
        self.local = _Strategies(MemoryStorage())
        self.shared: _Strategies | None = None
        if redis_url:
            self.shared = _Strategies(
                RedisStorage(
                    f"async+{redis_url}",
                    wrap_exceptions=True,
                    implementation="redispy",
                    key_prefix=key_prefix,
                    socket_timeout=REDIS_TIMEOUT_SECONDS,
                    socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
                )
            )
        self.fallback = RedisOrMemory("rate limits counted", (StorageError,))
        self.per_ip = parse(per_ip)
        self.login_failures = parse(login_failures)
        self.unknown_emails = parse(unknown_emails)
        self.registered_emails = parse(registered_emails)
        self.operations = parse(operations)

    async def _run(self, call: Callable[[_Strategies], Awaitable[T]]) -> T:
        """`call` on Redis's counters, or on this process's while Redis cannot answer."""
        shared, local = self.shared, self.local
        if shared is None:
            return await call(local)
        return await self.fallback.call(lambda: call(shared), lambda: call(local))

    async def _hit(
        self, item: RateLimitItem, limit: str, namespace: str, key: str
    ) -> Refusal | None:
        """Count one under `item`; a Refusal (naming the setting `limit`) when over it."""

        async def call(limiters: _Strategies) -> Refusal | None:
            if await limiters.moving.hit(item, namespace, key):
                return None
            return Refusal(limit, await limiters.retry_after(item, namespace, key))

        return await self._run(call)

    async def _test(
        self, item: RateLimitItem, limit: str, namespace: str, key: str
    ) -> Refusal | None:
        """Whether `item` is exhausted (counts nothing)."""

        async def call(limiters: _Strategies) -> Refusal | None:
            if await limiters.moving.test(item, namespace, key):
                return None
            return Refusal(limit, await limiters.retry_after(item, namespace, key))

        return await self._run(call)

    async def _count(self, item: RateLimitItem, namespace: str, key: str) -> None:
        await self._run(lambda limiters: limiters.moving.hit(item, namespace, key))

    async def operation(self, caller: str) -> Refusal | None:
        """Count one GraphQL operation of `caller` ("user:<id>" or "ip:<address>")."""
        return await self._run(lambda limiters: self._operation(limiters, caller))

    async def _operation(self, limiters: _Strategies, caller: str) -> Refusal | None:
        if await limiters.counter.hit(self.operations, "operations", caller):
            return None
        stats = await limiters.counter.get_window_stats(self.operations, "operations", caller)
        wait = max(1, int(stats.reset_time - time.time() + 0.999))
        # The counter's reset time is when the window *starts* refilling: never more than
        # one window away.
        return Refusal("RATE_LIMIT_OPERATIONS", min(wait, self.operations.get_expiry()))

    async def attempt(self, ip: str) -> Refusal | None:
        """Count one login or register attempt from `ip`; a Refusal when over the limit."""
        return await self._hit(self.per_ip, "RATE_LIMIT_AUTH_PER_IP", "auth-ip", ip)

    async def account_locked(self, account: str) -> Refusal | None:
        """Whether `account` has had too many failed logins lately (counts nothing)."""
        return await self._test(
            self.login_failures, "RATE_LIMIT_LOGIN_FAILURES", "login-failures", account
        )

    async def failed_login(self, account: str) -> None:
        await self._count(self.login_failures, "login-failures", account)

    async def lookups_exhausted(self, user: str) -> Refusal | None:
        """Whether `user` has been told "unknown email" too often lately (counts nothing)."""
        return await self._test(
            self.unknown_emails, "RATE_LIMIT_UNKNOWN_EMAILS", "unknown-emails", user
        )

    async def unknown_email(self, user: str) -> None:
        await self._count(self.unknown_emails, "unknown-emails", user)

    async def registrations_exhausted(self, ip: str) -> Refusal | None:
        """Whether `ip` has been told "already registered" too often lately (counts nothing)."""
        return await self._test(
            self.registered_emails, "RATE_LIMIT_REGISTERED_EMAILS", "registered-emails", ip
        )

    async def registered_email(self, ip: str) -> None:
        await self._count(self.registered_emails, "registered-emails", ip)

    async def aclose(self) -> None:
        """Stop the memory storage's expiry task, and close the Redis connection pool."""
        await self.local.aclose()
        if self.shared is not None:
            await self.shared.aclose()


class _Strategies:
    """One storage's limiters: moving windows (guessing), the sliding counter (operations)."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self.moving = MovingWindowRateLimiter(storage)
        self.counter = SlidingWindowCounterRateLimiter(storage)

    async def retry_after(self, item: RateLimitItem, *identifiers: str) -> int:
        stats = await self.moving.get_window_stats(item, *identifiers)
        return max(1, int(stats.reset_time - time.time() + 0.999))

    async def aclose(self) -> None:
        storage = self.storage
        if isinstance(storage, MemoryStorage):
            timer = storage.timer
            if timer is not None:
                timer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await timer
        elif isinstance(storage, RedisStorage):
            client: Any = getattr(storage.bridge, "storage", None)
            if client is not None:
                await client.aclose()
