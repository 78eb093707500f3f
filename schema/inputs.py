"""Mutation inputs, as in the contract."""

from __future__ import annotations

from datetime import datetime

import strawberry

from schema.enums import CardStatus, ConflictStrategy, Role


@strawberry.input(description="A new account.")
class RegisterInput:
    email: str = strawberry.field(description="Sign-in email; case does not matter.")
    password: str = strawberry.field(description="At least 10 characters.")
    display_name: str = strawberry.field(description="The name shown to collaborators.")


@strawberry.input(description="Credentials.")
class LoginInput:
    email: str = strawberry.field(description="Sign-in email.")
    password: str = strawberry.field(description="Password.")


@strawberry.input(description="A new workspace; you become its OWNER.")
class CreateWorkspaceInput:
    name: str = strawberry.field(description="1 to 200 characters.")


@strawberry.input(description="Rename a workspace (OWNER).")
class RenameWorkspaceInput:
    id: strawberry.ID = strawberry.field(description="The workspace.")
    expected_version: str = strawberry.field(description="The version you last saw.")
    name: str = strawberry.field(description="1 to 200 characters.")


@strawberry.input(description="Invite a registered user (OWNER).")
class AddMemberInput:
    workspace_id: strawberry.ID = strawberry.field(description="The workspace.")
    email: str = strawberry.field(description="The user's sign-in email.")
    role: Role = strawberry.field(description="Their role.")


@strawberry.input(description="Change a member's role (OWNER).")
class ChangeMemberRoleInput:
    workspace_id: strawberry.ID = strawberry.field(description="The workspace.")
    user_id: strawberry.ID = strawberry.field(description="The member.")
    role: Role = strawberry.field(description="The new role.")


@strawberry.input(description="Remove a member (OWNER), or leave (yourself).")
class RemoveMemberInput:
    workspace_id: strawberry.ID = strawberry.field(description="The workspace.")
    user_id: strawberry.ID = strawberry.field(description="The member.")


@strawberry.input(description="A new board (EDITOR).")
class CreateBoardInput:
    workspace_id: strawberry.ID = strawberry.field(description="The workspace.")
    name: str = strawberry.field(description="1 to 200 characters.")


@strawberry.input(description="Rename a board (EDITOR).")
class RenameBoardInput:
    id: strawberry.ID = strawberry.field(description="The board.")
    expected_version: str = strawberry.field(description="The version you last saw.")
    name: str = strawberry.field(description="1 to 200 characters.")


@strawberry.input(description="Delete a board with its cards (EDITOR).")
class DeleteBoardInput:
    id: strawberry.ID = strawberry.field(description="The board.")
    expected_version: str = strawberry.field(description="The version you last saw.")


@strawberry.input(description="A new card at the end of a board (EDITOR).")
class CreateCardInput:
    board_id: strawberry.ID = strawberry.field(description="The board.")
    title: str = strawberry.field(description="1 to 500 characters.")
    description: str | None = strawberry.field(default="", description="Up to 20,000 characters.")
    status: CardStatus | None = strawberry.field(default=CardStatus.TODO, description="Status.")
    assignee_id: strawberry.ID | None = strawberry.field(
        default=None, description="A member of the workspace."
    )
    due_date: datetime | None = strawberry.field(default=None, description="With a time zone.")


@strawberry.input(description="Fields left out are not changed. assigneeId: null unassigns.")
class UpdateCardInput:
    id: strawberry.ID = strawberry.field(description="The card.")
    expected_version: str = strawberry.field(description="The version you last saw.")
    title: str | None = strawberry.field(default=strawberry.UNSET, description="New title.")
    description: str | None = strawberry.field(
        default=strawberry.UNSET, description="New description."
    )
    status: CardStatus | None = strawberry.field(
        default=strawberry.UNSET, description="New status."
    )
    assignee_id: strawberry.ID | None = strawberry.field(
        default=strawberry.UNSET, description="New assignee; null unassigns."
    )
    due_date: datetime | None = strawberry.field(
        default=strawberry.UNSET, description="New due date; null clears it."
    )
    on_conflict: ConflictStrategy | None = strawberry.field(
        default=ConflictStrategy.FAIL, description="FAIL, or MERGE a disjoint edit."
    )


@strawberry.input(description="Move a card to a board and position (EDITOR).")
class MoveCardInput:
    id: strawberry.ID = strawberry.field(description="The card.")
    expected_version: str = strawberry.field(description="The version you last saw.")
    board_id: strawberry.ID = strawberry.field(description="A board of the same workspace.")
    position: float = strawberry.field(description="Order on the board, ascending.")


@strawberry.input(description="Delete a card with its comments (EDITOR).")
class DeleteCardInput:
    id: strawberry.ID = strawberry.field(description="The card.")
    expected_version: str = strawberry.field(description="The version you last saw.")


@strawberry.input(description="A new comment (EDITOR).")
class AddCommentInput:
    card_id: strawberry.ID = strawberry.field(description="The card.")
    body: str = strawberry.field(description="1 to 10,000 characters.")


@strawberry.input(description="Edit your comment.")
class EditCommentInput:
    id: strawberry.ID = strawberry.field(description="The comment.")
    expected_version: str = strawberry.field(description="The version you last saw.")
    body: str = strawberry.field(description="1 to 10,000 characters.")


@strawberry.input(description="Delete your comment (or any, as OWNER).")
class DeleteCommentInput:
    id: strawberry.ID = strawberry.field(description="The comment.")
    expected_version: str = strawberry.field(description="The version you last saw.")
