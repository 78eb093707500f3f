"""Boards."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from models.paging import fetch_by_ids, page_per_parent
from models.tables import Board, Card, Comment
from models.versioning import delete_versioned, insert_versioned, update_versioned


async def create_board(
    session: AsyncSession, *, board_id: uuid.UUID, workspace_id: uuid.UUID, name: str
) -> str:
    values = {"id": board_id, "workspace_id": workspace_id, "name": name}
    return await insert_versioned(session, Board, values)


async def board_by_id(session: AsyncSession, board_id: uuid.UUID) -> Board | None:
    return await session.get(Board, board_id, populate_existing=True)


async def workspace_of_board(session: AsyncSession, board_id: uuid.UUID) -> uuid.UUID | None:
    """The workspace the board is in (it never changes), or None when there is no such board."""
    stmt = select(Board.workspace_id).where(Board.id == board_id)
    return (await session.execute(stmt)).scalar_one_or_none()


async def boards_by_ids(
    session: AsyncSession, ids: Sequence[uuid.UUID], *, rows: bool = False
) -> Sequence[Any]:
    """Boards by id: ORM objects, or plain rows with `rows=True`."""
    return await fetch_by_ids(session, Board, ids, rows)


async def boards_by_workspaces(
    session: AsyncSession,
    workspace_ids: Sequence[uuid.UUID],
    after: tuple[datetime, uuid.UUID] | None,
    limit: int,
    *,
    rows: bool = False,
) -> dict[uuid.UUID, list[Any]]:
    return await page_per_parent(
        session,
        Board,
        Board.workspace_id,
        workspace_ids,
        [Board.created_at, Board.id],
        after,
        limit,
        rows=rows,
    )


async def rename_board(
    session: AsyncSession, board_id: uuid.UUID, expected: int | bytes, name: str
) -> str | None:
    return await update_versioned(session, Board, board_id, expected, {"name": name})


async def delete_board(session: AsyncSession, board_id: uuid.UUID, expected: int | bytes) -> bool:
    """Delete the board with its cards and their comments, if the version still matches.

    Children go first (foreign keys), then the board's guarded DELETE decides: on False the
    caller must roll back, which restores the children. They are deleted explicitly because
    SQL Server refuses the multiple cascade paths that ON DELETE CASCADE would need here.
    """
    cards = select(Card.id).where(Card.board_id == board_id)
    await session.execute(delete(Comment).where(Comment.card_id.in_(cards)))
    await session.execute(delete(Card).where(Card.board_id == board_id))
    return await delete_versioned(session, Board, board_id, expected)
