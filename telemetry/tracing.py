"""OpenTelemetry tracing, on only when `OTEL_EXPORTER_OTLP_ENDPOINT` is set.

`tracer` is None unless tracing is on: every instrumented place checks it first, so with
tracing off a request allocates no span, context or carrier, and the SDK is not even
imported. `configure` sets up the SDK (a `TracerProvider` with a batching OTLP/HTTP
exporter) once per process; tests `install` a provider of their own instead.

The spans of one mutation form one trace: the HTTP request (`server.observe`), its
GraphQL operation (`server.observe.OperationObserver`), each SQL statement (`instrument`
below), the publish of each event (`resolvers.unit_of_work`), and, in every process
that delivers the event, a delivery span whose parent is the publish span: its context
travels inside the broker message as a W3C `traceparent` (`inject` / `extract`).
"""

from __future__ import annotations

import os
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer, TracerProvider
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

# The instrumented code's one tracer; None while tracing is off.
tracer: Tracer | None = None
_provider: TracerProvider | None = None
_propagator = TraceContextTextMapPropagator()
SERVICE_NAME = "concord"
TRACEPARENT = "traceparent"


def install(provider: TracerProvider) -> None:
    """Trace through `provider` from now on (tests use an in-memory exporter)."""
    global tracer, _provider
    _provider = provider
    tracer = provider.get_tracer("concord")


def uninstall() -> None:
    """Tracing off again (tests)."""
    global tracer, _provider
    tracer = None
    _provider = None


def configure(endpoint: str | None) -> bool:
    """Set up the SDK exporting to `endpoint` (OTLP over HTTP); nothing when it is unset.

    Once per process: OpenTelemetry's global provider can be set only once. The exporter
    reads its other settings (`OTEL_EXPORTER_OTLP_HEADERS`, timeouts, certificates) and
    the resource (`OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`) from the environment.
    """
    if not endpoint:
        return False
    if tracer is not None:
        return True
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    attributes = {} if os.environ.get("OTEL_SERVICE_NAME") else {"service.name": SERVICE_NAME}
    provider = SdkTracerProvider(resource=Resource.create(attributes))
    # The specification's rule for the signal-neutral variable over HTTP: the traces
    # path is appended to it.
    traces = endpoint.rstrip("/") + "/v1/traces"
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=traces)))
    trace.set_tracer_provider(provider)
    install(provider)
    return True


def inject() -> str | None:
    """The current span's context as a `traceparent` value, or None."""
    carrier: dict[str, str] = {}
    _propagator.inject(carrier)
    return carrier.get(TRACEPARENT)


def extract(traceparent: str | None) -> Context | None:
    """The context a `traceparent` value names (a remote parent), or None."""
    if not traceparent:
        return None
    return _propagator.extract({TRACEPARENT: traceparent})


def extract_headers(headers: Any) -> Context | None:
    """The context of an incoming request's `traceparent` header (ASGI header pairs)."""
    for name, value in headers:
        if name == b"traceparent":
            return _propagator.extract({TRACEPARENT: value.decode("latin-1")})
    return None


def failed(span: trace.Span, exc: BaseException) -> None:
    span.record_exception(exc)
    span.set_status(Status(StatusCode.ERROR, type(exc).__name__))


def instrument_engine(engine: Any, role: str) -> None:
    """A span per SQL statement run through `engine` (an AsyncEngine), child of the
    current span: the statement's first keyword as its name, the SQL text (with its
    placeholders, never the values) as `db.statement`."""
    from sqlalchemy import event

    sync_engine = engine.sync_engine
    system = sync_engine.dialect.name  # sqlite, postgresql, mssql

    @event.listens_for(sync_engine, "before_cursor_execute")
    def _before(
        conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: bool
    ) -> None:
        if tracer is None or context is None:
            return
        keyword = statement.lstrip().split(None, 1)[0].upper() if statement.strip() else "SQL"
        span = tracer.start_span(
            keyword,
            kind=SpanKind.CLIENT,
            attributes={
                "db.system": system,
                "db.statement": statement,
                "concord.db.engine": role,
            },
        )
        context._concord_span = span

    @event.listens_for(sync_engine, "after_cursor_execute")
    def _after(
        conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: bool
    ) -> None:
        span = getattr(context, "_concord_span", None)
        if span is not None:
            context._concord_span = None
            span.end()

    @event.listens_for(sync_engine, "handle_error")
    def _error(exception_context: Any) -> None:
        context = exception_context.execution_context
        span = getattr(context, "_concord_span", None)
        if span is not None:
            context._concord_span = None
            failed(span, exception_context.original_exception)
            span.end()
