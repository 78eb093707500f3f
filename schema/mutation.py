"""Mutation: one-liners over resolvers/, each answering its own result union."""

from __future__ import annotations

from typing import Annotated, Any

import strawberry
from strawberry.types import Info

from resolvers import auth, board, card, comment, member, workspace
from resolvers.auth import Session
from schema.board import Board, BoardPayload
from schema.card import Card, CardPayload
from schema.comment import Comment, CommentPayload
from schema.context import ctx
from schema.enums import ConflictStrategy
from schema.errors import respond
from schema.inputs import (
    AddCommentInput,
    AddMemberInput,
    ChangeMemberRoleInput,
    CreateBoardInput,
    CreateCardInput,
    CreateWorkspaceInput,
    DeleteBoardInput,
    DeleteCardInput,
    DeleteCommentInput,
    EditCommentInput,
    LoginInput,
    MoveCardInput,
    RegisterInput,
    RemoveMemberInput,
    RenameBoardInput,
    RenameWorkspaceInput,
    UpdateCardInput,
)
from schema.results import (
    AddCommentResult,
    AddMemberResult,
    AuthPayload,
    ChangeMemberRoleResult,
    CreateBoardResult,
    CreateCardResult,
    CreateWorkspaceResult,
    DeleteBoardResult,
    DeleteCardResult,
    DeleteCommentResult,
    DeletePayload,
    EditCommentResult,
    LoginResult,
    LogoutPayload,
    LogoutResult,
    MoveCardResult,
    RefreshTokenResult,
    RegisterResult,
    RemoveMemberResult,
    RenameBoardResult,
    RenameWorkspaceResult,
    UpdateCardResult,
)
from schema.user import User
from schema.workspace import Membership, MembershipPayload, Workspace, WorkspacePayload

UPDATABLE = ("title", "description", "status", "assignee_id", "due_date")


# The `input` argument of each mutation, described.
RegisterArg = Annotated[
    RegisterInput,
    strawberry.argument(description="Email, password and display name of the new account."),
]
LoginArg = Annotated[LoginInput, strawberry.argument(description="Email and password.")]
CreateWorkspaceArg = Annotated[
    CreateWorkspaceInput, strawberry.argument(description="The new workspace's name.")
]
RenameWorkspaceArg = Annotated[
    RenameWorkspaceInput,
    strawberry.argument(description="The workspace, the version you last saw and the new name."),
]
AddMemberArg = Annotated[
    AddMemberInput,
    strawberry.argument(description="The workspace, the new member's email and their role."),
]
ChangeMemberRoleArg = Annotated[
    ChangeMemberRoleInput,
    strawberry.argument(description="The workspace, the member and their new role."),
]
RemoveMemberArg = Annotated[
    RemoveMemberInput, strawberry.argument(description="The workspace and the member to remove.")
]
CreateBoardArg = Annotated[
    CreateBoardInput, strawberry.argument(description="The workspace and the new board's name.")
]
RenameBoardArg = Annotated[
    RenameBoardInput,
    strawberry.argument(description="The board, the version you last saw and the new name."),
]
DeleteBoardArg = Annotated[
    DeleteBoardInput, strawberry.argument(description="The board and the version you last saw.")
]
CreateCardArg = Annotated[
    CreateCardInput, strawberry.argument(description="The board and the new card's fields.")
]
UpdateCardArg = Annotated[
    UpdateCardInput,
    strawberry.argument(
        description="The card, the version you last saw, the fields to change, and what to "
        "do on a conflict."
    ),
]
MoveCardArg = Annotated[
    MoveCardInput,
    strawberry.argument(
        description="The card, the version you last saw, the target board and position."
    ),
]
DeleteCardArg = Annotated[
    DeleteCardInput, strawberry.argument(description="The card and the version you last saw.")
]
AddCommentArg = Annotated[
    AddCommentInput, strawberry.argument(description="The card and the comment's text.")
]
EditCommentArg = Annotated[
    EditCommentInput,
    strawberry.argument(description="The comment, the version you last saw and the new text."),
]
DeleteCommentArg = Annotated[
    DeleteCommentInput, strawberry.argument(description="The comment and the version you last saw.")
]
TokenArg = Annotated[
    str, strawberry.argument(description="A refresh token from register, login or refreshToken.")
]


