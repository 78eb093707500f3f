"""What every resolver receives: the process's services and the request's caller and loaders."""

from __future__ import annotations

import uuid
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from auth.backend import Authenticator, KnownUsers, Viewer
from auth.rate_limit import AuthRateLimiter
from auth.revocation import RevocationWatch
from auth.tokens import TokenConfig
from models.database import Database
from resolvers.errors import Unauthenticated
from resolvers.idempotency import IDEMPOTENCY_STATE, IdempotencyClaim
from resolvers.loaders import Loaders, Sessions, borrowed
from subscriptions.broker import Broker
from subscriptions.presence import PresenceStore


@dataclass
class Services:
    """Long-lived, one per process."""

    db: Database
    broker: Broker
    tokens: TokenConfig
    presence: PresenceStore | None = None
    # Whether a token's subject exists (checked on every authenticated request and socket).
    known_users: KnownUsers | None = None
    subscriber_queue_size: int = 1000
    # Login and register attempts per IP and failed logins per account (issue 10).
    auth_limits: AuthRateLimiter | None = None
    # Bearer tokens to viewers (own and external tokens, signed-out logins refused).
    authenticator: Authenticator | None = None
    # Signed-out logins: their access tokens denied, their sockets closed.
    revocations: RevocationWatch | None = None
    extras: dict[str, Any] = field(default_factory=dict)


@dataclass
class Context:
    """One per HTTP request, per WebSocket connection, and per event in a subscription."""

    services: Services
    viewer: Viewer | None
    # Built on first use: a WebSocket whose subscriptions are fanned out never needs them.
    _loaders: Loaders | None
    request: Any = None
    response: Any = None
    # The graphql-transport-ws connection_init payload (set by Strawberry on WebSockets).
    connection_params: dict[str, Any] | None = None

    # Where this request reads (the replica, or the primary to see the caller's writes).
    reader: Sessions | None = None

    # Set by a transport that resumes streams itself (SSE's Last-Event-ID): the cursor
    # `workspaceEvents` continues after, whatever its `after` argument says.
    resume_after: str | None = None
    # The cursor of the event a subscription produced last, for transports that label
    # each message with it (SSE's `id:`).
    stream_position: str | None = None
    # A WebSocket's context lives as long as the socket: each operation on it gets a
    # fresh copy (for_operation), so no role or row is cached across operations.
    per_connection: bool = False
    # The by-id loaders give plain rows (see Loaders): the compiled read path's context.
    plain_rows: bool = False

    @classmethod
    def create(
        cls,
        services: Services,
        viewer: Viewer | None,
        request: Any = None,
        response: Any = None,
        reader: Sessions | None = None,
    ) -> Context:
        reads = reader or services.db.reader
        return cls(services, viewer, None, request, response, reader=reads)

    @property
    def loaders(self) -> Loaders:
        """This request's DataLoaders (for this caller)."""
        if self._loaders is None:
            reads = self.reader or self.services.db.reader
            self._loaders = Loaders(
                reads, self.viewer.user_id if self.viewer else None, plain_rows=self.plain_rows
            )
        return self._loaders

    @loaders.setter
    def loaders(self, loaders: Loaders) -> None:
        self._loaders = loaders

    def reset_loaders(self) -> None:
        """Forget the loaders (e.g. the caller changed); new ones are built when needed."""
        self._loaders = None

    def reads(self) -> AbstractAsyncContextManager[AsyncSession]:
        """A session for this request's reads."""
        return (self.reader or self.services.db.reader)()

    def sharing(self, session: AsyncSession) -> Context:
        """The same caller with loaders and reads that all go through `session`, for the
        compiled read path: its by-id loaders give plain rows."""
        shared = Context.create(
            self.services, self.viewer, self.request, self.response, borrowed(session)
        )
        shared.plain_rows = True
        return shared

    @property
    def idempotency(self) -> IdempotencyClaim | None:
        """The request's Idempotency-Key claim (HTTP mutations that sent one), or None.

        Kept in the request's scope rather than here, so that every context derived for
        the request (fresh loaders, a shared session) sees the same claim.
        """
        state = getattr(self.request, "scope", {}).get("state") or {}
        claim = state.get(IDEMPOTENCY_STATE)
        return claim if isinstance(claim, IdempotencyClaim) else None

    def client_ip(self) -> str:
        """The caller's address (uvicorn resolves X-Forwarded-For from trusted proxies)."""
        client = getattr(self.request, "client", None)
        host = getattr(client, "host", None)
        return host if isinstance(host, str) else "unknown"

    def user_id(self) -> uuid.UUID:
        """The caller's id; Unauthenticated for anonymous callers."""
        if self.viewer is None:
            raise Unauthenticated("Sign in first: send 'Authorization: Bearer <access token>'.")
        return self.viewer.user_id

    def for_operation(self) -> Context:
        """This context for one operation: fresh loaders when it belongs to a socket."""
        if not self.per_connection:
            return self
        context = self.fresh()
        context.connection_params = self.connection_params
        return context

    def fresh(self) -> Context:
        """The same caller with new loaders (a subscription resolves each event afresh)."""
        return Context.create(self.services, self.viewer, self.request, self.response, self.reader)
