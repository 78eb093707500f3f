"""Reading the event log: a workspace's events and a card's history."""

from __future__ import annotations

import uuid

from models import event as event_store
from models.tables import Event
from resolvers import validation
from resolvers.access import can_read
from resolvers.context import Context
from resolvers.errors import NotFoundError
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
    if not rows and start == 0:
        raise NotFoundError("Card not found.")
    if rows:
        await require_reader(ctx, rows[0].workspace_id, "Card")
    return page_of(rows, first, CURSOR, lambda e: (e.seq,))
