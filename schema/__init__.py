"""The GraphQL surface: types, inputs, results and the assembled schema.

`build_schema()` assembles Query, Mutation and Subscription; it imports lazily so that
importing one type module does not pull in the whole schema.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import strawberry
from strawberry.extensions import SchemaExtension


def build_schema(
    extensions: Sequence[SchemaExtension | type[SchemaExtension]] = (),
) -> strawberry.Schema:
    from schema.board import Board
    from schema.card import Card
    from schema.comment import Comment
    from schema.mutation import Mutation
    from schema.query import Query
    from schema.workspace import Workspace

    subscription: Any = None
    try:
        from schema.subscription import Subscription

        subscription = Subscription
    except ImportError:  # pragma: no cover - the live-updates module is optional in tests
        subscription = None
    return strawberry.Schema(
        query=Query,
        mutation=Mutation,
        subscription=subscription,
        types=[Workspace, Board, Card, Comment],
        extensions=list(extensions),
    )
