"""GraphQL over Server-Sent Events: subscriptions (and any operation) on plain HTTP.

For networks that block WebSockets. It follows the *GraphQL over SSE* protocol as the
`graphql-sse` reference client speaks it in "distinct connections" mode: one HTTP request
per operation, `POST /graphql` with a JSON body or `GET /graphql?query=…`, carrying
`Accept: text/event-stream`. The response is a stream of

    id: <cursor>            (workspaceEvents only: the event's cursor)
    event: next
    data: {"data": …}       (one execution result, JSON on one line)

messages and, when the operation is over, one `event: complete` with an empty `data:`. A
query or mutation is one `next` and `complete`; errors found before execution (parse,
validation, limits, membership) come as a `next` too, as the protocol asks. A comment
line (`: ping`) every HEARTBEAT_SECONDS keeps proxies from closing an idle stream. The
client ends a subscription by closing the connection; the stream then stops, releasing
its broker subscription.

Authentication is the HTTP one (the Bearer header; an invalid or expired token is a 401
before any stream starts), and the stream ends with an UNAUTHENTICATED error when the
token expires or its login is signed out, as a WebSocket is closed then. A reconnecting
client sends the last `id:` it saw as `Last-Event-ID` (a browser's EventSource does so by
itself); `workspaceEvents` then resumes right after that event, whatever its `after`
argument says.

When the server shuts down (SIGTERM), every stream ends at once with a `: shutting down`
comment and no `complete` (the operation is not over): the client reconnects, to another
process, and resumes from its `Last-Event-ID` (server/shutdown.py).

A subscription sent without `Accept: text/event-stream` is refused with a 400 naming the
transports that carry subscriptions.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any, cast, overload

from cross_web import AsyncHTTPRequestAdapter, HTTPException
from graphql import GraphQLError, OperationType, get_operation_ast, parse
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.http import GraphQLRequestData
from strawberry.types import ExecutionResult
from strawberry.types.graphql import OperationType as StrawberryOperation
from strawberry.types.unset import UNSET

from resolvers.context import Context
from server.shutdown import Drain

EVENT_STREAM = "text/event-stream"
HEARTBEAT_SECONDS = 15.0
SHUTTING_DOWN = ": shutting down: reconnect with Last-Event-ID to resume\n\n"
SUBSCRIPTIONS_NEED_A_STREAM = (
    "Subscriptions are not answered as a single HTTP response. Send this request again "
    "with `Accept: text/event-stream` (GraphQL over Server-Sent Events), or open a "
    "WebSocket to this endpoint with the `graphql-transport-ws` protocol (or the legacy "
    "`graphql-ws`)."
)
EXPIRED = {
    "message": "Your access token expired: reconnect with a fresh token, sending the last "
    "event id as Last-Event-ID to resume.",
    "extensions": {"code": "UNAUTHENTICATED"},
}
SIGNED_OUT = {
    "message": "This login was signed out: sign in again.",
    "extensions": {"code": "UNAUTHENTICATED"},
}


def accepts_event_stream(accept: str) -> bool:
    """Whether an Accept header lists text/event-stream (with a non-zero q)."""
    for part in accept.split(","):
        media_type, *params = (p.strip().lower() for p in part.split(";"))
        if media_type == EVENT_STREAM and "q=0" not in params:
            return True
    return False


def is_subscription(data: GraphQLRequestData) -> bool:
    """Whether the request's operation is a subscription (False when it does not parse)."""
    query = data.query
    # Cheap first: every subscription document names the keyword.
    if not isinstance(query, str) or "subscription" not in query:
        return False
    try:
        operation = get_operation_ast(parse(query, no_location=True), data.operation_name)
    except GraphQLError:
        return False  # Execution reports the syntax error as usual.
    return operation is not None and operation.operation == OperationType.SUBSCRIPTION


def encode_event(event: str, data: str = "", event_id: str | None = None) -> str:
    """One SSE message; `data` is JSON on one line (the encoder never emits newlines)."""
    head = f"id: {event_id}\n" if event_id else ""
    return f"{head}event: {event}\ndata: {data}\n\n"


