"""Graceful shutdown: what a process does between SIGTERM and its exit.

uvicorn, on SIGTERM, stops accepting connections, asks each open connection to shut down,
waits for in-flight requests (at most `timeout_graceful_shutdown`: SHUTDOWN_GRACE_SECONDS
here), cancels what is still running, then runs the app's lifespan shutdown. Left to
itself it closes WebSockets with 1012 and no reason, and an SSE stream (a response that
never ends by itself) holds the whole grace period and is then cut off mid-body.

Concord's protocols (`ConcordHTTPProtocol` in `server/http_protocol.py`,
`ConcordWebSocketProtocol` in `server/ws_protocol.py`) begin the app's `Drain` when
uvicorn asks a connection to shut down: every SSE stream then ends its body cleanly (no
`complete`: the operation is not over, and the client reconnects, sending `Last-Event-
ID`), and every WebSocket is closed with 1001 ("going away") and `SHUTDOWN_REASON`, so
that its client reconnects, to another process, and resumes `workspaceEvents` from the
last cursor it received. Each uvicorn server reaches its app's `Drain` through the
lifespan state (`DRAIN_STATE`), so servers sharing a process (tests) drain separately.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

log = logging.getLogger(__name__)

GOING_AWAY = 1001
SHUTDOWN_REASON = "Server shutting down: reconnect, resuming after your last cursor"
DRAIN_STATE = "concord.drain"


class Drain:
    """Set once, when the server begins shutting down; streams watch it to end."""

    __slots__ = ("_begun", "_stopping")

    def __init__(self) -> None:
        self._begun = False
        self._stopping: asyncio.Future[None] | None = None

    @property
    def begun(self) -> bool:
        return self._begun

    def begin(self) -> None:
        if self._begun:
            return
        self._begun = True
        log.info("shutting down: ending event streams, closing WebSockets with 1001")
        if self._stopping is not None and not self._stopping.done():
            self._stopping.set_result(None)

    def stopping(self) -> asyncio.Future[None]:
        """A future done once the drain has begun (one per drain, shared by every stream)."""
        loop = asyncio.get_running_loop()
        if self._stopping is None or self._stopping.get_loop() is not loop:
            self._stopping = loop.create_future()
            if self._begun:
                self._stopping.set_result(None)
        return self._stopping


def begin_drain(app_state: dict[str, Any]) -> None:
    """Begin the drain of the app whose lifespan state is `app_state` (if it has one)."""
    drain = app_state.get(DRAIN_STATE)
    if isinstance(drain, Drain):
        drain.begin()
