"""Retrying transactions on transient errors (models/transient.py, models/transaction.py).

The retry tests use real errors from real databases: on PostgreSQL errors raised by the server
itself (an injected SQLSTATE, a genuine deadlock between two transactions, an error raised by
COMMIT), on SQLite a real "database is locked" from another connection holding the write lock.
Each asserts how many attempts ran and that the work's effect is in the database exactly once.

SQL Server cannot run here, so its classification is checked on real `pyodbc` exception
values carrying the messages ODBC Driver 18 produces, wrapped the way SQLAlchemy wraps them.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from models.database import make_engine
from models.transaction import run_in_transaction
from models.transient import is_transient, mssql_diagnostics
from tests.services import scratch_postgres_database, unavailable


class Attempts:
    """A unit of work's attempt counter."""

    def __init__(self) -> None:
        self.count = 0

    def next(self) -> int:
        self.count += 1
        return self.count


# --- SQL Server: classification of real pyodbc errors ---------------------------------------

DRIVER = "[Microsoft][ODBC Driver 18 for SQL Server]"
SERVER = DRIVER + "[SQL Server]"

MSSQL_ERRORS: list[tuple[str, str, str, bool]] = [
    # (pyodbc class, SQLSTATE, message, transient)
    (
        "OperationalError",
        "40001",
        f"[40001] {SERVER}Transaction (Process ID 52) was deadlocked on lock resources with "
        "another process and has been chosen as the deadlock victim. Rerun the transaction. "
        "(1205) (SQLExecDirectW)",
        True,
    ),
    (
        "Error",
        "40001",
        f"[40001] {SERVER}Transaction (Process ID 77) was deadlocked on lock | communication "
        "buffer resources with another process and has been chosen as the deadlock victim. "
        "Rerun the transaction. (1205) (SQLExecDirectW)",
        True,
    ),
    (
        "Error",
        "HY000",
        f"[HY000] {SERVER}Lock request time out period exceeded. (1222) (SQLExecDirectW)",
        True,
    ),
    (
        "OperationalError",
        "42000",
        f"[42000] {SERVER}The service is currently busy. Retry the request after 10 seconds. "
        "Incident ID: 7a3c0f1e. Code: 4325376. (40501) (SQLExecDirectW)",
        True,
    ),
    (
        "OperationalError",
        "08001",
        f"[08001] {SERVER}Database 'concord' on server 'concord-prod' is not currently "
        "available. Please retry the connection later. (40613) (SQLDriverConnect)",
        True,
    ),
    (
        "InterfaceError",
        "42000",
        f'[42000] {SERVER}Cannot open database "concord" requested by the login. The login '
        f"failed. (4060) (SQLDriverConnect); [42000] {SERVER}Login failed for user 'concord'. "
        "(18456)",
        True,
    ),
    (
        "OperationalError",
        "08S01",
        f"[08S01] {DRIVER}TCP Provider: The specified network name is no longer available. "
        f"(64) (SQLExecDirectW); [08S01] {DRIVER}Communication link failure (64)",
        True,
    ),
    (
        "OperationalError",
        "08S01",
        f"[08S01] {DRIVER}TCP Provider: The semaphore timeout period has expired. (121) "
        "(SQLExecDirectW)",
        True,
    ),
    (
        "Error",
        "42000",
        f"[42000] {SERVER}Resource ID : 1. The request limit for the database is 200 and has "
        "been reached. (10928) (SQLExecDirectW)",
        True,
    ),
    # Timeouts: the client stopped waiting, the outcome is unknown. Never retried.
    (
        "OperationalError",
        "HYT00",
        f"[HYT00] {DRIVER}Query timeout expired (0) (SQLExecDirectW)",
        False,
    ),
    (
        "OperationalError",
        "HYT00",
        f"[HYT00] {DRIVER}Login timeout expired (0) (SQLDriverConnect)",
        False,
    ),
    # Not transient, and a "(64)" inside the message text is not an error number.
    (
        "IntegrityError",
        "23000",
        f"[23000] {SERVER}Violation of UNIQUE KEY constraint 'uq_boards_rank'. Cannot insert "
        "duplicate key in object 'dbo.boards'. The duplicate key value is (64). (2627) "
        f"(SQLExecDirectW); [01000] {SERVER}The statement has been terminated. (3621)",
        False,
    ),
    (
        "ProgrammingError",
        "42S02",
        f"[42S02] {SERVER}Invalid object name 'event_streams'. (208) (SQLExecDirectW)",
        False,
    ),
]


