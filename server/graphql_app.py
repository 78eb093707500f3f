"""The GraphQL endpoint: HTTP queries and mutations, WebSocket subscriptions, GraphiQL."""

from __future__ import annotations

import json
from typing import Any

from cross_web import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL

from auth.backend import Viewer
from resolvers.context import Context, Services
from server.graphiql import graphiql_html


def graphql_error_response(message: str, status: int, code: str) -> JSONResponse:
    return JSONResponse(
        {"errors": [{"message": message, "extensions": {"code": code}}]}, status_code=status
    )


class ConcordGraphQL(GraphQL[Context, None]):
    """Strawberry's ASGI view with Concord's context, errors and offline GraphiQL."""

    def __init__(self, schema: Any, services: Services, **kwargs: Any) -> None:
        super().__init__(schema, **kwargs)
        self.services = services

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        request = Request(scope=scope, receive=receive)
        try:
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
        return Context.create(self.services, viewer, request, response)

    async def render_graphql_ide(self, request: Request) -> HTMLResponse:
        return HTMLResponse(graphiql_html(str(request.url.path)))

    def encode_json(self, data: object) -> str:
        return json.dumps(data, separators=(",", ":"))
