"""Expected outcomes as union members, everything else as GraphQL errors with a stable code.

`respond` is the one place that turns a resolver's domain exception into the member of
the mutation's result union. `ErrorCodes` gives every GraphQL error an
`extensions.code` and, outside debug mode, masks unexpected errors (no traceback, no SQL)
and drops field suggestions that would reveal the schema to a probing client.
"""

from __future__ import annotations

import logging
import math
import re
import typing
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import strawberry
from graphql import GraphQLError
from prometheus_client import Counter
from strawberry.exceptions import MissingQueryError
from strawberry.extensions import SchemaExtension
from strawberry.schema.exceptions import CannotGetOperationTypeError, InvalidOperationTypeError

from models.breaker import Unavailable
from models.database import is_unavailable
from resolvers.errors import (
    DomainError,
    ForbiddenError,
    InvalidCredentialsError,
    InvalidInput,
    NotFoundError,
    RateLimitedError,
    RequestTimeoutError,
    VersionConflictError,
)
from schema.versioned import Versioned, as_versioned

log = logging.getLogger(__name__)
T = TypeVar("T")

VERSION_CONFLICTS = Counter(
    "concord_version_conflicts_total",
    "Writes answered VersionConflict (someone else wrote first), by entity type.",
    ["entity"],
)


@strawberry.interface(description="An expected, non-successful outcome.")
class UserError:
    message: str = strawberry.field(description="What went wrong, for people.")
    code: str = strawberry.field(description="What went wrong, for programs.")


@strawberry.type(description="Someone else changed the entity since expectedVersion.")
class VersionConflict(UserError):
    current: Versioned = strawberry.field(description="The entity as it is now.")
    current_version: str = strawberry.field(description="Its version now.")
    changed_fields: list[str] = strawberry.field(
        description="Fields changed since the caller's expectedVersion."
    )


@strawberry.type(description="It does not exist, or you are not a member of its workspace.")
class NotFound(UserError):
    pass


@strawberry.type(description="Your role does not allow this.")
class Forbidden(UserError):
    pass


@strawberry.type(description="The input is not acceptable; nothing was changed.")
class ValidationError(UserError):
    field: str | None = strawberry.field(description="The offending input field, if one.")


@strawberry.type(description="Email, password or token not accepted.")
class InvalidCredentials(UserError):
    pass


def _member(error: DomainError) -> Any:
    if isinstance(error, VersionConflictError):
        return VersionConflict(
            message=error.message,
            code=error.code,
            current=as_versioned(error.current),
            current_version=error.current_version,
            changed_fields=error.changed_fields,
        )
    if isinstance(error, InvalidInput):
        return ValidationError(message=error.message, code=error.code, field=error.field)
    kinds: dict[type[DomainError], type[Any]] = {
        NotFoundError: NotFound,
        ForbiddenError: Forbidden,
        InvalidCredentialsError: InvalidCredentials,
    }
    for kind, member in kinds.items():
        if isinstance(error, kind):
            return member(message=error.message, code=error.code)
    raise error


def union_members(result_type: Any) -> tuple[type[Any], ...]:
    """The classes of `Annotated[A | B | C, strawberry.union(...)]`."""
    return typing.get_args(typing.get_args(result_type)[0])


async def respond(
    result_type: Any, call: Callable[[], Awaitable[T]], wrap: Callable[[T], Any]
) -> Any:
    """Run `call`; its value through `wrap`, or its domain error as a union member.

    An error the union has no member for (NotFound on createWorkspace, say) is raised and
    becomes a GraphQL error with the error's code.
    """
    try:
        value = await call()
    except DomainError as error:
        if isinstance(error, VersionConflictError):
            VERSION_CONFLICTS.labels(error.entity_type).inc()
        member = _member(error)
        if type(member) not in union_members(result_type):
            raise
        return member
    return wrap(value)


# graphql-core puts "Did you mean 'x'?" at the end or in the middle of a message.
_SUGGESTION = re.compile(r"\s*Did you mean [^?]*\?")


# Raised by Strawberry, before execution, for a request that names no runnable operation
# (none at all, an unknown name, or a type the transport does not run): the client's
# mistake, not ours.
_REQUEST_ERRORS = (MissingQueryError, CannotGetOperationTypeError, InvalidOperationTypeError)


