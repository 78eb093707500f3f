"""Enums of the contract."""

from __future__ import annotations

from enum import Enum

import strawberry


@strawberry.enum(description="What a member may do in a workspace.")
class Role(Enum):
    OWNER = "OWNER"
    EDITOR = "EDITOR"
    VIEWER = "VIEWER"


@strawberry.enum(description="Where a card stands.")
class CardStatus(Enum):
    TODO = "TODO"
    DOING = "DOING"
    DONE = "DONE"


@strawberry.enum(description="What updateCard does when the card changed since expectedVersion.")
class ConflictStrategy(Enum):
    FAIL = strawberry.enum_value("FAIL", description="Return a VersionConflict.")
    MERGE = strawberry.enum_value(
        "MERGE",
        description="Apply the edit if none of its fields changed since expectedVersion.",
    )
