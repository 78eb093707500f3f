"""Engines and session factories for the three supported databases.

A `Database` holds a write engine (the primary) and a read engine (a replica when
`DATABASE_READ_URL` is set, else the primary again). Dialect quirks live here:

* SQLite: WAL, foreign keys, a busy timeout, and `BEGIN IMMEDIATE` for writers. A deferred
  transaction that reads and then writes cannot wait for the lock in WAL mode (it fails at
  once with SQLITE_BUSY), so writers take the lock when they begin.
* SQL Server: `READ COMMITTED` named explicitly (SQLAlchemy otherwise queries the default,
  which fails on SQL Server-compatible engines) and no "insertmanyvalues" bulk form.
  aioodbc runs every blocking pyodbc call in a thread pool; each engine gets one of its
  own, with a thread for every connection its pool may open. On asyncio's default pool
  (min(32, cores + 4) threads) transactions waiting on a row lock could hold every thread,
  and the lock holder would never get one to COMMIT: the whole process hung. A bounded
  `LOCK_TIMEOUT` on every connection turns a long lock wait into error 1222, which
  `run_in_transaction` retries.
"""

from __future__ import annotations

import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from prometheus_client import Gauge
from sqlalchemy import event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import NullPool

POOL_IN_USE = Gauge(
    "concord_db_pool_connections_in_use",
    "Database connections checked out of the pool, by engine (primary, read, primary_read).",
    ["engine"],
    multiprocess_mode="livesum",
)