def describe(exc: BaseException) -> str:
    """The exception's type and message (the driver's own for a wrapped database error)."""
    cause = exc.__cause__ if isinstance(exc, Unavailable) and exc.__cause__ else exc
    orig = getattr(cause, "orig", None) or cause
    return f"{type(orig).__name__}: {orig}" if str(orig) else type(orig).__name__


def _extensions(error: GraphQLError) -> dict[str, Any]:
    original = error.original_error
    if isinstance(original, _REQUEST_ERRORS):
        return {"code": "BAD_REQUEST"}
    if isinstance(original, DomainError):
        extensions: dict[str, Any] = {"code": original.code}
        if isinstance(original, InvalidInput) and original.field:
            extensions["field"] = original.field
        if isinstance(original, RateLimitedError):
            extensions.update(limit=original.limit, retryAfter=original.retry_after)
        if isinstance(original, RequestTimeoutError):
            extensions["limit"] = "REQUEST_TIMEOUT_SECONDS"
        return extensions
    if isinstance(original, GraphQLError):
        return {"code": "BAD_USER_INPUT"}
    if original is not None and is_unavailable(original):
        return {"code": "SERVICE_UNAVAILABLE", "retryAfter": retry_after(original)}
    if original is None:
        if error.message.startswith("Syntax Error"):
            return {"code": "GRAPHQL_PARSE_FAILED"}
        return {"code": "GRAPHQL_VALIDATION_FAILED"}
    return {"code": "INTERNAL_SERVER_ERROR"}


UNAVAILABLE_MESSAGE = "The service is temporarily unavailable (its database); try again shortly."


def retry_after(exc: BaseException) -> int:
    """Whole seconds until an unavailable dependency is worth trying again (at least 1)."""
    return max(1, math.ceil(exc.retry_after)) if isinstance(exc, Unavailable) else 1


class ErrorCodes(SchemaExtension):
    """Codes on every error; masking and no suggestions unless `debug`."""

    def __init__(self, *, debug: bool = False) -> None:
        self.debug = debug

    def _convert(self, error: GraphQLError) -> GraphQLError:
        extensions = {**(error.extensions or {}), **_extensions(error)}
        message = error.message
        original = error.original_error
        unexpected = original is not None and not isinstance(
            original, (DomainError, GraphQLError, *_REQUEST_ERRORS)
        )
        if unexpected and original is not None and is_unavailable(original):
            # An outage, not a bug: no traceback; nothing at all once the breaker is open
            # (it logged opening), one line for the failures that open it.
            if not (isinstance(original, Unavailable) and original.__cause__ is None):
                log.warning("database unavailable in %s: %s", error.path, describe(original))
            unexpected = False
            message = UNAVAILABLE_MESSAGE
        if unexpected:
            log.error("unexpected error in %s", error.path, exc_info=original)
            if not self.debug:
                message = "Unexpected error."
        if not self.debug:
            message = _SUGGESTION.sub("", message)
        return GraphQLError(
            message,
            nodes=error.nodes,
            source=error.source,
            positions=error.positions,
            path=error.path,
            original_error=original if self.debug else None,
            extensions=extensions,
        )

    def _convert_result(self, result: Any) -> None:
        errors = getattr(result, "errors", None)
        if errors:
            result.errors = [self._convert(e) for e in errors]

    def on_operation(self) -> Iterator[None]:
        self._streamed = False
        yield
        if self._streamed:
            return
        # Strawberry keeps the result's errors as the pre-execution errors too: convert
        # (and log) each error once, and hand both lists the same converted error.
        converted: dict[int, GraphQLError] = {}

        def once(error: GraphQLError) -> GraphQLError:
            if id(error) not in converted:
                converted[id(error)] = self._convert(error)
            return converted[id(error)]

        result = self.execution_context.result
        if result is not None and result.errors:
            result.errors = [once(e) for e in result.errors]
        pre = self.execution_context.pre_execution_errors
        if pre:
            self.execution_context.pre_execution_errors = [once(e) for e in pre]

    def on_stream_result(self, result: Any) -> Iterator[None]:
        """Each result of a subscription, before it is sent."""
        self._streamed = True
        self._convert_result(result)
        yield None
