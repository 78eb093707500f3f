"""Which database errors mean "this transaction was rolled back, run it again".

Only errors that guarantee the server undid the whole transaction qualify: deadlock victims,
lock and serialization failures, throttling and failover notices. A timeout or a broken
connection during COMMIT has an unknown outcome and is never retried here, so a retried
mutation cannot apply twice.
"""

from __future__ import annotations

import re

from sqlalchemy.exc import DBAPIError

# SQL Server error numbers, after EF Core's SqlServerTransientExceptionDetector: deadlock
# victim, lock request timeout, Azure/RDS throttling and failover, login failures during
# failover, and transport errors that occur before a request is sent.
MSSQL_TRANSIENT = frozenset(
    {1205, 1222, 40501, 40613, 40197, 49918, 49919, 49920, 10928, 10929, 4060, 233, 64, 121}
)
# PostgreSQL: serialization_failure, deadlock_detected.
POSTGRES_TRANSIENT = frozenset({"40001", "40P01"})
# ODBC SQLSTATE for "timeout expired": the statement may or may not have run.
ODBC_TIMEOUT = "HYT00"

_NATIVE_CODE = re.compile(r"\((\d+)\)")


def _sqlstate(orig: BaseException) -> str | None:
    for attr in ("sqlstate", "pgcode"):
        value = getattr(orig, attr, None)
        if isinstance(value, str):
            return value
    cause = orig.__cause__
    value = getattr(cause, "sqlstate", None)
    return value if isinstance(value, str) else None


def mssql_error_numbers(orig: BaseException) -> set[int]:
    """Native error numbers in a pyodbc message: "… deadlocked … (1205) (SQLExecDirectW)"."""
    text = " ".join(str(arg) for arg in orig.args)
    return {int(code) for code in _NATIVE_CODE.findall(text)}


def is_transient(exc: BaseException, dialect: str) -> bool:
    """True when `exc` rolled the transaction back and running it again may succeed."""
    if not isinstance(exc, DBAPIError) or exc.orig is None:
        return False
    orig = exc.orig
    if dialect == "sqlite":
        message = str(orig).lower()
        return "database is locked" in message or "database table is locked" in message
    if dialect == "postgresql":
        return _sqlstate(orig) in POSTGRES_TRANSIENT
    if dialect == "mssql":
        args = getattr(orig, "args", ())
        if args and args[0] == ODBC_TIMEOUT:
            return False
        return bool(mssql_error_numbers(orig) & MSSQL_TRANSIENT)
    return False
