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

Timeouts (`Timeouts`, for the serving process; tools and migrations run without them):
connecting, each statement, and waiting for a pooled connection are all bounded, so that
a stalled database (a frozen server, a dropped network path) fails a request instead of
holding it forever. Each engine's pool then reports to the database's circuit breaker
(`models/breaker.py`): a connection that cannot be made, or a statement whose connection
was lost or timed out, is a failure; a connection returned to the pool intact is a
success. While the breaker is open, taking a connection from the pool raises
`DatabaseUnavailable` at once.
"""

from __future__ import annotations

import math
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import Gauge
from sqlalchemy import event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import AsyncAdaptedQueuePool, NullPool, PoolProxiedConnection

from models.breaker import Breaker, Unavailable

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


@dataclass(frozen=True)
class Timeouts:
    """Bounds on the serving process's database calls, in seconds.

    `connect`: opening a connection (PostgreSQL's and SQL Server's login). `statement`:
    one statement; PostgreSQL's server cancels it then (`statement_timeout`), and the
    client gives up `STALL_GRACE` seconds later if the server does not even answer that;
    SQL Server's driver cancels it (pyodbc's query timeout). `pool`: waiting for a pooled
    connection when all are in use.
    """

    connect: float = 5.0
    statement: float = 5.0
    pool: float = 5.0


# How much longer than the server's statement_timeout the PostgreSQL client waits: a live
# server cancels the statement itself (an error, the connection stays usable); only a
# server that answers nothing at all is given up on by the client.
STALL_GRACE = 1.0
# ODBC SQLSTATEs of a timeout (query timeout, login/connection timeout).
ODBC_TIMEOUTS = frozenset({"HYT00", "HYT01"})


class DatabaseUnavailable(Unavailable):
    """The database cannot be reached, or its breaker is open: try again shortly."""

    def __init__(self, name: str = "database", retry_after: float = 1.0) -> None:
        super().__init__(name, retry_after)


def _odbc_timeout(orig: BaseException | None) -> bool:
    args: tuple[object, ...] = tuple(getattr(orig, "args", ()))
    return bool(args) and args[0] in ODBC_TIMEOUTS


def is_unavailable(exc: BaseException) -> bool:
    """Whether `exc` means "the database is down or stalled, try again later".

    The breaker is open, no connection could be made, the connection was lost, a
    statement got no answer in time, or every pooled connection stayed busy. Clients get
    SERVICE_UNAVAILABLE (HTTP 503) for these, not INTERNAL_SERVER_ERROR.
    """
    if isinstance(exc, Unavailable | PoolTimeout):
        return True
    if isinstance(exc, DBAPIError):
        return bool(exc.connection_invalidated) or _odbc_timeout(exc.orig)
    # Raised unwrapped by asyncpg: a statement's client-side timeout, a refused connect.
    return isinstance(exc, TimeoutError | ConnectionError)


class GuardedPool(AsyncAdaptedQueuePool):
    """The async queue pool, asking the database's breaker before handing out a connection.

    Connecting is where an unreachable database shows first (refused, or no answer within
    the connect timeout), and where an open breaker must stop a request before it waits.
    """

    breaker: Breaker | None = None

    def connect(self) -> PoolProxiedConnection:
        breaker = self.breaker
        if breaker is None:
            return super().connect()
        breaker.allow()
        try:
            return super().connect()
        except PoolTimeout:
            raise  # every connection busy: overloaded, not down
        except Exception as exc:
            breaker.failed(exc)
            raise DatabaseUnavailable() from exc

    def recreate(self) -> GuardedPool:
        # engine.dispose() replaces the pool with a fresh one of the same class.
        pool = super().recreate()
        assert isinstance(pool, GuardedPool)
        pool.breaker = self.breaker
        return pool


def _report_to(engine: AsyncEngine, breaker: Breaker) -> None:
    """Connections' outcomes go to the breaker; outages invalidate the connection."""
    pool = engine.sync_engine.pool
    if not isinstance(pool, GuardedPool):
        return
    pool.breaker = breaker

    @event.listens_for(engine.sync_engine, "checkin")
    def _returned(dbapi_connection: Any, _record: Any) -> None:
        # Back in the pool intact: whatever ran on it got answers (an outage invalidates
        # the connection first, below). A pool event, so statements pay nothing for it.
        if dbapi_connection is not None:
            breaker.succeeded()

    @event.listens_for(engine.sync_engine, "handle_error")
    def _failed(context: Any) -> None:
        exc = context.original_exception
        if context.connection is None or not isinstance(exc, Exception):
            # Connecting failed (the pool counted it), or the work was cancelled (a
            # request's deadline): neither is this statement's verdict on the database.
            return
        if context.is_disconnect or isinstance(exc, TimeoutError) or _odbc_timeout(exc):
            # A connection that timed out may still have the statement running: never
            # reuse it, and check the pool's other connections before they are used.
            context.is_disconnect = True
            breaker.failed(exc)


