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
every API process; otherwise in this process's memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from typing import Any

from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter, SlidingWindowCounterRateLimiter


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
        storage: Storage
        if redis_url:
            storage = RedisStorage(
                f"async+{redis_url}", implementation="redispy", key_prefix=key_prefix
            )
        else:
            storage = MemoryStorage()
        self.storage = storage
        self.strategy = MovingWindowRateLimiter(storage)
        self.per_ip = parse(per_ip)
        self.login_failures = parse(login_failures)
        self.unknown_emails = parse(unknown_emails)
        self.registered_emails = parse(registered_emails)
        self.counter = SlidingWindowCounterRateLimiter(storage)
        self.operations = parse(operations)

    async def _retry_after(self, item: RateLimitItem, *identifiers: str) -> int:
        stats = await self.strategy.get_window_stats(item, *identifiers)
        return max(1, int(stats.reset_time - time.time() + 0.999))

    async def operation(self, caller: str) -> Refusal | None:
        """Count one GraphQL operation of `caller` ("user:<id>" or "ip:<address>")."""
        if await self.counter.hit(self.operations, "operations", caller):
            return None
        stats = await self.counter.get_window_stats(self.operations, "operations", caller)
        wait = max(1, int(stats.reset_time - time.time() + 0.999))
        # The counter's reset time is when the window *starts* refilling: never more than
        # one window away.
        return Refusal("RATE_LIMIT_OPERATIONS", min(wait, self.operations.get_expiry()))

    async def attempt(self, ip: str) -> Refusal | None:
        """Count one login or register attempt from `ip`; a Refusal when over the limit."""
        if await self.strategy.hit(self.per_ip, "auth-ip", ip):
            return None
        wait = await self._retry_after(self.per_ip, "auth-ip", ip)
        return Refusal("RATE_LIMIT_AUTH_PER_IP", wait)

    async def account_locked(self, account: str) -> Refusal | None:
        """Whether `account` has had too many failed logins lately (counts nothing)."""
        if await self.strategy.test(self.login_failures, "login-failures", account):
            return None
        return Refusal(
            "RATE_LIMIT_LOGIN_FAILURES",
            await self._retry_after(self.login_failures, "login-failures", account),
        )

    async def failed_login(self, account: str) -> None:
        await self.strategy.hit(self.login_failures, "login-failures", account)

    async def lookups_exhausted(self, user: str) -> Refusal | None:
        """Whether `user` has been told "unknown email" too often lately (counts nothing)."""
        if await self.strategy.test(self.unknown_emails, "unknown-emails", user):
            return None
        return Refusal(
            "RATE_LIMIT_UNKNOWN_EMAILS",
            await self._retry_after(self.unknown_emails, "unknown-emails", user),
        )

    async def unknown_email(self, user: str) -> None:
        await self.strategy.hit(self.unknown_emails, "unknown-emails", user)

    async def registrations_exhausted(self, ip: str) -> Refusal | None:
        """Whether `ip` has been told "already registered" too often lately (counts nothing)."""
        if await self.strategy.test(self.registered_emails, "registered-emails", ip):
            return None
        return Refusal(
            "RATE_LIMIT_REGISTERED_EMAILS",
            await self._retry_after(self.registered_emails, "registered-emails", ip),
        )

    async def registered_email(self, ip: str) -> None:
        await self.strategy.hit(self.registered_emails, "registered-emails", ip)

    async def aclose(self) -> None:
        """Stop the memory storage's expiry task, or close the Redis connection pool."""
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
