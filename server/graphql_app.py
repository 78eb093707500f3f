"""The GraphQL endpoint: HTTP queries and mutations, WebSocket subscriptions, GraphiQL."""

from __future__ import annotations

import asyncio
import contextlib
import json
from datetime import UTC, datetime
from typing import Any

import orjson
from cross_web import HTTPException
from graphql.execution.values import VariableValues
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.exceptions import ConnectionRejectionError
from strawberry.http import GraphQLRequestData
from strawberry.types import ExecutionResult
from strawberry.types.unset import UNSET, UnsetType

from auth.backend import Viewer, viewer_from_header
from auth.tokens import InvalidToken
from resolvers.context import Context, Services
from resolvers.read_scope import ReadScopes
from resolvers.reads import SEEN_HEADER, parse_seen, reader_for
from schema.compiled import CompiledReads, confined_root
from schema.compiled.plan import Selection
from server.graphiql import graphiql_html, security_headers
from server.query_limits import DocumentCheck, QueryLimits
from server.request_deadline import request_deadline, too_many
from server.response_cache import ResponseCache
from server.ws_legacy import LegacyGraphQLWSHandler


def graphql_error_response(message: str, status: int, code: str) -> JSONResponse:
    return JSONResponse(
        {"errors": [{"message": message, "extensions": {"code": code}}]}, status_code=status
    )


async def _require_json_object(request: Request) -> None:
    """A JSON body must be an object: Strawberry fails on `7` or `null` with a 500."""
    if request.method != "POST" or "json" not in request.headers.get("content-type", ""):
        return
    try:
        body = json.loads(await request.body())
    except ValueError:
        return  # Strawberry answers malformed JSON with its own 400.
    if not isinstance(body, dict):
        raise HTTPException(400, "The request body must be a JSON object with a `query`.")


async def _close_expired(websocket: WebSocket) -> None:
    # The socket may be closing already; then there is nothing left to do.
    with contextlib.suppress(Exception):
        await websocket.close(code=4403, reason="Access token expired")


class ConcordGraphQL(GraphQL[Context, None]):
    """Strawberry's ASGI view with Concord's context, errors and offline GraphiQL."""

    graphql_ws_handler_class = LegacyGraphQLWSHandler

    def __init__(
        self,
        schema: Any,
        services: Services,
        *,
        compiled_reads: bool = True,
        cache: ResponseCache | None = None,
        limits: QueryLimits | None = None,
        request_timeout: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(schema, **kwargs)
        self.services = services
        self.compiled = CompiledReads(schema._schema) if compiled_reads else None
        # The compiled path skips validation: its cost still depends on the variables.
        self.limits_check = DocumentCheck(schema._schema, limits) if limits else None
        self.request_timeout = request_timeout
        self.cache = cache
        self.scopes = ReadScopes()

    async def execute_single(
        self,
        request: Request,
        request_adapter: Any,
        sub_response: Response,
        context: Context,
        root_value: None,
        request_data: GraphQLRequestData,
    ) -> ExecutionResult:
        """Every HTTP operation, stopped when it outlives REQUEST_TIMEOUT_SECONDS."""
        result = await request_deadline(
            self.request_timeout,
            self._execute_single(
                request, request_adapter, sub_response, context, root_value, request_data
            ),
        )
        too_many(result, sub_response)
        return result

    async def _execute_single(
        self,
        request: Request,
        request_adapter: Any,
        sub_response: Response,
        context: Context,
        root_value: None,
        request_data: GraphQLRequestData,
    ) -> ExecutionResult:
        """Queries the general path has accepted before run on the compiled read path."""
        compiled = self.compiled
        query = request_data.query
        if compiled is None or query is None or request_data.protocol != "http":
            return await super().execute_single(
                request, request_adapter, sub_response, context, root_value, request_data
            )
        prepared = compiled.prepare(query, request_data.operation_name, request_data.variables)
        checked = self.limits_check
        if prepared is not None and (
            checked is None
            or checked.check(query, request_data.operation_name, request_data.variables)
        ):
            plan, variables = prepared
            key = await self._cache_key(context, request_data, *prepared)
            if key is not None and self.cache is not None:
                hit = await self.cache.get(key)
                if hit is not None:
                    # Spliced into the response as it is, without decoding (see encode_json).
                    cached: Any = orjson.Fragment(hit)
                    return ExecutionResult(data=cached, errors=None)
            data = await compiled.execute(context, plan, variables)
            if data is not None:
                if key is not None and self.cache is not None:
                    await self.cache.set(key, data)
                return ExecutionResult(data=data, errors=None)
        result = await super().execute_single(
            request, request_adapter, sub_response, context, root_value, request_data
        )
        compiled.learn(query, request_data.operation_name, result.data is not None)
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
        try:
            await _require_json_object(request)
            response = await self.run(request)
        except HTTPException as exc:
            # Malformed JSON, a non-GraphQL body, a wrong method: a 4xx with a GraphQL
            # error body, never plain text and never a 500.
            response = graphql_error_response(exc.reason, exc.status_code, "BAD_REQUEST")
        await response(scope, receive, send)

    async def _cache_key(
        self,
        context: Context,
        request_data: GraphQLRequestData,
        plan: Selection,
        variables: VariableValues,
    ) -> str | None:
        """The response-cache key of a read confined to one workspace, else None."""
        if self.cache is None or request_data.query is None:
            return None
        root = confined_root(plan, variables)
        if root is None:
            return None
        scope = await self.scopes.scope(context, *root)
        if scope is None:
            return None
        return self.cache.key(
            request_data.query, request_data.operation_name, request_data.variables, scope
        )

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
        websocket: WebSocket = context.request
        delay = (viewer.expires_at - datetime.now(UTC)).total_seconds()
        timer = asyncio.get_running_loop().call_later(
            max(delay, 0.0), lambda: asyncio.ensure_future(_close_expired(websocket))
        )
        websocket.scope.setdefault("state", {})["token_timer"] = timer
        acknowledged: UnsetType = UNSET  # the plain connection_ack, no payload
        return acknowledged

    async def render_graphql_ide(self, request: Request) -> HTMLResponse:
        html = graphiql_html(str(request.url.path))
        return HTMLResponse(html, headers=security_headers(html, request.url))

    def encode_json(self, data: object) -> str:
        # orjson is several times faster than json for the large answers of nested reads;
        # json only for what orjson refuses (integers beyond 64 bits in a JSON value).
        try:
            return orjson.dumps(data).decode()
        except TypeError:
            return json.dumps(data, separators=(",", ":"))
