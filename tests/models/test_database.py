"""Engine set-up per dialect, checked without a server where one is not needed.

SQL Server: the ODBC driver's blocking calls run on a thread pool of the engine's own,
with a thread for every connection the pool may open (asyncio's default pool has
min(32, cores + 4) threads: transactions waiting on a lock took them all and the lock
holder never got one to COMMIT), and every connection bounds its lock waits.
"""

from __future__ import annotations

import gc
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from sqlalchemy import event

from models.database import ODBC_THREADS, make_engine
from tests.services import unavailable

MSSQL_URL = (
    "mssql+aioodbc://concord:secret@127.0.0.1:1/concord"
    "?driver=ODBC+Driver+18+for+SQL+Server&Encrypt=yes&TrustServerCertificate=yes"
)


class _Stop(Exception):
    """Raised by the do_connect listener: the arguments are all the test wanted."""


class _RecordingConnection:
    """Stands in for the DBAPI connection handed to the `connect` event (no server here)."""

    def __init__(self) -> None:
        self.statements: list[str] = []

    def cursor(self) -> _RecordingConnection:
        return self

    def execute(self, statement: str) -> None:
        self.statements.append(statement)

    def close(self) -> None:
        pass


def _mssql_engine(**kwargs: Any) -> Any:
    try:
        return make_engine(MSSQL_URL, **kwargs)
    except ImportError as exc:  # pyodbc needs unixODBC's libodbc.so.2
        unavailable(f"pyodbc cannot be imported (run scripts/install-odbc-driver): {exc}")


@pytest.mark.parametrize("pool", [True, False])
async def test_odbc_connections_get_an_executor_with_a_thread_for_each(pool: bool) -> None:
    engine = _mssql_engine(pool=pool)
    seen: dict[str, Any] = {}

    @event.listens_for(engine.sync_engine, "do_connect")
    def _capture(dialect: Any, record: Any, cargs: Any, cparams: dict[str, Any]) -> None:
        seen.update(cparams)
        raise _Stop

    try:
        with pytest.raises(_Stop):
            async with engine.connect():
                pass
    finally:
        await engine.dispose()
    executor = seen["executor"]  # what aioodbc.connect runs every pyodbc call on
    assert isinstance(executor, ThreadPoolExecutor)
    assert executor._max_workers == ODBC_THREADS
    if pool:
        # More threads than connections: a lock holder always finds one free to COMMIT.
        assert ODBC_THREADS > engine.pool.size() + engine.pool._max_overflow
        assert engine.pool.size() + engine.pool._max_overflow == 15
    # The threads go with the engine: tools and tests create many short-lived engines.
    del engine, _capture
    gc.collect()
    assert executor._shutdown


async def test_every_odbc_connection_bounds_its_lock_waits() -> None:
    engine = _mssql_engine(lock_timeout=2.5)
    connection = _RecordingConnection()
    try:
        # Ours, not the dialect's own (which registers pyodbc output converters).
        for listener in engine.sync_engine.pool.dispatch.connect:
            if listener.__module__ == "models.database":
                listener(connection, None)
    finally:
        await engine.dispose()
    # Error 1222 when a lock wait exceeds it: transient, so the transaction is retried.
    assert connection.statements == ["SET LOCK_TIMEOUT 2500"]


def test_lock_timeout_must_be_positive() -> None:
    with pytest.raises(ValueError, match="lock_timeout"):
        make_engine(MSSQL_URL, lock_timeout=0)
