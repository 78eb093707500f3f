"""The graphql-transport-ws fast path for `workspaceEvents`: members of fan-out groups.

Strawberry runs each subscription as its own task: an async generator chain, an
execution context and extension hooks per subscriber per event, and an `asyncio.wait`
per message. `FanoutTransportWSHandler` keeps Strawberry's handling of the connection
(init, auth, ping, complete, close codes) and of every other operation, but makes a
`subscribe` that `server.ws_plans.SubscriptionPlans` accepts a
`subscriptions.group.Member` of its workspace's group. The group renders each event
once per view; the member's `WebSocketSink` splices its operation id into the encoded
payload (`{"id":<id>,"type":"next","payload":<payload>}`, framed once per distinct id)
and writes the bytes without awaiting (`server/ws_protocol.py`). Without that writer
(another ASGI server) a small queue per socket is flushed through ASGI instead.

Per subscription, the state is the member and its sink: no task once it is live.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from typing import Any, cast

from graphql import GraphQLError
from strawberry.http.exceptions import (
    NonJsonMessageReceived,
    NonTextMessageReceived,
    WebSocketDisconnected,
)
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    BaseGraphQLTransportWSHandler,
)
from strawberry.subscriptions.protocols.graphql_transport_ws.types import (
    CompleteMessage,
    Message,
    SubscribeMessage,
)

from resolvers import live_feed
from resolvers.context import Context
from server.gc_tuning import collector
from server.observe import FANOUT_SUBSCRIPTIONS, operation_finished
from server.ws_plans import SubscriptionPlans, encode_result
from server.ws_protocol import FRAME_WRITER, text_frame
from subscriptions.group import ChannelGroup, Member, Rendered

log = logging.getLogger(__name__)


def _plans(schema: Any) -> SubscriptionPlans:
    plans = getattr(schema, "_concord_plans", None)
    if plans is None:
        plans = SubscriptionPlans(schema)
        schema._concord_plans = plans
    assert isinstance(plans, SubscriptionPlans)
    return plans


class WebSocketSink:
    """One fast-path operation on one socket: frames go straight to the transport."""

    __slots__ = (
        "backlog",
        "group",
        "handler",
        "member",
        "name",
        "op_id",
        "prefix",
        "start",
        "started",
        "writer",
    )

    def __init__(
        self, handler: FanoutTransportWSHandler, op_id: str, writer: Any, name: str | None
    ) -> None:
        self.handler = handler
        self.op_id = op_id
        self.writer = writer
        self.name = name
        self.started = time.perf_counter()
        # The part of the frame that differs per socket; the rest is the shared payload.
        self.prefix = b'{"id":' + json.dumps(op_id).encode() + b',"type":"next","payload":'
        self.backlog = 0
        self.member: Member | None = None
        self.group: ChannelGroup | None = None
        self.start: asyncio.Task[None] | None = None

    def _build(self, payload: bytes) -> bytes:
        return text_frame(self.prefix + payload + b"}")

    def deliver(self, rendered: Rendered) -> bool:
        buffered = self.writer.write_frame(rendered.frame(self.prefix, self._build))
        if buffered <= 0:
            self.backlog = 0  # written through (or the socket is gone: disconnect cleans up)
            return True
        # Frames written while the previous ones still wait in our buffer: the client
        # reads slower than events arrive. Past the queue size it is cut off.
        self.backlog += 1
        return self.backlog <= self.handler.queue_size

    def end(self, error: Exception | None) -> None:
        if self.handler.fanout.pop(self.op_id, None) is self:
            self.handler.ended(self, error)
        if error is not None:
            payload = encode_result(
                self.handler.plans.stream_hooks,
                None,
                [GraphQLError(str(error), original_error=error)],
            )
            self.writer.write_frame(self._build(payload))
        complete = {"id": self.op_id, "type": "complete"}
        self.writer.write_frame(text_frame(json.dumps(complete, separators=(",", ":")).encode()))

    def cancel(self) -> None:
        if self.start is not None:
            self.start.cancel()
        if self.group is not None and self.member is not None:
            self.group.leave(self.member)


class _AsgiWriter:
    """`write_frame` through ASGI, for servers without `ConcordWebSocketProtocol`."""

    def __init__(self, handler: FanoutTransportWSHandler) -> None:
        self.handler = handler
        self.queue: deque[str] = deque()
        self.flushing: asyncio.Task[None] | None = None

    def write_frame(self, frame: bytes) -> int:
        length = frame[1] & 0x7F
        self.queue.append(frame[2 if length < 126 else 4 if length == 126 else 10 :].decode())
        if self.flushing is None:
            self.flushing = asyncio.create_task(self._flush())
        return len(self.queue) - 1

    async def _flush(self) -> None:
        websocket = self.handler.websocket.ws  # type: ignore[attr-defined]
        try:
            while self.queue:
                await websocket.send_text(self.queue[0])
                self.queue.popleft()
        except Exception:
            self.queue.clear()  # the socket is gone; the handler's shutdown cleans up
        finally:
            self.flushing = None


class FanoutTransportWSHandler(BaseGraphQLTransportWSHandler[Context, None]):
    """Strawberry's graphql-transport-ws handler, with the `workspaceEvents` fast path."""

    queue_size = 1000

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fanout: dict[str, WebSocketSink] = {}
        self.plans = _plans(self.schema)
        self.queue_size = self.context.services.subscriber_queue_size
        scope = self.context.request.scope
        self.writer: Any = scope.get("extensions", {}).get(FRAME_WRITER)

    async def handle(self) -> None:
        """Strawberry's message loop, minus keeping the last message alive: on an idle
        socket that is the `subscribe`, query and all, for as long as it stays open."""
        self.on_request_accepted()
        try:
            try:
                async for message in self.websocket.iter_json():
                    await self.handle_message(cast("Message", message))
                    del message
            except NonTextMessageReceived:
                await self.handle_invalid_message("WebSocket message type must be text")
            except NonJsonMessageReceived:
                await self.handle_invalid_message("WebSocket message must be valid JSON")
        except WebSocketDisconnected:
            pass
        finally:
            await self.shutdown()

    async def handle_connection_init(self, message: Any) -> None:
        await super().handle_connection_init(message)
        # Read once, by authentication: not kept (token and all) while the socket idles.
        self.context.connection_params = None

    async def handle_subscribe(self, message: SubscribeMessage) -> None:
        op_id = message.get("id")
        if self.connection_acknowledged and op_id in self.fanout:
            reason = f"Subscriber for {op_id} already exists"
            await self.websocket.close(code=4409, reason=reason)
            return
        if (
            not self.connection_acknowledged
            or not isinstance(op_id, str)
            or op_id in self.operations
            or (
                self.max_subscriptions_per_connection is not None
                and len(self.operations) + len(self.fanout) >= self.max_subscriptions_per_connection
            )
        ):
            await super().handle_subscribe(message)  # Strawberry closes or answers
            return
        payload = message.get("payload")
        plan = self.plans.plan(payload)
        bound = None
        if plan is not None:
            assert isinstance(payload, dict)
            bound = plan.bind(self.plans, payload.get("variables"), self._render_context)
        if bound is None:
            await super().handle_subscribe(message)
            return
        args, view = bound
        if self.writer is None:
            self.writer = _AsgiWriter(self)
        name = payload.get("operationName")
        sink = WebSocketSink(self, op_id, self.writer, name if isinstance(name, str) else None)
        self.fanout[op_id] = sink
        sink.start = asyncio.create_task(self._join(sink, view, args))
        collector.subscribed()
        FANOUT_SUBSCRIPTIONS.inc()

    def ended(self, sink: WebSocketSink, error: Exception | None) -> None:
        """A fan-out subscription is over: its one log line, its metrics."""
        collector.unsubscribed()
        FANOUT_SUBSCRIPTIONS.dec()
        outcome = "ok"
        if error is not None:
            code = getattr(error, "code", None)
            outcome = code if isinstance(code, str) else "INTERNAL_SERVER_ERROR"
        viewer = self.context.viewer
        operation_finished(
            self.context.request.scope,
            viewer.user_id if viewer is not None else None,
            sink.name,
            "subscription",
            "ws",
            sink.started,
            outcome,
            () if error is None else (outcome,),
        )

    def _render_context(self) -> Context:
        # Rendering is shared by every member of a view: no one caller's context.
        return Context.create(self.context.services, None)

    async def _join(self, sink: WebSocketSink, view: Any, args: dict[str, Any]) -> None:
        try:
            feed = await live_feed.workspace_feed(
                self.context, args["workspaceId"], args.get("after")
            )
            if self.fanout.get(sink.op_id) is not sink:
                return  # completed by the client meanwhile
            member = Member(sink, view, feed.after, feed.stop_after())
            group = feed.group()
            sink.member, sink.group = member, group
            await group.join(member)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if self.fanout.get(sink.op_id) is sink:
                sink.end(exc)
        finally:
            sink.start = None

    async def handle_complete(self, message: CompleteMessage) -> None:
        sink = self.fanout.pop(message["id"], None)
        if sink is None:
            await super().handle_complete(message)
            return
        sink.cancel()
        self.ended(sink, None)

    async def shutdown(self) -> None:
        sinks, self.fanout = list(self.fanout.values()), {}
        for sink in sinks:
            sink.cancel()
        for sink in sinks:
            if sink.start is not None:
                with contextlib.suppress(Exception, asyncio.CancelledError):
                    await sink.start
        for sink in sinks:
            self.ended(sink, None)
        await super().shutdown()
