"""Payloads and one result union per mutation."""

from __future__ import annotations

from typing import Annotated

import strawberry

from schema.board import BoardPayload
from schema.card import CardPayload
from schema.comment import CommentPayload
from schema.errors import Forbidden, InvalidCredentials, NotFound, ValidationError, VersionConflict
from schema.user import User
from schema.workspace import MembershipPayload, WorkspacePayload


@strawberry.type(description="A signed-in session.")
class AuthPayload:
    access_token: str = strawberry.field(description="Send as 'Authorization: Bearer …'.")
    refresh_token: str = strawberry.field(description="Trade for new tokens; single use.")
    expires_in: int = strawberry.field(description="Seconds until the access token expires.")
    user: User = strawberry.field(description="Who signed in.")


@strawberry.type(description="What was deleted.")
class DeletePayload:
    id: strawberry.ID = strawberry.field(description="Its id.")


@strawberry.type(description="Signed out.")
class LogoutPayload:
    ok: bool = strawberry.field(description="Always true.")


RegisterResult = Annotated[AuthPayload | ValidationError, strawberry.union("RegisterResult")]
LoginResult = Annotated[
    AuthPayload | InvalidCredentials | ValidationError, strawberry.union("LoginResult")
]
RefreshTokenResult = Annotated[
    AuthPayload | InvalidCredentials, strawberry.union("RefreshTokenResult")
]
LogoutResult = Annotated[LogoutPayload | InvalidCredentials, strawberry.union("LogoutResult")]
CreateWorkspaceResult = Annotated[
    WorkspacePayload | ValidationError, strawberry.union("CreateWorkspaceResult")
]
RenameWorkspaceResult = Annotated[
    WorkspacePayload | VersionConflict | NotFound | Forbidden | ValidationError,
    strawberry.union("RenameWorkspaceResult"),
]
AddMemberResult = Annotated[
    MembershipPayload | NotFound | Forbidden | ValidationError,
    strawberry.union("AddMemberResult"),
]
ChangeMemberRoleResult = Annotated[
    MembershipPayload | NotFound | Forbidden | ValidationError,
    strawberry.union("ChangeMemberRoleResult"),
]
RemoveMemberResult = Annotated[
    DeletePayload | NotFound | Forbidden | ValidationError,
    strawberry.union("RemoveMemberResult"),
]
CreateBoardResult = Annotated[
    BoardPayload | NotFound | Forbidden | ValidationError, strawberry.union("CreateBoardResult")
]
RenameBoardResult = Annotated[
    BoardPayload | VersionConflict | NotFound | Forbidden | ValidationError,
    strawberry.union("RenameBoardResult"),
]
DeleteBoardResult = Annotated[
    DeletePayload | VersionConflict | NotFound | Forbidden | ValidationError,
    strawberry.union("DeleteBoardResult"),
]
CreateCardResult = Annotated[
    CardPayload | NotFound | Forbidden | ValidationError, strawberry.union("CreateCardResult")
]
UpdateCardResult = Annotated[
    CardPayload | VersionConflict | NotFound | Forbidden | ValidationError,
    strawberry.union("UpdateCardResult"),
]
MoveCardResult = Annotated[
    CardPayload | VersionConflict | NotFound | Forbidden | ValidationError,
    strawberry.union("MoveCardResult"),
]
DeleteCardResult = Annotated[
    DeletePayload | VersionConflict | NotFound | Forbidden | ValidationError,
    strawberry.union("DeleteCardResult"),
]
AddCommentResult = Annotated[
    CommentPayload | NotFound | Forbidden | ValidationError, strawberry.union("AddCommentResult")
]
EditCommentResult = Annotated[
    CommentPayload | VersionConflict | NotFound | Forbidden | ValidationError,
    strawberry.union("EditCommentResult"),
]
DeleteCommentResult = Annotated[
    DeletePayload | VersionConflict | NotFound | Forbidden | ValidationError,
    strawberry.union("DeleteCommentResult"),
]
