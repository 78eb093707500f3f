"""The Versioned interface and the mapping from rows to the types that implement it."""

from __future__ import annotations

from typing import Any, Self

import strawberry

from models import tables
from models.versioning import encode_version


@strawberry.interface(
    description="Anything people edit concurrently: its version changes on every write."
)
class Versioned:
    # Every implementing type wraps a versioned row; these resolvers serve them all.
    row: strawberry.Private[Any]

    @strawberry.field(description="Opaque id, unique across all types.")
    def id(self) -> strawberry.ID:
        return strawberry.ID(str(self.row.id))

    @strawberry.field(description="Opaque; send it back as expectedVersion when you change this.")
    def version(self) -> str:
        return encode_version(self.row.version)

    @classmethod
    def from_row(cls, row: Any) -> Self:
        return cls(row=row)


def as_versioned(row: Any) -> Versioned:
    """The GraphQL object for a versioned row (the `current` of a VersionConflict)."""
    from schema.board import Board
    from schema.card import Card
    from schema.comment import Comment
    from schema.workspace import Workspace

    kinds: dict[type[Any], Any] = {
        tables.Workspace: Workspace,
        tables.Board: Board,
        tables.Card: Card,
        tables.Comment: Comment,
    }
    result: Versioned = kinds[type(row)].from_row(row)
    return result
