"""Optimistic concurrency: the version column, its wire form and the guarded writes.

On SQLite and PostgreSQL the version is an integer that each UPDATE increments in the
same statement; on SQL Server it is a ROWVERSION the server assigns. Either way a write
names the version it expects in its WHERE clause and returns the new one (RETURNING, or
OUTPUT on SQL Server). No row back means someone else wrote first. The row count is never
consulted: with OUTPUT, pyodbc reports -1.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import Table, delete, insert, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.dml import ReturningDelete, ReturningInsert, ReturningUpdate

from models.base import Base
from models.database import session_dialect

ROWVERSION_BYTES = 8


class MalformedVersion(ValueError):
    """An expectedVersion that no row could ever have."""


def uses_rowversion(dialect: str) -> bool:
    return dialect == "mssql"


def encode_version(value: int | bytes) -> str:
    """The opaque string clients see: decimal for integers, hex for a ROWVERSION."""
    if isinstance(value, bytes | bytearray):
        return bytes(value).hex()
    return str(value)


def decode_version(text: str, dialect: str) -> int | bytes:
    """Parse a client's expectedVersion for this database, or raise MalformedVersion."""
    if uses_rowversion(dialect):
        if len(text) != ROWVERSION_BYTES * 2:
            raise MalformedVersion(text)
        try:
            return bytes.fromhex(text)
        except ValueError as exc:
            raise MalformedVersion(text) from exc
    if not text.isascii() or not text.isdigit() or len(text) > 18:
        raise MalformedVersion(text)
    return int(text)


def _table(model: type[Base]) -> Table:
    table = model.__table__
    if not isinstance(table, Table):  # pragma: no cover - every model maps one table
        raise TypeError(f"{model.__name__} is not mapped to a single table")
    return table


def insert_versioned_stmt(
    model: type[Base], values: dict[str, Any], dialect: str
) -> ReturningInsert[Any]:
    """INSERT one row, returning its first version (the server writes a ROWVERSION itself)."""
    table = _table(model)
    row_values = dict(values)
    if "version" in row_values:
        raise ValueError("the version column is written by insert_versioned, not by callers")
    if not uses_rowversion(dialect):
        row_values["version"] = 1
    return insert(table).values(**row_values).returning(table.c.version)


def update_versioned_stmt(
    model: type[Base],
    entity_id: uuid.UUID,
    expected: int | bytes,
    values: dict[str, Any],
    dialect: str,
) -> ReturningUpdate[Any]:
    """UPDATE … SET … WHERE id = :id AND version = :expected, returning the new version.

    The version check is in the WHERE clause, so it holds under any isolation level and under
    READ_COMMITTED_SNAPSHOT: SQL Server re-reads the latest committed row under an update lock
    before changing it, and a row whose version moved on simply does not match. On SQL Server
    the new ROWVERSION comes back through OUTPUT inserted.version; that value is written by
    this very statement, so it is not subject to the stale-OUTPUT behaviour seen for counters
    on SQL Server-compatible engines after a lock wait (and after such a wait the row no longer
    matches anyway, because every write changes its version).
    """
    table = _table(model)
    row_values = dict(values)
    if not row_values:
        # On SQL Server nothing else would be SET (the server bumps the ROWVERSION itself),
        # and an UPDATE without a SET clause is not SQL; the caller validates "no change".
        raise ValueError("update_versioned needs at least one column to change")
    if "version" in row_values or "id" in row_values:
        raise ValueError("id and version are not updatable through update_versioned")
    if not uses_rowversion(dialect):
        row_values["version"] = table.c.version + 1
    return (
        update(table)
        .where(table.c.id == entity_id, table.c.version == expected)
        .values(**row_values)
        .returning(table.c.version)
    )


def delete_versioned_stmt(
    model: type[Base], entity_id: uuid.UUID, expected: int | bytes
) -> ReturningDelete[Any]:
    """DELETE … WHERE id = :id AND version = :expected, returning the id (OUTPUT deleted.id)."""
    table = _table(model)
    return (
        delete(table)
        .where(table.c.id == entity_id, table.c.version == expected)
        .returning(table.c.id)
    )


async def insert_versioned(session: AsyncSession, model: type[Base], values: dict[str, Any]) -> str:
    """Insert one row and return its first version's wire form."""
    stmt = insert_versioned_stmt(model, values, session_dialect(session))
    version = (await session.execute(stmt)).scalar_one()
    return encode_version(version)


async def update_versioned(
    session: AsyncSession,
    model: type[Base],
    entity_id: uuid.UUID,
    expected: int | bytes,
    values: dict[str, Any],
) -> str | None:
    """UPDATE … WHERE id = :id AND version = :expected; the new version, or None on conflict.

    Decided by the rows returned, never by the row count (-1 with OUTPUT through pyodbc).
    """
    stmt = update_versioned_stmt(model, entity_id, expected, values, session_dialect(session))
    version = (await session.execute(stmt)).scalar_one_or_none()
    return None if version is None else encode_version(version)


async def delete_versioned(
    session: AsyncSession, model: type[Base], entity_id: uuid.UUID, expected: int | bytes
) -> bool:
    """DELETE … WHERE id = :id AND version = :expected; False when nothing matched."""
    stmt = delete_versioned_stmt(model, entity_id, expected)
    return (await session.execute(stmt)).first() is not None
