"""The application factory: one Starlette app serving GraphQL, GraphiQL, health and metrics."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from strawberry.extensions import MaxAliasesLimiter, MaxTokensLimiter, QueryDepthLimiter
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL, GRAPHQL_WS_PROTOCOL

from auth.backend import BearerTokenBackend, KnownUsers, unauthenticated_response
from auth.tokens import TokenConfig, development_secret
from models.database import Database
from models.migrate import upgrade
from models.user import users_by_ids
from resolvers.context import Services
from schema import build_schema
from schema.errors import ErrorCodes
from server.graphiql import graphiql_routes
from server.graphql_app import ConcordGraphQL
from server.limits import BodySizeLimit
from server.metrics import MetricsMiddleware, metrics
from server.settings import Settings, load_settings
from server.ws_fanout import FanoutTransportWSHandler
from server.ws_protocol import WebSocketLane
from subscriptions.backends import broker_from_url
from subscriptions.presence import presence_from_url

log = logging.getLogger(__name__)


def token_config(settings: Settings) -> TokenConfig:
    secret = settings.jwt_secret
    if not secret:
        if not settings.embedded:
            raise RuntimeError(
                "JWT_SECRET must be set when DATABASE_URL is not the embedded SQLite: "
                "every API process must sign and verify tokens with the same secret."
            )
        secret = development_secret(settings.data_dir)
    return TokenConfig(
        secret=secret,
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        access_ttl=timedelta(seconds=settings.access_token_ttl_seconds),
        refresh_ttl=timedelta(seconds=settings.refresh_token_ttl_seconds),
    )


def create_app(settings: Settings | None = None) -> Starlette:
    settings = settings or load_settings()
    tokens = token_config(settings)
    broker = broker_from_url(settings.redis_url)
    services = Services(
        db=Database(settings.write_url, settings.read_url),
        broker=broker,
        tokens=tokens,
        presence=presence_from_url(settings.redis_url, broker),
        subscriber_queue_size=settings.subscriber_queue_size,
    )

    async def user_exists(user_id: uuid.UUID) -> bool:
        # The primary: a user who just registered may not be on a replica yet.
        async with services.db.primary_reader() as session:
            return bool(await users_by_ids(session, [user_id]))

    known_users = services.known_users = KnownUsers(user_exists)
    schema = build_schema(
        [
            # Factories, not instances: Strawberry builds fresh extensions per operation.
            lambda: QueryDepthLimiter(max_depth=settings.max_query_depth),
            lambda: MaxAliasesLimiter(max_alias_count=settings.max_aliases),
            lambda: MaxTokensLimiter(max_token_count=settings.max_tokens),
            lambda: ErrorCodes(debug=settings.debug),
        ]
    )
    graphql = ConcordGraphQL(
        schema,
        services,
        subscription_protocols=(GRAPHQL_TRANSPORT_WS_PROTOCOL, GRAPHQL_WS_PROTOCOL),
        connection_init_wait_timeout=timedelta(seconds=settings.ws_connection_init_timeout_seconds),
    )
    if settings.ws_fanout:
        graphql.graphql_transport_ws_handler_class = FanoutTransportWSHandler

    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> JSONResponse:
        checks: dict[str, str] = {}
        for name, ping in (("database", services.db.ping), ("broker", services.broker.ping)):
            try:
                await ping()
                checks[name] = "ok"
            except Exception as exc:
                log.warning("readiness check failed", extra={"check": name, "error": str(exc)})
                checks[name] = "unavailable"
        ready = all(v == "ok" for v in checks.values())
        return JSONResponse(
            {"status": "ready" if ready else "unavailable", "checks": checks},
            status_code=200 if ready else 503,
        )

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if services.db.dialect == "sqlite":
            # The embedded default creates and migrates its database on start; servers
            # are migrated explicitly with `concord migrate`.
            await upgrade(services.db.write_engine)
        await services.broker.connect()
        try:
            yield
        finally:
            if services.presence is not None:
                await services.presence.aclose()
            await services.broker.disconnect()
            await services.db.dispose()

    app = Starlette(
        debug=settings.debug,
        routes=[
            Route("/graphql", graphql),
            WebSocketRoute("/graphql", graphql),
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/metrics", metrics),
            *graphiql_routes(),
        ],
        middleware=[
            Middleware(MetricsMiddleware),
            Middleware(BodySizeLimit, max_bytes=settings.max_body_bytes),
            Middleware(
                AuthenticationMiddleware,
                backend=BearerTokenBackend(tokens, known_users),
                on_error=unauthenticated_response,
            ),
            # Keep last: the middleware above still sees every socket.
            Middleware(WebSocketLane, endpoint=graphql, path="/graphql"),
        ],
        lifespan=lifespan,
    )
    app.state.services = services
    app.state.settings = settings
    return app
