"""Roles and what they allow.

VIEWER reads everything in the workspace; EDITOR also creates and edits boards, cards and
comments; OWNER also manages members and renames the workspace. Not being a member looks
exactly like the thing not existing.
"""

from __future__ import annotations

import uuid
from enum import IntEnum

from sqlalchemy.ext.asyncio import AsyncSession

from models import workspace as workspace_repo
from resolvers.errors import ForbiddenError, NotFoundError


class Role(IntEnum):
    VIEWER = 1
    EDITOR = 2
    OWNER = 3


ROLE_NAMES = frozenset(role.name for role in Role)

VERB = {Role.EDITOR: "edit this workspace", Role.OWNER: "manage this workspace"}


def can_read(role: str | None) -> bool:
    return role in ROLE_NAMES


async def require_role(
    session: AsyncSession,
    workspace_id: uuid.UUID,
    user_id: uuid.UUID,
    minimum: Role,
    what: str,
) -> Role:
    """The caller's role, read in the write transaction; NotFound for non-members."""
    membership = await workspace_repo.membership(session, workspace_id, user_id)
    if membership is None:
        raise NotFoundError(f"{what} not found.")
    role = Role[membership.role]
    if role < minimum:
        raise ForbiddenError(
            f"Your role ({role.name}) does not allow this: you need {minimum.name} "
            f"to {VERB.get(minimum, 'do this')}."
        )
    return role
