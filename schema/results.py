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


RegisterResult = Annotated[
    AuthPayload | ValidationError,
    strawberry.union(
        "RegisterResult",
        description="What register answers: AuthPayload when it was done, "
        "else ValidationError (nothing changed).",
    ),
]
LoginResult = Annotated[
    AuthPayload | InvalidCredentials | ValidationError,
    strawberry.union(
        "LoginResult",
        description="What login answers: AuthPayload when it was done, "
        "else InvalidCredentials or ValidationError (nothing changed).",
    ),
]
RefreshTokenResult = Annotated[
    AuthPayload | InvalidCredentials,
    strawberry.union(
        "RefreshTokenResult",
        description="What refreshToken answers: AuthPayload when it was done, "
        "else InvalidCredentials (nothing changed).",
    ),
]
LogoutResult = Annotated[
    LogoutPayload | InvalidCredentials,
    strawberry.union(
        "LogoutResult",
        description="What logout answers: LogoutPayload when it was done, "
        "else InvalidCredentials (nothing changed).",
    ),
]
CreateWorkspaceResult = Annotated[
    WorkspacePayload | ValidationError,
    strawberry.union(
        "CreateWorkspaceResult",
        description="What createWorkspace answers: WorkspacePayload when it was done, "
        "else ValidationError (nothing changed).",
    ),
]
RenameWorkspaceResult = Annotated[
    WorkspacePayload | VersionConflict | NotFound | Forbidden | ValidationError,
    strawberry.union(
        "RenameWorkspaceResult",
        description="What renameWorkspace answers: WorkspacePayload when it was done, "
        "else VersionConflict, NotFound, Forbidden or ValidationError (nothing changed).",
    ),
]
AddMemberResult = Annotated[
    MembershipPayload | NotFound | Forbidden | ValidationError,
    strawberry.union(
        "AddMemberResult",
        description="What addMember answers: MembershipPayload when it was done, "
        "else NotFound, Forbidden or ValidationError (nothing changed).",
    ),
]
ChangeMemberRoleResult = Annotated[
    MembershipPayload | NotFound | Forbidden | ValidationError,
    strawberry.union(
        "ChangeMemberRoleResult",
        description="What changeMemberRole answers: MembershipPayload when it was done, "
        "else NotFound, Forbidden or ValidationError (nothing changed).",
    ),
]
RemoveMemberResult = Annotated[
    DeletePayload | NotFound | Forbidden | ValidationError,
    strawberry.union(
        "RemoveMemberResult",
        description="What removeMember answers: DeletePayload when it was done, "
        "else NotFound, Forbidden or ValidationError (nothing changed).",
    ),
]
CreateBoardResult = Annotated[
    BoardPayload | NotFound | Forbidden | ValidationError,
    strawberry.union(
        "CreateBoardResult",
        description="What createBoard answers: BoardPayload when it was done, "
        "else NotFound, Forbidden or ValidationError (nothing changed).",
    ),
]
RenameBoardResult = Annotated[
    BoardPayload | VersionConflict | NotFound | Forbidden | ValidationError,
    strawberry.union(
        "RenameBoardResult",
        description="What renameBoard answers: BoardPayload when it was done, "
        "else VersionConflict, NotFound, Forbidden or ValidationError (nothing changed).",
    ),
]
DeleteBoardResult = Annotated[
    DeletePayload | VersionConflict | NotFound | Forbidden | ValidationError,
    strawberry.union(
        "DeleteBoardResult",
        description="What deleteBoard answers: DeletePayload when it was done, "
        "else VersionConflict, NotFound, Forbidden or ValidationError (nothing changed).",
    ),
]
CreateCardResult = Annotated[
    CardPayload | NotFound | Forbidden | ValidationError,
    strawberry.union(
        "CreateCardResult",
        description="What createCard answers: CardPayload when it was done, "
        "else NotFound, Forbidden or ValidationError (nothing changed).",
    ),
]
UpdateCardResult = Annotated[
    CardPayload | VersionConflict | NotFound | Forbidden | ValidationError,
    strawberry.union(
        "UpdateCardResult",
        description="What updateCard answers: CardPayload when it was done, "
        "else VersionConflict, NotFound, Forbidden or ValidationError (nothing changed).",
    ),
]
MoveCardResult = Annotated[
    CardPayload | VersionConflict | NotFound | Forbidden | ValidationError,
    strawberry.union(
        "MoveCardResult",
        description="What moveCard answers: CardPayload when it was done, "
        "else VersionConflict, NotFound, Forbidden or ValidationError (nothing changed).",
    ),
]
DeleteCardResult = Annotated[
    DeletePayload | VersionConflict | NotFound | Forbidden | ValidationError,
    strawberry.union(
        "DeleteCardResult",
        description="What deleteCard answers: DeletePayload when it was done, "
        "else VersionConflict, NotFound, Forbidden or ValidationError (nothing changed).",
    ),
]
AddCommentResult = Annotated[
    CommentPayload | NotFound | Forbidden | ValidationError,
    strawberry.union(
        "AddCommentResult",
        description="What addComment answers: CommentPayload when it was done, "
        "else NotFound, Forbidden or ValidationError (nothing changed).",
    ),
]
EditCommentResult = Annotated[
    CommentPayload | VersionConflict | NotFound | Forbidden | ValidationError,
    strawberry.union(
        "EditCommentResult",
        description="What editComment answers: CommentPayload when it was done, "
        "else VersionConflict, NotFound, Forbidden or ValidationError (nothing changed).",
    ),
]
DeleteCommentResult = Annotated[
    DeletePayload | VersionConflict | NotFound | Forbidden | ValidationError,
    strawberry.union(
        "DeleteCommentResult",
        description="What deleteComment answers: DeletePayload when it was done, "
        "else VersionConflict, NotFound, Forbidden or ValidationError (nothing changed).",
    ),
]
