"""The application factory: one Starlette app serving GraphQL, GraphiQL, health and metrics."""

from __future__ import annotations

import asyncio
import gc
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from datetime import timedelta

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from strawberry.extensions import DisableIntrospection, MaxTokensLimiter
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL, GRAPHQL_WS_PROTOCOL

from auth.backend import (
    AuthenticationUnavailable,
    Authenticator,
    BearerTokenBackend,
    KnownUsers,
    unauthenticated_response,
)
from auth.external import ExternalTokens, external_config
from auth.rate_limit import AuthRateLimiter
from auth.revocation import RevocationWatch, revocations_from_url
from auth.tokens import TokenConfig, development_secret
from models.breaker import Breaker
from models.database import STALL_GRACE, Database, DatabaseUnavailable, Timeouts, is_unavailable
from models.migrate import SchemaBehind, require_current_schema, upgrade
from models.user import users_by_ids
from resolvers.accounts import external_user
from resolvers.context import Services
from resolvers.reads import SEEN_HEADER
from schema import build_schema
from schema.errors import ErrorCodes
from server.demo import demo_routes
from server.graphiql import graphiql_routes
from server.graphql_app import ConcordGraphQL, FanoutHandler
from server.graphql_lane import GraphQLLane
from server.idempotency import HEADER as IDEMPOTENCY_HEADER
from server.idempotency import REPLAYED_HEADER, IdempotentMutations
from server.limits import BodySizeLimit, BodyTimeout
from server.logging import redact_request_lines
from server.metrics import metrics, watch_breaker
from server.observe import OperationObserver, RequestObserver
from server.production import MetricsGate, refuse_unsafe
from server.query_limits import QueryLimits, QueryLimitsExtension
from server.response_cache import response_cache
from server.settings import Settings, load_settings
from server.shutdown import DRAIN_STATE
from server.ws_protocol import WebSocketLane
from subscriptions.backends import broker_from_url
from subscriptions.presence import presence_from_url
from telemetry import tracing

log = logging.getLogger(__name__)

GC_YOUNG_THRESHOLD = 10_000
# What a browser page on an allowed origin may send (CORS_ORIGINS).
CORS_REQUEST_HEADERS = [
    "authorization",
    "content-type",
    "accept",
    "last-event-id",
    SEEN_HEADER,
    IDEMPOTENCY_HEADER,
    # Observability: the caller's request id and trace context (docs/operations.md).
    "x-request-id",
    "traceparent",
]


# Longest a /readyz check waits: a load balancer's health check gives up after a few seconds.
READINESS_CHECK_SECONDS = 2.0


async def _within(seconds: float, check: Callable[[], Awaitable[None]]) -> None:
    """Run `check`; raise TimeoutError if it has not finished after `seconds`.

    Unlike `asyncio.timeout`, this does not wait for the cancelled check to wind down:
    closing a connection to a frozen database takes seconds of its own.
    """
    task = asyncio.ensure_future(check())
    done, _ = await asyncio.wait({task}, timeout=seconds)
    if not done:
        task.cancel()
        task.add_done_callback(lambda t: t.cancelled() or t.exception())
        raise TimeoutError(f"no answer within {seconds:g} s")
    task.result()


def database_breaker(settings: Settings, timeouts: Timeouts) -> Breaker:
    """The breaker in front of every engine of the database (see models/database.py)."""
    return Breaker(
        "database",
        threshold=settings.breaker_failure_threshold,
        recovery_seconds=settings.breaker_recovery_seconds,
        # A trial connects and runs a statement; after that long it reported nothing.
        trial_seconds=timeouts.connect + timeouts.statement + STALL_GRACE,
        # The pool and the statement hooks only report outages (models/database.py).
        is_failure=lambda exc: True,
        unavailable=DatabaseUnavailable,
    )


def redis_breaker(settings: Settings) -> Breaker:
    """The breaker in front of Redis publishes (events still reach subscribers: the log)."""
    return Breaker(
        "redis",
        threshold=settings.breaker_failure_threshold,
        recovery_seconds=settings.breaker_recovery_seconds,
        trial_seconds=10.0,
        is_failure=lambda exc: True,
    )


# RFC 7518 §3.2: an HS256 key at least as long as the hash output (256 bits).
MIN_SECRET_BYTES = 32


def token_config(settings: Settings) -> TokenConfig:
    secret = settings.jwt_secret
    if not secret:
        if not settings.embedded:
            raise RuntimeError(
                "JWT_SECRET must be set when DATABASE_URL is not the embedded SQLite: "
                "every API process must sign and verify tokens with the same secret."
            )
        secret = development_secret(settings.data_dir)
    elif len(secret.encode()) < MIN_SECRET_BYTES:
        raise RuntimeError(
            f"JWT_SECRET is {len(secret.encode())} bytes; it must be at least "
            f"{MIN_SECRET_BYTES}: anyone who guesses a short secret can sign tokens as any "
            "user. Generate one with: python -c 'import secrets; print(secrets.token_urlsafe(48))'"
        )
    return TokenConfig(
        secret=secret,
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        access_ttl=timedelta(seconds=settings.access_token_ttl_seconds),
        refresh_ttl=timedelta(seconds=settings.refresh_token_ttl_seconds),
    )


