"""The GraphQL endpoint: queries, mutations and subscriptions over HTTP, SSE and WebSocket."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping
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
from strawberry.types import ExecutionResult
from strawberry.types.graphql import OperationType
from strawberry.types.unset import UNSET, UnsetType

from auth.backend import Viewer, viewer_from_header
from auth.tokens import InvalidToken
from resolvers.context import Context, Services
from resolvers.reads import SEEN_HEADER, parse_seen, reader_for
from schema.compiled import CompiledReads
from server.compiled_http import CompiledAnswers
from server.encoding import dumps
from server.graphiql import graphiql_html, security_headers
from server.negotiation import (
    GRAPHQL_RESPONSE,
    JSON,
    is_request_error,
    request_error_status,
    wants_graphql_response,
)
from server.query_limits import DocumentCheck, QueryLimits
from server.request_deadline import request_deadline, too_many
from server.response_cache import ResponseCache
from server.sse import EventStreams, accepts_event_stream
from server.websocket import (
    DEFAULT_MAX_MESSAGE_BYTES,
    LegacyProtocolHandler,
    LimitedWebSocketAdapter,
)
from server.ws_legacy import LegacyProtocolRules


def graphql_error_response(
    message: str,
    status: int,
    code: str,
    *,
    headers: Mapping[str, str] | None = None,
    media_type: str = JSON,
) -> JSONResponse:
    return JSONResponse(
        {"errors": [{"message": message, "extensions": {"code": code}}]},
        status_code=status,
        headers=headers,
        media_type=media_type,
    )


def _media_type(request: Request) -> str:
    return GRAPHQL_RESPONSE if wants_graphql_response(request.headers) else JSON


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
        message, status, code, headers=headers, media_type=_media_type(request)
    )


def _negotiated(request: Request, response: Response) -> Response:
    """The query/mutation answer in the media type the client asked for, with its status."""
    if response.headers.get("content-type") != JSON or _media_type(request) != GRAPHQL_RESPONSE:
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


async def _close_expired(websocket: WebSocket) -> None:
    # The socket may be closing already; then there is nothing left to do.
    with contextlib.suppress(Exception):
        await websocket.close(code=4403, reason="Access token expired")


class LegacyHandler(LegacyProtocolRules, LegacyProtocolHandler):
    """Legacy `graphql-ws`: the modern protocol's rules (deadline, one `connection_init`,
    malformed messages refused) and queries and mutations as well as subscriptions."""


class ConcordGraphQL(EventStreams):
    """Strawberry's ASGI view with Concord's context, errors and offline GraphiQL."""

    websocket_adapter_class = LimitedWebSocketAdapter  # type: ignore[assignment]
    graphql_ws_handler_class = LegacyHandler

    def __init__(
        self,
        schema: Any,
        services: Services,
        *,
        compiled_reads: bool = True,
        cache: ResponseCache | None = None,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        limits: QueryLimits | None = None,
        request_timeout: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(schema, **kwargs)
        self.services = services
        # The compiled path skips validation: its cost still depends on the variables.
        check = DocumentCheck(schema._schema, limits).check if limits else None
        self.compiled = (
            CompiledAnswers(CompiledReads(schema._schema), cache, check) if compiled_reads else None
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
        data = await compiled.answer(context, query, operation_name, request_data.variables)
        if data is not None:
            return ExecutionResult(data=data, errors=None)
        result = await general()
        compiled.learn(query, operation_name, result.data is not None)
        return result

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            try:
                await super().__call__(scope, receive, send)
            finally:
                timer = scope.get("state", {}).get("token_timer")
                if timer is not None:
                    timer.cancel()
            return
        request = Request(scope=scope, receive=receive)
        if (
            self.compiled is not None
            and request.method == "POST"
            and not accepts_event_stream(request.headers.get("accept", ""))
        ):
            try:
                async with asyncio.timeout(self.request_timeout):
                    compiled = await self.compiled.respond(
                        request, self._context, self.encode_json, _media_type(request)
                    )
            except TimeoutError:
                # Answered by the general path instead, which reports the time limit the
                # way every other request does (its own deadline applies there).
                compiled = None
            if compiled is not None:
                await compiled(scope, receive, send)
                return
        try:
            await _require_json_object(request)
            response = _negotiated(request, await self.run(request))
        except HTTPException as exc:
            # Malformed JSON, a non-GraphQL body, a wrong method: a 4xx with a GraphQL
            # error body, never plain text and never a 500.
            response = http_error_response(request, exc)
        await response(scope, receive, send)

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
        try:
            viewer = viewer_from_header(
                self.services.tokens, header if isinstance(header, str) else ""
            )
        except InvalidToken as exc:
            raise ConnectionRejectionError({"reason": "invalid or expired token"}) from exc
        if viewer is None:
            raise ConnectionRejectionError({"reason": "authentication required"})
        known = self.services.known_users
        if known is not None and not await known(viewer.user_id):
            raise ConnectionRejectionError({"reason": "unknown user"})
        context.viewer = viewer
        context.per_connection = True
        context.reset_loaders()
        websocket: WebSocket = context.request
        delay = (viewer.expires_at - datetime.now(UTC)).total_seconds()
        timer = asyncio.get_running_loop().call_later(
            max(delay, 0.0), lambda: asyncio.ensure_future(_close_expired(websocket))
        )
        websocket.scope.setdefault("state", {})["token_timer"] = timer
        acknowledged: UnsetType = UNSET  # the plain connection_ack, no payload
        return acknowledged

    async def process_result(
        self, request: Request, result: ExecutionResult
    ) -> GraphQLHTTPResponse:
        """Strawberry's result; for `application/graphql-response+json`, request errors
        (nothing executed) lose their `data` entry and get a 4xx status (see negotiation)."""
        processed = await super().process_result(request, result)
        if _media_type(request) == GRAPHQL_RESPONSE and is_request_error(processed):
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
