"""Users and refresh tokens."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from models.base import new_id, utcnow
from models.paging import fetch_by_ids
from models.tables import ExternalIdentity, RefreshToken, User


async def create_user(
    session: AsyncSession, *, email: str, display_name: str, password_hash: str
) -> User:
    stmt = (
        insert(User)
        .values(id=new_id(), email=email, display_name=display_name, password_hash=password_hash)
        .returning(User)
    )
    return (await session.execute(stmt)).scalar_one()


async def user_by_email(session: AsyncSession, email: str) -> User | None:
    return (await session.execute(select(User).where(User.email == email))).scalar_one_or_none()


async def users_by_ids(
    session: AsyncSession, ids: Sequence[uuid.UUID], *, rows: bool = False
) -> Sequence[Any]:
    """Users by id: ORM objects, or plain rows with `rows=True`."""
    return await fetch_by_ids(session, User, ids, rows)


async def store_refresh_token(
    session: AsyncSession,
    *,
    user_id: uuid.UUID,
    token_hash: str,
    family_id: uuid.UUID,
    expires_at: datetime,
) -> None:
    await session.execute(
        insert(RefreshToken).values(
            id=new_id(),
            user_id=user_id,
            token_hash=token_hash,
            family_id=family_id,
            expires_at=expires_at,
        )
    )


async def refresh_token_by_hash(session: AsyncSession, token_hash: str) -> RefreshToken | None:
    stmt = select(RefreshToken).where(RefreshToken.token_hash == token_hash)
    return (await session.execute(stmt)).scalar_one_or_none()


async def revoke_refresh_token(session: AsyncSession, token_id: uuid.UUID) -> bool:
    """Revoke one live token; False when it was already revoked (a concurrent use won)."""
    stmt = (
        update(RefreshToken)
        .where(RefreshToken.id == token_id, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=utcnow())
        .returning(RefreshToken.id)
    )
    return (await session.execute(stmt)).first() is not None


async def revoke_refresh_family(session: AsyncSession, family_id: uuid.UUID) -> None:
    await session.execute(
        update(RefreshToken)
        .where(RefreshToken.family_id == family_id, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )


async def user_of_external_identity(session: AsyncSession, key: str) -> uuid.UUID | None:
    stmt = select(ExternalIdentity.user_id).where(ExternalIdentity.identity_key == key)
    return (await session.execute(stmt)).scalar_one_or_none()


async def store_external_identity(
    session: AsyncSession, *, key: str, issuer: str, subject: str, user_id: uuid.UUID
) -> None:
    await session.execute(
        insert(ExternalIdentity).values(
            id=new_id(), identity_key=key, issuer=issuer, subject=subject, user_id=user_id
        )
    )
