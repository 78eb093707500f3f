"""Workspaces and memberships."""

from __future__ import annotations

import functools
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Select, bindparam, delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from models.base import new_id
from models.paging import after_key, fetch_all, fetch_by_ids, select_all
from models.tables import EventStream, Membership, Workspace
from models.versioning import insert_versioned, update_versioned


async def create_workspace(session: AsyncSession, *, workspace_id: uuid.UUID, name: str) -> str:
    return await insert_versioned(session, Workspace, {"id": workspace_id, "name": name})


async def workspace_by_id(session: AsyncSession, workspace_id: uuid.UUID) -> Workspace | None:
    return await session.get(Workspace, workspace_id, populate_existing=True)


async def workspaces_by_ids(
    session: AsyncSession, ids: Sequence[uuid.UUID], *, rows: bool = False
) -> Sequence[Any]:
    """Workspaces by id: ORM objects, or plain rows with `rows=True`."""
    return await fetch_by_ids(session, Workspace, ids, rows)


async def rename_workspace(
    session: AsyncSession, workspace_id: uuid.UUID, expected: int | bytes, name: str
) -> str | None:
    return await update_versioned(session, Workspace, workspace_id, expected, {"name": name})


async def workspaces_of_user(
    session: AsyncSession,
    user_id: uuid.UUID,
    after: tuple[datetime, uuid.UUID] | None,
    limit: int,
) -> Sequence[Workspace]:
    """The user's workspaces in creation order, up to `limit + 1` after the cursor."""
    stmt = (
        select(Workspace)
        .join(Membership, Membership.workspace_id == Workspace.id)
        .where(Membership.user_id == user_id)
        .order_by(Workspace.created_at, Workspace.id)
        .limit(limit + 1)
    )
    if after is not None:
        stmt = stmt.where(after_key([Workspace.created_at, Workspace.id], after))
    return (await session.execute(stmt)).scalars().all()


async def add_membership(
    session: AsyncSession, *, workspace_id: uuid.UUID, user_id: uuid.UUID, role: str
) -> Membership:
    stmt = (
        insert(Membership)
        .values(id=new_id(), workspace_id=workspace_id, user_id=user_id, role=role)
        .returning(Membership)
    )
    return (await session.execute(stmt)).scalar_one()


async def membership(
    session: AsyncSession, workspace_id: uuid.UUID, user_id: uuid.UUID
) -> Membership | None:
    stmt = select(Membership).where(
        Membership.workspace_id == workspace_id, Membership.user_id == user_id
    )
    return (await session.execute(stmt)).scalar_one_or_none()


async def member_ids(session: AsyncSession, workspace_id: uuid.UUID) -> set[uuid.UUID]:
    """Every member's user id (a live fan-out group's starting view of who may follow)."""
    stmt = select(Membership.user_id).where(Membership.workspace_id == workspace_id)
    return set((await session.execute(stmt)).scalars().all())


# The statements below are built once, their values bound at execution under the names
# SQLAlchemy gives them when built with values (the same SQL; see models.paging.BY_IDS).
_OF_USER = select(Membership).where(
    Membership.user_id == bindparam("user_id_1", type_=Membership.user_id.type),
    Membership.workspace_id.in_(
        bindparam("workspace_id_1", expanding=True, type_=Membership.workspace_id.type)
    ),
)


async def memberships_of_user(
    session: AsyncSession, user_id: uuid.UUID, workspace_ids: Sequence[uuid.UUID]
) -> Sequence[Membership]:
    values = {"user_id_1": user_id, "workspace_id_1": list(workspace_ids)}
    return (await session.execute(_OF_USER, values)).scalars().all()


@functools.lru_cache(maxsize=2)
def _of_workspaces(rows: bool) -> Select[Any]:
    ids = bindparam("workspace_id_1", expanding=True, type_=Membership.workspace_id.type)
    return (
        select_all(Membership, rows)
        .where(Membership.workspace_id.in_(ids))
        .order_by(Membership.workspace_id, Membership.created_at, Membership.id)
    )


async def memberships_by_workspaces(
    session: AsyncSession, workspace_ids: Sequence[uuid.UUID], *, rows: bool = False
) -> Sequence[Any]:
    """Memberships of the workspaces in joining order: ORM objects, or rows with `rows=True`."""
    values = {"workspace_id_1": list(workspace_ids)}
    return await fetch_all(session, _of_workspaces(rows), rows, values)


async def set_role(session: AsyncSession, membership_id: uuid.UUID, role: str) -> Membership:
    stmt = (
        update(Membership)
        .where(Membership.id == membership_id)
        .values(role=role)
        .returning(Membership)
    )
    return (await session.execute(stmt)).scalar_one()


async def remove_membership(session: AsyncSession, membership_id: uuid.UUID) -> None:
    await session.execute(delete(Membership).where(Membership.id == membership_id))


async def count_owners(session: AsyncSession, workspace_id: uuid.UUID) -> int:
    stmt = select(func.count()).where(
        Membership.workspace_id == workspace_id, Membership.role == "OWNER"
    )
    return int((await session.execute(stmt)).scalar_one())


async def lock_membership_changes(session: AsyncSession, workspace_id: uuid.UUID) -> None:
    """Take the workspace's stream row lock until commit (a no-op UPDATE, on every database).

    The same lock orders every writer's sequence number, so holding it makes membership
    checks and changes of one workspace happen one at a time.
    """
    await session.execute(
        update(EventStream)
        .where(EventStream.workspace_id == workspace_id)
        .values(last_seq=EventStream.last_seq)
    )
