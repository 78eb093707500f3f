"""Limits applied around one HTTP operation: its time limit, 429 for rate limits, 503
when the database is unavailable.

The time limit cancels the work, it does not just stop waiting for it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

from graphql import GraphQLError
from starlette.responses import Response
from strawberry.types import ExecutionResult

from schema.errors import UNAVAILABLE_MESSAGE


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


def unavailable_error(retry_after: int) -> GraphQLError:
    """SERVICE_UNAVAILABLE for work that failed outside the schema's execution."""
    return GraphQLError(
        UNAVAILABLE_MESSAGE,
        extensions={"code": "SERVICE_UNAVAILABLE", "retryAfter": retry_after},
    )


def unavailable(result: ExecutionResult, response: Response) -> None:
    """HTTP 503 with Retry-After when the operation failed because the database is down."""
    _status(result, response, "SERVICE_UNAVAILABLE", 503)


def too_many(result: ExecutionResult, response: Response) -> None:
    """HTTP 429 with Retry-After when the operation was refused by a rate limit."""
    _status(result, response, "RATE_LIMITED", 429)


def _status(result: ExecutionResult, response: Response, code: str, status: int) -> None:
    waits = [
        int(error.extensions.get("retryAfter", 1))
        for error in result.errors or ()
        if error.extensions and error.extensions.get("code") == code
    ]
    if waits:
        response.status_code = status
        response.headers["Retry-After"] = str(max(waits))
