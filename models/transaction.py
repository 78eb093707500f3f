"""Run a unit of work in one transaction, again when the database asks for it."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from models.transient import is_transient

T = TypeVar("T")
log = logging.getLogger(__name__)

MAX_ATTEMPTS = 5
BASE_DELAY = 0.02
MAX_DELAY = 1.0


def backoff(attempt: int) -> float:
    """Exponential backoff with full jitter, capped."""
    return random.uniform(0, min(MAX_DELAY, BASE_DELAY * (2**attempt)))


async def run_in_transaction(
    sessions: async_sessionmaker[AsyncSession],
    work: Callable[[AsyncSession], Awaitable[T]],
    *,
    attempts: int = MAX_ATTEMPTS,
) -> T:
    """Run `work` in a fresh transaction and commit; retry the whole of it on transient errors.

    `work` must have no effect outside the session (publish after this returns), so that
    running it again is safe. Only failures before COMMIT are retried: a failed COMMIT has
    an unknown outcome, and retrying it could apply the change twice.
    """
    for attempt in range(attempts):
        async with sessions() as session:
            dialect = session.get_bind().dialect.name
            try:
                await session.begin()
                result = await work(session)
            except Exception as exc:
                await session.rollback()
                if attempt == attempts - 1 or not is_transient(exc, dialect):
                    raise
                delay = backoff(attempt)
                log.warning(
                    "transient database error, retrying",
                    extra={"attempt": attempt + 1, "delay": round(delay, 3), "error": str(exc)},
                )
                await asyncio.sleep(delay)
                continue
            await session.commit()
            return result
    raise AssertionError("unreachable")  # pragma: no cover
