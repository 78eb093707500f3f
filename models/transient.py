"""Which database errors mean "this transaction was rolled back, run it again".

Only errors after which nothing of the transaction can have been committed qualify:
deadlock victims, lock and serialization failures, throttling and failover notices, a
connection that broke before COMMIT was sent. A timeout is never retried here: the client
gave up waiting, not the server, so whether the statement ran is unknown. `run_in_transaction`
adds the other half of the rule: an error raised by COMMIT itself is never retried, so a
retried mutation cannot apply twice.
"""

from __future__ import annotations

import re

from sqlalchemy.exc import DBAPIError

# SQL Server native error numbers, after EF Core's SqlServerTransientExceptionDetector:
# 1205 deadlock victim, 1222 lock request timeout (the statement was cancelled by the server
# and the caller rolls back), 40501 service busy, 40613 database unavailable, 40197 service
# error during failover, 49918-49920 not enough resources / too many operations, 10928 and
# 10929 resource limits, 4060 cannot open the database (failover in progress), and the
# transport errors 233, 64 and 121 (connection closed or semaphore timeout before a result).
MSSQL_TRANSIENT = frozenset(
    {1205, 1222, 40501, 40613, 40197, 49918, 49919, 49920, 10928, 10929, 4060, 233, 64, 121}
)
# ODBC SQLSTATEs that mean "the client stopped waiting": query timeout, connection timeout.
ODBC_TIMEOUTS = frozenset({"HYT00", "HYT01"})
# ODBC SQLSTATE 40001 (serialization failure): the server rolled the transaction back.
ODBC_SERIALIZATION_FAILURE = "40001"
# PostgreSQL: serialization_failure, deadlock_detected.
POSTGRES_TRANSIENT = frozenset({"40001", "40P01"})
# SQLite primary result codes: SQLITE_BUSY ("database is locked"), SQLITE_LOCKED.
SQLITE_BUSY_OR_LOCKED = frozenset({5, 6})

# pyodbc formats each ODBC diagnostic record as "[SQLSTATE] message (native)", the first one
# followed by " (SQLFunctionW)" and the others separated by "; ". Only a number in that
# closing position is a native error number: "(64)" inside a message (a duplicate key value,
# say) is not.
_MSSQL_RECORD = re.compile(
    r"\[(?P<state>[0-9A-Z]{5})\] .*?\((?P<native>-?\d+)\)(?= \(SQL\w+\)|; \[|$)"
)


def mssql_diagnostics(orig: BaseException) -> list[tuple[str, int]]:
    """(SQLSTATE, native error number) of every record in a pyodbc error, in order.

    "[40001] [Microsoft][ODBC Driver 18 for SQL Server][SQL Server]Transaction (Process ID
    52) was deadlocked … Rerun the transaction. (1205) (SQLExecDirectW)" → [("40001", 1205)].
    """
    args: tuple[object, ...] = tuple(getattr(orig, "args", ()))
    message = args[1] if len(args) >= 2 and isinstance(args[1], str) else " ".join(map(str, args))
    return [
        (match["state"], int(match["native"]))
        for match in _MSSQL_RECORD.finditer(message.replace("\n", " "))
    ]


def mssql_error_numbers(orig: BaseException) -> set[int]:
    """The native SQL Server error numbers carried by a pyodbc error."""
    return {native for _state, native in mssql_diagnostics(orig)}


def _mssql_sqlstate(orig: BaseException) -> str | None:
    args: tuple[object, ...] = tuple(getattr(orig, "args", ()))
    if args and isinstance(args[0], str) and len(args[0]) == 5:
        return args[0]
    return None


def _postgres_sqlstate(orig: BaseException) -> str | None:
    # SQLAlchemy's asyncpg adapter copies the code to `sqlstate`/`pgcode`; psycopg has both.
    for error in (orig, orig.__cause__):
        for attr in ("sqlstate", "pgcode"):
            value = getattr(error, attr, None)
            if isinstance(value, str):
                return value
    return None


def _sqlite_transient(orig: BaseException) -> bool:
    code = getattr(orig, "sqlite_errorcode", None)
    if isinstance(code, int):
        # Extended codes (SQLITE_BUSY_SNAPSHOT, …) carry the primary code in the low byte.
        return code & 0xFF in SQLITE_BUSY_OR_LOCKED
    message = str(orig).lower()
    return "database is locked" in message or "database table is locked" in message


def _mssql_transient(orig: BaseException) -> bool:
    diagnostics = mssql_diagnostics(orig)
    states = {state for state, _native in diagnostics}
    sqlstate = _mssql_sqlstate(orig)
    if sqlstate is not None:
        states.add(sqlstate)
    if states & ODBC_TIMEOUTS:
        return False
    if ODBC_SERIALIZATION_FAILURE in states:
        return True
    return any(native in MSSQL_TRANSIENT for _state, native in diagnostics)


def is_transient(exc: BaseException, dialect: str) -> bool:
    """True when `exc` rolled the transaction back and running it again may succeed."""
    if not isinstance(exc, DBAPIError) or exc.orig is None:
        return False
    orig = exc.orig
    if dialect == "sqlite":
        return _sqlite_transient(orig)
    if dialect == "postgresql":
        return _postgres_sqlstate(orig) in POSTGRES_TRANSIENT
    if dialect == "mssql":
        return _mssql_transient(orig)
    return False