async def _refuse_behind_schema(db: Database) -> None:
    """Raise SchemaBehind when the database needs `concord migrate` first.

    Half-started is worse than not started: every request would fail on a missing table or
    column. An unreachable database does not stop the start (it may come up later); `/readyz`
    answers 503 until it is reachable and migrated.
    """
    try:
        await require_current_schema(db.write_engine)
    except SchemaBehind:
        raise
    except Exception as exc:
        log.warning("schema revision not checked at start", extra={"error": str(exc)})


def _trace_sql(db: Database) -> None:
    """A span per SQL statement, on each distinct engine (they may be one and the same)."""
    roles = {
        db.write_engine: "primary",
        db.read_engine: "read",
        db.primary_read_engine: "primary_read",
    }
    seen: set[int] = set()
    for engine, role in roles.items():
        if id(engine) not in seen:
            seen.add(id(engine))
            tracing.instrument_engine(engine, role)


def create_app(settings: Settings | None = None) -> Starlette:
    settings = settings or load_settings()
    refuse_unsafe(settings)
    redact_request_lines()
    tracing.configure(settings.otel_exporter_otlp_endpoint)
    tokens = token_config(settings)
    publish_breaker = redis_breaker(settings) if settings.redis_url else None
    broker = broker_from_url(settings.redis_url, breaker=publish_breaker)
    timeouts = Timeouts(
        connect=settings.database_connect_timeout_seconds,
        statement=settings.database_statement_timeout_seconds,
        pool=settings.database_pool_timeout_seconds,
    )
    db_breaker = database_breaker(settings, timeouts)
    watch_breaker(db_breaker)
    if publish_breaker is not None:
        watch_breaker(publish_breaker)
    services = Services(
        db=Database(
            settings.write_url,
            settings.read_url,
            lock_timeout=settings.database_lock_timeout_seconds,
            timeouts=timeouts,
            breaker=db_breaker,
        ),
        broker=broker,
        tokens=tokens,
        presence=presence_from_url(settings.redis_url, broker),
        subscriber_queue_size=settings.subscriber_queue_size,
        auth_limits=AuthRateLimiter(
            settings.redis_url,
            per_ip=settings.rate_limit_auth_per_ip,
            login_failures=settings.rate_limit_login_failures,
            unknown_emails=settings.rate_limit_unknown_emails,
            registered_emails=settings.rate_limit_registered_emails,
            operations=settings.rate_limit_operations,
            key_prefix=settings.rate_limit_key_prefix,
        ),
    )

    async def user_exists(user_id: uuid.UUID) -> bool:
        # The primary: a user who just registered may not be on a replica yet.
        try:
            async with services.db.primary_reader() as session:
                return bool(await users_by_ids(session, [user_id]))
        except Exception as exc:
            if not is_unavailable(exc):
                raise
            wait = exc.retry_after if isinstance(exc, DatabaseUnavailable) else 1.0
            raise AuthenticationUnavailable(wait) from exc

    if tracing.tracer is not None:
        _trace_sql(services.db)
    known_users = services.known_users = KnownUsers(user_exists)
    revocations = services.revocations = RevocationWatch(
        revocations_from_url(settings.redis_url), broker, tokens.access_ttl.total_seconds()
    )
    external = external_config(settings)
    authenticator = services.authenticator = Authenticator(
        tokens,
        known_users,
        external=(
            ExternalTokens(external, lambda identity: external_user(services, identity))
            if external is not None
            else None
        ),
        denylist=revocations,
    )
    limits = QueryLimits(
        max_depth=settings.max_query_depth,
        max_aliases=settings.max_aliases,
        max_cost=settings.max_query_cost,
    )
    schema = build_schema(
        [
            # First, so that it sees the operation's outcome after the others are done.
            OperationObserver,
            # Factories, not instances: Strawberry builds fresh extensions per operation.
            lambda: QueryLimitsExtension(limits=limits),
            lambda: MaxTokensLimiter(max_token_count=settings.max_tokens),
            lambda: ErrorCodes(debug=settings.debug),
            *([DisableIntrospection] if settings.production else []),
        ],
        request_timeout=settings.request_timeout_seconds,
    )
    cache = (
        response_cache(
            settings.redis_url,
            max_bytes=settings.response_cache_max_bytes,
            ttl=settings.response_cache_ttl_seconds,
            max_entry_bytes=settings.max_body_bytes * 8,
        )
        if settings.response_cache and settings.compiled_reads
        else None
    )
    graphql = ConcordGraphQL(
        schema,
        services,
        compiled_reads=settings.compiled_reads,
        compiled_single_statement=settings.compiled_single_statement,
        cache=cache,
        max_message_bytes=settings.max_body_bytes,
        limits=limits,
        request_timeout=settings.request_timeout_seconds,
        idempotency=IdempotentMutations(
            services.db,
            ttl_seconds=settings.idempotency_key_ttl_seconds,
            # A concurrent request with the key is done (or cancelled) within its timeout.
            wait_seconds=settings.request_timeout_seconds + 5,
            max_tokens=settings.max_tokens,
        ),
        subscription_protocols=(GRAPHQL_TRANSPORT_WS_PROTOCOL, GRAPHQL_WS_PROTOCOL),
        connection_init_wait_timeout=timedelta(seconds=settings.ws_connection_init_timeout_seconds),
        max_subscriptions_per_connection=settings.ws_max_operations,
        **({"graphql_ide": None} if settings.production else {}),
    )
    if settings.ws_fanout:
        graphql.graphql_transport_ws_handler_class = FanoutHandler

    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def schema_current() -> None:
        await require_current_schema(services.db.write_engine)

    async def readyz(request: Request) -> JSONResponse:
        """Ready when the database answers, is migrated, and the broker answers.

        Quickly either way: with a breaker open the check fails at once, and no check
        waits longer than READINESS_CHECK_SECONDS.
        """
        checks: dict[str, str] = {}
        for name, ping in (
            ("database", services.db.ping),
            ("schema", schema_current),
            ("broker", services.broker.ping),
        ):
            if name == "schema" and checks["database"] != "ok":
                checks[name] = "not checked"
                continue
            try:
                await _within(READINESS_CHECK_SECONDS, ping)
                checks[name] = "ok"
            except SchemaBehind as exc:
                log.warning("readiness check failed", extra={"check": name, "error": str(exc)})
                checks[name] = "behind: run `concord migrate`"
            except Exception as exc:
                log.warning("readiness check failed", extra={"check": name, "error": str(exc)})
                checks[name] = "unavailable"
        ready = all(v == "ok" for v in checks.values())
        return JSONResponse(
            {"status": "ready" if ready else "unavailable", "checks": checks},
            status_code=200 if ready else 503,
        )

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[Mapping[str, object]]:
        if services.db.dialect == "sqlite":
            # The embedded default creates and migrates its database on start; servers
            # are migrated explicitly with `concord migrate`.
            await upgrade(services.db.write_engine)
        try:
            await _refuse_behind_schema(services.db)
        except SchemaBehind:
            await services.db.dispose()
            raise
        await services.broker.connect()
        revocations.start()
        if settings.gc_freeze:
            # What exists now (modules, the schema, metadata, pools) lives as long as the
            # process: moved out of the collector's sight, later full collections only
            # traverse what requests allocate (measured: a third less CPU per nested read).
            gc.collect()
            gc.freeze()
            # A request allocates thousands of short-lived containers, almost all freed by
            # reference counting; a young-generation pass every 700 of them (the default)
            # is wasted work. (Measured: 5 % less CPU per compiled nested read.)
            gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])
        try:
            # The lifespan state is how the server's protocols reach the drain on shutdown
            # (server/shutdown.py); requests see it too, but nothing reads it there.
            yield {DRAIN_STATE: graphql.drain}
        finally:
            await revocations.stop()
            if services.presence is not None:
                await services.presence.aclose()
            if cache is not None:
                await cache.aclose()
            if services.auth_limits is not None:
                await services.auth_limits.aclose()
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
            *([] if settings.production else graphiql_routes()),
            *demo_routes(settings),
        ],
        middleware=[
            *(
                [
                    Middleware(
                        CORSMiddleware,
                        allow_origins=settings.cors_origin_list,
                        allow_methods=["GET", "POST"],
                        allow_headers=CORS_REQUEST_HEADERS,
                        expose_headers=[SEEN_HEADER, REPLAYED_HEADER, "x-request-id"],
                        max_age=600,
                    )
                ]
                if settings.cors_origin_list
                else []
            ),
            # HTTP requests to /graphql: the checks of the layers below, in one frame.
            Middleware(
                GraphQLLane,
                endpoint=graphql,
                path="/graphql",
                authenticator=authenticator,
                max_body_bytes=settings.max_body_bytes,
                body_timeout_seconds=settings.request_body_timeout_seconds,
            ),
            Middleware(RequestObserver),
            *(
                [Middleware(MetricsGate, token=settings.metrics_token, endpoint=metrics)]
                if settings.production
                else []
            ),
            Middleware(BodyTimeout, seconds=settings.request_body_timeout_seconds),
            Middleware(BodySizeLimit, max_bytes=settings.max_body_bytes),
            Middleware(
                AuthenticationMiddleware,
                backend=BearerTokenBackend(authenticator),
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
