"""The event store: per-workspace sequence numbers and the append-only log."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Select, Update, delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.dml import ReturningInsert

from models.database import session_dialect
from models.tables import Event, EventStream, Membership


async def create_stream(session: AsyncSession, workspace_id: uuid.UUID) -> None:
    await session.execute(insert(EventStream).values(workspace_id=workspace_id, last_seq=0))


def bump_seq_stmt(workspace_id: uuid.UUID, dialect: str) -> Update:
    """UPDATE event_streams SET last_seq = last_seq + 1 for one workspace.

    RETURNING the new value on PostgreSQL and SQLite. Not on SQL Server: there `OUTPUT
    inserted.last_seq` returned a stale value after a lock wait on SQL Server-compatible
    engines (Babelfish), so the value is read back by `read_seq_stmt` instead. No session
    synchronisation: nothing may be added to the statement to refresh loaded objects.
    """
    bump = (
        update(EventStream)
        .where(EventStream.workspace_id == workspace_id)
        .values(last_seq=EventStream.last_seq + 1)
        .execution_options(synchronize_session=False)
    )
    if dialect == "mssql":
        return bump
    return bump.returning(EventStream.last_seq)


def read_seq_stmt(workspace_id: uuid.UUID) -> Select[int]:
    """The workspace's counter; after `bump_seq_stmt` in the same transaction, our own value.

    A transaction always reads its own writes (also under READ_COMMITTED_SNAPSHOT), and the
    UPDATE's exclusive row lock, held to commit, keeps everyone else from changing it.
    """
    return select(EventStream.last_seq).where(EventStream.workspace_id == workspace_id)


async def next_seq(session: AsyncSession, workspace_id: uuid.UUID) -> int:
    """Take the workspace's next sequence number; its row lock is held until commit.

    SQL Server reads the counter back with a SELECT after the UPDATE: `OUTPUT inserted`
    after a lock wait returned a stale value on SQL Server-compatible engines.
    """
    dialect = session_dialect(session)
    bump = bump_seq_stmt(workspace_id, dialect)
    if dialect == "mssql":
        await session.execute(bump)
        return int((await session.execute(read_seq_stmt(workspace_id))).scalar_one())
    seq = (await session.execute(bump)).scalar_one()
    return int(seq)


def append_stmt(
    *,
    workspace_id: uuid.UUID,
    seq: int,
    type: str,
    entity_type: str,
    entity_id: uuid.UUID,
    entity_version: str | None,
    actor_id: uuid.UUID | None,
    changes: list[dict[str, Any]],
) -> ReturningInsert[Event]:
    """INSERT one event, returning the stored row (OUTPUT inserted.* on SQL Server)."""
    return (
        insert(Event)
        .values(
            workspace_id=workspace_id,
            seq=seq,
            type=type,
            entity_type=entity_type,
            entity_id=entity_id,
            entity_version=entity_version,
            actor_id=actor_id,
            changes=changes,
        )
        .returning(Event)
    )


async def append(
    session: AsyncSession,
    *,
    workspace_id: uuid.UUID,
    seq: int,
    type: str,
    entity_type: str,
    entity_id: uuid.UUID,
    entity_version: str | None,
    actor_id: uuid.UUID | None,
    changes: list[dict[str, Any]],
) -> Event:
    stmt = append_stmt(
        workspace_id=workspace_id,
        seq=seq,
        type=type,
        entity_type=entity_type,
        entity_id=entity_id,
        entity_version=entity_version,
        actor_id=actor_id,
        changes=changes,
    )
    return (await session.execute(stmt)).scalar_one()


async def last_seq(session: AsyncSession, workspace_id: uuid.UUID) -> int:
    stmt = select(EventStream.last_seq).where(EventStream.workspace_id == workspace_id)
    return int((await session.execute(stmt)).scalar_one_or_none() or 0)


async def first_seq(session: AsyncSession, workspace_id: uuid.UUID) -> int | None:
    """The oldest sequence number still kept, or None when the log is empty."""
    stmt = select(func.min(Event.seq)).where(Event.workspace_id == workspace_id)
    value = (await session.execute(stmt)).scalar_one_or_none()
    return None if value is None else int(value)


async def subscription_start(
    session: AsyncSession, workspace_id: uuid.UUID, user_id: uuid.UUID
) -> tuple[bool, int, int | None]:
    """(whether the user is a member, the last seq, the oldest kept seq) in one statement.

    A subscription starts with these three; one round trip instead of three matters
    when thousands of clients (re)subscribe at once.
    """
    member = (
        select(func.count())
        .select_from(Membership)
        .where(Membership.workspace_id == workspace_id, Membership.user_id == user_id)
        .scalar_subquery()
    )
    last = (
        select(EventStream.last_seq)
        .where(EventStream.workspace_id == workspace_id)
        .scalar_subquery()
    )
    oldest = select(func.min(Event.seq)).where(Event.workspace_id == workspace_id).scalar_subquery()
    row = (await session.execute(select(member, last, oldest))).one()
    return bool(row[0]), int(row[1] or 0), None if row[2] is None else int(row[2])


async def list_events(
    session: AsyncSession, workspace_id: uuid.UUID, after_seq: int, limit: int
) -> Sequence[Event]:
    stmt = (
        select(Event)
        .where(Event.workspace_id == workspace_id, Event.seq > after_seq)
        .order_by(Event.seq)
        .limit(limit)
    )
    return (await session.execute(stmt)).scalars().all()


async def list_entity_events(
    session: AsyncSession, entity_id: uuid.UUID, after_seq: int, limit: int
) -> Sequence[Event]:
    stmt = (
        select(Event)
        .where(Event.entity_id == entity_id, Event.seq > after_seq)
        .order_by(Event.seq)
        .limit(limit)
    )
    return (await session.execute(stmt)).scalars().all()


async def entity_workspace(session: AsyncSession, entity_id: uuid.UUID) -> uuid.UUID | None:
    """The workspace whose log records the entity, or None when no event of it is kept."""
    stmt = select(Event.workspace_id).where(Event.entity_id == entity_id).limit(1)
    return (await session.execute(stmt)).scalar_one_or_none()


async def version_recorded(session: AsyncSession, entity_id: uuid.UUID, version: str) -> bool:
    """Whether the kept log holds the event that gave the entity `version`.

    False for a version the log never recorded and for one whose event was pruned: then
    the changes since that version are not all known.
    """
    stmt = (
        select(Event.seq)
        .where(Event.entity_id == entity_id, Event.entity_version == version)
        .limit(1)
    )
    return (await session.execute(stmt)).first() is not None


async def changed_fields_since(
    session: AsyncSession, entity_id: uuid.UUID, version: str
) -> list[str]:
    """GraphQL field names changed on the entity since it had `version`, in first-change order.

    A version the log never recorded (well-formed but unknown) counts every recorded change,
    so that a merge is only ever applied when it is certainly disjoint.
    """
    made = (
        select(Event.seq)
        .where(Event.entity_id == entity_id, Event.entity_version == version)
        .order_by(Event.seq.desc())
        .limit(1)
    )
    since = (await session.execute(made)).scalar_one_or_none()
    stmt = select(Event.changes).where(Event.entity_id == entity_id).order_by(Event.seq)
    if since is not None:
        stmt = stmt.where(Event.seq > since)
    fields: list[str] = []
    for changes in (await session.execute(stmt)).scalars():
        for change in changes:
            if change["field"] not in fields:
                fields.append(change["field"])
    return fields


async def prune(session: AsyncSession, keep: int) -> int:
    """Delete all but each workspace's last `keep` events; the number deleted.

    Subscribers resuming from a cursor before what is left get a clear CURSOR_EXPIRED
    error instead of a silent gap.
    """
    if keep < 1:
        raise ValueError("keep at least one event per workspace")
    last = (
        select(EventStream.last_seq)
        .where(EventStream.workspace_id == Event.workspace_id)
        .scalar_subquery()
    )
    result = await session.execute(
        delete(Event).where(Event.seq <= last - keep).execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0)


def read_scope_stmt(workspace_id: uuid.UUID, user_id: uuid.UUID) -> Select[Any]:
    """The workspace's last seq, the user's role there and the oldest kept seq, in one statement.

    The oldest kept seq belongs to the scope because pruning changes what a read answers
    (CURSOR_EXPIRED, fewer events) without appending an event.
    """
    role = (
        select(Membership.role)
        .where(Membership.workspace_id == workspace_id, Membership.user_id == user_id)
        .scalar_subquery()
    )
    last = (
        select(EventStream.last_seq)
        .where(EventStream.workspace_id == workspace_id)
        .scalar_subquery()
    )
    oldest = select(func.min(Event.seq)).where(Event.workspace_id == workspace_id).scalar_subquery()
    return select(last.label("last_seq"), role.label("role"), oldest.label("first_seq"))


async def read_scope(
    session: AsyncSession, workspace_id: uuid.UUID, user_id: uuid.UUID
) -> tuple[int | None, str | None, int | None]:
    """(last seq, role, oldest kept seq): None for a workspace without a log, for a
    non-member, for an empty log."""
    row = (await session.execute(read_scope_stmt(workspace_id, user_id))).one()
    return (
        None if row.last_seq is None else int(row.last_seq),
        row.role,
        None if row.first_seq is None else int(row.first_seq),
    )
