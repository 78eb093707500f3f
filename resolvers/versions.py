"""Turning a client's expectedVersion into a guarded write, and zero rows into a conflict."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from models import event as event_store
from models.versioning import MalformedVersion, decode_version, encode_version
from resolvers.errors import InvalidInput, NotFoundError, VersionConflictError

R = TypeVar("R")
Reload = Callable[[AsyncSession, uuid.UUID], Awaitable[Any]]


def expected(dialect: str, version: str, field: str = "expectedVersion") -> int | bytes:
    """The database form of a client's version string; InvalidInput when malformed."""
    try:
        return decode_version(version, dialect)
    except MalformedVersion as exc:
        raise InvalidInput(field, f"{field} is not a version this server issued.") from exc


def version_of(row: Any) -> str:
    return encode_version(row.version)


async def conflict(
    session: AsyncSession,
    entity_type: str,
    entity_id: uuid.UUID,
    expected_version: str,
    reload: Reload,
) -> Exception:
    """The error for a guarded write that matched no row: NotFound or VersionConflict."""
    current = await reload(session, entity_id)
    if current is None:
        return NotFoundError(f"{entity_type} not found.")
    changed = await event_store.changed_fields_since(session, entity_id, expected_version)
    # The conflict outlives the transaction, which is rolled back; a rollback expires the
    # objects still in the session, so detach this one with its loaded values.
    session.expunge(current)
    return VersionConflictError(entity_type, current, version_of(current), changed)


async def at_version(
    session: AsyncSession,
    row: Any,
    entity_type: str,
    guard: int | bytes,
    expected_version: str,
    reload: Reload,
) -> None:
    """Raise the conflict unless `row` (just read) is at the caller's version.

    The guarded UPDATE decides in the end; checking first means the old values recorded
    in the event are exactly the ones the caller's version had.
    """
    if row.version != guard:
        raise await conflict(session, entity_type, row.id, expected_version, reload)
