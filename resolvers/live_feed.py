"""The `workspaceEvents` use case for the fan-out groups (`subscriptions/group.py`).

`resolvers/live.py` streams a workspace's events to one subscriber; this module gives a
transport's fast path the same use case as a group member instead: the start checks
(membership, cursor) of `live._start`, the workspace's log as the group reads it (shared
`SharedEvent` objects, so a rendering is shared too), and the live membership rule (a
member removed from the workspace gets that event, then `NotFound`).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from models import event as event_store
from resolvers import live, validation
from resolvers.context import Context, Services
from resolvers.errors import NotFoundError
from resolvers.event import event_cursor
from resolvers.unit_of_work import workspace_channel
from subscriptions.group import ChannelGroup, GroupHub


class WorkspaceLog:
    """A workspace's event log, as a `subscriptions.group.EventLog`."""

    page_size = live.BACKFILL_PAGE

    def __init__(self, services: Services, workspace_id: uuid.UUID) -> None:
        self.services = services
        self.workspace_id = workspace_id
        self.shared = live.shared_events(services)

    @property
    def degraded_poll_seconds(self) -> float:
        return live.DEGRADED_POLL_SECONDS

    async def read(self, after: int) -> Sequence[Any]:
        rows = await live._read_log(self.services, self.workspace_id, after)
        return [self.shared.share(live.SharedEvent.from_row(row)) for row in rows]

    def recent(self, after: int, upto: int) -> Sequence[Any] | None:
        if upto - after > self.page_size:
            return None
        return self.shared.recent(self.workspace_id, after, upto)

    async def last(self) -> int:
        async with self.services.db.primary_reader() as session:
            return await event_store.last_seq(session, self.workspace_id)

    def decode(self, message: str) -> Any:
        return self.shared.share(live.SharedEvent.from_message(message))

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
    """A checked `workspaceEvents` start: the group to join, the cursor, the stop rule."""

    __slots__ = ("after", "group", "user_id")

    def __init__(self, group: ChannelGroup, after: int, user_id: uuid.UUID) -> None:
        self.group = group
        self.after = after
        self.user_id = user_id

    def stop_after(self) -> Callable[[Any], Exception | None]:
        user_id = self.user_id

        def removed(event: Any) -> Exception | None:
            if live._removes(event, user_id):
                return NotFoundError("You are no longer a member of this workspace.")
            return None

        return removed


async def workspace_feed(ctx: Context, workspace_id: str, after: str | None) -> WorkspaceFeed:
    """Check the caller may follow the workspace from `after`; raises like the stream does."""
    user_id = ctx.user_id()
    ws = validation.entity_id(workspace_id, "workspaceId")
    services = ctx.services
    start = await live._start(ctx, ws, user_id, after)
    group = group_hub(services).group(workspace_channel(ws), lambda: WorkspaceLog(services, ws))
    return WorkspaceFeed(group, start, user_id)
