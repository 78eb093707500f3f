"""Pooled PostgreSQL connections: reads run outside transactions, idle ones are pinged.

A connection the database dropped while it sat in the pool (a restart, a failover, a
proxy's idle timeout) must not fail the next request: after `IDLE_PING_SECONDS` a
checkout pings it first and replaces it when the ping fails.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from sqlalchemy import text

from models import database
from models.database import Database
from tests.services import scratch_postgres_database

pytestmark = [pytest.mark.postgres]


@pytest.fixture(scope="module")
def postgres() -> Iterator[str]:
    with scratch_postgres_database() as url:
        yield url


async def _backend_pid(db: Database) -> int:
    async with db.reader() as session:
        return int((await session.execute(text("SELECT pg_backend_pid()"))).scalar_one())


async def test_a_connection_dropped_while_idle_is_replaced_before_use(
    postgres: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(database, "IDLE_PING_SECONDS", 0.2)
    db = Database(postgres)
    try:
        first = await _backend_pid(db)
        async with db.writer() as admin:
            await admin.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": first})
            await admin.commit()
        await asyncio.sleep(0.3)
        # The pooled connection is dead; the checkout's ping notices and replaces it.
        second = await _backend_pid(db)
        assert second != first
    finally:
        await db.dispose()


async def test_reads_run_outside_a_transaction(postgres: str) -> None:
    db = Database(postgres)
    try:
        async with db.reader() as session:
            first = (await session.execute(text("SELECT now()"))).scalar_one()
            await session.execute(text("SELECT pg_sleep(0.05)"))
            second = (await session.execute(text("SELECT now()"))).scalar_one()
        # now() is the start of the transaction: one transaction around the session's
        # statements would give the same value twice.
        assert second > first
    finally:
        await db.dispose()
