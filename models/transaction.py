"""Run a unit of work in one transaction, again when the database asks for it."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from models.transient import is_transient

T = TypeVar("T")
log = logging.getLogger(__name__)

MAX_ATTEMPTS = 5
BASE_DELAY = 0.02
MAX_DELAY = 1.0


def backoff(attempt: int) -> float:
    """Exponential backoff with full jitter, capped: 20 ms, 40 ms, 80 ms … at most 1 s.

    Full jitter spreads the retries of transactions that collided, so that the deadlock
    victims of one moment do not meet again at the next.
    """
    return random.uniform(0, min(MAX_DELAY, BASE_DELAY * (2**attempt)))


def _driver_message(exc: BaseException) -> str:
    # The driver's own message only: str() of a DBAPIError also carries the statement's
    # parameters, which may be password hashes or token hashes.
    if isinstance(exc, DBAPIError) and exc.orig is not None:
        return f"{type(exc.orig).__name__}: {exc.orig}"
    return type(exc).__name__


async def run_in_transaction(
    sessions: async_sessionmaker[AsyncSession],
    work: Callable[[AsyncSession], Awaitable[T]],
    *,
    attempts: int = MAX_ATTEMPTS,
) -> T:
    """Run `work` in a fresh transaction and commit; retry the whole of it on transient errors.

    Each attempt gets a new session, so nothing read or written by a failed attempt survives
    into the next. `work` must have no effect outside the session (publish after this
    returns), so that running it again is safe. Only failures before COMMIT are retried: a
    failed COMMIT has an unknown outcome, and retrying it could apply the change twice.
    """
    if attempts < 1:
        raise ValueError("attempts must be at least 1")
    for attempt in range(attempts):
        async with sessions() as session:
            dialect = session.get_bind().dialect.name
            try:
                await session.begin()
                result = await work(session)
            except Exception as exc:
                try:
                    await session.rollback()
                except Exception:
                    # The connection is gone (the server rolls back on its side); the error
                    # worth reporting is the one that got us here.
                    log.warning("rollback after a failed attempt failed", exc_info=True)
                if attempt == attempts - 1 or not is_transient(exc, dialect):
                    raise
                delay = backoff(attempt)
                log.warning(
                    "transient database error, retrying",
                    extra={
                        "attempt": attempt + 1,
                        "delay": round(delay, 3),
                        "error": _driver_message(exc),
                    },
                )
                await asyncio.sleep(delay)
                continue
            # Outside the try on purpose: an error raised by COMMIT propagates, never retried.
            await session.commit()
            return result
    raise AssertionError("unreachable")  # pragma: no cover
