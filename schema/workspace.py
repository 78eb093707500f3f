"""Workspace, Membership and their connections."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import strawberry
from strawberry.types import Info

from models import tables
from resolvers import board as board_resolvers
from schema.arguments import After, First
from schema.context import ctx
from schema.enums import Role
from schema.pagination import Connection, connection
from schema.user import User
from schema.versioned import Versioned

if TYPE_CHECKING:
    from schema.board import Board


@strawberry.type(description="A member of a workspace and their role.")
class Membership:
    row: strawberry.Private[tables.Membership]

    @strawberry.field(description="The member.")
    async def user(self, info: Info) -> User:
        user = await ctx(info).loaders.user_by_id.load(self.row.user_id)
        assert user is not None
        return User(row=user)

    @strawberry.field(description="What the member may do.")
    def role(self) -> Role:
        return Role(self.row.role)


@strawberry.type(description="A shared space of boards; the unit of membership and ordering.")
class Workspace(Versioned):
    row: strawberry.Private[tables.Workspace]

    @strawberry.field(description="The workspace's name.")
    def name(self) -> str:
        return self.row.name

    @strawberry.field(description="Everyone in the workspace, in the order they joined.")
    async def members(self, info: Info) -> list[Membership]:
        rows = await ctx(info).loaders.memberships_by_workspace.load(self.row.id)
        return [Membership(row=row) for row in rows]

    @strawberry.field(description="The workspace's boards, oldest first.")
    async def boards(
        self, info: Info, first: First = 50, after: After = None
    ) -> Connection[Annotated[Board, strawberry.lazy("schema.board")]]:
        from schema.board import Board

        page = await board_resolvers.boards_of(ctx(info), self.row.id, first, after)
        return connection(page, Board.from_row)


@strawberry.type(description="The workspace after the change.")
class WorkspacePayload:
    workspace: Workspace = strawberry.field(description="The workspace.")


@strawberry.type(description="The membership after the change.")
class MembershipPayload:
    membership: Membership = strawberry.field(description="The membership.")
