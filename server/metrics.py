"""Prometheus metrics and the /metrics endpoint."""

from __future__ import annotations

import time

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from models.breaker import STATE_VALUES, Breaker

HTTP_REQUESTS = Counter(
    "concord_http_requests_total",
    "HTTP requests by method, path and status.",
    ["method", "path", "status"],
)
HTTP_LATENCY = Histogram("concord_http_request_seconds", "HTTP request latency by path.", ["path"])
BREAKER_STATE = Gauge(
    "concord_breaker_state",
    "Circuit breaker state: 0 closed, 1 open (calls fail at once), 2 half-open (one trial).",
    ["name"],
)
KNOWN_PATHS = frozenset({"/graphql", "/healthz", "/readyz", "/metrics"})


def watch_breaker(breaker: Breaker) -> None:
    """Report `breaker`'s state as concord_breaker_state{name=…}, read at each scrape."""
    BREAKER_STATE.labels(breaker.name).set_function(lambda: STATE_VALUES[breaker.state])


class MetricsMiddleware:
    """Counts and times HTTP requests; unknown paths are one label, to bound cardinality."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"] if scope["path"] in KNOWN_PATHS else "other"
        status = 500
        start = time.perf_counter()

        async def record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, record)
        finally:
            HTTP_REQUESTS.labels(scope["method"], path, str(status)).inc()
            HTTP_LATENCY.labels(path).observe(time.perf_counter() - start)


async def metrics(request: Request) -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
