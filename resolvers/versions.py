"""Turning a client's expectedVersion into a guarded write, and zero rows into a conflict."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
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
    known = await event_store.version_recorded(session, entity_id, expected_version)
    # The conflict outlives the transaction, which is rolled back; a rollback expires the
    # objects still in the session, so detach this one with its loaded values.
    session.expunge(current)
    return VersionConflictError(
        entity_type, current, version_of(current), changed, changes_known=known
    )


@dataclass(frozen=True)
class Expected:
    """A caller's expectedVersion for one entity, and the guarded writes that use it."""

    entity_type: str
    text: str
    value: int | bytes
    reload: Reload

    @classmethod
    def parse(cls, dialect: str, entity_type: str, text: str, reload: Reload) -> Expected:
        return cls(entity_type, text, expected(dialect, text), reload)

    async def write(
        self, session: AsyncSession, row: Any, guarded: Callable[[], Awaitable[R]]
    ) -> R:
        """Run `guarded` (an UPDATE/DELETE with `self.value` in its WHERE) on `row`.

        `row`, just read, must be at the caller's version: then the old values the caller
        records are exactly the ones that version had. The guarded statement decides in
        the end; nothing back (None or False) means someone wrote first.
        """
        if row.version != self.value:
            raise await conflict(session, self.entity_type, row.id, self.text, self.reload)
        result = await guarded()
        if result is None or result is False:
            raise await conflict(session, self.entity_type, row.id, self.text, self.reload)
        return result
