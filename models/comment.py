"""Comments."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from models.paging import fetch_by_ids, page_per_parent
from models.tables import Comment
from models.versioning import delete_versioned, insert_versioned, update_versioned


async def create_comment(session: AsyncSession, values: dict[str, Any]) -> str:
    return await insert_versioned(session, Comment, values)


async def comment_by_id(session: AsyncSession, comment_id: uuid.UUID) -> Comment | None:
    return await session.get(Comment, comment_id, populate_existing=True)


async def comments_by_ids(
    session: AsyncSession, ids: Sequence[uuid.UUID], *, rows: bool = False
) -> Sequence[Any]:
    """Comments by id: ORM objects, or plain rows with `rows=True`."""
    return await fetch_by_ids(session, Comment, ids, rows)


async def comments_by_cards(
    session: AsyncSession,
    card_ids: Sequence[uuid.UUID],
    after: tuple[datetime, uuid.UUID] | None,
    limit: int,
    *,
    rows: bool = False,
) -> dict[uuid.UUID, list[Any]]:
    return await page_per_parent(
        session,
        Comment,
        Comment.card_id,
        card_ids,
        [Comment.created_at, Comment.id],
        after,
        limit,
        rows=rows,
    )


async def edit_comment(
    session: AsyncSession, comment_id: uuid.UUID, expected: int | bytes, body: str
) -> str | None:
    return await update_versioned(session, Comment, comment_id, expected, {"body": body})


async def delete_comment(
    session: AsyncSession, comment_id: uuid.UUID, expected: int | bytes
) -> bool:
    return await delete_versioned(session, Comment, comment_id, expected)
