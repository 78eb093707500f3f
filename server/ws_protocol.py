"""uvicorn's WebSocket protocol, plus writing pre-framed text messages without awaiting.

The fan-out (`server/ws_fanout.py`) writes the *same* bytes — one encoded and framed
`next` message — to thousands of sockets. Through ASGI every write would be a coroutine
that re-encodes and re-frames the text; here the protocol puts itself in the scope's
extensions under `FRAME_WRITER`, and `write_frame` hands the bytes to the transport.

A server frame is not masked, so it is the same bytes on every connection, unless the
connection negotiated per-message compression (off by default: `WS_COMPRESSION`): then
the message is compressed for that connection, as `websockets` does it.

When the server shuts down (SIGTERM), an open socket is closed with 1001 ("going away")
and a reason, instead of uvicorn's bare 1012: see `server/shutdown.py`.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from server.http_protocol import ConcordHTTPProtocol
from server.shutdown import GOING_AWAY, SHUTDOWN_REASON, begin_drain

FRAME_WRITER = "concord.websocket.frames"


def text_frame(message: bytes) -> bytes:
    """A final, unmasked text frame carrying `message` (what a server sends)."""
    n = len(message)
    if n < 126:
        header = bytes((0x81, n))
    elif n < 65536:
        header = b"\x81\x7e" + n.to_bytes(2, "big")
    else:
        header = b"\x81\x7f" + n.to_bytes(8, "big")
    return header + message


def _unframe(frame: bytes) -> bytes:
    length = frame[1] & 0x7F
    return frame[2 if length < 126 else 4 if length == 126 else 10 :]


class _Inbox:
    """The receive queue of one socket: one reader (the app), no bound.

    `asyncio.Queue` allocates four deques (~3 KiB) per socket; a list and one waiter
    do the same job here, for every idle subscriber.
    """

    __slots__ = ("_items", "_waiter")

    def __init__(self) -> None:
        self._items: list[Any] = []
        self._waiter: asyncio.Future[None] | None = None

    def put_nowait(self, item: Any) -> None:
        self._items.append(item)
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def empty(self) -> bool:
        return not self._items

    async def get(self) -> Any:
        while not self._items:
            waiter = self._waiter = asyncio.get_running_loop().create_future()
            try:
                await waiter
            finally:
                if self._waiter is waiter:
                    self._waiter = None
        return self._items.pop(0)


class _Flag:
    """`asyncio.Event` for the writable flag, without a deque per socket."""

    __slots__ = ("_set", "_waiters")

    def __init__(self) -> None:
        self._set = True
        self._waiters: list[asyncio.Future[None]] | None = None

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        self._set = True
        waiters, self._waiters = self._waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(None)

    def clear(self) -> None:
        self._set = False

    async def wait(self) -> None:
        while not self._set:
            waiter = asyncio.get_running_loop().create_future()
            if self._waiters is None:
                self._waiters = []
            self._waiters.append(waiter)
            await waiter


class ConcordWebSocketProtocol(WebSocketsSansIOProtocol):
    """`websockets-sansio` with a synchronous `write_frame` for the fan-out, and lighter
    per-socket state."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.queue = _Inbox()  # type: ignore[assignment]
        self.writable = _Flag()  # type: ignore[assignment]

    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        scope = getattr(self, "scope", None)
        if scope is not None:
            scope["extensions"][FRAME_WRITER] = self

    async def send(self, message: Any) -> None:
        await super().send(message)
        if message["type"] == "websocket.accept":
            # The upgrade request and response are done with: don't keep their headers
            # for the life of the connection (memory per idle subscriber).
            self.request = self.response = None  # type: ignore[assignment]

    def shutdown(self) -> None:
        """The server is shutting down: close with 1001 and a reason, and wait (at most
        uvicorn's close timeout, within the grace period) for the client's close frame.

        uvicorn's own version sends 1012 without a reason and drops the connection at
        once; the client's reply would then meet a closed socket, and a reset can lose
        the close frame before the client reads it.
        """
        begin_drain(self.app_state)
        if self.close_sent or not self.handshake_complete or self.transport.is_closing():
            super().shutdown()
            return
        self.stop_keepalive()
        self.queue.put_nowait(
            {"type": "websocket.disconnect", "code": GOING_AWAY, "reason": SHUTDOWN_REASON}
        )
        self.conn.send_close(GOING_AWAY, SHUTDOWN_REASON)
        self.transport.write(b"".join(self.conn.data_to_send()))
        self.close_sent = True
        if self.read_paused:
            self.read_paused = False
            self.transport.resume_reading()
        self.close_timer = self.loop.call_later(self.close_timeout, self.transport.close)

    def write_frame(self, frame: bytes) -> int:
        """Write a `text_frame`; returns the bytes still buffered, or -1 once closed."""
        if self.close_sent or self.disconnected or self.transport.is_closing():
            return -1
        if self.conn.extensions:
            # Compression was negotiated: the frame must be deflated for this socket.
            self.conn.send_text(_unframe(frame))
            self.transport.write(b"".join(self.conn.data_to_send()))
        else:
            self.transport.write(frame)
        return int(self.transport.get_write_buffer_size())


def uvicorn_ws_options(compression: bool) -> dict[str, Any]:
    """The protocol options `concord serve` gives uvicorn (tests serve with them too): the
    WebSocket protocol above, and the HTTP one that ends event streams on shutdown."""
    return {
        "ws": ConcordWebSocketProtocol,
        "ws_per_message_deflate": compression,
        "http": ConcordHTTPProtocol,
    }


class WebSocketLane:
    """ASGI middleware: a WebSocket to `path` goes straight to `endpoint`.

    Placed last among the app's middleware (after authentication, which only marks a
    socket anonymous: sockets authenticate in `connection_init`), it skips Starlette's
    exception middleware and router, whose suspended frames every idle socket would
    otherwise keep for its whole life.
    """

    def __init__(self, app: Any, endpoint: Any, path: str) -> None:
        self.app = app
        self.endpoint = endpoint
        self.path = path

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "websocket" and scope["path"] == self.path:
            await self.endpoint(scope, receive, send)
            return
        await self.app(scope, receive, send)
