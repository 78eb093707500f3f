"""Production mode (`CONCORD_ENV=production`): less to explore, nothing unsafe at start.

In production:
* introspection (`__schema`, `__type`) is refused, GraphiQL and its assets are not served;
* field suggestions are dropped and unexpected errors masked (as always without DEBUG);
* `/metrics` answers only with `Authorization: Bearer <METRICS_TOKEN>`, and not at all
  (404) when METRICS_TOKEN is unset;
* start-up refuses settings that are unsafe on the internet, naming each one.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from server.settings import Settings

MIN_METRICS_TOKEN = 32

Endpoint = Callable[[Request], Awaitable[Response]]


def unsafe_settings(settings: Settings) -> list[str]:
    """What makes `settings` unfit for production, one sentence per problem."""
    problems = []
    if settings.debug:
        problems.append("DEBUG=true shows tracebacks and field suggestions to every caller.")
    if not settings.jwt_secret:
        problems.append(
            "JWT_SECRET is unset: production uses an explicit secret shared by every process, "
            "not one generated into the data directory."
        )
    if settings.jwt_jwks_url and not settings.jwt_jwks_url.lower().startswith("https://"):
        problems.append(
            "JWT_JWKS_URL must be https://: keys fetched in the clear can be replaced on the "
            "way, and with them anyone can sign tokens this API accepts."
        )
    if settings.metrics_token and len(settings.metrics_token) < MIN_METRICS_TOKEN:
        problems.append(f"METRICS_TOKEN must be at least {MIN_METRICS_TOKEN} characters.")
    return problems


def refuse_unsafe(settings: Settings) -> None:
    """Raise with every reason when production mode is asked for with unsafe settings."""
    if not settings.production:
        return
    problems = unsafe_settings(settings)
    if problems:
        raise RuntimeError("CONCORD_ENV=production refuses to start: " + " ".join(problems))


class MetricsGate:
    """Production's `/metrics`: answered here, before bearer-token authentication (the
    metrics token is not a user's access token), only with `Bearer <METRICS_TOKEN>`."""

    def __init__(self, app: ASGIApp, token: str | None, endpoint: Endpoint) -> None:
        self.app = app
        self.token = token or None  # METRICS_TOKEN= means unset
        self.endpoint = endpoint

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != "/metrics":
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        response: Response
        if self.token is None:
            response = PlainTextResponse("Not Found", status_code=404)
        elif not hmac.compare_digest(
            request.headers.get("authorization", "").encode(), f"Bearer {self.token}".encode()
        ):
            response = PlainTextResponse(
                "Unauthorized", status_code=401, headers={"WWW-Authenticate": "Bearer"}
            )
        else:
            response = await self.endpoint(request)
        await response(scope, receive, send)