# SQLite calls the statement timeout's progress handler every this many VM instructions.
SQLITE_PROGRESS_STEPS = 10_000


def _sqlite_statement_timeout(engine: AsyncEngine, seconds: float) -> None:
    """Interrupt a statement that runs longer than `seconds` ("interrupted").

    SQLite has no statement timeout of its own: a progress handler, called by the
    connection's thread every SQLITE_PROGRESS_STEPS instructions, aborts the statement once
    its deadline (set when it starts) has passed.
    """

    @event.listens_for(engine.sync_engine, "connect")
    def _install(dbapi_connection: Any, record: Any) -> None:
        deadline = record.info["statement_deadline"] = [math.inf]

        def past_deadline() -> int:
            return int(time.monotonic() > deadline[0])

        dbapi_connection.run_async(
            lambda conn: conn.set_progress_handler(past_deadline, SQLITE_PROGRESS_STEPS)
        )

    @event.listens_for(engine.sync_engine, "before_cursor_execute")
    def _started(connection: Any, *_args: Any) -> None:
        deadline = connection.info.get("statement_deadline")
        if deadline is not None:
            deadline[0] = time.monotonic() + seconds

    @event.listens_for(engine.sync_engine, "after_cursor_execute")
    def _finished(connection: Any, *_args: Any) -> None:
        deadline = connection.info.get("statement_deadline")
        if deadline is not None:
            deadline[0] = math.inf


def _sqlite_engine(
    url: URL,
    *,
    writer: bool,
    busy_timeout: float,
    timeouts: Timeouts | None,
    pool_kwargs: dict[str, Any],
) -> AsyncEngine:
    database = url.database or ""
    if database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    else:
        pool_kwargs = {}  # an in-memory database lives in its one connection (StaticPool)
    engine = create_async_engine(url, connect_args={"timeout": busy_timeout}, **pool_kwargs)
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

    if timeouts is not None:
        _sqlite_statement_timeout(engine, timeouts.statement)
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


def mssql_connect_args(
    executor: ThreadPoolExecutor | None, timeouts: Timeouts | None
) -> dict[str, Any]:
    """aioodbc.connect's arguments: the driver's thread pool, the login and query timeouts.

    ODBC Driver 18 ignores timeouts in the connection string; pyodbc takes the login
    timeout as `timeout` (whole seconds) and the query timeout as the connection's
    `timeout` attribute, set here right after connecting (aioodbc's `after_created`).
    """
    args: dict[str, Any] = {}
    if executor is not None:
        # aioodbc runs every pyodbc call of the connection on it.
        args["executor"] = executor
    if timeouts is not None:
        query_timeout = math.ceil(timeouts.statement)

        async def _query_timeout(connection: Any) -> None:
            connection.timeout = query_timeout

        args["timeout"] = math.ceil(timeouts.connect)
        args["after_created"] = _query_timeout
    return args


def _mssql_engine(
    url: URL,
    *,
    pool: bool,
    lock_timeout: float,
    timeouts: Timeouts | None,
    pool_kwargs: dict[str, Any],
) -> AsyncEngine:
    executor = ThreadPoolExecutor(max_workers=ODBC_THREADS, thread_name_prefix="concord-odbc")
    kwargs: dict[str, Any] = {
        "isolation_level": "READ COMMITTED",
        "use_insertmanyvalues": False,
        "connect_args": mssql_connect_args(executor, timeouts),
    }
    if pool:
        kwargs.update(
            pool_pre_ping=True,
            pool_size=MSSQL_POOL_SIZE,
            max_overflow=MSSQL_MAX_OVERFLOW,
            **pool_kwargs,
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


# PostgreSQL pools, per engine: at most 20 connections, as before, but each one kept once
# opened. An overflow connection (SQLAlchemy's `max_overflow`) is closed when it is
# returned while the pool is full, so under 32 concurrent reads 10 pooled + 10 overflow
# connections opened and closed one per request or so (connect, asyncpg's set-up
# queries, close: 7 % of a trivial read's CPU at 32 connections in the profile).
POOL_SIZE = 20
MAX_OVERFLOW = 0
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
    timeouts: Timeouts | None = None,
    breaker: Breaker | None = None,
) -> AsyncEngine:
    """An engine for `url`, configured for its dialect.

    `autocommit` (PostgreSQL only): statements run without BEGIN/ROLLBACK around them, for
    engines that only read (see `Database`).

    `timeouts` bound connecting, statements and the wait for a pooled connection (SQLite:
    the latter two; its busy timeout bounds its lock waits). `breaker` (pooled engines):
    consulted before a connection is handed out, told how connections and statements end.

    `busy_timeout` (SQLite only): seconds a writer waits for another connection's write lock
    before failing with "database is locked". `lock_timeout` (SQL Server only): seconds a
    statement waits for a row or table lock before failing with error 1222. Both are
    transient errors, retried by `run_in_transaction`.
    """
    if busy_timeout < 0 or lock_timeout <= 0:
        raise ValueError("busy_timeout must not be negative, lock_timeout must be positive")
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    pool_kwargs: dict[str, Any] = {}
    if pool and breaker is not None:
        pool_kwargs["poolclass"] = GuardedPool
    if pool and timeouts is not None:
        pool_kwargs["pool_timeout"] = timeouts.pool
    if backend == "sqlite":
        engine = _sqlite_engine(
            parsed,
            writer=writer,
            busy_timeout=busy_timeout,
            timeouts=timeouts,
            pool_kwargs=pool_kwargs,
        )
    elif backend == "mssql":
        engine = _mssql_engine(
            parsed,
            pool=pool,
            lock_timeout=lock_timeout,
            timeouts=timeouts,
            pool_kwargs=pool_kwargs,
        )
    else:
        engine = _postgres_engine(
            parsed, pool=pool, autocommit=autocommit, timeouts=timeouts, pool_kwargs=pool_kwargs
        )
    if breaker is not None:
        _report_to(engine, breaker)
    return engine


