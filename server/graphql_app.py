"""The GraphQL endpoint: queries, mutations and subscriptions over HTTP, SSE and WebSocket."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import orjson
from cross_web import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket
from strawberry.exceptions import ConnectionRejectionError
from strawberry.http import GraphQLHTTPResponse, GraphQLRequestData
from strawberry.schema.exceptions import InvalidOperationTypeError
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    BaseGraphQLTransportWSHandler,
)
from strawberry.types import ExecutionResult
from strawberry.types.graphql import OperationType
from strawberry.types.unset import UNSET, UnsetType

from auth.backend import AuthenticationUnavailable, Authenticator, SignedOut, UnknownUser, Viewer
from auth.tokens import InvalidToken
from models.database import is_unavailable
from resolvers.context import Context, Services
from resolvers.reads import SEEN_HEADER, parse_seen, reader_for
from schema.compiled import CompiledReads
from schema.errors import UNAVAILABLE_MESSAGE, describe, retry_after
from server.compiled_http import CompiledAnswers
from server.encoding import dumps
from server.graphiql import graphiql_html, security_headers
from server.idempotency import HEADER, IdempotentMutations
from server.negotiation import (
    GRAPHQL_RESPONSE,
    JSON,
    graphql_error_response,
    is_request_error,
    request_error_status,
    response_media_type,
    wants_graphql_response,
)
from server.observe import REQUEST_ID, WEBSOCKETS
from server.operation_limits import RateLimitedStart, RateLimitedSubscribe, refuse_http
from server.query_limits import DocumentCheck, QueryLimits
from server.request_deadline import (
    request_deadline,
    too_many,
    unavailable,
    unavailable_error,
)
from server.response_cache import ResponseCache
from server.sse import EventStreams, accepts_event_stream
from server.websocket import (
    DEFAULT_MAX_MESSAGE_BYTES,
    LegacyProtocolHandler,
    LimitedWebSocketAdapter,
)
from server.ws_fanout import FanoutTransportWSHandler
from server.ws_legacy import LegacyProtocolRules

log = logging.getLogger(__name__)


def http_error_response(request: Request, exc: HTTPException) -> JSONResponse:
    """A 4xx with a GraphQL error body for a request Strawberry refused before executing."""
    status, message, headers = exc.status_code, exc.reason, {}
    cause = exc.__cause__
    if (
        request.method == "GET"
        and isinstance(cause, InvalidOperationTypeError)
        and cause.operation_type is OperationType.MUTATION
    ):
        # GET must be safe: a mutation is not a bad request but a wrong method.
        status, message = 405, "Mutations are only accepted over POST."
        headers = {"Allow": "POST"}
    elif status == 405:
        headers = {"Allow": "GET, POST"}
    code = "METHOD_NOT_ALLOWED" if status == 405 else "BAD_REQUEST"
    return graphql_error_response(
        message, status, code, headers=headers, media_type=response_media_type(request.headers)
    )


def _negotiated(request: Request, response: Response) -> Response:
    """The query/mutation answer in the media type the client asked for, with its status."""
    if response.headers.get("content-type") != JSON or not wants_graphql_response(request.headers):
        return response
    response.headers["content-type"] = GRAPHQL_RESPONSE
    status = getattr(request.state, "graphql_status", None)
    if status is not None:
        response.status_code = status
    return response


async def _require_json_object(request: Request) -> None:
    """A JSON body must be an object: Strawberry fails on `7` or `null` with a 500."""
    if request.method != "POST" or "json" not in request.headers.get("content-type", ""):
        return
    try:
        body = orjson.loads(await request.body())
    except orjson.JSONDecodeError:
        return  # Strawberry answers malformed JSON with its own 400 (see decode_json).
    if not isinstance(body, dict):
        raise HTTPException(400, "The request body must be a JSON object with a `query`.")
    # GraphQL over HTTP: each parameter's type, checked before anything uses it as a key.
    for key, kinds, what in REQUEST_PARAMETERS:
        if body.get(key) is not None and not isinstance(body[key], kinds):
            raise HTTPException(400, f"`{key}` must be {what}.")


REQUEST_PARAMETERS: tuple[tuple[str, type | tuple[type, ...], str], ...] = (
    ("query", str, "a string"),
    ("operationName", str, "a string or null"),
    ("variables", dict, "an object or null"),
    ("extensions", dict, "an object or null"),
)


async def _close_expired(websocket: WebSocket, reason: str = "Access token expired") -> None:
    # The socket may be closing already; then there is nothing left to do.
    with contextlib.suppress(Exception):
        await websocket.close(code=4403, reason=reason)


class LegacyHandler(LegacyProtocolRules, RateLimitedStart, LegacyProtocolHandler):
    """Legacy `graphql-ws`: the modern protocol's rules (deadline, one `connection_init`,
    malformed messages refused), RATE_LIMIT_OPERATIONS, and queries and mutations as well
    as subscriptions."""


class TransportHandler(RateLimitedSubscribe, BaseGraphQLTransportWSHandler[Context, None]):
    """`graphql-transport-ws` as Strawberry serves it, with RATE_LIMIT_OPERATIONS."""


class FanoutHandler(RateLimitedSubscribe, FanoutTransportWSHandler):
    """`graphql-transport-ws` with the `workspaceEvents` fan-out (WS_FANOUT), likewise."""


class ConcordGraphQL(EventStreams):
    """Strawberry's ASGI view with Concord's context, errors and offline GraphiQL."""

    websocket_adapter_class = LimitedWebSocketAdapter  # type: ignore[assignment]
    graphql_ws_handler_class = LegacyHandler
    graphql_transport_ws_handler_class: type[BaseGraphQLTransportWSHandler[Context, None]] = (
        TransportHandler
    )

    def __init__(
        self,
        schema: Any,
        services: Services,
        *,
        compiled_reads: bool = True,
        compiled_single_statement: bool = True,
        cache: ResponseCache | None = None,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        limits: QueryLimits | None = None,
        request_timeout: float | None = None,
        idempotency: IdempotentMutations | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(schema, **kwargs)
        self.services = services
        self.idempotency = idempotency
        # The compiled path skips validation: its cost still depends on the variables.
        check = DocumentCheck(schema._schema, limits).check if limits else None
        self.compiled = (
            CompiledAnswers(
                CompiledReads(schema._schema, single_statement=compiled_single_statement),
                cache,
                check,
            )
            if compiled_reads
            else None
        )
        self.max_message_bytes = max_message_bytes
        self.request_timeout = request_timeout

    async def execute_single(
        self,
        request: Request,
        request_adapter: Any,
        sub_response: Response,
        context: Context,
        root_value: None,
        request_data: GraphQLRequestData,
    ) -> ExecutionResult:
        """Every HTTP operation, stopped when it outlives REQUEST_TIMEOUT_SECONDS; queries
        the general path has accepted before run on the compiled read path."""

        def general() -> Awaitable[ExecutionResult]:
            return super(ConcordGraphQL, self).execute_single(
                request, request_adapter, sub_response, context, root_value, request_data
            )

        result = await request_deadline(
            self.request_timeout, self._execute(context, request_data, general)
        )
        too_many(result, sub_response)
        unavailable(result, sub_response)
        return result

    async def _execute(
        self,
        context: Context,
        request_data: GraphQLRequestData,
        general: Callable[[], Awaitable[ExecutionResult]],
    ) -> ExecutionResult:
        compiled = self.compiled
        query = request_data.query
        operation_name = request_data.operation_name
        if (
            compiled is None
            or not isinstance(query, str)
            or not isinstance(operation_name, str | None)
            or request_data.protocol != "http"
        ):
            return await general()
        try:
            data = await compiled.answer(context, query, operation_name, request_data.variables)
        except Exception as exc:
            if not is_unavailable(exc):
                raise
            log.warning("database unavailable on the compiled path: %s", describe(exc))
            return ExecutionResult(data=None, errors=[unavailable_error(retry_after(exc))])
        if data is not None:
            return ExecutionResult(data=data, errors=None)
        result = await general()
        compiled.learn(query, operation_name, result.data is not None)
        return result

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            WEBSOCKETS.inc()
            try:
                await super().__call__(scope, receive, send)
            finally:
                WEBSOCKETS.dec()
                state = scope.get("state", {})
                timer = state.get("token_timer")
                if timer is not None:
                    timer.cancel()
                unwatch = state.get("revocation_unwatch")
                if unwatch is not None:
                    unwatch()
            return
        request = Request(scope=scope, receive=receive)
        # Before every path that answers: the compiled reads and the cache included.
        refusal = await refuse_http(self.services, request, response_media_type(request.headers))
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        try:
            response = await self._respond(request)
        except Exception as exc:
            # The database went away outside any operation's execution: building the
            # context (the replica check), or on the compiled path's fast entry.
            if not is_unavailable(exc):
                raise
            log.warning("database unavailable: %s", describe(exc))
            wait = retry_after(exc)
            response = graphql_error_response(
                UNAVAILABLE_MESSAGE,
                503,
                "SERVICE_UNAVAILABLE",
                headers={"Retry-After": str(wait)},
                media_type=response_media_type(request.headers),
            )
        await response(scope, receive, send)

    async def _respond(self, request: Request) -> Response:
        """The response to an HTTP request: the compiled path's, else the view's."""
        if self.idempotency is not None and HEADER in request.headers:
            # Before the compiled path, which answers only queries: a keyed mutation is
            # answered from its stored result or run with its claim, never twice.
            prepared = await self.idempotency.prepare(request)
            if isinstance(prepared, Response):
                return prepared
            if prepared is not None:
                answer = await self._general(request)
                return await self.idempotency.finish(request, prepared, answer)
        if (
            self.compiled is not None
            and request.method == "POST"
            and not accepts_event_stream(request.headers.get("accept", ""))
        ):
            deadline = asyncio.timeout(self.request_timeout)
            try:
                async with deadline:
                    compiled = await self.compiled.respond(
                        request,
                        self._context,
                        self.encode_json,
                        response_media_type(request.headers),
                    )
            except TimeoutError:
                if not deadline.expired():
                    raise  # the database's own timeout: unavailable, not slow
                # Answered by the general path instead, which reports the time limit the
                # way every other request does (its own deadline applies there).
                compiled = None
            if compiled is not None:
                return compiled
        return await self._general(request)

    async def _general(self, request: Request) -> Response:
        """The answer of Strawberry's view (the general path), negotiated."""
        try:
            await _require_json_object(request)
            return _negotiated(request, await self.run(request))
        except HTTPException as exc:
            # Malformed JSON, a non-GraphQL body, a wrong method: a 4xx with a GraphQL
            # error body, never plain text and never a 500.
            return http_error_response(request, exc)

    async def create_websocket_response(
        self, request: WebSocket, subprotocol: str | None
    ) -> WebSocket:
        """Accept the socket, echoing its request id like every HTTP response does."""
        request_id = request.scope.get(REQUEST_ID)
        headers = [(b"x-request-id", request_id.encode())] if request_id else None
        await request.accept(subprotocol=subprotocol, headers=headers)
        return request

    async def _context(self, request: Request) -> Context:
        return await self.get_context(request, Response())

    async def get_context(
        self, request: Request | WebSocket, response: Response | WebSocket
    ) -> Context:
        user = request.scope.get("user")
        viewer = user if isinstance(user, Viewer) else None
        seen = parse_seen(request.headers.get(SEEN_HEADER))
        reader = await reader_for(self.services.db, seen)
        return Context.create(self.services, viewer, request, response, reader)

    async def on_ws_connect(self, context: Context) -> UnsetType | dict[str, object] | None:
        """Authenticate the socket from `connection_init`, or the upgrade request's header.

        A missing, invalid or expired token closes the socket with 4403. So does the
        token's expiry later on, so the client reconnects with a fresh token and resumes
        with its cursor.
        """
        params = context.connection_params or {}
        header = params.get("authorization") or params.get("Authorization")
        if header is None:
            header = context.request.headers.get("authorization")
        authenticator = self.services.authenticator or Authenticator(
            self.services.tokens, self.services.known_users
        )
        token = header if isinstance(header, str) else ""
        try:
            try:
                viewer = await authenticator.viewer(token)
            except AuthenticationUnavailable:
                # The database is down: the token's signature is good, and every operation
                # on the socket answers SERVICE_UNAVAILABLE until the database is back.
                log.warning("WebSocket accepted without checking its user: database unavailable")
                viewer = await authenticator.viewer(token, check_user=False)
        except UnknownUser as exc:
            raise ConnectionRejectionError({"reason": "unknown user"}) from exc
        except SignedOut as exc:
            raise ConnectionRejectionError({"reason": "signed out"}) from exc
        except InvalidToken as exc:
            raise ConnectionRejectionError({"reason": "invalid or expired token"}) from exc
        if viewer is None:
            raise ConnectionRejectionError({"reason": "authentication required"})
        context.viewer = viewer
        context.per_connection = True
        context.reset_loaders()
        websocket: WebSocket = context.request
        delay = (viewer.expires_at - datetime.now(UTC)).total_seconds()
        timer = asyncio.get_running_loop().call_later(
            max(delay, 0.0), lambda: asyncio.ensure_future(_close_expired(websocket))
        )
        state = websocket.scope.setdefault("state", {})
        state["token_timer"] = timer
        revocations = self.services.revocations
        if revocations is not None and viewer.session_id is not None:
            # Signing out (on any process) closes the socket the same way as expiry.

            def signed_out() -> None:
                state["revocation_close"] = asyncio.ensure_future(
                    _close_expired(websocket, "Signed out")
                )

            state["revocation_unwatch"] = revocations.watch(viewer.session_id, signed_out)
            # Signed out between the token's check and the watch: no message will come.
            if await revocations.is_revoked(viewer.session_id):
                raise ConnectionRejectionError({"reason": "signed out"})
        acknowledged: UnsetType = UNSET  # the plain connection_ack, no payload
        return acknowledged

    async def process_result(
        self, request: Request, result: ExecutionResult
    ) -> GraphQLHTTPResponse:
        """Strawberry's result; for `application/graphql-response+json`, request errors
        (nothing executed) lose their `data` entry and get a 4xx status (see negotiation)."""
        processed = await super().process_result(request, result)
        if response_media_type(request.headers) == GRAPHQL_RESPONSE and is_request_error(processed):
            request.state.graphql_status = request_error_status(processed)
            del processed["data"]
        return processed

    async def render_graphql_ide(self, request: Request) -> HTMLResponse:
        html = graphiql_html(str(request.url.path))
        return HTMLResponse(html, headers=security_headers(html, request.url))

    def encode_json(self, data: object) -> str:
        return dumps(data).decode()

    def decode_json(self, data: str | bytes) -> object:
        """Request bodies, GET variables and WebSocket messages, as the compiled path reads
        them: orjson, whose every refusal is a `JSONDecodeError` (a 400 from Strawberry, a
        4400 close on a socket). The standard library's decoder raised UnicodeDecodeError
        on bytes that are not UTF-8 and RecursionError on JSON nested a thousand deep,
        both 500s (found by the fuzz, tests/fuzz)."""
        return orjson.loads(data)
