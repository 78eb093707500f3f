"""Board and its connection."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import strawberry
from strawberry.types import Info

from models import tables
from resolvers import card as card_resolvers
from schema.arguments import After, First
from schema.context import ctx
from schema.pagination import Connection, connection
from schema.versioned import Versioned

if TYPE_CHECKING:
    from schema.card import Card
    from schema.workspace import Workspace


@strawberry.type(description="A board of cards in a workspace.")
class Board(Versioned):
    row: strawberry.Private[tables.Board]

    @strawberry.field(description="The board's name.")
    def name(self) -> str:
        return self.row.name

    @strawberry.field(description="The workspace the board is in.")
    async def workspace(
        self, info: Info
    ) -> Annotated[Workspace, strawberry.lazy("schema.workspace")]:
        from schema.workspace import Workspace

        row = await ctx(info).loaders.workspace_by_id.load(self.row.workspace_id)
        assert row is not None
        return Workspace(row=row)

    @strawberry.field(description="The board's cards by position.")
    async def cards(
        self, info: Info, first: First = 50, after: After = None
    ) -> Connection[Annotated[Card, strawberry.lazy("schema.card")]]:
        from schema.card import Card

        page = await card_resolvers.cards_of(ctx(info), self.row.id, first, after)
        return connection(page, Card.from_row)


@strawberry.type(description="The board after the change.")
class BoardPayload:
    board: Board = strawberry.field(description="The board.")
