"""Boards: create, rename, delete, read, list."""

from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncSession

from models import board as board_repo
from models.base import new_id
from models.tables import Board
from resolvers import validation
from resolvers.access import Role, can_read, require_role
from resolvers.context import Context
from resolvers.errors import NotFoundError
from resolvers.lists import BOARDS
from resolvers.pagination import Page
from resolvers.unit_of_work import Recorder, change, write
from resolvers.versions import Expected


async def _board_for_write(session: AsyncSession, board_id: uuid.UUID, user_id: uuid.UUID) -> Board:
    board = await board_repo.board_by_id(session, board_id)
    if board is None:
        raise NotFoundError("Board not found.")
    await require_role(session, board.workspace_id, user_id, Role.EDITOR, "Board")
    return board


async def create_board(ctx: Context, workspace_id: str, name: str) -> Board:
    user_id = ctx.user_id()
    ws = validation.entity_id(workspace_id, "workspaceId")
    name = validation.name(name)

    async def work(session: AsyncSession, events: Recorder) -> Board:
        await require_role(session, ws, user_id, Role.EDITOR, "Workspace")
        board_id = new_id()
        version = await board_repo.create_board(
            session, board_id=board_id, workspace_id=ws, name=name
        )
        await events.record(
            ws, "board.created", "Board", board_id, version, [change("name", None, name)]
        )
        board = await board_repo.board_by_id(session, board_id)
        assert board is not None
        return board

    return await write(ctx, work)


async def rename_board(ctx: Context, id: str, expected_version: str, name: str) -> Board:
    user_id = ctx.user_id()
    board_id = validation.entity_id(id, "id")
    name = validation.name(name)
    version_of = Expected.parse(
        ctx.services.db.dialect, "Board", expected_version, board_repo.board_by_id
    )

    async def work(session: AsyncSession, events: Recorder) -> Board:
        before = await _board_for_write(session, board_id, user_id)
        old_name = before.name
        version = await version_of.write(
            session,
            before,
            lambda: board_repo.rename_board(session, board_id, version_of.value, name),
        )
        await events.record(
            before.workspace_id,
            "board.renamed",
            "Board",
            board_id,
            version,
            [change("name", old_name, name)],
        )
        after = await board_repo.board_by_id(session, board_id)
        assert after is not None
        return after

    return await write(ctx, work)


async def delete_board(ctx: Context, id: str, expected_version: str) -> uuid.UUID:
    user_id = ctx.user_id()
    board_id = validation.entity_id(id, "id")
    version_of = Expected.parse(
        ctx.services.db.dialect, "Board", expected_version, board_repo.board_by_id
    )

    async def work(session: AsyncSession, events: Recorder) -> uuid.UUID:
        before = await _board_for_write(session, board_id, user_id)
        await version_of.write(
            session, before, lambda: board_repo.delete_board(session, board_id, version_of.value)
        )
        await events.record(
            before.workspace_id,
            "board.deleted",
            "Board",
            board_id,
            None,
            [change("name", before.name, None)],
        )
        return board_id

    return await write(ctx, work)


async def board(ctx: Context, id: str) -> Board | None:
    ctx.user_id()
    board_id = validation.entity_id(id, "id")
    found = await ctx.loaders.board_by_id.load(board_id)
    if found is None or not can_read(
        await ctx.loaders.viewer_role_by_workspace.load(found.workspace_id)
    ):
        return None
    return found


async def boards_of(
    ctx: Context, workspace_id: uuid.UUID, first: int | None, after: str | None
) -> Page[Board]:
    """A page of a workspace's boards; the caller already proved it may read the workspace."""
    size, key = BOARDS.request(first, after)
    rows = await ctx.loaders.boards_by_workspace.load((workspace_id, size, key))
    return BOARDS.page(rows, size)
