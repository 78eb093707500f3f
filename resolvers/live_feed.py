"""The `workspaceEvents` use case for the fan-out groups (`subscriptions/group.py`).

`resolvers/live.py` streams a workspace's events to one subscriber; this module gives a
transport's fast path the same use case as a group member instead: the start checks
(membership, cursor) of `live._start`, the workspace's log as the group reads it (shared
`SharedEvent` objects, so a rendering is shared too), and the live membership rule (a
member removed from the workspace gets that event, then `NotFound`).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from models import event as event_store
from models import workspace as workspace_repo
from resolvers import live, validation
from resolvers.context import Context, Services
from resolvers.errors import NotFoundError
from resolvers.event import after_seq, event_cursor
from resolvers.unit_of_work import workspace_channel
from subscriptions.group import ChannelGroup, GroupHub


class WorkspaceLog:
    """A workspace's event log, as a `subscriptions.group.EventLog`.

    It also knows who is a member while its group runs, so that a reconnect storm does
    not check every subscriber's membership in the database: the members as of `last`
    (read when the group starts), then every `member.added` and `member.removed` event
    that passes through the group (which sees every event of the workspace, in order),
    and users the database confirmed since. A user removed by an
    event the group has not processed yet may still join: the removal then reaches
    them as their next event and ends their subscription, as if they had joined
    just before it.
    """

    page_size = live.BACKFILL_PAGE

    def __init__(self, services: Services, workspace_id: uuid.UUID) -> None:
        self.services = services
        self.workspace_id = workspace_id
        self.shared = live.shared_events(services)
        self.members: set[uuid.UUID] = set()
        self.removals = 0
        self._reads: dict[int, asyncio.Future[list[Any]]] = {}

    @property
    def degraded_poll_seconds(self) -> float:
        return live.DEGRADED_POLL_SECONDS

    def _seen(self, event: live.SharedEvent) -> live.SharedEvent:
        if event.type == "member.removed":
            self.removals += 1
            for change in event.changes:
                if change["field"] == "user" and change.get("old"):
                    self.members.discard(uuid.UUID(str(change["old"])))
        elif event.type == "member.added":
            for change in event.changes:
                if change["field"] == "user" and change.get("new"):
                    self.members.add(uuid.UUID(str(change["new"])))
        return event

    async def read(self, after: int) -> Sequence[Any]:
        # Members joining together with the same cursor share one query.
        pending = self._reads.get(after)
        if pending is None:
            pending = self._reads[after] = asyncio.ensure_future(self._read(after))
            pending.add_done_callback(lambda _: self._reads.pop(after, None))
        return await asyncio.shield(pending)

    async def _read(self, after: int) -> list[Any]:
        rows = await live._read_log(self.services, self.workspace_id, after)
        return [self._seen(self.shared.share(live.SharedEvent.from_row(row))) for row in rows]

    def recent(self, after: int, upto: int) -> Sequence[Any] | None:
        if upto - after > self.page_size:
            return None
        return self.shared.recent(self.workspace_id, after, upto)

    async def last(self) -> int:
        async with self.services.db.primary_reader() as session:
            last = await event_store.last_seq(session, self.workspace_id)
            # Read after `last`: every membership change up to it is in this set, and
            # the ones after it pass through the group (member.added/removed) in order.
            self.members = await workspace_repo.member_ids(session, self.workspace_id)
        return last

    def decode(self, message: str) -> Any:
        return self._seen(self.shared.share(live.SharedEvent.from_message(message)))

    def may_stop(self, event: Any) -> bool:
        return bool(event.type == "member.removed")

    @contextmanager
    def watching(self, seen: int) -> Iterator[None]:
        with self.shared.watching(self.workspace_id, seen):
            yield


def group_hub(services: Services) -> GroupHub:
    """The process's fan-out groups (one per workspace with subscribers here)."""
    hub = services.extras.get("group_hub")
    if hub is None:
        hub = services.extras["group_hub"] = GroupHub(
            services.broker,
            queue_size=services.subscriber_queue_size,
            slow_consumer=lambda sent: live.SlowConsumer(event_cursor(sent) if sent else None),
        )
    assert isinstance(hub, GroupHub)
    return hub


class WorkspaceFeed:
    """A checked `workspaceEvents` start: where to resume, and the group to join."""

    __slots__ = ("after", "services", "user_id", "workspace_id")

    def __init__(
        self, services: Services, workspace_id: uuid.UUID, after: int, user_id: uuid.UUID
    ) -> None:
        self.services = services
        self.workspace_id = workspace_id
        self.after = after
        self.user_id = user_id

    def group(self) -> ChannelGroup:
        """The workspace's group, started if need be: join it before the next await."""
        services, ws = self.services, self.workspace_id
        return group_hub(services).group(workspace_channel(ws), lambda: WorkspaceLog(services, ws))

    def stop_after(self) -> Callable[[Any], Exception | None]:
        user_id = self.user_id

        def removed(event: Any) -> Exception | None:
            if live._removes(event, user_id):
                return NotFoundError("You are no longer a member of this workspace.")
            return None

        return removed


def _known_start(group: ChannelGroup | None, user_id: uuid.UUID, after: str | None) -> int | None:
    """Where to start without the database, when the running group can vouch for it."""
    if group is None or not group.started or not isinstance(group.log, WorkspaceLog):
        return None
    if user_id not in group.log.members:
        return None
    if after is None:
        return group.last
    start = after_seq(after)
    # Only a cursor whose events are all still in memory: its resume is exact.
    if start <= group.last and group.log.recent(start, group.last) is not None:
        return start
    return None


async def workspace_feed(ctx: Context, workspace_id: str, after: str | None) -> WorkspaceFeed:
    """Check the caller may follow the workspace from `after`; raises like the stream does."""
    user_id = ctx.user_id()
    ws = validation.entity_id(workspace_id, "workspaceId")
    services = ctx.services
    group = group_hub(services).groups.get(workspace_channel(ws))
    start = _known_start(group, user_id, after)
    if start is not None:
        return WorkspaceFeed(services, ws, start, user_id)
    log = group.log if group is not None and isinstance(group.log, WorkspaceLog) else None
    removals = log.removals if log is not None else 0
    start = await live._start(ctx, ws, user_id, after)
    if log is not None and log.removals == removals:
        log.members.add(user_id)  # no removal passed while we asked the database
    return WorkspaceFeed(services, ws, start, user_id)
