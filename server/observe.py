"""What operators see of each request and operation: a request id, a log line, metrics, spans.

* `RequestObserver` (ASGI middleware, outermost but CORS): takes the request id from
  `X-Request-ID` when it is a sane token, else makes one, and echoes it in the response;
  counts and times HTTP requests by path and status; with tracing on, opens the request's
  server span (continuing the caller's `traceparent`).
* `OperationObserver` (a Strawberry extension, first in the list): every operation
  Strawberry runs, on every transport (HTTP, SSE, both WebSocket protocols), gets a span
  (current while it executes, so SQL and publish spans are its children), its metrics,
  and one JSON log line when it ends.
* `operation_finished` is that line and those metrics, for the paths that bypass
  Strawberry too: the compiled read path (`server.compiled_http`) and the WebSocket
  fan-out (`server.ws_fanout`).

A log line names the request id, the user, the operation's name and type, the
transport, the duration and the outcome (`ok`, or the first error's code); never the
document, the variables or any header, so neither passwords nor tokens reach the logs.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Iterable, Iterator
from typing import Any

from graphql import GraphQLError
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind
from prometheus_client import Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocket
from strawberry.extensions import SchemaExtension
from strawberry.types.graphql import OperationType

from server.logging import log_fields
from server.sse import accepts_event_stream
from telemetry import tracing

log = logging.getLogger("concord.operations")

REQUEST_ID = "concord.request_id"  # the scope key
REQUEST_ID_HEADER = b"x-request-id"
# What we accept from a client (or proxy) as its request id: a token short enough to log,
# with nothing that could break a log line or a header.
_VALID_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:/+=@-]{1,128}")

HTTP_REQUESTS = Counter(
    "concord_http_requests_total",
    "HTTP requests by method, path and status.",
    ["method", "path", "status"],
)
HTTP_LATENCY = Histogram("concord_http_request_seconds", "HTTP request latency by path.", ["path"])
KNOWN_PATHS = frozenset({"/graphql", "/healthz", "/readyz", "/metrics"})

OPERATIONS = Counter(
    "concord_graphql_operations_total",
    "GraphQL operations by name, type and outcome (ok or the first error's code).",
    ["operation", "type", "outcome"],
)
OPERATION_SECONDS = Histogram(
    "concord_graphql_operation_seconds",
    "GraphQL operation duration by name and type (a subscription: its whole life).",
    ["operation", "type"],
)
GRAPHQL_ERRORS = Counter(
    "concord_graphql_errors_total", "GraphQL errors by extensions.code.", ["code"]
)
WEBSOCKETS = Gauge(
    "concord_websocket_connections", "WebSocket connections open.", multiprocess_mode="livesum"
)
SUBSCRIPTIONS = Gauge(
    "concord_subscriptions",
    "Subscriptions running, by path (fanout: the WebSocket fan-out groups; strawberry: "
    "the rest, SSE included).",
    ["path"],
    multiprocess_mode="livesum",
)
FANOUT_SUBSCRIPTIONS = SUBSCRIPTIONS.labels("fanout")
STRAWBERRY_SUBSCRIPTIONS = SUBSCRIPTIONS.labels("strawberry")

# Operation names are the client's choice: at most this many distinct ones get a label of
# their own in each process, the rest are counted as "other".
MAX_OPERATION_LABELS = 200
_labels: set[str] = set()
_NAME = re.compile(r"[_A-Za-z][_0-9A-Za-z]{0,99}")
_CODE = re.compile(r"[A-Z][A-Z0-9_]{0,47}")
# Outcomes that mean no operation ran: the name the client sent may not exist at all.
REQUEST_ERRORS = frozenset({"GRAPHQL_PARSE_FAILED", "GRAPHQL_VALIDATION_FAILED", "BAD_REQUEST"})


def request_id(headers: Iterable[tuple[bytes, bytes]]) -> str:
    """The caller's `X-Request-ID` if it is a sane token, else a new one."""
    for name, value in headers:
        if name == REQUEST_ID_HEADER:
            if _VALID_REQUEST_ID.fullmatch(value):
                return value.decode()
            break
    return uuid.uuid4().hex


