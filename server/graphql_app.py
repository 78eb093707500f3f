"""The GraphQL endpoint: HTTP queries and mutations, WebSocket subscriptions, GraphiQL."""

from __future__ import annotations

import asyncio
import contextlib
import json
from datetime import UTC, datetime
from typing import Any

from cross_web import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.exceptions import ConnectionRejectionError
from strawberry.types.unset import UNSET, UnsetType

from auth.backend import Viewer, viewer_from_header
from auth.tokens import InvalidToken
from resolvers.context import Context, Services
from resolvers.reads import SEEN_HEADER, parse_seen, reader_for
from server.graphiql import graphiql_html


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

    def __init__(self, schema: Any, services: Services, **kwargs: Any) -> None:
        super().__init__(schema, **kwargs)
        self.services = services

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
        context.reset_loaders()
        websocket: WebSocket = context.request
        delay = (viewer.expires_at - datetime.now(UTC)).total_seconds()
        timer = asyncio.get_running_loop().call_later(
            max(delay, 0.0), lambda: asyncio.ensure_future(_close_expired(websocket))
        )
        websocket.scope.setdefault("state", {})["token_timer"] = timer
        acknowledged: UnsetType = UNSET  # the plain connection_ack, no payload
        return acknowledged

    async def render_graphql_ide(self, request: Request) -> HTMLResponse:
        return HTMLResponse(graphiql_html(str(request.url.path)))

    def encode_json(self, data: object) -> str:
        return json.dumps(data, separators=(",", ":"))