@pytest.fixture(scope="module")
def pyodbc() -> ModuleType:
    try:
        import pyodbc
    except ImportError as exc:
        unavailable(f"pyodbc cannot load libodbc.so.2: run scripts/install-odbc-driver ({exc})")
    module: ModuleType = pyodbc
    return module


def wrapped(pyodbc: ModuleType, kind: str, sqlstate: str, message: str) -> DBAPIError:
    """The error as SQLAlchemy raises it from a pyodbc cursor."""
    orig = getattr(pyodbc, kind)(sqlstate, message)
    error = DBAPIError.instance("UPDATE cards SET …", None, orig, pyodbc.Error)
    assert isinstance(error, DBAPIError)
    return error


@pytest.mark.parametrize(
    ("kind", "sqlstate", "message", "transient"),
    MSSQL_ERRORS,
    ids=[message.split("(SQL")[0][-12:].strip() for _, _, message, _ in MSSQL_ERRORS],
)
def test_mssql_errors_are_classified_like_ef_core(
    pyodbc: ModuleType, kind: str, sqlstate: str, message: str, transient: bool
) -> None:
    assert is_transient(wrapped(pyodbc, kind, sqlstate, message), "mssql") is transient


def test_mssql_diagnostics_reads_every_record(pyodbc: ModuleType) -> None:
    _, sqlstate, message, _ = MSSQL_ERRORS[5]
    orig = pyodbc.InterfaceError(sqlstate, message)
    assert mssql_diagnostics(orig) == [("42000", 4060), ("42000", 18456)]
    _, sqlstate, message, _ = MSSQL_ERRORS[-2]
    assert mssql_diagnostics(pyodbc.IntegrityError(sqlstate, message)) == [
        ("23000", 2627),
        ("01000", 3621),
    ]


def test_only_database_errors_of_the_right_dialect_are_transient(pyodbc: ModuleType) -> None:
    deadlock = wrapped(pyodbc, *MSSQL_ERRORS[0][:3])
    assert not is_transient(deadlock, "postgresql")
    assert not is_transient(RuntimeError("deadlocked (1205)"), "mssql")
    assert not is_transient(deadlock, "mysql")


# --- SQLite: a real "database is locked" ----------------------------------------------------


@pytest.fixture
async def sqlite_db(tmp_path: Path) -> AsyncIterator[tuple[AsyncEngine, Path]]:
    path = tmp_path / "retry.db"
    # A small busy timeout: a locked attempt fails after 50 ms instead of 30 s.
    engine = make_engine(f"sqlite+aiosqlite:///{path}", busy_timeout=0.05)
    async with engine.begin() as conn:
        await conn.execute(text("CREATE TABLE counter (id INTEGER PRIMARY KEY, n INTEGER)"))
        await conn.execute(text("INSERT INTO counter VALUES (1, 0)"))
    yield engine, path
    await engine.dispose()