def _auth(s: Session) -> AuthPayload:
    return AuthPayload(
        access_token=s.access_token,
        refresh_token=s.refresh_token,
        expires_in=s.expires_in,
        user=User(row=s.user),
    )


def _deleted(entity_id: Any) -> DeletePayload:
    return DeletePayload(id=strawberry.ID(str(entity_id)))


def _workspace(row: Any) -> WorkspacePayload:
    return WorkspacePayload(workspace=Workspace(row=row))


def _membership(row: Any) -> MembershipPayload:
    return MembershipPayload(membership=Membership(row=row))


def _board(row: Any) -> BoardPayload:
    return BoardPayload(board=Board(row=row))


def _card(row: Any) -> CardPayload:
    return CardPayload(card=Card(row=row))


def _comment(row: Any) -> CommentPayload:
    return CommentPayload(comment=Comment(row=row))


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def _card_fields(i: UpdateCardInput) -> dict[str, Any]:
    """Only the fields the client sent, by GraphQL input name; enums as their names."""
    sent = {}
    for name in UPDATABLE:
        value = getattr(i, name)
        if value is strawberry.UNSET:
            continue
        sent[_camel(name)] = value.value if hasattr(value, "value") else value
    return sent


@strawberry.type(description="Changes. Each answers a union of its payload and typed errors.")
class Mutation:
    @strawberry.mutation(description="Create an account and sign in.")
    async def register(self, info: Info, input: RegisterArg) -> RegisterResult:
        c = ctx(info)
        return await respond(
            RegisterResult,
            lambda: auth.register(c, input.email, input.password, input.display_name),
            _auth,
        )

    @strawberry.mutation(description="Sign in.")
    async def login(self, info: Info, input: LoginArg) -> LoginResult:
        c = ctx(info)
        return await respond(LoginResult, lambda: auth.login(c, input.email, input.password), _auth)

    @strawberry.mutation(description="Trade a refresh token for new tokens; the old one dies.")
    async def refresh_token(self, info: Info, token: TokenArg) -> RefreshTokenResult:
        c = ctx(info)
        return await respond(RefreshTokenResult, lambda: auth.refresh(c, token), _auth)

    @strawberry.mutation(description="Revoke a refresh token of yours.")
    async def logout(self, info: Info, refresh_token: TokenArg) -> LogoutResult:
        c = ctx(info)
        return await respond(
            LogoutResult, lambda: auth.logout(c, refresh_token), lambda _: LogoutPayload(ok=True)
        )

    @strawberry.mutation(description="Create a workspace; you become its OWNER.")
    async def create_workspace(
        self, info: Info, input: CreateWorkspaceArg
    ) -> CreateWorkspaceResult:
        c = ctx(info)
        return await respond(
            CreateWorkspaceResult, lambda: workspace.create_workspace(c, input.name), _workspace
        )

    @strawberry.mutation(description="Rename a workspace (OWNER).")
    async def rename_workspace(
        self, info: Info, input: RenameWorkspaceArg
    ) -> RenameWorkspaceResult:
        c = ctx(info)
        return await respond(
            RenameWorkspaceResult,
            lambda: workspace.rename_workspace(c, input.id, input.expected_version, input.name),
            _workspace,
        )

    @strawberry.mutation(description="Add a registered user to a workspace (OWNER).")
    async def add_member(self, info: Info, input: AddMemberArg) -> AddMemberResult:
        c = ctx(info)
        return await respond(
            AddMemberResult,
            lambda: member.add_member(c, input.workspace_id, input.email, input.role.name),
            _membership,
        )

    @strawberry.mutation(description="Change a member's role (OWNER); one OWNER always stays.")
    async def change_member_role(
        self, info: Info, input: ChangeMemberRoleArg
    ) -> ChangeMemberRoleResult:
        c = ctx(info)
        return await respond(
            ChangeMemberRoleResult,
            lambda: member.change_member_role(
                c, input.workspace_id, input.user_id, input.role.name
            ),
            _membership,
        )

    @strawberry.mutation(description="Remove a member (OWNER), or leave a workspace yourself.")
    async def remove_member(self, info: Info, input: RemoveMemberArg) -> RemoveMemberResult:
        c = ctx(info)
        return await respond(
            RemoveMemberResult,
            lambda: member.remove_member(c, input.workspace_id, input.user_id),
            _deleted,
        )

    @strawberry.mutation(description="Create a board (EDITOR).")
    async def create_board(self, info: Info, input: CreateBoardArg) -> CreateBoardResult:
        c = ctx(info)
        return await respond(
            CreateBoardResult, lambda: board.create_board(c, input.workspace_id, input.name), _board
        )

    @strawberry.mutation(description="Rename a board (EDITOR).")
    async def rename_board(self, info: Info, input: RenameBoardArg) -> RenameBoardResult:
        c = ctx(info)
        return await respond(
            RenameBoardResult,
            lambda: board.rename_board(c, input.id, input.expected_version, input.name),
            _board,
        )

    @strawberry.mutation(description="Delete a board with its cards and comments (EDITOR).")
    async def delete_board(self, info: Info, input: DeleteBoardArg) -> DeleteBoardResult:
        c = ctx(info)
        return await respond(
            DeleteBoardResult,
            lambda: board.delete_board(c, input.id, input.expected_version),
            _deleted,
        )

    @strawberry.mutation(description="Create a card at the end of a board (EDITOR).")
    async def create_card(self, info: Info, input: CreateCardArg) -> CreateCardResult:
        c = ctx(info)
        return await respond(
            CreateCardResult,
            lambda: card.create_card(
                c,
                input.board_id,
                input.title,
                input.description or "",
                (input.status.name if input.status else "TODO"),
                input.assignee_id,
                input.due_date,
            ),
            _card,
        )

    @strawberry.mutation(description="Change some of a card's fields (EDITOR).")
    async def update_card(self, info: Info, input: UpdateCardArg) -> UpdateCardResult:
        c = ctx(info)
        merge = input.on_conflict is ConflictStrategy.MERGE
        return await respond(
            UpdateCardResult,
            lambda: card.update_card(
                c, input.id, input.expected_version, _card_fields(input), merge
            ),
            _card,
        )

    @strawberry.mutation(description="Move a card to a board and position (EDITOR).")
    async def move_card(self, info: Info, input: MoveCardArg) -> MoveCardResult:
        c = ctx(info)
        return await respond(
            MoveCardResult,
            lambda: card.move_card(
                c, input.id, input.expected_version, input.board_id, input.position
            ),
            _card,
        )

    @strawberry.mutation(description="Delete a card with its comments (EDITOR).")
    async def delete_card(self, info: Info, input: DeleteCardArg) -> DeleteCardResult:
        c = ctx(info)
        return await respond(
            DeleteCardResult,
            lambda: card.delete_card(c, input.id, input.expected_version),
            _deleted,
        )

    @strawberry.mutation(description="Comment on a card (EDITOR).")
    async def add_comment(self, info: Info, input: AddCommentArg) -> AddCommentResult:
        c = ctx(info)
        return await respond(
            AddCommentResult, lambda: comment.add_comment(c, input.card_id, input.body), _comment
        )

    @strawberry.mutation(description="Edit your own comment.")
    async def edit_comment(self, info: Info, input: EditCommentArg) -> EditCommentResult:
        c = ctx(info)
        return await respond(
            EditCommentResult,
            lambda: comment.edit_comment(c, input.id, input.expected_version, input.body),
            _comment,
        )

    @strawberry.mutation(description="Delete your comment, or any comment as OWNER.")
    async def delete_comment(self, info: Info, input: DeleteCommentArg) -> DeleteCommentResult:
        c = ctx(info)
        return await respond(
            DeleteCommentResult,
            lambda: comment.delete_comment(c, input.id, input.expected_version),
            _deleted,
        )
