"""Memberships: add, change role, remove. A workspace always keeps an OWNER."""

from __future__ import annotations

import uuid

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from models import user as user_repo
from models import workspace as workspace_repo
from models.tables import Membership
from resolvers import validation
from resolvers.access import Role, require_role
from resolvers.context import Context
from resolvers.errors import InvalidInput, NotFoundError, RateLimitedError
from resolvers.unit_of_work import Recorder, change, write

ALREADY_MEMBER = "This person is already a member."
LAST_OWNER = "A workspace keeps at least one OWNER: make someone else OWNER first."


def _role(value: str) -> Role:
    try:
        return Role[value]
    except KeyError as exc:
        raise InvalidInput("role", "role must be OWNER, EDITOR or VIEWER.") from exc


async def _lock_workspace(session: AsyncSession, workspace_id: uuid.UUID) -> None:
    """Serialize membership changes of one workspace before reading the owners.

    Two owners demoting each other at once would otherwise both see two owners and leave
    none. Touching the workspace's event stream row takes the same lock every writer of
    the workspace takes, so the owner count read after it is current until commit.
    """
    await workspace_repo.lock_membership_changes(session, workspace_id)


class _UnknownEmail(InvalidInput):
    """The answer that reveals an email has no account: counted per caller."""


async def add_member(ctx: Context, workspace_id: str, email: str, role: str) -> Membership:
    actor = ctx.user_id()
    ws = validation.entity_id(workspace_id, "workspaceId")
    email = validation.email(email)
    new_role = _role(role)
    limits = ctx.services.auth_limits
    if limits is not None and (refusal := await limits.lookups_exhausted(str(actor))):
        raise RateLimitedError(refusal.limit, refusal.retry_after)

    async def work(session: AsyncSession, events: Recorder) -> Membership:
        await require_role(session, ws, actor, Role.OWNER, "Workspace")
        user = await user_repo.user_by_email(session, email)
        if user is None:
            raise _UnknownEmail("email", "No one has registered with this email yet.")
        if await workspace_repo.membership(session, ws, user.id) is not None:
            raise InvalidInput("email", ALREADY_MEMBER)
        membership = await workspace_repo.add_membership(
            session, workspace_id=ws, user_id=user.id, role=new_role.name
        )
        await events.record(
            ws,
            "member.added",
            "Membership",
            membership.id,
            None,
            [change("user", None, str(user.id)), change("role", None, new_role.name)],
        )
        return membership

    try:
        return await write(ctx, work)
    except _UnknownEmail:
        if limits is not None:
            await limits.unknown_email(str(actor))
        raise
    except IntegrityError as exc:
        # Added by a concurrent request after our check: the unique (workspace, user)
        # constraint decides, and the loser hears what a sequential duplicate hears.
        raise InvalidInput("email", ALREADY_MEMBER) from exc


async def change_member_role(
    ctx: Context, workspace_id: str, user_id: str, role: str
) -> Membership:
    actor = ctx.user_id()
    ws = validation.entity_id(workspace_id, "workspaceId")
    target = validation.entity_id(user_id, "userId")
    new_role = _role(role)

    async def work(session: AsyncSession, events: Recorder) -> Membership:
        await require_role(session, ws, actor, Role.OWNER, "Workspace")
        await _lock_workspace(session, ws)
        membership = await workspace_repo.membership(session, ws, target)
        if membership is None:
            raise NotFoundError("Member not found.")
        if membership.role == new_role.name:
            return membership
        if (
            membership.role == Role.OWNER.name
            and await workspace_repo.count_owners(session, ws) <= 1
        ):
            raise InvalidInput("role", LAST_OWNER)
        old = membership.role
        updated = await workspace_repo.set_role(session, membership.id, new_role.name)
        await events.record(
            ws,
            "member.role_changed",
            "Membership",
            membership.id,
            None,
            [change("role", old, new_role.name)],
        )
        return updated

    return await write(ctx, work)


async def remove_member(ctx: Context, workspace_id: str, user_id: str) -> uuid.UUID:
    """Owners remove anyone; every member may remove themselves (leave)."""
    actor = ctx.user_id()
    ws = validation.entity_id(workspace_id, "workspaceId")
    target = validation.entity_id(user_id, "userId")

    async def work(session: AsyncSession, events: Recorder) -> uuid.UUID:
        minimum = Role.VIEWER if target == actor else Role.OWNER
        await require_role(session, ws, actor, minimum, "Workspace")
        await _lock_workspace(session, ws)
        membership = await workspace_repo.membership(session, ws, target)
        if membership is None:
            raise NotFoundError("Member not found.")
        if (
            membership.role == Role.OWNER.name
            and await workspace_repo.count_owners(session, ws) <= 1
        ):
            raise InvalidInput("userId", LAST_OWNER)
        await workspace_repo.remove_membership(session, membership.id)
        await events.record(
            ws,
            "member.removed",
            "Membership",
            membership.id,
            None,
            [change("user", str(target), None), change("role", membership.role, None)],
        )
        return membership.id

    return await write(ctx, work)
