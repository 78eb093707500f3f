"""Domain outcomes that are not successes.

Resolvers raise these; `schema/errors.py` is the one place that turns them into the
union members clients see (or GraphQL errors where the result type has no such member).
"""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    code = "ERROR"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFoundError(DomainError):
    """Does not exist, or the caller is not a member: the two are indistinguishable."""

    code = "NOT_FOUND"


class ForbiddenError(DomainError):
    code = "FORBIDDEN"


class InvalidInput(DomainError):
    code = "VALIDATION_FAILED"

    def __init__(self, field: str | None, message: str) -> None:
        super().__init__(message)
        self.field = field


class InvalidCredentialsError(DomainError):
    code = "INVALID_CREDENTIALS"


class RateLimitedError(DomainError):
    """Too many attempts: HTTP 429 with Retry-After; over a WebSocket, an error."""

    code = "RATE_LIMITED"

    def __init__(self, limit: str, retry_after: int) -> None:
        super().__init__(f"Too many attempts ({limit}): try again in {retry_after} s.")
        self.limit = limit
        self.retry_after = retry_after


class RequestTimeoutError(DomainError):
    """The operation outlived REQUEST_TIMEOUT_SECONDS and was cancelled."""

    code = "TIMEOUT"

    def __init__(self, seconds: float) -> None:
        super().__init__(
            f"The request took longer than {seconds:g} s (REQUEST_TIMEOUT_SECONDS) and was "
            "stopped; nothing it was doing was committed."
        )


class VersionConflictError(DomainError):
    """Someone else wrote first; carries the entity as it is now."""

    code = "VERSION_CONFLICT"

    def __init__(
        self,
        entity_type: str,
        current: Any,
        current_version: str,
        changed: list[str],
        *,
        changes_known: bool = True,
    ):
        super().__init__(
            f"{entity_type} was changed by someone else"
            + (f" ({', '.join(changed)})" if changed else "")
            + "; reload it and apply your edit again."
        )
        self.entity_type = entity_type
        self.current = current
        self.current_version = current_version
        self.changed_fields = changed
        # False when the log no longer holds (or never held) the caller's version: the
        # fields changed since then are not all known, so no edit can be merged.
        self.changes_known = changes_known


class Unauthenticated(DomainError):
    """No access token; only register, login and refreshToken are open to anonymous callers."""

    code = "UNAUTHENTICATED"


class CursorExpired(DomainError):
    """The cursor points before the oldest event the server still keeps (pruned)."""

    code = "CURSOR_EXPIRED"


class IdempotencyKeyTaken(DomainError):
    """Another request with this Idempotency-Key committed first: this one applies nothing.

    Never seen by clients: the HTTP layer answers with the other request's stored response.
    """

    code = "IDEMPOTENCY_KEY_IN_PROGRESS"

    def __init__(self) -> None:
        super().__init__("Another request with this Idempotency-Key is being answered.")