def operation_label(name: str | None, outcome: str) -> str:
    """A bounded metric label for an operation name."""
    if outcome in REQUEST_ERRORS:
        return "invalid"
    if name is None:
        return "anonymous"
    if name in _labels:
        return name
    if len(_labels) >= MAX_OPERATION_LABELS or not _NAME.fullmatch(name):
        return "other"
    _labels.add(name)
    return name


def error_code(error: GraphQLError) -> str:
    code = (error.extensions or {}).get("code")
    return code if isinstance(code, str) and _CODE.fullmatch(code) else "OTHER"


# (operation label, type, outcome) -> the counter and histogram children: `labels()` takes
# a lock and builds a key on every call.
_children: dict[tuple[str, str, str], tuple[Any, Any]] = {}


def operation_finished(
    scope: Any,
    user_id: object,
    name: str | None,
    operation_type: str,
    transport: str,
    started: float,
    outcome: str,
    codes: Iterable[str] = (),
) -> None:
    """Count, time and log one finished operation."""
    seconds = time.perf_counter() - started
    key = (name or "", operation_type, outcome)
    children = _children.get(key)
    if children is None:
        label = operation_label(name, outcome)
        children = (
            OPERATIONS.labels(label, operation_type, outcome),
            OPERATION_SECONDS.labels(label, operation_type),
        )
        if len(_children) < MAX_OPERATION_LABELS * 4:
            _children[key] = children
    children[0].inc()
    children[1].observe(seconds)
    for code in codes:
        GRAPHQL_ERRORS.labels(code).inc()
    if log.isEnabledFor(logging.INFO):
        # Not `log.info`, which would also look up the caller's frame.
        log_fields(
            log,
            "operation",
            {
                "request_id": scope.get(REQUEST_ID) if scope is not None else None,
                "user_id": None if user_id is None else str(user_id),
                "operation": None if name is None else name[:100],
                "operation_type": operation_type,
                "transport": transport,
                "duration_ms": round(seconds * 1000, 3),
                "outcome": outcome,
            },
        )


# (method, path label, status) -> the counter and histogram children, as `_children`.
_http_children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
MAX_HTTP_LABELS = 1_000


class HttpRequestRecord:
    """One HTTP request as `RequestObserver` (and `server.graphql_lane`) records it: its id
    (in the scope, echoed in the response), its metrics and, with tracing on, its span."""

    __slots__ = ("echo", "path", "span", "start", "status", "token")

    def __init__(self, scope: Scope) -> None:
        rid = scope[REQUEST_ID] = request_id(scope["headers"])
        self.echo = (b"x-request-id", rid.encode())
        self.path = scope["path"] if scope["path"] in KNOWN_PATHS else "other"
        self.status = 500
        self.start = time.perf_counter()
        tracer = tracing.tracer
        self.span: Any = None
        self.token: Any = None
        if tracer is not None:
            self.span = tracer.start_span(
                f"{scope['method']} {self.path}",
                context=tracing.extract_headers(scope["headers"]),
                kind=SpanKind.SERVER,
                attributes={
                    "http.request.method": scope["method"],
                    "url.path": scope["path"],
                    "concord.request_id": rid,
                },
            )
            self.token = otel_context.attach(trace.set_span_in_context(self.span))

    def started(self, message: Message) -> None:
        """Note the status of an `http.response.start` message and add the request id."""
        self.status = message["status"]
        message["headers"] = [*message.get("headers", ()), self.echo]

    def finish(self, method: str) -> None:
        status = self.status
        key = (method, self.path, status)
        children = _http_children.get(key)
        if children is None:
            children = (
                HTTP_REQUESTS.labels(method, self.path, str(status)),
                HTTP_LATENCY.labels(self.path),
            )
            if len(_http_children) < MAX_HTTP_LABELS:
                _http_children[key] = children
        children[0].inc()
        children[1].observe(time.perf_counter() - self.start)
        span = self.span
        if span is not None:
            span.set_attribute("http.response.status_code", status)
            if status >= 500:
                span.set_status(trace.Status(trace.StatusCode.ERROR))
            span.end()
            otel_context.detach(self.token)


