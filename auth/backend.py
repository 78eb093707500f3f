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
from typing import Protocol

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
    # The login the token belongs to (our own tokens); None for an external provider's.
    session_id: uuid.UUID | None = None

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
    return Viewer(claims.user_id, claims.expires_at, claims.session_id)


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
        known = self.known(token)
        if known is not None:
            return known
        viewer = self.verify(token)
        self.remember_viewer(token, viewer)
        return viewer

    def known(self, token: str) -> Viewer | None:
        """The viewer of a token verified before and not yet expired."""
        known = self._known.get(token)
        if known is None:
            return None
        if known.expires_at > datetime.now(UTC):
            self._known.move_to_end(token)
            return known
        del self._known[token]
        return None

    def verify(self, token: str) -> Viewer:
        claims = decode_access_token(self.config, token)
        return Viewer(claims.user_id, claims.expires_at, claims.session_id)

    def remember_viewer(self, token: str, viewer: Viewer) -> None:
        self._known[token] = viewer
        if len(self._known) > self.remember:
            self._known.popitem(last=False)


class ExternalVerifier(Protocol):
    """Tokens of an external identity provider (auth.external.ExternalTokens)."""

    def accepts(self, token: str) -> bool:
        """Whether the token is signed the provider's way (not necessarily valid)."""
        ...

    async def viewer(self, token: str) -> Viewer:
        """The verified token's viewer (its user created on first sight); InvalidToken."""
        ...


class SessionDenylist(Protocol):
    async def is_revoked(self, session_id: uuid.UUID) -> bool: ...


class Authenticator:
    """Who a bearer token speaks for, the same way on HTTP, SSE and WebSocket.

    Our own HS256 tokens, remembered once verified (VerifiedTokens); an external
    provider's RS256/ES256 tokens when JWT_JWKS_URL is set; and, for every request
    whether remembered or not, the login must not have been signed out since.
    """

    def __init__(
        self,
        config: TokenConfig,
        known_users: KnownUsers | None = None,
        external: ExternalVerifier | None = None,
        denylist: SessionDenylist | None = None,
    ) -> None:
        self.tokens = VerifiedTokens(config)
        self.known_users = known_users
        self.external = external
        self.denylist = denylist

    async def viewer(self, header: str | None, check_user: bool = True) -> Viewer | None:
        """The caller, None without a token; InvalidToken for any token not to be honoured.

        `check_user=False` skips looking the user up (for a socket accepted while the
        database is down: AuthenticationUnavailable from the lookup).
        """
        token = bearer_token(header)
        if token is None:
            return None
        viewer = self.tokens.known(token)
        if viewer is None:
            if self.external is not None and self.external.accepts(token):
                viewer = await self.external.viewer(token)
            else:
                viewer = self.tokens.verify(token)
            self.tokens.remember_viewer(token, viewer)
        if (
            viewer.session_id is not None
            and self.denylist is not None
            and await self.denylist.is_revoked(viewer.session_id)
        ):
            raise SignedOut("This login was signed out: sign in again.")
        if (
            check_user
            and self.known_users is not None
            and not await self.known_users(viewer.user_id)
        ):
            raise UnknownUser("This access token's user does not exist.")
        return viewer


class UnknownUser(InvalidToken):
    """A well-signed token whose subject is no user."""


class SignedOut(InvalidToken):
    """A well-signed, unexpired token of a login that was signed out (or revoked)."""


async def http_viewer(authenticator: Authenticator, header: str | None) -> Viewer | None:
    """The HTTP request's caller from its Authorization header, None when it sent none;
    AuthenticationError (answered 401) for a token not to be honoured."""
    try:
        return await authenticator.viewer(header)
    except (UnknownUser, SignedOut) as exc:
        raise AuthenticationError(str(exc)) from exc
    except InvalidToken as exc:
        raise AuthenticationError("Invalid or expired access token.") from exc


AUTHENTICATED = ["authenticated"]


class BearerTokenBackend(AuthenticationBackend):
    def __init__(self, authenticator: Authenticator) -> None:
        self.authenticator = authenticator

    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, BaseUser] | None:
        if conn.scope["type"] != "http":
            return None
        viewer = await http_viewer(self.authenticator, conn.headers.get("authorization"))
        if viewer is None:
            return None
        return AuthCredentials(AUTHENTICATED), viewer


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
