"""Workspaces: create, rename, list, read."""

from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncSession

from models import event as event_store
from models import workspace as workspace_repo
from models.base import new_id
from models.tables import Workspace
from resolvers import validation
from resolvers.access import Role, can_read, require_role
from resolvers.context import Context
from resolvers.pagination import Page, decode_cursor, page_of, parse_datetime
from resolvers.unit_of_work import Recorder, change, write
from resolvers.versions import Expected

CURSOR = "workspace"


async def create_workspace(ctx: Context, name: str) -> Workspace:
    user_id = ctx.user_id()
    name = validation.name(name)

    async def work(session: AsyncSession, events: Recorder) -> Workspace:
        workspace_id = new_id()
        version = await workspace_repo.create_workspace(
            session, workspace_id=workspace_id, name=name
        )
        membership = await workspace_repo.add_membership(
            session, workspace_id=workspace_id, user_id=user_id, role=Role.OWNER.name
        )
        await event_store.create_stream(session, workspace_id)
        await events.record(
            workspace_id,
            "workspace.created",
            "Workspace",
            workspace_id,
            version,
            [change("name", None, name)],
        )
        await events.record(
            workspace_id,
            "member.added",
            "Membership",
            membership.id,
            None,
            [change("user", None, str(user_id)), change("role", None, Role.OWNER.name)],
        )
        workspace = await workspace_repo.workspace_by_id(session, workspace_id)
        assert workspace is not None
        return workspace

    return await write(ctx, work)


async def rename_workspace(ctx: Context, id: str, expected_version: str, name: str) -> Workspace:
    user_id = ctx.user_id()
    workspace_id = validation.entity_id(id, "id")
    name = validation.name(name)

    reload = workspace_repo.workspace_by_id
    version_of = Expected.parse(ctx.services.db.dialect, "Workspace", expected_version, reload)

    async def work(session: AsyncSession, events: Recorder) -> Workspace:
        await require_role(session, workspace_id, user_id, Role.OWNER, "Workspace")
        before = await reload(session, workspace_id)
        assert before is not None  # members' workspaces exist
        old_name = before.name
        version = await version_of.write(
            session,
            before,
            lambda: workspace_repo.rename_workspace(session, workspace_id, version_of.value, name),
        )
        await events.record(
            workspace_id,
            "workspace.renamed",
            "Workspace",
            workspace_id,
            version,
            [change("name", old_name, name)],
        )
        after = await reload(session, workspace_id)
        assert after is not None
        return after

    return await write(ctx, work)


async def workspace(ctx: Context, id: str) -> Workspace | None:
    """The workspace if the caller is a member; None otherwise (no hint that it exists)."""
    ctx.user_id()
    workspace_id = validation.entity_id(id, "id")
    if not can_read(await ctx.loaders.viewer_role_by_workspace.load(workspace_id)):
        return None
    return await ctx.loaders.workspace_by_id.load(workspace_id)


async def my_workspaces(ctx: Context, first: int | None, after: str | None) -> Page[Workspace]:
    user_id = ctx.user_id()
    first = validation.page_size(first)
    key = None
    if after is not None:
        key = decode_cursor(CURSOR, after, [parse_datetime, uuid.UUID])
    async with ctx.reads() as session:
        rows = await workspace_repo.workspaces_of_user(session, user_id, key, first)
    return page_of(rows, first, CURSOR, lambda w: (w.created_at, w.id))