class EventStreams(GraphQL[Context, None]):
    """Strawberry's ASGI view, answering `Accept: text/event-stream` as GraphQL over SSE."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Begun by the server's protocols when it shuts down (server/shutdown.py).
        self.drain = Drain()

    @staticmethod
    async def _watch_sign_out(
        context: Context, signed_out: asyncio.Future[None]
    ) -> Callable[[], None]:
        """Resolve `signed_out` when the caller's login is signed out; returns the undo."""
        viewer, revocations = context.viewer, context.services.revocations
        if viewer is None or viewer.session_id is None or revocations is None:
            return lambda: None

        def fire() -> None:
            if not signed_out.done():
                signed_out.set_result(None)

        unwatch = revocations.watch(viewer.session_id, fire)
        # Signed out since the request was authenticated: no message will come for it.
        if await revocations.is_revoked(viewer.session_id):
            fire()
        return unwatch

    @overload
    async def run(
        self, request: Request, context: Context = UNSET, root_value: None = UNSET
    ) -> Response: ...

    @overload
    async def run(
        self, request: WebSocket, context: Context = UNSET, root_value: None = UNSET
    ) -> WebSocket: ...

    async def run(
        self,
        request: Request | WebSocket,
        context: Context = UNSET,
        root_value: None = UNSET,
    ) -> Response | WebSocket:
        if isinstance(request, Request) and request.method in ("GET", "POST"):
            if accepts_event_stream(request.headers.get("accept", "")):
                return await self.serve_event_stream(request)
        return await super().run(request, context, root_value)

    async def parse_http_body(
        self, request_adapter: AsyncHTTPRequestAdapter
    ) -> GraphQLRequestData | list[GraphQLRequestData]:
        data = await super().parse_http_body(request_adapter)
        if accepts_event_stream(request_adapter.headers.get("accept", "")):
            return data
        for item in data if isinstance(data, list) else [data]:
            if is_subscription(item):
                raise HTTPException(400, SUBSCRIPTIONS_NEED_A_STREAM)
        return data

    async def serve_event_stream(self, request: Request) -> Response:
        """Run the request's operation and stream its results as SSE messages."""
        data = await self.parse_http_body(self.request_adapter_class(request))
        if isinstance(data, list):
            raise HTTPException(400, "Batched operations are not served as an event stream.")
        context = await self.get_context(request, response=await self.get_sub_response(request))
        context.resume_after = request.headers.get("last-event-id") or None
        allowed = {StrawberryOperation.QUERY, StrawberryOperation.SUBSCRIPTION}
        if request.method == "POST":
            allowed.add(StrawberryOperation.MUTATION)
        results = await self.schema.stream(
            data.query,  # None is reported as a missing query
            variable_values=data.variables,
            context_value=context,
            operation_name=data.operation_name,
            operation_extensions=data.extensions,
            allowed_operation_types=allowed,
        )
        return StreamingResponse(
            self._messages(request, cast(AsyncGenerator[Any, None], results), context, data),
            media_type=EVENT_STREAM,
            headers={"Cache-Control": "no-cache, no-transform", "X-Accel-Buffering": "no"},
        )

    async def _messages(
        self,
        request: Request,
        results: AsyncGenerator[ExecutionResult, None],
        context: Context,
        data: GraphQLRequestData,
    ) -> AsyncIterator[str]:
        # Each result is awaited in a task of its own, so that heartbeats and the token's
        # expiry can interrupt the wait without cancelling the subscription.
        expires = context.viewer.expires_at if context.viewer is not None else None
        pending: asyncio.Future[ExecutionResult] | None = None
        signed_out: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        unwatch: Callable[[], None] | None = None
        # A subscription ends when the server shuts down; a query or mutation finishes
        # (within the grace period, as over plain HTTP).
        stopping = self.drain.stopping() if is_subscription(data) else None
        try:
            unwatch = await self._watch_sign_out(context, signed_out)
            while True:
                if stopping is not None and stopping.done():
                    # The server is shutting down: end the body without `complete`.
                    yield SHUTTING_DOWN
                    return
                if pending is None:
                    pending = asyncio.ensure_future(anext(results))
                timeout = HEARTBEAT_SECONDS
                if expires is not None:
                    timeout = min(timeout, (expires - datetime.now(UTC)).total_seconds())
                watched: set[asyncio.Future[Any]] = {pending, signed_out}
                if stopping is not None:
                    watched.add(stopping)
                done, _ = await asyncio.wait(
                    watched,
                    timeout=max(timeout, 0.0),
                    return_when=asyncio.FIRST_COMPLETED,
                )
                if signed_out.done():
                    yield encode_event("next", self.encode_json_string({"errors": [SIGNED_OUT]}))
                    break
                if pending not in done:
                    if stopping is not None and stopping.done():
                        continue
                    if expires is not None and datetime.now(UTC) >= expires:
                        yield encode_event("next", self.encode_json_string({"errors": [EXPIRED]}))
                        break
                    yield ": ping\n\n"
                    continue
                finished, pending = pending, None
                try:
                    result = finished.result()
                except StopAsyncIteration:
                    break
                payload = await self.process_result(request, result)
                cursor, context.stream_position = context.stream_position, None
                yield encode_event("next", self.encode_json_string(payload), cursor)
            yield encode_event("complete")
        finally:
            if unwatch is not None:
                unwatch()
            # The client went away (or the stream ended): stop the operation, so that its
            # broker subscription and tasks end with the response. In a task of its own:
            # once the client is gone, Starlette (anyio) cancels the response's task again
            # at every await, which cut the operation's own clean-up short (on SQLite, a
            # database connection closed mid-rollback left a task behind for good).
            cleanup = asyncio.ensure_future(_stop(pending, results))
            _cleanups.add(cleanup)
            cleanup.add_done_callback(_cleanups.discard)
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(cleanup)


# Clean-ups still running after their response was cancelled (asyncio keeps only weak
# references to tasks).
_cleanups: set[asyncio.Future[None]] = set()


async def _stop(
    pending: asyncio.Future[ExecutionResult] | None,
    results: AsyncGenerator[ExecutionResult, None],
) -> None:
    """End a stream's operation: its result being awaited, then the operation itself."""
    if pending is not None:
        pending.cancel()
        with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
            await pending
    await results.aclose()
