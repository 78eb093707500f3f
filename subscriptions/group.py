"""Per-channel fan-out groups: one loop per channel per process, the same bytes to every sink.

A `ChannelGroup` holds the process's *one* broker subscription to a channel and the
members subscribed to it. For each event it renders the payload once per distinct
`View` (a selection and permission scope), and hands that pre-encoded `Rendered` to
each member's `Sink`, which writes it to its socket (or stream) without awaiting. So
a delivery costs no task, queue, async generator or execution context per subscriber.

Guarantees (the same as the per-subscriber stream it replaces):

- **in order, exactly once:** each member has a cursor (`sent`); an event at or below
  it is skipped, the next one is written, and a member never sees a gap: a member
  that joins with an older cursor reads the log (`EventLog.read`) while the group's
  live events are buffered for it, then drains the buffer and becomes live;
- **gap fill:** when the broker skips a seq, or says messages may be lost, or is down
  (the log is polled), the group reads the log once for all of its members;
- **bounded:** a sink that reports it fell behind, or a joining member whose buffer
  overflows, is cut off with the error from `GroupHub.slow_consumer` (its client
  resumes with the cursor);
- a member's `stop_after` ends it after an event (e.g. its membership was removed).

Transports register sinks: the WebSocket fast path (`server/ws_fanout.py`) writes
pre-framed bytes; another transport (Server-Sent Events) can do the same with its own
framing through `Rendered.frame`, which caches a frame per key for the delivery.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Hashable, Sequence
from contextlib import AbstractContextManager
from datetime import UTC
from typing import Any, Protocol

from opentelemetry.context import Context as TraceContext
from opentelemetry.trace import SpanKind
from prometheus_client import Counter, Histogram

from subscriptions.broker import Broker, SubscriberOverflow
from subscriptions.fanout import MessagesMayBeLost
from telemetry import tracing

log = logging.getLogger(__name__)

EVENTS_DELIVERED = Counter(
    "concord_events_delivered_total",
    "Events written to subscribers (one per subscriber per event), in this process.",
)
DELIVERY_LAG = Histogram(
    "concord_event_delivery_lag_seconds",
    "From an event's commit (its occurred_at, written in the transaction) to its delivery "
    "to this process's subscribers of the workspace, once per event and process.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)


def delivered(event: Any, channel: str, subscribers: int) -> None:
    """Count a delivery of `event` to `subscribers`, its lag, and (tracing) its span, a
    child of the publish span when the broker message carried its context."""
    if subscribers:
        EVENTS_DELIVERED.inc(subscribers)
    occurred = getattr(event, "occurred_at", None)
    if occurred is not None:
        if occurred.tzinfo is None:  # naive times are UTC, as the database stores them
            occurred = occurred.replace(tzinfo=UTC)
        DELIVERY_LAG.observe(max(0.0, time.time() - occurred.timestamp()))
    tracer = tracing.tracer
    if tracer is not None:
        # A root span when there is no publish context: not the child of whatever the
        # task that started this group was doing back then.
        parent = tracing.extract(getattr(event, "trace", None)) or TraceContext()
        tracer.start_span(
            f"deliver {getattr(event, 'type', 'event')}",
            context=parent,
            kind=SpanKind.CONSUMER,
            attributes={
                "messaging.system": "concord",
                "messaging.destination.name": channel,
                "concord.event.seq": event.seq,
                "concord.subscribers": subscribers,
            },
        ).end()


# The group's own broker queue: it is drained by one task that never waits on a socket,
# so it only fills when the process is saturated; then the group reads the log instead.
GROUP_QUEUE_SIZE = 10_000
# Sockets written between two yields to the event loop (~2 ms of a core).
YIELD_EVERY = 200


class Event(Protocol):
    """What the group needs of an event: its position in the channel."""

    @property
    def seq(self) -> int: ...


class EventLog(Protocol):
    """The channel's durable log (the source of truth), as the group reads it."""

    @property
    def page_size(self) -> int:
        """How many events `read` returns at most."""
        ...

    @property
    def degraded_poll_seconds(self) -> float:
        """How often to read the log while the broker is down."""
        ...

    async def read(self, after: int) -> Sequence[Any]:
        """At most `page_size` events after seq `after`, in order."""
        ...

    def recent(self, after: int, upto: int) -> Sequence[Any] | None:
        """The events after `after` up to `upto` if all are still in memory, else None."""
        ...

    async def last(self) -> int:
        """The seq of the newest event in the log."""
        ...

    def decode(self, message: str) -> Any:
        """An event from a broker message."""
        ...

    def may_stop(self, event: Any) -> bool:
        """Whether a member's `stop_after` could end it after `event` (asked once per
        event, so that the common event costs no call per member)."""
        ...

    def watching(self, seen: int) -> AbstractContextManager[None]:
        """Keep an eye on the log while the group runs (events the broker never saw)."""
        ...


