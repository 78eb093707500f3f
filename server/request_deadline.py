"""The time limit of one request: the work is cancelled, not just no longer awaited."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

from graphql import GraphQLError
from strawberry.types import ExecutionResult


def timeout_error(seconds: float) -> GraphQLError:
    return GraphQLError(
        f"The request took longer than {seconds:g} s (REQUEST_TIMEOUT_SECONDS) and was "
        "stopped; nothing it was doing was committed.",
        extensions={"code": "TIMEOUT", "limit": "REQUEST_TIMEOUT_SECONDS"},
    )


async def request_deadline(
    seconds: float | None, work: Awaitable[ExecutionResult]
) -> ExecutionResult:
    """`work`'s result, or a TIMEOUT error once `seconds` have passed.

    `asyncio.timeout` cancels the task at its next await: the resolvers and their
    database calls stop, and an open transaction is rolled back by its context manager.
    """
    if seconds is None:
        return await work
    try:
        async with asyncio.timeout(seconds):
            return await work
    except TimeoutError:
        return ExecutionResult(data=None, errors=[timeout_error(seconds)])
