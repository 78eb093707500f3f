"""Comment and its connection."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Annotated

import strawberry
from strawberry.types import Info

from models import tables
from schema.context import ctx
from schema.user import User
from schema.versioned import Versioned

if TYPE_CHECKING:
    from schema.card import Card


@strawberry.type(description="A remark on a card.")
class Comment(Versioned):
    row: strawberry.Private[tables.Comment]

    @strawberry.field(description="The text.")
    def body(self) -> str:
        return self.row.body

    @strawberry.field(description="Who wrote it.")
    async def author(self, info: Info) -> User:
        row = await ctx(info).loaders.user_by_id.load(self.row.author_id)
        assert row is not None
        return User(row=row)

    @strawberry.field(description="The card it is on.")
    async def card(self, info: Info) -> Annotated[Card, strawberry.lazy("schema.card")]:
        from schema.card import Card

        row = await ctx(info).loaders.card_by_id.load(self.row.card_id)
        assert row is not None
        return Card(row=row)

    @strawberry.field(description="When it was written.")
    def created_at(self) -> datetime:
        return self.row.created_at


@strawberry.type(description="The comment after the change.")
class CommentPayload:
    comment: Comment = strawberry.field(description="The comment.")