@pytest.fixture
def write_lock(sqlite_db: tuple[AsyncEngine, Path]) -> Iterator[sqlite3.Connection]:
    """Another connection holding the database's write lock until it rolls back."""
    holder = sqlite3.connect(sqlite_db[1], isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    yield holder
    holder.close()


async def counter(engine: AsyncEngine, row: int = 1) -> int:
    async with engine.connect() as conn:
        return int(
            (await conn.execute(text(f"SELECT n FROM counter WHERE id = {row}"))).scalar_one()
        )


async def test_sqlite_database_is_locked_is_retried(
    sqlite_db: tuple[AsyncEngine, Path], write_lock: sqlite3.Connection
) -> None:
    engine, _ = sqlite_db
    attempts = Attempts()
    errors: list[str] = []

    async def work(session: AsyncSession) -> str:
        if attempts.next() == 2:
            write_lock.rollback()  # the other writer finishes between our attempts
        try:
            await session.execute(text("UPDATE counter SET n = n + 1 WHERE id = 1"))
        except OperationalError as exc:
            errors.append(str(exc.orig))
            raise
        return "done"

    assert await run_in_transaction(async_sessionmaker(engine), work) == "done"
    assert errors == ["database is locked"]
    assert attempts.count == 2
    assert await counter(engine) == 1


async def test_sqlite_retries_are_bounded(
    sqlite_db: tuple[AsyncEngine, Path], write_lock: sqlite3.Connection
) -> None:
    engine, _ = sqlite_db
    attempts = Attempts()

    async def work(session: AsyncSession) -> None:
        attempts.next()
        await session.execute(text("UPDATE counter SET n = n + 1 WHERE id = 1"))

    with pytest.raises(OperationalError, match="database is locked"):
        await run_in_transaction(async_sessionmaker(engine), work, attempts=3)
    assert attempts.count == 3
    write_lock.rollback()
    assert await counter(engine) == 0


async def test_sqlite_non_transient_error_is_not_retried(
    sqlite_db: tuple[AsyncEngine, Path],
) -> None:
    engine, _ = sqlite_db
    attempts = Attempts()

    async def work(session: AsyncSession) -> None:
        attempts.next()
        await session.execute(text("UPDATE counter SET n = n + 1 WHERE id = 1"))
        await session.execute(text("INSERT INTO counter VALUES (1, 0)"))  # duplicate key

    with pytest.raises(IntegrityError):
        await run_in_transaction(async_sessionmaker(engine), work)
    assert attempts.count == 1
    assert await counter(engine) == 0  # rolled back


# --- PostgreSQL: injected SQLSTATEs, a real deadlock, an error raised by COMMIT ------------


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    with scratch_postgres_database() as url:
        yield url


@pytest.fixture
async def pg(postgres_url: str) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(postgres_url)
    async with engine.begin() as conn:
        for statement in (
            "DROP TABLE IF EXISTS counter, applied, guarded CASCADE",
            "CREATE TABLE counter (id int PRIMARY KEY, n int NOT NULL)",
            "INSERT INTO counter VALUES (1, 0), (2, 0)",
            "CREATE TABLE applied (id serial PRIMARY KEY, attempt int NOT NULL)",
            # A row in `guarded` makes COMMIT fail with a serialization failure: a deferred
            # constraint trigger runs at commit time.
            "CREATE TABLE guarded (id int)",
            """CREATE OR REPLACE FUNCTION fail_at_commit() RETURNS trigger LANGUAGE plpgsql AS
               $$ BEGIN RAISE EXCEPTION 'injected at commit' USING ERRCODE = '40001'; END $$""",
            """CREATE CONSTRAINT TRIGGER fail_at_commit AFTER INSERT ON guarded
               DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION fail_at_commit()""",
        ):
            await conn.execute(text(statement))
    yield engine
    await engine.dispose()


async def applied(engine: AsyncEngine) -> list[int]:
    async with engine.connect() as conn:
        rows = await conn.execute(text("SELECT attempt FROM applied ORDER BY id"))
        return [int(attempt) for attempt in rows.scalars()]


def inject(sqlstate: str) -> Any:
    return text("DO $$ BEGIN RAISE EXCEPTION 'injected' USING ERRCODE = '" + sqlstate + "'; END $$")


@pytest.mark.postgres
@pytest.mark.parametrize("sqlstate", ["40001", "40P01"])
async def test_postgres_injected_transient_error_is_retried_once(
    pg: AsyncEngine, sqlstate: str
) -> None:
    attempts = Attempts()

    async def work(session: AsyncSession) -> int:
        attempt = attempts.next()
        await session.execute(text("UPDATE counter SET n = n + 1 WHERE id = 1"))
        await session.execute(text("INSERT INTO applied (attempt) VALUES (:a)"), {"a": attempt})
        if attempt == 1:
            await session.execute(inject(sqlstate))
        return attempt

    assert await run_in_transaction(async_sessionmaker(pg), work) == 2
    assert attempts.count == 2
    assert await counter(pg) == 1
    assert await applied(pg) == [2]  # the first attempt's writes were rolled back


@pytest.mark.postgres
async def test_postgres_retries_are_bounded(pg: AsyncEngine) -> None:
    attempts = Attempts()

    async def work(session: AsyncSession) -> None:
        attempts.next()
        await session.execute(text("UPDATE counter SET n = n + 1 WHERE id = 1"))
        await session.execute(inject("40001"))

    with pytest.raises(DBAPIError) as raised:
        await run_in_transaction(async_sessionmaker(pg), work, attempts=3)
    assert is_transient(raised.value, "postgresql")
    assert attempts.count == 3
    assert await counter(pg) == 0


@pytest.mark.postgres
async def test_postgres_non_transient_error_is_not_retried(pg: AsyncEngine) -> None:
    attempts = Attempts()

    async def work(session: AsyncSession) -> None:
        attempts.next()
        await session.execute(text("UPDATE counter SET n = n + 1 WHERE id = 1"))
        await session.execute(inject("23505"))  # unique_violation

    with pytest.raises(IntegrityError):
        await run_in_transaction(async_sessionmaker(pg), work)
    assert attempts.count == 1
    assert await counter(pg) == 0


@pytest.mark.postgres
async def test_postgres_error_raised_by_commit_is_not_retried(pg: AsyncEngine) -> None:
    """A transient SQLSTATE, but from COMMIT: the outcome is not ours to guess, so no retry."""
    attempts = Attempts()

    async def work(session: AsyncSession) -> None:
        attempts.next()
        await session.execute(text("UPDATE counter SET n = n + 1 WHERE id = 1"))
        await session.execute(text("INSERT INTO guarded VALUES (1)"))  # fails at COMMIT

    with pytest.raises(DBAPIError, match="injected at commit") as raised:
        await run_in_transaction(async_sessionmaker(pg), work)
    assert is_transient(raised.value, "postgresql")  # retried if it had come before COMMIT
    assert attempts.count == 1
    assert await counter(pg) == 0


@pytest.mark.postgres
async def test_postgres_real_deadlock_victim_is_retried(pg: AsyncEngine, postgres_url: str) -> None:
    """Two transactions lock rows 1 and 2 in opposite orders; ours is the victim, then wins.

    Deterministic: the other transaction waits on our row first and has a long
    deadlock_timeout, ours waits second with a short one, so ours runs the deadlock check
    and is the one PostgreSQL aborts (40P01).
    """
    import asyncpg  # type: ignore[import-untyped]

    other = await asyncpg.connect(
        make_url(postgres_url).set(drivername="postgresql").render_as_string(hide_password=False)
    )
    try:
        await other.execute("SET deadlock_timeout = '30s'")
        other_tx = other.transaction()
        await other_tx.start()
        await other.execute("UPDATE counter SET n = n + 10 WHERE id = 2")
        other_pid = other.get_server_pid()
        blocked: asyncio.Task[str] | None = None
        attempts = Attempts()
        failures: list[str | None] = []

        async def work(session: AsyncSession) -> None:
            nonlocal blocked
            attempt = attempts.next()
            if attempt == 2:
                assert blocked is not None
                await blocked  # the other transaction got row 1 once we were rolled back
                await other_tx.commit()
            await session.execute(text("SET LOCAL deadlock_timeout = '50ms'"))
            await session.execute(text("UPDATE counter SET n = n + 1 WHERE id = 1"))
            if attempt == 1:
                blocked = asyncio.create_task(
                    other.execute("UPDATE counter SET n = n + 10 WHERE id = 1")
                )
                waiting = text("SELECT cardinality(pg_blocking_pids(:pid)) > 0")
                for _ in range(500):
                    if (await session.execute(waiting, {"pid": other_pid})).scalar_one():
                        break
                    await asyncio.sleep(0.01)
                else:
                    pytest.fail("the other transaction never waited for our lock")
            try:
                await session.execute(text("UPDATE counter SET n = n + 1 WHERE id = 2"))
            except DBAPIError as exc:
                failures.append(getattr(exc.orig, "sqlstate", None))
                raise

        await run_in_transaction(async_sessionmaker(pg), work)
    finally:
        await other.close()

    assert failures == ["40P01"]
    assert attempts.count == 2
    assert await counter(pg, 1) == 11  # theirs (+10) and ours (+1), ours exactly once
    assert await counter(pg, 2) == 11
