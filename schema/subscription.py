"""Subscription: live events and presence, rendered once per distinct selection.

Strawberry executes a subscription's selection set once per subscriber per event. With
thousands of subscribers on one workspace that is thousands of identical executions.
`SharedRenderExecutor` keeps, on the event object every subscriber of this process
shares (`resolvers.live.SharedEvent`), the result per distinct selection (the printed
operation and its variables): the first subscriber renders it, the rest reuse it. Every
member sees the same events, so the selection is the whole permission scope.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncGenerator
from datetime import datetime
from typing import Annotated, Any

import strawberry
from graphql import print_ast
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext
from strawberry.types import Info

from resolvers import live, presence
from resolvers.event import event_cursor
from resolvers.live import SharedEvent
from schema.arguments import EventsAfter, WorkspaceId
from schema.context import ctx
from schema.event import Event
from schema.user import User


class SharedRenderExecutor(StrawberryGraphQLCoreExecutionContext):
    """Reuses a subscription event's result across subscribers with the same selection."""

    _selection_key: str | None = None

    def build_per_event_executor(self, payload: Any) -> Any:
        if self._selection_key is None:
            fragments = "".join(print_ast(f) for f in self.fragment_definitions.values())
            variables = json.dumps(self.variable_values, sort_keys=True, default=str)
            self._selection_key = print_ast(self.operation) + fragments + variables
        return super().build_per_event_executor(payload)

    def execute_operation(self, serially: bool | None = None) -> Any:
        shared = getattr(self.root_value, "row", None)
        key = self._selection_key
        if not isinstance(shared, SharedEvent) or key is None:
            return super().execute_operation(serially)
        if key not in shared.rendered:
            result = super().execute_operation(serially)
            if self.is_awaitable(result):
                # Concurrent subscribers await the same rendering.
                result = asyncio.ensure_future(result)
            shared.rendered[key] = result
        result = shared.rendered[key]
        if isinstance(result, asyncio.Future):
            # A subscriber that goes away mid-rendering must not cancel it for the others
            # (awaiting a task from a cancelled task cancels the awaited task).
            return asyncio.shield(result)
        return result


@strawberry.type(description="Someone looking at a board.")
class PresenceEntry:
    user: User = strawberry.field(description="Who.")
    since: datetime = strawberry.field(description="Since when (their earliest open view).")


@strawberry.type(description="Who is looking at a board now.")
class Presence:
    board_id: strawberry.ID = strawberry.field(description="The board.")
    present: list[PresenceEntry] = strawberry.field(description="Viewers, earliest first.")


@strawberry.type(description="Live updates over WebSocket (graphql-transport-ws).")
class Subscription:
    @strawberry.subscription(
        description=(
            "Every event of the workspace after `after` (a cursor), exactly once and in seq order."
        )
    )
    async def workspace_events(
        self, info: Info, workspace_id: WorkspaceId, after: EventsAfter = None
    ) -> AsyncGenerator[Event, None]:
        c = ctx(info)
        async for event in live.workspace_events(c, workspace_id, c.resume_after or after):
            c.stream_position = event_cursor(event.seq)
            yield Event(row=event)

    @strawberry.subscription(
        description=(
            "Who is looking at the board now; a new value whenever someone arrives or leaves."
        )
    )
    async def presence(
        self,
        info: Info,
        board_id: Annotated[strawberry.ID, strawberry.argument(description="The board's id.")],
    ) -> AsyncGenerator[Presence, None]:
        c = ctx(info)
        async for viewers in presence.board_presence(c, board_id):
            ids = [uuid.UUID(v.user_id) for v in viewers]
            users = await c.fresh().loaders.user_by_id.load_many(ids)
            yield Presence(
                board_id=board_id,
                present=[
                    PresenceEntry(user=User(row=user), since=v.since)
                    for v, user in zip(viewers, users, strict=True)
                    if user is not None
                ],
            )
