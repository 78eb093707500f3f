"""uvicorn's WebSocket protocol, plus writing pre-framed text messages without awaiting.

The fan-out (`server/ws_fanout.py`) writes the *same* bytes — one encoded and framed
`next` message — to thousands of sockets. Through ASGI every write would be a coroutine
that re-encodes and re-frames the text; here the protocol puts itself in the scope's
extensions under `FRAME_WRITER`, and `write_frame` hands the bytes to the transport.

A server frame is not masked, so it is the same bytes on every connection, unless the
connection negotiated per-message compression (off by default: `WS_COMPRESSION`): then
the message is compressed for that connection, as `websockets` does it.
"""

from __future__ import annotations

from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

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


class ConcordWebSocketProtocol(WebSocketsSansIOProtocol):
    """`websockets-sansio` with a synchronous `write_frame` for the fan-out."""

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
    """The WebSocket options `concord serve` gives uvicorn (tests serve with them too)."""
    return {"ws": ConcordWebSocketProtocol, "ws_per_message_deflate": compression}