class View(Hashable, Protocol):
    """A distinct selection and permission scope: members of one view get the same bytes."""

    async def render(self, event: Any) -> bytes:
        """The encoded execution result for `event` (e.g. `{"data":…}`)."""
        ...


class Sink(Protocol):
    """Where one member's frames go (a WebSocket, an SSE response, …)."""

    def deliver(self, rendered: Rendered) -> bool:
        """Write without waiting; False when the consumer fell too far behind."""
        ...

    def end(self, error: Exception | None) -> None:
        """The subscription is over: send `error` (if any), then complete."""
        ...


class Rendered:
    """One event rendered for one view: the payload, and frames built from it."""

    __slots__ = ("_frames", "may_stop", "payload", "seq")

    def __init__(self, seq: int, payload: bytes, may_stop: bool = True) -> None:
        self.seq = seq
        self.payload = payload
        self.may_stop = may_stop
        self._frames: dict[object, bytes] | None = None

    def frame(self, key: object, build: Callable[[bytes], bytes]) -> bytes:
        """`build(payload)`, once per key for this delivery (sinks with the same key
        share the bytes: e.g. every WebSocket whose operation id is "1")."""
        frames = self._frames
        if frames is None:
            frames = self._frames = {}
        frame = frames.get(key)
        if frame is None:
            frame = frames[key] = build(self.payload)
        return frame


class Member:
    """One subscription in a group: its sink, view, cursor and state."""

    __slots__ = ("closed", "live", "overflowed", "pending", "sent", "sink", "stop_after", "view")

    def __init__(
        self,
        sink: Sink,
        view: View,
        after: int,
        stop_after: Callable[[Any], Exception | None] | None = None,
    ) -> None:
        self.sink = sink
        self.view = view
        self.sent = after
        self.stop_after = stop_after
        self.live = False
        self.closed = False
        self.overflowed = False
        # Live events that arrived while the member read the log; None once live.
        self.pending: list[tuple[Any, Rendered]] | None = []


class GroupHub:
    """The process's groups, by channel; a group exists while it has members."""

    def __init__(
        self,
        broker: Broker,
        *,
        queue_size: int,
        slow_consumer: Callable[[int], Exception],
    ) -> None:
        self.broker = broker
        self.queue_size = queue_size
        self.slow_consumer = slow_consumer
        self.groups: dict[str, ChannelGroup] = {}

    def group(self, channel: str, log_factory: Callable[[], EventLog]) -> ChannelGroup:
        group = self.groups.get(channel)
        if group is None:
            group = self.groups[channel] = ChannelGroup(self, channel, log_factory())
        return group

    def member_count(self) -> int:
        return sum(len(g.members) for g in self.groups.values())


