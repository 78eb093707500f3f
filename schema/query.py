"""Query: one-liners over resolvers/."""

from __future__ import annotations

from typing import Annotated

import strawberry
from strawberry.types import Info

from resolvers import board, card, event, workspace
from schema.arguments import After, EventsAfter, First, LookupId, WorkspaceId
from schema.board import Board
from schema.card import Card
from schema.context import ctx
from schema.event import Event
from schema.pagination import Connection, connection
from schema.user import User, maybe_user
from schema.workspace import Workspace


@strawberry.type(description="Reads.")
class Query:
    @strawberry.field(description="The signed-in user.")
    async def me(self, info: Info) -> User | None:
        c = ctx(info)
        return maybe_user(await c.loaders.user_by_id.load(c.user_id()))

    @strawberry.field(description="Your workspaces, oldest first.")
    async def workspaces(
        self, info: Info, first: First = 50, after: After = None
    ) -> Connection[Workspace]:
        page = await workspace.my_workspaces(ctx(info), first, after)
        return connection(page, Workspace.from_row)

    @strawberry.field(description="Null when it does not exist or the caller is not a member.")
    async def workspace(self, info: Info, id: LookupId) -> Workspace | None:
        row = await workspace.workspace(ctx(info), id)
        return None if row is None else Workspace(row=row)

    @strawberry.field(description="Null when it does not exist or the caller is not a member.")
    async def board(self, info: Info, id: LookupId) -> Board | None:
        row = await board.board(ctx(info), id)
        return None if row is None else Board(row=row)

    @strawberry.field(description="Null when it does not exist or the caller is not a member.")
    async def card(self, info: Info, id: LookupId) -> Card | None:
        row = await card.card(ctx(info), id)
        return None if row is None else Card(row=row)

    @strawberry.field(description="The workspace's event log in seq order, after a cursor.")
    async def events(
        self,
        info: Info,
        workspace_id: WorkspaceId,
        after: EventsAfter = None,
        first: First = 100,
    ) -> Connection[Event]:
        page = await event.events(ctx(info), workspace_id, after, first)
        return connection(page, Event.from_row)

    @strawberry.field(description="Every change of one card, oldest first.")
    async def card_history(
        self,
        info: Info,
        card_id: Annotated[
            strawberry.ID,
            strawberry.argument(description="The card's id (also of a deleted card)."),
        ],
        first: First = 100,
        after: EventsAfter = None,
    ) -> Connection[Event]:
        page = await event.card_history(ctx(info), card_id, first, after)
        return connection(page, Event.from_row)
