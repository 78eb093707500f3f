"""One transaction per mutation: change, record the event, commit, then publish.

The event is written in the same transaction as the change it describes, so the log
never disagrees with the data. Publishing happens only after the commit succeeded, and a
failed publish loses nothing: subscribers backfill from the log.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from opentelemetry.trace import SpanKind
from prometheus_client import Counter
from sqlalchemy.ext.asyncio import AsyncSession

from models import event as event_store
from models import idempotency as idempotency_store
from models.tables import Event
from models.transaction import run_in_transaction
from resolvers.context import Context
from resolvers.errors import IdempotencyKeyTaken
from resolvers.reads import SEEN_HEADER, format_seen
from telemetry import tracing

T = TypeVar("T")
log = logging.getLogger(__name__)

EVENTS_PUBLISHED = Counter(
    "concord_events_published_total",
    "Events published to the broker after their commit, by outcome (ok, failed).",
    ["outcome"],
)


def workspace_channel(workspace_id: uuid.UUID | str) -> str:
    return f"workspace:{workspace_id}"


def event_message(event: Event, traceparent: str | None = None) -> str:
    """The broker message for an event: enough to deliver it without reading the database.

    With tracing on it also carries the publish span's context (`trace`), so that each
    process's delivery span continues the mutation's trace.
    """
    message = {
        "id": event.id,
        "workspace_id": str(event.workspace_id),
        "seq": event.seq,
        "type": event.type,
        "entity_type": event.entity_type,
        "entity_id": str(event.entity_id),
        "entity_version": event.entity_version,
        "actor_id": None if event.actor_id is None else str(event.actor_id),
        "changes": event.changes,
        "occurred_at": event.occurred_at.isoformat(),
    }
    if traceparent is not None:
        message["trace"] = traceparent
    return json.dumps(message, separators=(",", ":"))


class Recorder:
    """Appends events inside the mutation's transaction and remembers them for publishing."""

    def __init__(self, session: AsyncSession, actor_id: uuid.UUID | None) -> None:
        self.session = session
        self.actor_id = actor_id
        self.events: list[Event] = []

    async def record(
        self,
        workspace_id: uuid.UUID,
        type: str,
        entity_type: str,
        entity_id: uuid.UUID,
        version: str | None,
        changes: list[dict[str, Any]],
    ) -> Event:
        # Taken last in the transaction: the stream's row lock orders the workspace's
        # writers until commit, so it should be held as briefly as possible.
        seq = await event_store.next_seq(self.session, workspace_id)
        event = await event_store.append(
            self.session,
            workspace_id=workspace_id,
            seq=seq,
            type=type,
            entity_type=entity_type,
            entity_id=entity_id,
            entity_version=version,
            actor_id=self.actor_id,
            changes=changes,
        )
        self.events.append(event)
        return event


async def write(ctx: Context, work: Callable[[AsyncSession, Recorder], Awaitable[T]]) -> T:
    """Run `work` in one (retried when transient) transaction, then publish its events.

    With an Idempotency-Key not yet claimed, the key's row is inserted first in the same
    transaction: it commits exactly when the change and its event do, and a concurrent
    request with the key waits on it, then applies nothing (IdempotencyKeyTaken).
    """
    actor = ctx.viewer.user_id if ctx.viewer else None
    recorders: list[Recorder] = []
    idempotency = ctx.idempotency
    if idempotency is not None and idempotency.lost:
        raise IdempotencyKeyTaken()
    claim = idempotency if idempotency is not None and idempotency.row_id is None else None
    claimed: list[uuid.UUID] = []

    async def attempt(session: AsyncSession) -> T:
        recorder = Recorder(session, actor)
        recorders[:] = [recorder]
        if claim is not None:
            claimed[:] = [
                await idempotency_store.claim(
                    session, claim.user_id, claim.key, claim.request_hash, claim.ttl_seconds
                )
            ]
        return await work(session, recorder)

    try:
        result = await run_in_transaction(ctx.services.db.writer, attempt)
    except idempotency_store.KeyTaken:
        assert claim is not None
        claim.lost = True
        raise IdempotencyKeyTaken() from None
    if claim is not None:
        claim.row_id = claimed[0]
    events = recorders[0].events
    if events:
        _remember_seen(ctx, events)
    for event in events:
        try:
            await _publish(ctx, event)
        except Exception:
            # The event is committed; subscribers will find it in the log.
            EVENTS_PUBLISHED.labels("failed").inc()
            log.warning("publishing event failed", exc_info=True, extra={"seq": event.seq})
        else:
            EVENTS_PUBLISHED.labels("ok").inc()
    return result


async def _publish(ctx: Context, event: Event) -> None:
    channel = workspace_channel(event.workspace_id)
    tracer = tracing.tracer
    if tracer is None:
        await ctx.services.broker.publish(channel, event_message(event))
        return
    with tracer.start_as_current_span(
        f"publish {event.type}",
        kind=SpanKind.PRODUCER,
        attributes={
            "messaging.system": "concord",
            "messaging.destination.name": channel,
            "concord.event.seq": event.seq,
            "concord.event.type": event.type,
        },
    ):
        await ctx.services.broker.publish(channel, event_message(event, tracing.inject()))


def _remember_seen(ctx: Context, events: list[Event]) -> None:
    """Tell the client (and this request's later reads) the log position it has written."""
    seen = {event.workspace_id: event.seq for event in events}
    # Over HTTP the response is a separate object with writable headers; a WebSocket is
    # both request and response, and has no headers to add once open.
    if ctx.response is not None and ctx.response is not ctx.request:
        ctx.response.headers[SEEN_HEADER] = format_seen(seen)
    # Reads later in this request (the payload) must see the write: use the primary.
    ctx.reader = ctx.services.db.primary_reader
    ctx.loaders = ctx.fresh().loaders


def change(field: str, old: Any, new: Any) -> dict[str, Any]:
    return {"field": field, "old": old, "new": new}


def diff(before: dict[str, Any], after: dict[str, Any]) -> list[dict[str, Any]]:
    """Changes for the fields whose values differ, in `after`'s order."""
    return [change(k, before.get(k), v) for k, v in after.items() if before.get(k) != v]
