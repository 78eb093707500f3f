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

from sqlalchemy import delete, insert, update
from sqlalchemy.ext.asyncio import AsyncSession

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


async def insert_versioned(session: AsyncSession, model: type[Base], values: dict[str, Any]) -> str:
    """Insert one row and return its first version's wire form."""
    table = model.__table__
    row_values = dict(values)
    if not uses_rowversion(session_dialect(session)):
        row_values["version"] = 1
    stmt = insert(table).values(**row_values).returning(table.c.version)
    version = (await session.execute(stmt)).scalar_one()
    return encode_version(version)


async def update_versioned(
    session: AsyncSession,
    model: type[Base],
    entity_id: uuid.UUID,
    expected: int | bytes,
    values: dict[str, Any],
) -> str | None:
    """UPDATE … WHERE id = :id AND version = :expected; the new version, or None on conflict."""
    table = model.__table__
    row_values = dict(values)
    if not uses_rowversion(session_dialect(session)):
        row_values["version"] = table.c.version + 1
    stmt = (
        update(table)
        .where(table.c.id == entity_id, table.c.version == expected)
        .values(**row_values)
        .returning(table.c.version)
    )
    version = (await session.execute(stmt)).scalar_one_or_none()
    return None if version is None else encode_version(version)


async def delete_versioned(
    session: AsyncSession, model: type[Base], entity_id: uuid.UUID, expected: int | bytes
) -> bool:
    """DELETE … WHERE id = :id AND version = :expected; False when nothing matched."""
    table = model.__table__
    stmt = (
        delete(table)
        .where(table.c.id == entity_id, table.c.version == expected)
        .returning(table.c.id)
    )
    return (await session.execute(stmt)).first() is not None
