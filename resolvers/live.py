"""Live event streams: backfill from the log, then the broker, exactly once and in order.

`workspace_events` is the use case behind the `workspaceEvents` subscription:

1. check membership, subscribe to the workspace's broker channel;
2. read where the log stands *after* subscribing, so nothing published in between is lost;
3. backfill from the log after the caller's cursor, then stream live events;
4. drop what was already sent; fill a gap (seq > last + 1) from the log; on a broker
   reconnect, or while the broker is down, read the log instead of waiting for messages.

Every subscriber in a process is handed the *same* `SharedEvent` object for a given
event, so the GraphQL layer can render it once per distinct selection (see
`schema/subscription.py`), and resolve its references through one set of loaders.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from models import event as event_store
from resolvers import validation
from resolvers.context import Context, Services
from resolvers.errors import DomainError, InvalidInput, NotFoundError
from resolvers.event import after_seq, check_kept, event_cursor
from resolvers.loaders import Loaders
from resolvers.unit_of_work import workspace_channel
from subscriptions.broker import SubscriberOverflow
from subscriptions.fanout import MessagesMayBeLost
from subscriptions.group import EVENTS_DELIVERED, delivered

log = logging.getLogger(__name__)

BACKFILL_PAGE = 500
# How often each process checks the log of every workspace it has subscribers for, to
# catch a publish that was lost without the broker noticing (the publishing process could
# not reach Redis, say). One query per watched workspace, not per subscriber.
IDLE_POLL_SECONDS = 5.0
# While the broker is down, the log is the only source: every subscriber polls it briskly.
DEGRADED_POLL_SECONDS = 1.0
SHARED_EVENTS_KEPT = 10_000


class SlowConsumer(DomainError):
    """The subscriber fell behind its bounded queue and was cut off; resume with the cursor."""

    code = "SLOW_CONSUMER"

    def __init__(self, cursor: str | None) -> None:
        super().__init__(
            "You fell behind the event stream and were disconnected; subscribe again with "
            "`after` set to the last cursor you received."
        )
        self.cursor = cursor


@dataclass(eq=False)
class SharedEvent:
    """One event as every subscriber in this process sees it (same attributes as a row)."""

    workspace_id: uuid.UUID
    seq: int
    type: str
    entity_type: str
    entity_id: uuid.UUID
    entity_version: str | None
    actor_id: uuid.UUID | None
    changes: list[dict[str, Any]]
    occurred_at: datetime
    loaders: Loaders | None = None
    # The publish span's context (W3C traceparent) when the message carried one.
    trace: str | None = None
    # Rendered GraphQL results, by selection; filled by the schema layer.
    rendered: dict[Any, Any] = field(default_factory=dict)

    @classmethod
    def from_row(cls, row: Any) -> SharedEvent:
        return cls(
            workspace_id=row.workspace_id,
            seq=int(row.seq),
            type=row.type,
            entity_type=row.entity_type,
            entity_id=row.entity_id,
            entity_version=row.entity_version,
            actor_id=row.actor_id,
            changes=list(row.changes),
            occurred_at=row.occurred_at,
        )

    @classmethod
    def from_message(cls, message: str) -> SharedEvent:
        data = json.loads(message)
        actor = data.get("actor_id")
        return cls(
            workspace_id=uuid.UUID(data["workspace_id"]),
            seq=int(data["seq"]),
            type=data["type"],
            entity_type=data["entity_type"],
            entity_id=uuid.UUID(data["entity_id"]),
            entity_version=data.get("entity_version"),
            actor_id=None if actor is None else uuid.UUID(actor),
            changes=data["changes"],
            occurred_at=datetime.fromisoformat(data["occurred_at"]),
            trace=data.get("trace"),
        )


class SharedEvents:
    """The process's recent events by (workspace, seq), so subscribers share one object.

    It also watches the log of each workspace that has subscribers here: when the log has
    had an event for a whole interval that never came through the broker, the channel's
    subscribers are told messages may be lost, and each reads the log.
    """

    def __init__(self, services: Services, kept: int = SHARED_EVENTS_KEPT) -> None:
        self.services = services
        self.kept = kept
        self._events: OrderedDict[tuple[uuid.UUID, int], SharedEvent] = OrderedDict()
        self._highest: dict[uuid.UUID, int] = {}
        self._watchers: dict[uuid.UUID, tuple[int, asyncio.Task[None]]] = {}

    def share(self, event: SharedEvent) -> SharedEvent:
        key = (event.workspace_id, event.seq)
        self._highest[event.workspace_id] = max(event.seq, self._highest.get(event.workspace_id, 0))
        existing = self._events.get(key)
        if existing is not None:
            return existing
        # Fresh loaders per event: references resolve as they are now, batched across
        # every subscriber that renders this event.
        event.loaders = Loaders(self.services.db.reader, None)
        self._events[key] = event
        if len(self._events) > self.kept:
            self._events.popitem(last=False)
        return event

    def recent(self, workspace_id: uuid.UUID, after: int, upto: int) -> list[SharedEvent] | None:
        """Events after `after` up to `upto` of the workspace, if all are still kept here."""
        events = []
        for seq in range(after + 1, upto + 1):
            event = self._events.get((workspace_id, seq))
            if event is None:
                return None
            events.append(event)
        return events

    @contextlib.contextmanager
    def watching(self, workspace_id: uuid.UUID, seen: int) -> Iterator[None]:
        """Keep the workspace's log watched while the block runs (one task per workspace)."""
        self._highest[workspace_id] = max(seen, self._highest.get(workspace_id, 0))
        entry = self._watchers.get(workspace_id)
        if entry is None:
            entry = (0, asyncio.create_task(self._watch(workspace_id)))
        self._watchers[workspace_id] = (entry[0] + 1, entry[1])
        try:
            yield
        finally:
            count, task = self._watchers[workspace_id]
            if count == 1:
                del self._watchers[workspace_id]
                task.cancel()
            else:
                self._watchers[workspace_id] = (count - 1, task)

    async def _watch(self, workspace_id: uuid.UUID) -> None:
        previous = 0
        while True:
            await asyncio.sleep(IDLE_POLL_SECONDS)
            try:
                async with self.services.db.primary_reader() as session:
                    last = await event_store.last_seq(session, workspace_id)
            except Exception:
                log.warning("watching the event log failed", exc_info=True)
                continue
            # Behind on two checks in a row with the same last seq: not merely in flight.
            if last > self._highest.get(workspace_id, 0) and last == previous:
                log.warning(
                    "events missing from the broker; subscribers read the log",
                    extra={"workspace": str(workspace_id), "last_seq": last},
                )
                self.services.broker.signal_gap(workspace_channel(workspace_id))
            previous = last