class RequestObserver:
    """Request ids, HTTP metrics and the request's span; see the module docstring."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind != "http":
            if kind == "websocket":
                # Every operation line of the socket names its upgrade request's id.
                scope[REQUEST_ID] = request_id(scope["headers"])
            await self.app(scope, receive, send)
            return
        observed = HttpRequestRecord(scope)

        async def record(message: Message) -> None:
            if message["type"] == "http.response.start":
                observed.started(message)
            await send(message)

        try:
            await self.app(scope, receive, record)
        finally:
            observed.finish(scope["method"])


def _transport(request: Any) -> str:
    if isinstance(request, WebSocket):
        return "ws"
    headers = getattr(request, "headers", None)
    if headers is not None and accepts_event_stream(headers.get("accept", "")):
        return "sse"
    return "http"


def _codes(errors: Iterable[GraphQLError] | None) -> list[str]:
    return [error_code(e) for e in errors or ()]


class OperationObserver(SchemaExtension):
    """One span, one set of metrics and one log line per operation Strawberry runs."""

    def on_operation(self) -> Iterator[None]:
        started = time.perf_counter()
        tracer = tracing.tracer
        self.span = tracer.start_span("graphql") if tracer is not None else None
        self.subscription = False
        self.stream_codes: list[str] = []
        outcome: str | None = None
        codes: list[str] = []
        try:
            yield
        except Exception as exc:
            code = getattr(exc, "code", None)
            outcome = code if isinstance(code, str) else "INTERNAL_SERVER_ERROR"
            codes = [outcome]
            if self.span is not None:
                tracing.failed(self.span, exc)
            raise
        except BaseException:
            # Cancelled: a subscription the client completed, or a request whose client
            # went away.
            outcome = "ok" if self.subscription else "CANCELLED"
            raise
        finally:
            self._finish(started, outcome, codes)

    def _finish(self, started: float, outcome: str | None, codes: list[str]) -> None:
        ec = self.execution_context
        if outcome is None:
            if self.subscription:
                codes = self.stream_codes
            else:
                result = ec.result
                codes = _codes(result.errors if result is not None else ec.pre_execution_errors)
            outcome = codes[0] if codes else "ok"
        try:
            kind = ec.operation_type.value
        except Exception:
            kind = "unknown"
        if self.subscription:
            STRAWBERRY_SUBSCRIPTIONS.dec()
        name = ec.operation_name if ec.graphql_document is not None else None
        span = self.span
        if span is not None:
            span.update_name(f"{kind} {name or 'anonymous'}")
            span.set_attribute("graphql.operation.type", kind)
            if name is not None:
                span.set_attribute("graphql.operation.name", name[:100])
            span.set_attribute("concord.outcome", outcome)
            if outcome != "ok":
                span.set_status(trace.Status(trace.StatusCode.ERROR, outcome))
            span.end()
        context = ec.context
        request = getattr(context, "request", None)
        viewer = getattr(context, "viewer", None)
        operation_finished(
            getattr(request, "scope", None),
            getattr(viewer, "user_id", None),
            name,
            kind,
            _transport(request),
            started,
            outcome,
            codes,
        )

    def on_execute(self) -> Iterator[None]:
        if self.execution_context.operation_type is OperationType.SUBSCRIPTION:
            self.subscription = True
            STRAWBERRY_SUBSCRIPTIONS.inc()
        span = self.span
        if span is None:
            yield
            return
        # Current while it executes (within one step of the caller's task): SQL
        # statements and publishes of this operation become its children.
        token = otel_context.attach(trace.set_span_in_context(span))
        try:
            yield
        finally:
            otel_context.detach(token)

    def on_stream_result(self, result: Any) -> Iterator[None]:
        yield
        errors = getattr(result, "errors", None)
        if errors:
            self.stream_codes = _codes(errors)