def _count_checkouts(engine: AsyncEngine, role: str) -> None:
    """Keep POOL_IN_USE up to date with `engine`'s pool (one inc and one dec per use)."""
    gauge = POOL_IN_USE.labels(role)

    @event.listens_for(engine.sync_engine, "checkout")
    def _out(_dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
        gauge.inc()

    @event.listens_for(engine.sync_engine, "checkin")
    def _in(_dbapi_connection: Any, _record: Any) -> None:
        gauge.dec()


def _sqlite_engine(url: URL, *, writer: bool, busy_timeout: float) -> AsyncEngine:
    database = url.database or ""
    if database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_async_engine(url, connect_args={"timeout": busy_timeout})
    busy_ms = round(busy_timeout * 1000)
    begin = "BEGIN IMMEDIATE" if writer else "BEGIN"

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control away from the driver so that "begin" below decides.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={busy_ms}")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql(begin)

    return engine


# SQL Server's connection pool (SQLAlchemy's defaults, named because the driver's thread
# pool is sized from them).
MSSQL_POOL_SIZE = 5
MSSQL_MAX_OVERFLOW = 10
# Threads beyond one per pooled connection: a connection being closed after it was
# invalidated no longer counts against the pool but may still be running its close.
ODBC_SPARE_THREADS = 4
# Every connection runs one driver call at a time, so this many threads always leave one
# free for a connection that has work, such as the COMMIT that releases a lock. Engines
# without a pool (migrations, the CLI, test set-up) use a connection or two at a time.
ODBC_THREADS = MSSQL_POOL_SIZE + MSSQL_MAX_OVERFLOW + ODBC_SPARE_THREADS


def lock_timeout_sql(seconds: float) -> str:
    """The session setting that bounds every lock wait (SQL Server's default is forever)."""
    return f"SET LOCK_TIMEOUT {round(seconds * 1000)}"


def _mssql_engine(url: URL, *, pool: bool, lock_timeout: float) -> AsyncEngine:
    executor = ThreadPoolExecutor(max_workers=ODBC_THREADS, thread_name_prefix="concord-odbc")
    kwargs: dict[str, Any] = {
        "isolation_level": "READ COMMITTED",
        "use_insertmanyvalues": False,
        # Passed on to aioodbc.connect, which runs every pyodbc call of the connection on it.
        "connect_args": {"executor": executor},
    }
    if pool:
        kwargs.update(
            pool_pre_ping=True, pool_size=MSSQL_POOL_SIZE, max_overflow=MSSQL_MAX_OVERFLOW
        )
    else:
        kwargs.update(poolclass=NullPool)
    engine = create_async_engine(url, **kwargs)
    # The threads end with the engine (short-lived engines come and go in tools and tests).
    weakref.finalize(engine.sync_engine, executor.shutdown, wait=False)
    setting = lock_timeout_sql(lock_timeout)

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # A session setting: it stays for the connection's life in the pool.
        cursor = dbapi_connection.cursor()
        cursor.execute(setting)
        cursor.close()

    return engine


# PostgreSQL pools, per engine. SQLAlchemy's default (5, and 10 more closed again when
# returned) opens and closes a connection per request under a burst of concurrent reads.
# Overflow connections are closed when returned: with 10 kept, 32 concurrent one-statement
# reads opened a connection (backend start, statements prepared and planned anew) for
# many requests, which doubled PostgreSQL's CPU per request (bench/reads.py, mid, c=32).
POOL_SIZE = 20
MAX_OVERFLOW = 10
# Pooled connections idle longer than this are pinged before use (see _ping_idle_connections).
IDLE_PING_SECONDS = 1.0


def make_engine(
    url: str | URL,
    *,
    writer: bool = True,
    pool: bool = True,
    busy_timeout: float = 30.0,
    lock_timeout: float = 5.0,
    autocommit: bool = False,
) -> AsyncEngine:
    """An engine for `url`, configured for its dialect.

    `autocommit` (PostgreSQL only): statements run without BEGIN/ROLLBACK around them, for
    engines that only read (see `Database`).

    `busy_timeout` (SQLite only): seconds a writer waits for another connection's write lock
    before failing with "database is locked". `lock_timeout` (SQL Server only): seconds a
    statement waits for a row or table lock before failing with error 1222. Both are
    transient errors, retried by `run_in_transaction`.
    """
    if busy_timeout < 0 or lock_timeout <= 0:
        raise ValueError("busy_timeout must not be negative, lock_timeout must be positive")
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return _sqlite_engine(parsed, writer=writer, busy_timeout=busy_timeout)
    if backend == "mssql":
        return _mssql_engine(parsed, pool=pool, lock_timeout=lock_timeout)
    kwargs: dict[str, Any] = {"pool_size": POOL_SIZE, "max_overflow": MAX_OVERFLOW}
    if not pool:
        kwargs = {"poolclass": NullPool}
    if autocommit:
        kwargs["isolation_level"] = "AUTOCOMMIT"
    engine = create_async_engine(parsed, **kwargs)
    if pool:
        _ping_idle_connections(engine)
    return engine


def _ping_idle_connections(engine: AsyncEngine) -> None:
    """Check a pooled connection's liveness only when it sat idle for a while.

    SQLAlchemy's `pool_pre_ping` pings on every checkout: a round trip per request, a
    tenth of a simple read's CPU. A connection returned milliseconds ago is as alive as
    its last statement showed; one idle for `IDLE_PING_SECONDS` may have been cut (a
    database restart, a failover, a proxy's idle timeout) and is pinged first, and
    replaced if the ping fails. A connection that dies while in steady use fails its
    statement instead, which invalidates the pool, as with any disconnect.
    """

    @event.listens_for(engine.sync_engine, "checkin")
    def _returned(_dbapi_connection: Any, record: Any) -> None:
        record.info["returned_at"] = time.monotonic()

    @event.listens_for(engine.sync_engine, "checkout")
    def _taken(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        returned_at = record.info.get("returned_at")
        if returned_at is None or time.monotonic() - returned_at < IDLE_PING_SECONDS:
            return
        try:
            dbapi_connection.ping()
        except Exception as exc:
            raise DisconnectionError("the pooled connection did not answer a ping") from exc


def _read_engine(url: str, lock_timeout: float) -> AsyncEngine:
    """An engine for reads only: on PostgreSQL in autocommit, with a pool of its own.

    Every read session runs statements that each stand alone (a DataLoader batch, a page of
    the log, a compiled answer's batches), and under READ COMMITTED each statement takes
    its own snapshot anyway, so a transaction around them buys no consistency and costs
    BEGIN and ROLLBACK round trips; so does the pool's liveness ping on a connection that
    is not in autocommit (asyncpg wraps it in a transaction).
    """
    backend = make_url(url).get_backend_name()
    return make_engine(
        url, writer=False, lock_timeout=lock_timeout, autocommit=backend == "postgresql"
    )


class Database:
    """The primary and the read engine with their session factories."""

    def __init__(
        self, write_url: str, read_url: str | None = None, *, lock_timeout: float = 5.0
    ) -> None:
        self.write_engine = make_engine(write_url, writer=True, lock_timeout=lock_timeout)
        self.has_replica = bool(read_url and read_url != write_url)
        dialect = self.write_engine.dialect.name
        if read_url and self.has_replica:
            self.read_engine = _read_engine(read_url, lock_timeout)
        elif dialect in ("sqlite", "postgresql"):
            # SQLite: readers of the same file must not take the write lock.
            self.read_engine = _read_engine(write_url, lock_timeout)
        else:
            self.read_engine = self.write_engine
        # Reads that must see every commit (the event log behind live streams, reads right
        # after the caller's own write): the primary, without SQLite's write lock.
        self.primary_read_engine = (
            _read_engine(write_url, lock_timeout) if self.has_replica else self.read_engine
        )
        counted: set[int] = set()
        for engine, role in (
            (self.write_engine, "primary"),
            (self.read_engine, "read"),
            (self.primary_read_engine, "primary_read"),
        ):
            if id(engine) not in counted:
                counted.add(id(engine))
                _count_checkouts(engine, role)
        self.writer = async_sessionmaker(self.write_engine, expire_on_commit=False)
        self.reader = async_sessionmaker(self.read_engine, expire_on_commit=False)
        self.primary_reader = async_sessionmaker(self.primary_read_engine, expire_on_commit=False)

    @property
    def dialect(self) -> str:
        return self.write_engine.dialect.name

    async def ping(self) -> None:
        """Raise unless the primary answers a trivial query."""
        async with self.write_engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def dispose(self) -> None:
        engines = {self.write_engine, self.read_engine, self.primary_read_engine}
        for engine in engines:
            await engine.dispose()


def session_dialect(session: AsyncSession) -> str:
    bind = session.get_bind()
    return bind.dialect.name