def shared_events(services: Services) -> SharedEvents:
    cache = services.extras.get("shared_events")
    if cache is None:
        cache = services.extras["shared_events"] = SharedEvents(services)
    assert isinstance(cache, SharedEvents)
    return cache


def _removes(event: SharedEvent, user_id: uuid.UUID) -> bool:
    """Whether `event` takes `user_id` out of the workspace."""
    if event.type != "member.removed":
        return False
    return any(c["field"] == "user" and c.get("old") == str(user_id) for c in event.changes)


async def _read_log(services: Services, workspace_id: uuid.UUID, after: int) -> Sequence[Any]:
    async with services.db.primary_reader() as session:
        return await event_store.list_events(session, workspace_id, after, BACKFILL_PAGE)


async def _start(
    ctx: Context, workspace_id: uuid.UUID, user_id: uuid.UUID, after: str | None
) -> int:
    """The seq after which to deliver; raises when the caller may not or cannot resume."""
    async with ctx.services.db.primary_reader() as session:
        member, last, oldest = await event_store.subscription_start(session, workspace_id, user_id)
    if not member:
        raise NotFoundError("Workspace not found.")
    if after is None:
        return last
    start = after_seq(after)
    if start > last:
        raise InvalidInput("after", "This cursor is ahead of the workspace's event log.")
    check_kept(start, last, oldest, "subscribe again without `after`")
    return start


async def workspace_events(
    ctx: Context, workspace_id: str, after: str | None
) -> AsyncIterator[SharedEvent]:
    """Every event of the workspace after `after` (or from now), exactly once, in seq order."""
    user_id = ctx.user_id()
    ws = validation.entity_id(workspace_id, "workspaceId")
    services = ctx.services
    shared = shared_events(services)
    broker = services.broker

    async with (
        broker.subscribe(workspace_channel(ws), queue_size=services.subscriber_queue_size) as sub,
        contextlib.AsyncExitStack() as stack,
    ):
        sent = await _start(ctx, ws, user_id, after)
        stack.enter_context(shared.watching(ws, sent))
        messages = sub.__aiter__()
        pending: asyncio.Task[str] | None = None

        async def catch_up() -> AsyncIterator[SharedEvent]:
            nonlocal sent
            while True:
                rows = await _read_log(services, ws, sent)
                for row in rows:
                    event = shared.share(SharedEvent.from_row(row))
                    EVENTS_DELIVERED.inc()
                    yield event
                    sent = event.seq
                    if _removes(event, user_id):
                        raise NotFoundError("You are no longer a member of this workspace.")
                if len(rows) < BACKFILL_PAGE:
                    return

        try:
            async for event in catch_up():
                yield event
            while True:
                if pending is None:
                    pending = asyncio.ensure_future(messages.__anext__())
                # While the broker is down, poll the log; otherwise the broker (or the
                # process's log watcher, through it) wakes us.
                degraded = getattr(broker, "pubsub_connected", True) is False
                timeout = DEGRADED_POLL_SECONDS if degraded else None
                done, _ = await asyncio.wait({pending}, timeout=timeout)
                if not done:
                    async for event in catch_up():
                        yield event
                    continue
                task, pending = pending, None
                try:
                    message = task.result()
                except MessagesMayBeLost:
                    async for event in catch_up():
                        yield event
                    continue
                except SubscriberOverflow as exc:
                    raise SlowConsumer(event_cursor(sent) if sent else None) from exc
                except StopAsyncIteration:
                    return
                event = SharedEvent.from_message(message)
                if event.seq <= sent:
                    continue
                if event.seq > sent + 1:
                    # A publish was missed: the log has everything up to this event.
                    async for missed in catch_up():
                        yield missed
                    if event.seq <= sent:
                        continue
                event = shared.share(event)
                delivered(event, workspace_channel(ws), 1)
                yield event
                sent = event.seq
                if _removes(event, user_id):
                    raise NotFoundError("You are no longer a member of this workspace.")
        finally:
            if pending is not None:
                pending.cancel()
