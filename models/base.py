"""Declarative base, shared column types and the version column.

Constraint names come from one naming convention so that migrations name them the same
on SQLite, PostgreSQL and SQL Server.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import BigInteger, DateTime, Dialect, MetaData, UnicodeText
from sqlalchemy.dialects import mssql
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """A naive UTC timestamp in the database (DATETIME2 on SQL Server), aware in Python.

    SQLite has no time zones and SQL Server's DATETIMEOFFSET is not needed when every
    value is UTC; storing naive UTC keeps the three databases alike.
    """

    impl = DateTime
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> Any:
        if dialect.name == "mssql":
            return dialect.type_descriptor(mssql.DATETIME2(precision=6))
        return dialect.type_descriptor(DateTime(timezone=False))

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id() -> uuid.UUID:
    return uuid.uuid4()


# An integer that every UPDATE increments on SQLite and PostgreSQL; on SQL Server a
# ROWVERSION the server writes itself on every INSERT and UPDATE.
VERSION_TYPE = BigInteger().with_variant(mssql.ROWVERSION(), "mssql")

# NVARCHAR(max) on SQL Server, never the deprecated NTEXT (which offline DDL would pick).
LONG_TEXT = UnicodeText().with_variant(mssql.NVARCHAR(), "mssql")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Versioned:
    """Mixin for rows that people edit concurrently."""

    version: Mapped[Any] = mapped_column(VERSION_TYPE, nullable=False)
