"""Connect, statement and pool timeouts, and the breaker behind the pool.

PostgreSQL runs for real (the shared server for statements; a socket that accepts and never
answers for connects). SQL Server's settings are checked as compiled, and its login
timeout for real against the ODBC driver in tests/models/test_odbc.py.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from models.breaker import Breaker
from models.database import (
    Database,
    DatabaseUnavailable,
    GuardedPool,
    Timeouts,
    is_unavailable,
    make_engine,
    mssql_connect_args,
)
from tests.services import postgres_url, unavailable

SHORT = Timeouts(connect=0.5, statement=0.5, pool=0.5)


def database_breaker() -> Breaker:
    return Breaker(
        "database",
        threshold=2,
        recovery_seconds=60,
        trial_seconds=5,
        is_failure=lambda exc: True,
        unavailable=DatabaseUnavailable,
    )


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts TCP connections and never says a word (a frozen server)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield listener.getsockname()[1]


@pytest.mark.postgres
async def test_a_long_statement_is_cancelled_by_the_server_and_is_no_outage() -> None:
    breaker = database_breaker()
    engine = make_engine(postgres_url(), timeouts=SHORT, breaker=breaker)
    try:
        started = time.monotonic()
        try:
            async with engine.connect() as conn:
                with pytest.raises(DBAPIError, match="statement timeout") as raised:
                    await conn.execute(text("SELECT pg_sleep(5)"))
        except OSError as exc:
            unavailable(f"PostgreSQL at {postgres_url()} is unreachable: {exc!r}")
        assert time.monotonic() - started < 3
        assert not is_unavailable(raised.value)  # a slow statement, not a dead database
        async with engine.connect() as conn:
            assert (await conn.execute(text("SELECT 1"))).scalar() == 1
        assert breaker.state == "closed"
    finally:
        await engine.dispose()


async def test_connecting_to_a_silent_server_gives_up_and_opens_the_breaker(
    silent_port: int,
) -> None:
    breaker = database_breaker()
    url = f"postgresql+asyncpg://postgres@127.0.0.1:{silent_port}/test"
    engine = make_engine(url, timeouts=SHORT, breaker=breaker)
    try:
        for _ in range(2):
            started = time.monotonic()
            with pytest.raises(DatabaseUnavailable) as raised:
                async with engine.connect():
                    pass
            assert time.monotonic() - started < 3
            assert isinstance(raised.value.__cause__, TimeoutError)
        assert breaker.state == "open"
        started = time.monotonic()
        with pytest.raises(DatabaseUnavailable) as raised:
            async with engine.connect():
                pass
        assert raised.value.__cause__ is None  # refused by the breaker, without waiting
        assert time.monotonic() - started < 0.5
        assert is_unavailable(raised.value)
    finally:
        await engine.dispose()


async def test_every_engine_of_a_database_waits_that_long_for_a_pooled_connection(
    tmp_path: Path,
) -> None:
    db = Database(
        f"sqlite+aiosqlite:///{tmp_path / 'c.db'}", timeouts=SHORT, breaker=database_breaker()
    )
    try:
        for engine in (db.write_engine, db.read_engine):
            pool = engine.sync_engine.pool
            assert isinstance(pool, GuardedPool)
            assert pool.timeout() == SHORT.pool
            assert pool.breaker is db.breaker
        await db.ping()
        await db.write_engine.dispose()  # a new pool keeps the breaker
        assert getattr(db.write_engine.sync_engine.pool, "breaker", None) is db.breaker
    finally:
        await db.dispose()


async def test_a_long_sqlite_statement_is_interrupted(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'c.db'}", timeouts=SHORT)
    count = text(
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 1000000000)"
        " SELECT count(*) FROM c"
    )
    try:
        async with engine.connect() as conn:
            started = time.monotonic()
            with pytest.raises(DBAPIError, match="interrupted"):
                await conn.execute(count)
            assert time.monotonic() - started < 3
            # The next statement has a deadline of its own.
            assert (await conn.execute(text("SELECT 1"))).scalar() == 1
    finally:
        await engine.dispose()


def test_tools_run_without_timeouts_or_breaker() -> None:
    engine = make_engine(postgres_url(), pool=False)
    assert not isinstance(engine.sync_engine.pool, GuardedPool)
    assert mssql_connect_args(None, None) == {}


async def test_sql_server_gets_a_login_and_a_query_timeout_in_whole_seconds() -> None:
    args = mssql_connect_args(None, Timeouts(connect=2.5, statement=4.2, pool=1))
    assert args["timeout"] == 3  # pyodbc's login timeout

    class PyodbcConnection:  # the one attribute aioodbc's after_created hook sets
        timeout = 0

    connection = PyodbcConnection()
    await args["after_created"](connection)
    assert connection.timeout == 5  # pyodbc's query timeout (SQL_ATTR_QUERY_TIMEOUT)
