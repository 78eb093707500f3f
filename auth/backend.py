"""The Starlette authentication backend: `Authorization: Bearer <access token>`.

No header means an anonymous request (GraphQL decides what anonymous callers may do). A
header with a bad or expired token is refused with HTTP 401 and a GraphQL-shaped error,
so clients know to refresh. WebSockets authenticate in their `connection_init` instead,
where a bad token closes the socket with 4403; the backend leaves them alone.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

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


class BearerTokenBackend(AuthenticationBackend):
    def __init__(self, config: TokenConfig) -> None:
        self.config = config

    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, BaseUser] | None:
        if conn.scope["type"] != "http":
            return None
        try:
            viewer = viewer_from_header(self.config, conn.headers.get("authorization"))
        except InvalidToken as exc:
            raise AuthenticationError("Invalid or expired access token.") from exc
        if viewer is None:
            return None
        return AuthCredentials(["authenticated"]), viewer


def unauthenticated_response(conn: HTTPConnection, exc: Exception) -> JSONResponse:
    body = {"errors": [{"message": str(exc), "extensions": {"code": "UNAUTHENTICATED"}}]}
    return JSONResponse(body, status_code=401, headers={"WWW-Authenticate": "Bearer"})
