"""The Versioned interface and the mapping from rows to the types that implement it."""

from __future__ import annotations

from typing import Any

import strawberry

from models import tables


@strawberry.interface(
    description="Anything people edit concurrently: its version changes on every write."
)
class Versioned:
    # Declared as resolvers, which each implementing type overrides with its own.
    @strawberry.field(description="Opaque id, unique across all types.")
    def id(self) -> strawberry.ID:
        raise NotImplementedError

    @strawberry.field(description="Opaque; send it back as expectedVersion when you change this.")
    def version(self) -> str:
        raise NotImplementedError


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
