"""Who is looking at a board: the use case behind the `presence` subscription."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator

from models import board as board_repo
from models import workspace as workspace_repo
from resolvers import validation
from resolvers.context import Context
from resolvers.errors import NotFoundError
from subscriptions.broker import BrokerUnavailable
from subscriptions.fanout import MessagesMayBeLost
from subscriptions.presence import PresenceStore, Viewer, presence_channel

log = logging.getLogger(__name__)

# Presence is state, not a log: a burst of arrivals needs only the latest answer.
QUEUE_SIZE = 64


async def _heartbeat(store: PresenceStore, board: str, user: str, connection: str) -> None:
    """Keep this view alive; while the store is unreachable, try again next beat."""
    while True:
        await asyncio.sleep(store.heartbeat_interval)
        try:
            await store.heartbeat(board, user, connection)
        except BrokerUnavailable:
            log.warning("presence heartbeat failed", extra={"board": board}, exc_info=True)


async def _still_member(ctx: Context, workspace_id: uuid.UUID, user_id: uuid.UUID) -> bool:
    # The primary: a removal just committed must end the view at once, not after a
    # replica catches up.
    async with ctx.services.db.primary_reader() as session:
        return await workspace_repo.membership(session, workspace_id, user_id) is not None


async def board_presence(ctx: Context, board_id: str) -> AsyncIterator[list[Viewer]]:
    """The board's viewers now, then again whenever someone arrives or leaves.

    Membership is checked again before every value sent and at every heartbeat: a member
    removed from the workspace gets NOT_FOUND and the subscription ends.
    """
    user_id = ctx.user_id()
    board = validation.entity_id(board_id, "boardId")
    async with ctx.reads() as session:
        found = await board_repo.board_by_id(session, board)
        if (
            found is None
            or await workspace_repo.membership(session, found.workspace_id, user_id) is None
        ):
            raise NotFoundError("Board not found.")
    workspace_id = found.workspace_id
    store = ctx.services.presence
    assert store is not None, "the app always provides a presence store"
    key, user, connection = str(board), str(user_id), uuid.uuid4().hex
    async with ctx.services.broker.subscribe(presence_channel(key), queue_size=QUEUE_SIZE) as sub:
        await store.join(key, user, connection)
        beat = asyncio.create_task(_heartbeat(store, key, user, connection))
        messages = sub.__aiter__()
        arrival: asyncio.Future[str] | None = None
        try:
            sent = await store.present(key)
            yield sent
            while True:
                if arrival is None:
                    arrival = asyncio.ensure_future(messages.__anext__())
                done, _ = await asyncio.wait({arrival}, timeout=store.heartbeat_interval)
                if not await _still_member(ctx, workspace_id, user_id):
                    raise NotFoundError("Board not found.")
                if not done:
                    continue
                finished, arrival = arrival, None
                try:
                    finished.result()
                except MessagesMayBeLost:
                    pass
                except StopAsyncIteration:
                    return
                # Our own join is announced too, and a second view of someone already
                # present changes nothing: send a value only when it differs.
                present = await store.present(key)
                if present != sent:
                    sent = present
                    yield sent
        finally:
            if arrival is not None:
                arrival.cancel()
                with contextlib.suppress(BaseException):
                    await arrival
            beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beat
            try:
                await store.leave(key, connection)
            except BrokerUnavailable:
                # The entry expires on its own after the store's TTL.
                log.warning("presence leave failed", extra={"board": key}, exc_info=True)
