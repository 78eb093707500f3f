"""HTTP requests to `/graphql` in one frame: the middleware stack's checks, without its layers.

Every HTTP request to the GraphQL endpoint used to pass, one inside the other, through
`RequestObserver`, `BodyTimeout`, `BodySizeLimit`, Starlette's `AuthenticationMiddleware`,
`WebSocketLane`, Starlette's exception middleware and its router: seven frames, a
wrapped `receive` and `send` per layer (each message passes three `send` wrappers), a
`HTTPConnection` for authentication and a route match. `GraphQLLane` sits right inside
CORS (which still sees every request) and does the same for these requests in one frame:

* the request id, metrics and span (`server.observe.HttpRequestRecord`, the same record
  `RequestObserver` keeps);
* the body limits: a declared Content-Length over MAX_BODY_BYTES is answered 413 before
  anything else; one `receive` wrapper both times the body (REQUEST_BODY_TIMEOUT_SECONDS,
  408) and counts it (413), as `BodyTimeout` and `BodySizeLimit` do, with their answers;
* authentication (`auth.backend.http_viewer`, what `BearerTokenBackend` runs), with the
  same 401 and the same `scope["auth"]`/`scope["user"]`;
* the endpoint behind Starlette's exception middleware, with the scope keys the router
  would set.

Everything else (another path, a WebSocket, lifespan) goes on through the stack.
tests/server/test_graphql_lane.py sends the same generated requests to an app with the
lane and to one without it and compares status, headers and body.
"""

from __future__ import annotations

from typing import Any

from starlette._utils import get_route_path
from starlette.authentication import AuthCredentials, AuthenticationError, UnauthenticatedUser
from starlette.middleware.exceptions import ExceptionMiddleware
from starlette.requests import HTTPConnection
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from auth.backend import AUTHENTICATED, Authenticator, http_viewer, unauthenticated_response
from server.limits import (
    BodySizeLimit,
    BodyTimeout,
    _TooLarge,
    _TooSlow,
    counting,
    declared_too_large,
    timing,
)
from server.observe import HttpRequestRecord

AUTHORIZATION = b"authorization"


def _header(scope: Scope, name: bytes) -> str | None:
    """The first value of a header, as Starlette's `Headers.get` returns it."""
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


class GraphQLLane:
    """ASGI middleware: HTTP requests to `path` go to `endpoint` in one frame (see above)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        endpoint: ASGIApp,
        path: str,
        authenticator: Authenticator,
        max_body_bytes: int,
        body_timeout_seconds: float,
    ) -> None:
        self.app = app
        self.endpoint = endpoint
        self.path = path
        self.authenticator = authenticator
        self.max_bytes = max_body_bytes
        self.seconds = body_timeout_seconds
        # Their refusals, word for word.
        self.size_limit = BodySizeLimit(app, max_body_bytes)
        self.body_timeout = BodyTimeout(app, body_timeout_seconds)
        self._handled: ExceptionMiddleware | None = None
        self._route: Route | None = None

    def _exceptions_handled(self, app: Any) -> ExceptionMiddleware:
        """What Starlette puts between the middleware and the router, with the app's
        handlers (`Starlette.build_middleware_stack`)."""
        if self._handled is None:
            handlers = {
                key: handler
                for key, handler in app.exception_handlers.items()
                if key not in (500, Exception)
            }
            self._handled = ExceptionMiddleware(self._routed, handlers=handlers, debug=app.debug)
        return self._handled

    async def _routed(self, scope: Scope, receive: Receive, send: Send) -> None:
        """What the router does for a request to `path`: the scope keys, then the endpoint."""
        router = scope["app"].router
        if "router" not in scope:
            scope["router"] = router
        route = self._route
        if route is None:
            route = self._route = next(
                r for r in router.routes if isinstance(r, Route) and r.path == self.path
            )
        scope["route"] = route
        scope["endpoint"] = route.endpoint
        scope["path_params"] = dict(scope.get("path_params", {}))
        await self.endpoint(scope, receive, send)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or get_route_path(scope) != self.path:
            await self.app(scope, receive, send)
            return
        observed = HttpRequestRecord(scope)
        started = False

        async def record(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                observed.started(message)
            await send(message)

        try:
            await self._checked(scope, receive, record, lambda: started)
        finally:
            observed.finish(scope["method"])

    async def _checked(self, scope: Scope, receive: Receive, send: Send, started: Any) -> None:
        if declared_too_large(scope, self.max_bytes):
            await self.size_limit._reject(send)
            return
        checked = counting(timing(receive, self.seconds), self.max_bytes)
        try:
            try:
                viewer = await http_viewer(self.authenticator, _header(scope, AUTHORIZATION))
            except AuthenticationError as exc:
                await unauthenticated_response(HTTPConnection(scope), exc)(scope, checked, send)
                return
            if viewer is None:
                scope["auth"], scope["user"] = AuthCredentials(), UnauthenticatedUser()
            else:
                scope["auth"], scope["user"] = AuthCredentials(AUTHENTICATED), viewer
            await self._exceptions_handled(scope["app"])(scope, checked, send)
        except _TooLarge:
            if not started():
                await self.size_limit._reject(send)
        except _TooSlow:
            if not started():
                await self.body_timeout._reject(send)
