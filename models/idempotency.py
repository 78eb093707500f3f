"""Idempotency keys: claimed with a mutation's event, answered once the response is known.

A key is claimed by the INSERT of its row inside the transaction of the request's first
mutation that records an event (resolvers/unit_of_work.py), so the row commits exactly when
the change does. A second request with the same key blocks on the unique index (user,
key) until the first commits, then fails with a unique violation: its own transaction
rolls back, nothing of it is applied, and it replays the first one's answer instead.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from sqlalchemy import Delete, Insert, delete, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from models.base import new_id, utcnow
from models.tables import IdempotencyKey


class KeyTaken(Exception):
    """Another request holds this key: it committed first, or is answering already."""


def claim_stmt(
    row_id: uuid.UUID,
    user_id: uuid.UUID,
    key: str,
    request_hash: str,
    now: datetime,
    ttl_seconds: float,
) -> Insert:
    """INSERT the key's row, still without an answer (status NULL: being answered)."""
    return insert(IdempotencyKey).values(
        id=row_id,
        user_id=user_id,
        idempotency_key=key,
        request_hash=request_hash,
        created_at=now,
        expires_at=now + timedelta(seconds=ttl_seconds),
    )


async def claim(
    session: AsyncSession,
    user_id: uuid.UUID,
    key: str,
    request_hash: str,
    ttl_seconds: float,
    *,
    status_code: int | None = None,
    body: str | None = None,
    headers: dict[str, str] | None = None,
) -> uuid.UUID:
    """Insert the key's row (with its answer when given); KeyTaken when it exists already.

    The unique violation is turned into KeyTaken so that it is never retried as a
    transient error nor reported as a failure: it means someone else got there first.
    """
    row_id = new_id()
    stmt = claim_stmt(row_id, user_id, key, request_hash, utcnow(), ttl_seconds)
    if status_code is not None:
        stmt = stmt.values(status_code=status_code, response_body=body, response_headers=headers)
    try:
        await session.execute(stmt)
    except IntegrityError as exc:
        raise KeyTaken(key) from exc
    return row_id


async def find(session: AsyncSession, user_id: uuid.UUID, key: str) -> IdempotencyKey | None:
    stmt = select(IdempotencyKey).where(
        IdempotencyKey.user_id == user_id, IdempotencyKey.idempotency_key == key
    )
    return (await session.execute(stmt)).scalar_one_or_none()


async def answer(
    session: AsyncSession,
    row_id: uuid.UUID,
    status_code: int,
    body: str,
    headers: dict[str, str],
) -> None:
    """Record the response of the request that holds the key."""
    await session.execute(
        update(IdempotencyKey)
        .where(IdempotencyKey.id == row_id)
        .values(status_code=status_code, response_body=body, response_headers=headers)
        .execution_options(synchronize_session=False)
    )


def expired_stmt(now: datetime, user_id: uuid.UUID | None = None) -> Delete:
    """DELETE the keys expired by `now` (of one user when given)."""
    stmt = delete(IdempotencyKey).where(IdempotencyKey.expires_at <= now)
    if user_id is not None:
        stmt = stmt.where(IdempotencyKey.user_id == user_id)
    return stmt.execution_options(synchronize_session=False)


async def delete_expired(
    session: AsyncSession, now: datetime | None = None, user_id: uuid.UUID | None = None
) -> int:
    """Delete expired keys (all, or one user's); the number deleted."""
    result = await session.execute(expired_stmt(now or utcnow(), user_id))
    return int(getattr(result, "rowcount", 0) or 0)
