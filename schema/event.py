"""Event, FieldChange and the event connection."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import strawberry
from strawberry.scalars import JSON
from strawberry.types import Info

from resolvers.event import event_cursor
from schema.context import ctx
from schema.user import User, maybe_user


@strawberry.type(description="One field's value before and after a change.")
class FieldChange:
    field: str = strawberry.field(description="The GraphQL field name (ids for references).")
    old_value: JSON | None = strawberry.field(description="Before; null when created.")
    new_value: JSON | None = strawberry.field(description="After; null when deleted.")


@strawberry.type(
    description="One recorded change. seq is gapless and ordered within its workspace."
)
class Event:
    # A models.tables.Event, or an event decoded from a broker message (same attributes).
    row: strawberry.Private[Any]

    @strawberry.field(description="Position in the workspace's log: 1, 2, 3, … without gaps.")
    def seq(self) -> int:
        return int(self.row.seq)

    @strawberry.field(description="Pass as `after` to resume right after this event.")
    def cursor(self) -> str:
        return event_cursor(self.row.seq)

    @strawberry.field(description="What happened: <entity>.<verb>, e.g. card.updated.")
    def type(self) -> str:
        return str(self.row.type)

    @strawberry.field(description="The workspace the event belongs to.")
    def workspace_id(self) -> strawberry.ID:
        return strawberry.ID(str(self.row.workspace_id))

    @strawberry.field(description="GraphQL type name of the changed entity.")
    def entity_type(self) -> str:
        return str(self.row.entity_type)

    @strawberry.field(description="Id of the changed entity.")
    def entity_id(self) -> strawberry.ID:
        return strawberry.ID(str(self.row.entity_id))

    @strawberry.field(description="The entity's version after the change; null if deleted.")
    def version(self) -> str | None:
        value = self.row.entity_version
        return None if value is None else str(value)

    @strawberry.field(description="Who made the change.")
    async def actor(self, info: Info) -> User | None:
        if self.row.actor_id is None:
            return None
        # A live event carries loaders of its own, fresh for the event and shared by
        # every subscriber rendering it; a row read by a query uses the request's.
        loaders = getattr(self.row, "loaders", None) or ctx(info).loaders
        return maybe_user(await loaders.user_by_id.load(self.row.actor_id))

    @strawberry.field(description="Each changed field with its old and new value.")
    def changes(self) -> list[FieldChange]:
        return [
            FieldChange(field=c["field"], old_value=c.get("old"), new_value=c.get("new"))
            for c in self.row.changes
        ]

    @strawberry.field(description="When it was committed (UTC).")
    def occurred_at(self) -> datetime:
        value: datetime = self.row.occurred_at
        return value

    @classmethod
    def from_row(cls, row: Any) -> Event:
        return cls(row=row)
