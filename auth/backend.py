"""The Starlette authentication backend: `Authorization: Bearer <access token>`.

No header means an anonymous request (GraphQL decides what anonymous callers may do). A
header with a bad or expired token is refused with HTTP 401 and a GraphQL-shaped error,
so clients know to refresh. WebSockets authenticate in their `connection_init` instead,
where a bad token closes the socket with 4403; the backend leaves them alone.
"""

from __future__ import annotations

import math
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from starlette.authentication import (
    AuthCredentials,
    AuthenticationBackend,
    AuthenticationError,
    BaseUser,
)
from starlette.requests import HTTPConnection
from starlette.responses import JSONResponse

from auth.tokens import InvalidToken, TokenConfig, decode_access_token


@dataclass(frozen=True)
class Viewer(BaseUser):
    """The authenticated caller."""

    user_id: uuid.UUID
    expires_at: datetime

    @property
    def is_authenticated(self) -> bool:
        return True

    @property
    def display_name(self) -> str:
        return str(self.user_id)

    @property
    def identity(self) -> str:
        return str(self.user_id)


def bearer_token(header: str | None) -> str | None:
    """The token of an `Authorization: Bearer …` value; raises InvalidToken on other schemes."""
    if header is None or not header.strip():
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise InvalidToken("expected 'Bearer <token>'")
    return token.strip()


def viewer_from_header(config: TokenConfig, header: str | None) -> Viewer | None:
    token = bearer_token(header)
    if token is None:
        return None
    claims = decode_access_token(config, token)
    return Viewer(user_id=claims.user_id, expires_at=claims.expires_at)


UserExists = Callable[[uuid.UUID], Awaitable[bool]]


class AuthenticationUnavailable(AuthenticationError):
    """The token's user could not be looked up: the database is down. HTTP 503, not 401:
    the token is fine, and the client should retry later rather than sign in again."""

    def __init__(self, retry_after: float) -> None:
        super().__init__("The service is temporarily unavailable; try again shortly.")
        self.retry_after = max(1, math.ceil(retry_after))


class KnownUsers:
    """Whether a token's subject is a user, remembering the ones that are.

    A well-signed token can outlive its user (or come from a test or a misconfigured
    issuer); without this check it would fail later with a foreign-key error. Users are
    never deleted, so a positive answer can be remembered; the memory is bounded.
    """

    def __init__(self, exists: UserExists, remember: int = 10_000) -> None:
        self.exists = exists
        self.remember = remember
        self._known: OrderedDict[uuid.UUID, None] = OrderedDict()

    async def __call__(self, user_id: uuid.UUID) -> bool:
        if user_id in self._known:
            self._known.move_to_end(user_id)
            return True
        if not await self.exists(user_id):
            return False
        self._known[user_id] = None
        if len(self._known) > self.remember:
            self._known.popitem(last=False)
        return True


class VerifiedTokens:
    """Access tokens already verified, remembered until they expire.

    Verifying an HS256 token with PyJWT costs about a tenth of a millisecond, a tenth of a
    simple read's whole CPU; clients send the same token with every request for its
    lifetime. A token's signature covers its claims, so a string that verified once
    verifies again until its `exp`: only successful verifications are remembered, and an
    entry is dropped at expiry. Bounded, least recently used first.
    """

    def __init__(self, config: TokenConfig, remember: int = 10_000) -> None:
        self.config = config
        self.remember = remember
        self._known: OrderedDict[str, Viewer] = OrderedDict()

    def viewer(self, header: str | None) -> Viewer | None:
        token = bearer_token(header)
        if token is None:
            return None
        known = self._known.get(token)
        if known is not None:
            if known.expires_at > datetime.now(UTC):
                self._known.move_to_end(token)
                return known
            del self._known[token]
        claims = decode_access_token(self.config, token)
        viewer = Viewer(user_id=claims.user_id, expires_at=claims.expires_at)
        self._known[token] = viewer
        if len(self._known) > self.remember:
            self._known.popitem(last=False)
        return viewer


class BearerTokenBackend(AuthenticationBackend):
    def __init__(self, config: TokenConfig, known_users: KnownUsers) -> None:
        self.config = config
        self.known_users = known_users
        self.tokens = VerifiedTokens(config)

    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, BaseUser] | None:
        if conn.scope["type"] != "http":
            return None
        try:
            viewer = self.tokens.viewer(conn.headers.get("authorization"))
        except InvalidToken as exc:
            raise AuthenticationError("Invalid or expired access token.") from exc
        if viewer is None:
            return None
        if not await self.known_users(viewer.user_id):
            raise AuthenticationError("This access token's user does not exist.")
        return AuthCredentials(["authenticated"]), viewer


def unauthenticated_response(conn: HTTPConnection, exc: Exception) -> JSONResponse:
    if isinstance(exc, AuthenticationUnavailable):
        unavailable = {"code": "SERVICE_UNAVAILABLE", "retryAfter": exc.retry_after}
        return JSONResponse(
            {"errors": [{"message": str(exc), "extensions": unavailable}]},
            status_code=503,
            headers={"Retry-After": str(exc.retry_after)},
        )
    body = {"errors": [{"message": str(exc), "extensions": {"code": "UNAUTHENTICATED"}}]}
    return JSONResponse(body, status_code=401, headers={"WWW-Authenticate": "Bearer"})
