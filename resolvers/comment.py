"""Comments: add, edit (author only), delete (author or OWNER), list."""

from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncSession

from models import card as card_repo
from models import comment as comment_repo
from models.base import new_id
from models.tables import Comment
from resolvers import validation
from resolvers.access import Role, require_role
from resolvers.context import Context
from resolvers.errors import ForbiddenError, NotFoundError
from resolvers.lists import COMMENTS
from resolvers.pagination import Page
from resolvers.unit_of_work import Recorder, change, write
from resolvers.versions import Expected


def _body(value: str) -> str:
    return validation.text(value, "body", maximum=validation.COMMENT_MAX)


async def add_comment(ctx: Context, card_id: str, body: str) -> Comment:
    user_id = ctx.user_id()
    card = validation.entity_id(card_id, "cardId")
    text = _body(body)

    async def work(session: AsyncSession, events: Recorder) -> Comment:
        parent = await card_repo.card_by_id(session, card)
        if parent is None:
            raise NotFoundError("Card not found.")
        await require_role(session, parent.workspace_id, user_id, Role.EDITOR, "Card")
        comment_id = new_id()
        version = await comment_repo.create_comment(
            session,
            {
                "id": comment_id,
                "workspace_id": parent.workspace_id,
                "card_id": card,
                "author_id": user_id,
                "body": text,
            },
        )
        await events.record(
            parent.workspace_id,
            "comment.added",
            "Comment",
            comment_id,
            version,
            [change("body", None, text), change("card", None, str(card))],
        )
        comment = await comment_repo.comment_by_id(session, comment_id)
        assert comment is not None
        return comment

    return await write(ctx, work)


async def _own_comment(
    session: AsyncSession, comment_id: uuid.UUID, user_id: uuid.UUID, *, owner_may: bool
) -> Comment:
    comment = await comment_repo.comment_by_id(session, comment_id)
    if comment is None:
        raise NotFoundError("Comment not found.")
    role = await require_role(session, comment.workspace_id, user_id, Role.EDITOR, "Comment")
    if comment.author_id != user_id and not (owner_may and role == Role.OWNER):
        raise ForbiddenError("Only its author can change a comment.")
    return comment


async def edit_comment(ctx: Context, id: str, expected_version: str, body: str) -> Comment:
    user_id = ctx.user_id()
    comment_id = validation.entity_id(id, "id")
    text = _body(body)
    version_of = Expected.parse(
        ctx.services.db.dialect, "Comment", expected_version, comment_repo.comment_by_id
    )

    async def work(session: AsyncSession, events: Recorder) -> Comment:
        comment = await _own_comment(session, comment_id, user_id, owner_may=False)
        old = comment.body
        version = await version_of.write(
            session,
            comment,
            lambda: comment_repo.edit_comment(session, comment_id, version_of.value, text),
        )
        await events.record(
            comment.workspace_id,
            "comment.edited",
            "Comment",
            comment_id,
            version,
            [change("body", old, text)],
        )
        after = await comment_repo.comment_by_id(session, comment_id)
        assert after is not None
        return after

    return await write(ctx, work)


async def delete_comment(ctx: Context, id: str, expected_version: str) -> uuid.UUID:
    user_id = ctx.user_id()
    comment_id = validation.entity_id(id, "id")
    version_of = Expected.parse(
        ctx.services.db.dialect, "Comment", expected_version, comment_repo.comment_by_id
    )

    async def work(session: AsyncSession, events: Recorder) -> uuid.UUID:
        comment = await _own_comment(session, comment_id, user_id, owner_may=True)
        await version_of.write(
            session,
            comment,
            lambda: comment_repo.delete_comment(session, comment_id, version_of.value),
        )
        await events.record(
            comment.workspace_id,
            "comment.deleted",
            "Comment",
            comment_id,
            None,
            [change("body", comment.body, None)],
        )
        return comment_id

    return await write(ctx, work)


async def comments_of(
    ctx: Context, card_id: uuid.UUID, first: int | None, after: str | None
) -> Page[Comment]:
    size, key = COMMENTS.request(first, after)
    rows = await ctx.loaders.comments_by_card.load((card_id, size, key))
    return COMMENTS.page(rows, size)
