"""RATE_LIMIT_OPERATIONS on every transport: HTTP (and SSE), graphql-transport-ws, graphql-ws.

Counted per user, per client address for anonymous callers, by `AuthRateLimiter.operation`
(in Redis when REDIS_URL is set, so every process counts against one limit).

* HTTP: the view checks an operation request (`POST /graphql`, `GET /graphql?query=…`,
  SSE included) before anything else, the compiled read path and the response cache
  included, so a refused request reads no body and executes nothing: HTTP 429 with
  `Retry-After` and a RATE_LIMITED error.
* WebSocket: each `subscribe` (`start` on the legacy protocol) is counted for the user
  the socket authenticated as; a refused one gets an `error` message for its id, and the
  socket stays open for the operations that come later.
"""

from __future__ import annotations

from typing import Any

from graphql import GraphQLFormattedError
from starlette.requests import Request
from starlette.responses import JSONResponse
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    BaseGraphQLTransportWSHandler,
)
from strawberry.subscriptions.protocols.graphql_transport_ws.types import (
    ErrorMessage as TransportErrorMessage,
)
from strawberry.subscriptions.protocols.graphql_transport_ws.types import SubscribeMessage
from strawberry.subscriptions.protocols.graphql_ws.handlers import BaseGraphQLWSHandler
from strawberry.subscriptions.protocols.graphql_ws.types import ErrorMessage, StartMessage

from auth.backend import Viewer
from auth.rate_limit import Refusal
from resolvers.context import Context, Services

LIMIT = "RATE_LIMIT_OPERATIONS"


def refusal_error(refusal: Refusal) -> GraphQLFormattedError:
    """The GraphQL error of a refused operation, the same on every transport."""
    return {
        "message": f"Too many operations ({refusal.limit}): try again in {refusal.retry_after} s.",
        "extensions": {
            "code": "RATE_LIMITED",
            "limit": refusal.limit,
            "retryAfter": refusal.retry_after,
        },
    }


def is_operation(request: Request) -> bool:
    """Whether the HTTP request asks for an operation (not GraphiQL's page, not a 405)."""
    return request.method == "POST" or (request.method == "GET" and "query" in request.query_params)


def caller(user: object, address: str | None) -> str:
    """Whom an operation is counted for: the user, else the client address."""
    if isinstance(user, Viewer):
        return f"user:{user.user_id}"
    return f"ip:{address or 'unknown'}"


async def refused(services: Services, who: str) -> Refusal | None:
    """Count one operation of `who`; a Refusal when over the limit."""
    limits = services.auth_limits
    return None if limits is None else await limits.operation(who)


async def refuse_http(services: Services, request: Request, media_type: str) -> JSONResponse | None:
    """429 for an operation request over the limit; None to go on (counted)."""
    if not is_operation(request):
        return None
    client = request.client
    who = caller(request.scope.get("user"), client.host if client else None)
    refusal = await refused(services, who)
    if refusal is None:
        return None
    return JSONResponse(
        {"errors": [refusal_error(refusal)]},
        status_code=429,
        headers={"Retry-After": str(refusal.retry_after)},
        media_type=media_type,
    )


async def _socket_refusal(context: Context) -> Refusal | None:
    return await refused(context.services, caller(context.viewer, None))


class RateLimitedSubscribe(BaseGraphQLTransportWSHandler[Context, None]):
    """graphql-transport-ws: each `subscribe` counted for the socket's user.

    A mixin before the handler class (`class H(RateLimitedSubscribe, Handler)`). Only an
    operation that would run is counted: before `connection_ack` or with an id in use,
    the handler below closes the socket as the protocol says.
    """

    async def handle_subscribe(self, message: SubscribeMessage) -> None:
        op_id: Any = message.get("id")
        running = {*self.operations, *getattr(self, "fanout", ())}
        if self.connection_acknowledged and isinstance(op_id, str) and op_id not in running:
            refusal = await _socket_refusal(self.context)
            if refusal is not None:
                error = TransportErrorMessage(
                    id=op_id, type="error", payload=[refusal_error(refusal)]
                )
                await self.send_message(error)
                return
        await super().handle_subscribe(message)


class RateLimitedStart(BaseGraphQLWSHandler[Context, None]):
    """Legacy graphql-ws: each `start` counted for the socket's user (a mixin, likewise)."""

    async def handle_start(self, message: StartMessage) -> None:
        if self.connection_acknowledged:
            refusal = await _socket_refusal(self.context)
            if refusal is not None:
                error = refusal_error(refusal)
                await self.send_message(ErrorMessage(type="error", id=message["id"], payload=error))
                return
        await super().handle_start(message)
