"""Enums of the contract."""

from __future__ import annotations

from enum import Enum

import strawberry


@strawberry.enum(description="What a member may do in a workspace.")
class Role(Enum):
    OWNER = strawberry.enum_value(
        "OWNER",
        description="Everything an EDITOR may, and manages members, renames and deletes the "
        "workspace. A workspace always keeps one.",
    )
    EDITOR = strawberry.enum_value(
        "EDITOR",
        description="Everything a VIEWER may, and creates and edits boards, cards and comments "
        "(their own comments only).",
    )
    VIEWER = strawberry.enum_value(
        "VIEWER",
        description="Reads everything in the workspace, events and history included; "
        "changes nothing.",
    )


@strawberry.enum(description="Where a card stands.")
class CardStatus(Enum):
    TODO = strawberry.enum_value("TODO", description="Not started (a new card's status).")
    DOING = strawberry.enum_value("DOING", description="In progress.")
    DONE = strawberry.enum_value("DONE", description="Finished.")


@strawberry.enum(description="What updateCard does when the card changed since expectedVersion.")
class ConflictStrategy(Enum):
    FAIL = strawberry.enum_value("FAIL", description="Return a VersionConflict.")
    MERGE = strawberry.enum_value(
        "MERGE",
        description="Apply the edit if none of its fields changed since expectedVersion.",
    )
