"""Card and its connection."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Annotated

import strawberry
from strawberry.types import Info

from models import tables
from resolvers import comment as comment_resolvers
from schema.arguments import After, First
from schema.context import ctx
from schema.enums import CardStatus
from schema.pagination import Connection, connection
from schema.user import User, maybe_user
from schema.versioned import Versioned

if TYPE_CHECKING:
    from schema.board import Board
    from schema.comment import Comment


@strawberry.type(description="A unit of work on a board.")
class Card(Versioned):
    row: strawberry.Private[tables.Card]

    @strawberry.field(description="Short title.")
    def title(self) -> str:
        return self.row.title

    @strawberry.field(description="Longer text; may be empty.")
    def description(self) -> str:
        return self.row.description

    @strawberry.field(description="Where the card stands.")
    def status(self) -> CardStatus:
        return CardStatus(self.row.status)

    @strawberry.field(description="Order on the board, ascending.")
    def position(self) -> float:
        return self.row.position

    @strawberry.field(description="When it is due, if ever.")
    def due_date(self) -> datetime | None:
        return self.row.due_date

    @strawberry.field(description="Who works on it, if anyone.")
    async def assignee(self, info: Info) -> User | None:
        if self.row.assignee_id is None:
            return None
        return maybe_user(await ctx(info).loaders.user_by_id.load(self.row.assignee_id))

    @strawberry.field(description="The board the card is on.")
    async def board(self, info: Info) -> Annotated[Board, strawberry.lazy("schema.board")]:
        from schema.board import Board

        row = await ctx(info).loaders.board_by_id.load(self.row.board_id)
        assert row is not None
        return Board(row=row)

    @strawberry.field(description="Comments, oldest first.")
    async def comments(
        self, info: Info, first: First = 50, after: After = None
    ) -> Connection[Annotated[Comment, strawberry.lazy("schema.comment")]]:
        from schema.comment import Comment

        page = await comment_resolvers.comments_of(ctx(info), self.row.id, first, after)
        return connection(page, Comment.from_row)


@strawberry.type(description="The card after the change.")
class CardPayload:
    card: Card = strawberry.field(description="The card.")
