"""The statements behind `concord archive-events` and `concord restore-events`.

Archiving takes, per workspace, the longest *prefix* of its log whose events all happened
before the cut-off, not every event dated before it: API hosts' clocks may disagree by a
little, so seq 8 can carry an earlier time than seq 7. Deleting a prefix keeps what is left
gapless, which is what the CURSOR_EXPIRED check (the oldest kept seq) relies on.

Restoring writes the rows a fresh database needs to answer `events` and `cardHistory`
for the archived history: people, workspaces, memberships, each workspace's counter and
the events themselves.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, delete, func, insert, literal, select
from sqlalchemy.ext.asyncio import AsyncSession

from models.base import Base
from models.tables import Event, EventStream, Membership, User, Workspace
from models.versioning import insert_versioned

# Rows per SELECT page and per INSERT batch (SQL Server takes 2100 parameters a statement).
PAGE = 2000
INSERT_BATCH = 100
# Events deleted per transaction when pruning: short transactions, short row locks.
DELETE_BATCH = 5000
# Above every sequence number: "no event at or after the cut-off".
BIGINT_MAX = 2**63 - 1


async def workspaces_with_events_before(session: AsyncSession, before: datetime) -> list[uuid.UUID]:
    stmt = (
        select(Event.workspace_id)
        .where(Event.occurred_at < before)
        .group_by(Event.workspace_id)
        .order_by(Event.workspace_id)
    )
    return list((await session.execute(stmt)).scalars())


async def archivable_through(
    session: AsyncSession, workspace_id: uuid.UUID, before: datetime
) -> int | None:
    """The last seq of the workspace's prefix of events that all happened before `before`.

    None when the log's oldest kept event is already at or after the cut-off.
    """
    first_late = (
        select(func.min(Event.seq))
        .where(Event.workspace_id == workspace_id, Event.occurred_at >= before)
        .scalar_subquery()
    )
    stmt = select(func.max(Event.seq)).where(
        Event.workspace_id == workspace_id,
        Event.seq < func.coalesce(first_late, literal(BIGINT_MAX, BigInteger)),
    )
    value = (await session.execute(stmt)).scalar_one_or_none()
    return None if value is None else int(value)


async def events_page(
    session: AsyncSession, workspace_id: uuid.UUID, after: int, through: int
) -> Sequence[Event]:
    """The workspace's next PAGE kept events after seq `after` up to `through`, oldest first."""
    stmt = (
        select(Event)
        .where(Event.workspace_id == workspace_id, Event.seq > after, Event.seq <= through)
        .order_by(Event.seq)
        .limit(PAGE)
    )
    return (await session.execute(stmt)).scalars().all()


async def directory(
    session: AsyncSession, workspace_id: uuid.UUID, actor_ids: Iterable[uuid.UUID]
) -> tuple[Workspace | None, Sequence[Membership], Sequence[User]]:
    """The workspace, its memberships, and its members and the given actors as people."""
    workspace = (
        await session.execute(select(Workspace).where(Workspace.id == workspace_id))
    ).scalar_one_or_none()
    memberships = (
        (
            await session.execute(
                select(Membership)
                .where(Membership.workspace_id == workspace_id)
                .order_by(Membership.user_id)
            )
        )
        .scalars()
        .all()
    )
    wanted = sorted({m.user_id for m in memberships} | set(actor_ids))
    users: list[User] = []
    for start in range(0, len(wanted), 1000):
        chunk = wanted[start : start + 1000]
        users.extend((await session.execute(select(User).where(User.id.in_(chunk)))).scalars())
    users.sort(key=lambda u: u.id)
    return workspace, memberships, users


async def prune_through(session: AsyncSession, workspace_id: uuid.UUID, through: int) -> int:
    """Delete the oldest kept events of the workspace, at most DELETE_BATCH, up to `through`.

    Always from the oldest, so what is left stays a gapless suffix of the log after every
    batch; the number deleted (0 when nothing up to `through` is left).
    """
    oldest = (
        await session.execute(select(func.min(Event.seq)).where(Event.workspace_id == workspace_id))
    ).scalar_one_or_none()
    if oldest is None or oldest > through:
        return 0
    upto = min(through, int(oldest) + DELETE_BATCH - 1)
    result = await session.execute(
        delete(Event)
        .where(Event.workspace_id == workspace_id, Event.seq <= upto)
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0)


async def row_counts(session: AsyncSession) -> dict[str, int]:
    """Rows in every table, by table name."""
    counts: dict[str, int] = {}
    for table in Base.metadata.sorted_tables:
        counts[table.name] = int(
            (await session.execute(select(func.count()).select_from(table))).scalar_one()
        )
    return counts


async def restore_users(session: AsyncSession, users: Sequence[dict[str, Any]]) -> None:
    for start in range(0, len(users), INSERT_BATCH):
        await session.execute(insert(User), list(users[start : start + INSERT_BATCH]))


async def restore_workspace(
    session: AsyncSession,
    workspace: dict[str, Any],
    memberships: Sequence[dict[str, Any]],
    last_seq: int,
) -> None:
    """The workspace (a new version: versions are the database's), its members, its counter."""
    await insert_versioned(session, Workspace, workspace)
    if memberships:
        await session.execute(insert(Membership), list(memberships))
    await session.execute(
        insert(EventStream).values(workspace_id=workspace["id"], last_seq=last_seq)
    )


async def restore_events(session: AsyncSession, events: Sequence[dict[str, Any]]) -> None:
    """Insert events as archived; the surrogate `id` is the new database's own."""
    for start in range(0, len(events), INSERT_BATCH):
        await session.execute(insert(Event), list(events[start : start + INSERT_BATCH]))
