"""User."""

from __future__ import annotations

import strawberry

from models import tables


@strawberry.type(description="Someone with an account.")
class User:
    row: strawberry.Private[tables.User]

    @strawberry.field(description="Opaque id.")
    def id(self) -> strawberry.ID:
        return strawberry.ID(str(self.row.id))

    @strawberry.field(description="Sign-in email, lower case.")
    def email(self) -> str:
        return self.row.email

    @strawberry.field(description="The name shown to collaborators.")
    def display_name(self) -> str:
        return self.row.display_name

    @classmethod
    def from_row(cls, row: tables.User) -> User:
        return cls(row=row)


def maybe_user(row: tables.User | None) -> User | None:
    return None if row is None else User(row=row)