def postgres_connect_args(timeouts: Timeouts | None) -> dict[str, Any]:
    """asyncpg.connect's arguments bounding the connect and each statement."""
    if timeouts is None:
        return {}
    return {
        "timeout": timeouts.connect,
        # Client side: a server that does not answer at all (frozen, cut off).
        "command_timeout": timeouts.statement + STALL_GRACE,
        # Server side: a statement running too long is cancelled; the connection stays.
        "server_settings": {"statement_timeout": str(round(timeouts.statement * 1000))},
    }


def _postgres_engine(
    url: URL,
    *,
    pool: bool,
    autocommit: bool,
    timeouts: Timeouts | None,
    pool_kwargs: dict[str, Any],
) -> AsyncEngine:
    kwargs: dict[str, Any] = {"pool_size": POOL_SIZE, "max_overflow": MAX_OVERFLOW, **pool_kwargs}
    if not pool:
        kwargs = {"poolclass": NullPool}
    if autocommit:
        kwargs["isolation_level"] = "AUTOCOMMIT"
    engine = create_async_engine(url, connect_args=postgres_connect_args(timeouts), **kwargs)
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


def _read_engine(
    url: str, lock_timeout: float, timeouts: Timeouts | None, breaker: Breaker | None
) -> AsyncEngine:
    """An engine for reads only: on PostgreSQL in autocommit, with a pool of its own.

    Every read session runs statements that each stand alone (a DataLoader batch, a page of
    the log, a compiled answer's batches), and under READ COMMITTED each statement takes
    its own snapshot anyway, so a transaction around them buys no consistency and costs
    BEGIN and ROLLBACK round trips; so does the pool's liveness ping on a connection that
    is not in autocommit (asyncpg wraps it in a transaction).
    """
    backend = make_url(url).get_backend_name()
    return make_engine(
        url,
        writer=False,
        lock_timeout=lock_timeout,
        autocommit=backend == "postgresql",
        timeouts=timeouts,
        breaker=breaker,
    )


class Database:
    """The primary and the read engine with their session factories.

    `timeouts` and `breaker` are the serving process's (see the module docstring); one
    breaker covers every engine of the database, replica included.
    """

    def __init__(
        self,
        write_url: str,
        read_url: str | None = None,
        *,
        lock_timeout: float = 5.0,
        timeouts: Timeouts | None = None,
        breaker: Breaker | None = None,
    ) -> None:
        self.breaker = breaker
        self.write_engine = make_engine(
            write_url, writer=True, lock_timeout=lock_timeout, timeouts=timeouts, breaker=breaker
        )
        self.has_replica = bool(read_url and read_url != write_url)
        dialect = self.write_engine.dialect.name
        if read_url and self.has_replica:
            self.read_engine = _read_engine(read_url, lock_timeout, timeouts, breaker)
        elif dialect in ("sqlite", "postgresql"):
            # SQLite: readers of the same file must not take the write lock.
            self.read_engine = _read_engine(write_url, lock_timeout, timeouts, breaker)
        else:
            self.read_engine = self.write_engine
        # Reads that must see every commit (the event log behind live streams, reads right
        # after the caller's own write): the primary, without SQLite's write lock.
        self.primary_read_engine = (
            _read_engine(write_url, lock_timeout, timeouts, breaker)
            if self.has_replica
            else self.read_engine
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