class ChannelGroup:
    """One channel's subscription and members in this process; see the module docstring."""

    def __init__(self, hub: GroupHub, channel: str, log: EventLog) -> None:
        self.hub = hub
        self.channel = channel
        self.log = log
        self.last = 0
        # Events written to members since they were last counted (see `delivered`).
        self.sent = 0
        self.members: dict[Member, None] = {}
        self.views: dict[View, dict[Member, None]] = {}
        self._started: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._task = asyncio.create_task(self._run(), name=f"fanout {channel}")

    @property
    def started(self) -> bool:
        """Subscribed, and `last` read from the log."""
        started = self._started
        return started.done() and not started.cancelled() and started.exception() is None

    # --- members -------------------------------------------------------------------

    async def join(self, member: Member) -> None:
        """Add `member`, send it what it missed since its cursor, then make it live.

        Runs in the caller's task; raises what the start or the log read raised (the
        member is then out of the group).
        """
        self.members[member] = None
        self.views.setdefault(member.view, {})[member] = None
        try:
            await asyncio.shield(self._started)
            while not member.closed:
                # Events up to `last` are in the log (most still in memory); the ones
                # after it reach the member through the group (buffered until drained).
                while member.sent < self.last and not member.closed:
                    upto = self.last
                    rows = self.log.recent(member.sent, upto)
                    if rows is None:
                        rows = await self.log.read(member.sent)
                    if not rows or rows[-1].seq <= member.sent:
                        break  # nothing newer in the log yet: the group brings the rest
                    for event in rows:
                        if member.closed:
                            return
                        if event.seq > member.sent:
                            payload = await member.view.render(event)
                            rendered = Rendered(event.seq, payload, self.log.may_stop(event))
                            self._send(member, event, rendered)
                if member.closed or self._drain(member):
                    return
        except BaseException:
            self.leave(member)
            raise
        finally:
            self._count()

    def _count(self) -> None:
        if self.sent:
            EVENTS_DELIVERED.inc(self.sent)
            self.sent = 0

    def _drain(self, member: Member) -> bool:
        """Send what was buffered during the log read; True once the member is live."""
        if member.overflowed:
            self._end(member, self.hub.slow_consumer(member.sent))
            return True
        pending, member.pending = member.pending or [], []
        for event, rendered in pending:
            if event.seq <= member.sent:
                continue
            if event.seq > member.sent + 1:
                return False  # read the log again: it has everything up to this event
            self._send(member, event, rendered)
            if member.closed:
                return True
        member.pending = None
        member.live = True
        return True

    def leave(self, member: Member) -> None:
        """Remove `member` (idempotent); the group stops with its last member."""
        member.closed = True
        if member in self.members:
            del self.members[member]
            view = self.views.get(member.view)
            if view is not None:
                view.pop(member, None)
                if not view:
                    del self.views[member.view]
        if not self.members and self.hub.groups.get(self.channel) is self:
            del self.hub.groups[self.channel]
            self._task.cancel()

    def _send(self, member: Member, event: Any, rendered: Rendered) -> None:
        self.sent += 1
        member.sent = event.seq
        if not member.sink.deliver(rendered):
            self._end(member, self.hub.slow_consumer(member.sent))
            return
        stop = member.stop_after
        if rendered.may_stop and stop is not None and (error := stop(event)) is not None:
            self._end(member, error)

    def _end(self, member: Member, error: Exception | None) -> None:
        if member.closed:
            return
        self.leave(member)
        member.sink.end(error)

    def _offer(self, member: Member, event: Any, rendered: Rendered) -> None:
        if member.closed:
            return
        if member.pending is not None:
            if len(member.pending) >= self.hub.queue_size:
                member.overflowed = True
            else:
                member.pending.append((event, rendered))
            return
        if event.seq == member.sent + 1:
            self._send(member, event, rendered)

    # --- the loop ------------------------------------------------------------------

    async def _deliver(self, event: Any) -> None:
        self._count()  # what joining members were sent from the log
        self.last = event.seq
        seq, may_stop = event.seq, self.log.may_stop(event)
        for view, members in list(self.views.items()):
            if not members:
                continue
            rendered = Rendered(seq, await view.render(event), may_stop)
            for n, member in enumerate(tuple(members), 1):
                if member.pending is None and member.sent == seq - 1 and not member.closed:
                    self._send(member, event, rendered)  # the common case: a live member
                else:
                    self._offer(member, event, rendered)
                if n % YIELD_EVERY == 0:
                    # Let requests (a mutation, a subscribe) run between slices of a big
                    # fan-out rather than wait for all of it. Members that join meanwhile
                    # read this event from the log; ones that leave are skipped (closed).
                    await asyncio.sleep(0)
        sent, self.sent = self.sent, 0
        delivered(event, self.channel, sent)

    async def _catch_up(self) -> None:
        while True:
            rows = await self.log.read(self.last)
            for event in rows:
                if event.seq > self.last:
                    await self._deliver(event)
            if len(rows) < self.log.page_size:
                return

    async def _run(self) -> None:
        broker = self.hub.broker
        try:
            with contextlib.ExitStack() as stack:
                while True:
                    async with broker.subscribe(
                        self.channel, queue_size=GROUP_QUEUE_SIZE
                    ) as subscription:
                        if not self._started.done():
                            self.last = await self.log.last()
                            stack.enter_context(self.log.watching(self.last))
                            self._started.set_result(None)
                        else:
                            await self._catch_up()  # after an overflow of our own queue
                        if not await self._consume(subscription.__aiter__()):
                            break
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("fan-out of %s failed", self.channel)
            if not self._started.done():
                self._started.set_exception(exc)
                if self.hub.groups.get(self.channel) is self:
                    del self.hub.groups[self.channel]
                return
        finally:
            if not self._started.done():
                self._started.cancel()
        # The broker disconnected (the process is stopping) or the loop failed: every
        # stream ends (clients resume with their cursors), and the next member to
        # arrive starts a new group.
        if self.hub.groups.get(self.channel) is self:
            del self.hub.groups[self.channel]
        for member in list(self.members):
            self._end(member, None)

    async def _consume(self, messages: Any) -> bool:
        """Deliver until the broker ends (False) or our queue overflowed (True)."""
        broker = self.hub.broker
        while True:
            degraded = getattr(broker, "pubsub_connected", True) is False
            try:
                async with asyncio.timeout(self.log.degraded_poll_seconds if degraded else None):
                    message = await messages.__anext__()
            except TimeoutError:
                await self._catch_up()  # the broker is down: poll the log
                continue
            except MessagesMayBeLost:
                await self._catch_up()
                continue
            except SubscriberOverflow:
                log.warning("fan-out of %s fell behind its broker queue", self.channel)
                return True
            except StopAsyncIteration:
                return False
            event = self.log.decode(message)
            if event.seq <= self.last:
                continue
            if event.seq > self.last + 1:
                await self._catch_up()  # a publish was missed: the log has it
                if event.seq <= self.last:
                    continue
            await self._deliver(event)
