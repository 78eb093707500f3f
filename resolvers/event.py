"""Reading the event log: a workspace's events and a card's history."""

from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncSession

from models import event as event_store
from models.tables import Event
from resolvers import validation
from resolvers.access import can_read
from resolvers.context import Context
from resolvers.errors import CursorExpired, NotFoundError
from resolvers.pagination import Page, decode_cursor, encode_cursor, page_of, parse_int

CURSOR = "event"


def event_cursor(seq: int) -> str:
    """The cursor of the event with `seq`: pass it as `after` to resume after it."""
    return encode_cursor(CURSOR, [seq])


def after_seq(after: str | None, field: str = "after") -> int:
    if after is None:
        return 0
    (seq,) = decode_cursor(CURSOR, after, [parse_int], field)
    return int(seq)


async def require_kept(
    session: AsyncSession, workspace_id: uuid.UUID, start: int, instead: str
) -> None:
    """Raise CursorExpired when events after `start` were pruned from the workspace's log.

    Read after the events themselves, in the same session: a prune that removed some of
    them before they were read is then seen here, so a page never hides a gap.
    `instead` tells the client what to do (reload and read or subscribe without `after`).
    """
    if start == 0:
        return
    last = await event_store.last_seq(session, workspace_id)
    if start >= last:
        return
    check_kept(start, last, await event_store.first_seq(session, workspace_id), instead)


def check_kept(start: int, last: int, oldest: int | None, instead: str) -> None:
    """CursorExpired unless every event after `start` up to `last` is still in the log."""
    if start == 0 or start >= last:
        return
    if oldest is None or oldest > start + 1:
        raise CursorExpired(
            "This cursor is older than the events the server keeps: reload the workspace "
            f"and {instead}."
        )


async def require_reader(ctx: Context, workspace_id: uuid.UUID, what: str = "Workspace") -> None:
    if not can_read(await ctx.loaders.viewer_role_by_workspace.load(workspace_id)):
        raise NotFoundError(f"{what} not found.")


async def events(
    ctx: Context, workspace_id: str, after: str | None, first: int | None
) -> Page[Event]:
    ctx.user_id()
    ws = validation.entity_id(workspace_id, "workspaceId")
    first = validation.page_size(first, default=100)
    start = after_seq(after)
    await require_reader(ctx, ws)
    async with ctx.reads() as session:
        rows = await event_store.list_events(session, ws, start, first + 1)
        await require_kept(session, ws, start, "read the events again without `after`")
    return page_of(rows, first, CURSOR, lambda e: (e.seq,))


async def card_history(
    ctx: Context, card_id: str, first: int | None, after: str | None
) -> Page[Event]:
    """The card's own events, oldest first; still readable after the card was deleted."""
    ctx.user_id()
    card = validation.entity_id(card_id, "cardId")
    first = validation.page_size(first, default=100)
    start = after_seq(after)
    async with ctx.reads() as session:
        rows = await event_store.list_entity_events(session, card, start, first + 1)
        workspace = (
            rows[0].workspace_id if rows else await event_store.entity_workspace(session, card)
        )
    if workspace is None:
        raise NotFoundError("Card not found.")
    await require_reader(ctx, workspace, "Card")
    async with ctx.reads() as session:
        # The card's events live in its workspace's log: a pruned stretch of that log may
        # have held some of them.
        await require_kept(session, workspace, start, "read the history again without `after`")
    return page_of(rows, first, CURSOR, lambda e: (e.seq,))
