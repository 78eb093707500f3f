"""Cards."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from models.paging import fetch_by_ids, page_per_parent
from models.tables import Card, Comment
from models.versioning import delete_versioned, insert_versioned, update_versioned


async def create_card(session: AsyncSession, values: dict[str, Any]) -> str:
    return await insert_versioned(session, Card, values)


async def card_by_id(session: AsyncSession, card_id: uuid.UUID) -> Card | None:
    return await session.get(Card, card_id, populate_existing=True)


async def workspace_of_card(session: AsyncSession, card_id: uuid.UUID) -> uuid.UUID | None:
    """The workspace the card is in (it never changes), or None when there is no such card."""
    stmt = select(Card.workspace_id).where(Card.id == card_id)
    return (await session.execute(stmt)).scalar_one_or_none()


async def cards_by_ids(
    session: AsyncSession, ids: Sequence[uuid.UUID], *, rows: bool = False
) -> Sequence[Any]:
    """Cards by id: ORM objects, or plain rows with `rows=True`."""
    return await fetch_by_ids(session, Card, ids, rows)


async def cards_by_boards(
    session: AsyncSession,
    board_ids: Sequence[uuid.UUID],
    after: tuple[float, uuid.UUID] | None,
    limit: int,
    *,
    rows: bool = False,
) -> dict[uuid.UUID, list[Any]]:
    return await page_per_parent(
        session,
        Card,
        Card.board_id,
        board_ids,
        [Card.position, Card.id],
        after,
        limit,
        rows=rows,
    )


async def last_position(session: AsyncSession, board_id: uuid.UUID) -> float | None:
    stmt = select(Card.position).where(Card.board_id == board_id).order_by(Card.position.desc())
    return (await session.execute(stmt.limit(1))).scalar_one_or_none()


async def update_card(
    session: AsyncSession, card_id: uuid.UUID, expected: int | bytes, values: dict[str, Any]
) -> str | None:
    return await update_versioned(session, Card, card_id, expected, values)


async def delete_card(session: AsyncSession, card_id: uuid.UUID, expected: int | bytes) -> bool:
    """Delete the card and its comments if the version matches; on False, roll back."""
    await session.execute(delete(Comment).where(Comment.card_id == card_id))
    return await delete_versioned(session, Card, card_id, expected)
