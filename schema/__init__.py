"""The GraphQL surface: types, inputs, results and the assembled schema.

`build_schema()` assembles Query, Mutation and Subscription; it imports lazily so that
importing one type module does not pull in the whole schema.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

import strawberry
from graphql import GraphQLError
from strawberry.extensions import SchemaExtension
from strawberry.types import ExecutionContext


class ConcordSchema(strawberry.Schema):
    """Strawberry's schema without its error log: a wrong password or a stale version is
    an expected outcome, not an error to log. `schema.errors.ErrorCodes` logs the
    unexpected ones, with their traceback."""

    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        return None

    # Authorization per operation (issue 10): an operation on an open WebSocket must not
    # see the loaders, and so the roles, that an earlier operation on it read.
    # Set by the app (REQUEST_TIMEOUT_SECONDS): queries and mutations on every transport
    # (WebSocket and SSE included) are cancelled after it; subscriptions are not.
    request_timeout: float | None = None

    async def _execute_operation(self, *args: Any, **kwargs: Any) -> Any:
        from resolvers.errors import RequestTimeoutError

        if self.request_timeout is None:
            return await super()._execute_operation(*args, **kwargs)
        try:
            async with asyncio.timeout(self.request_timeout):
                return await super()._execute_operation(*args, **kwargs)
        except TimeoutError as exc:
            raise RequestTimeoutError(self.request_timeout) from exc

    async def execute(self, query: str | None, *args: Any, **kwargs: Any) -> Any:
        return await super().execute(query, *args, **_per_operation(kwargs))

    async def stream(self, query: str | None, *args: Any, **kwargs: Any) -> Any:
        return await super().stream(query, *args, **_per_operation(kwargs))


def _per_operation(kwargs: dict[str, Any]) -> dict[str, Any]:
    from resolvers.context import Context

    context = kwargs.get("context_value")
    if isinstance(context, Context):
        kwargs["context_value"] = context.for_operation()
    return kwargs


def build_schema(
    extensions: Sequence[Callable[[], SchemaExtension] | type[SchemaExtension]] = (),
    request_timeout: float | None = None,
) -> strawberry.Schema:
    from schema.board import Board
    from schema.card import Card
    from schema.comment import Comment
    from schema.documents import OperationNameRequired
    from schema.mutation import Mutation
    from schema.query import Query
    from schema.subscription import SharedRenderExecutor, Subscription
    from schema.workspace import Workspace

    schema = ConcordSchema(
        query=Query,
        mutation=Mutation,
        subscription=Subscription,
        execution_context_class=SharedRenderExecutor,
        types=[Workspace, Board, Card, Comment],
        extensions=[*extensions, OperationNameRequired],
    )
    schema.request_timeout = request_timeout
    return schema
