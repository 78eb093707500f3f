"""uvicorn's HTTP protocols with a deadline on the request line and headers.

uvicorn times out an idle kept-alive connection, but not a request whose headers arrive
one byte at a time: such a connection (slowloris) is held open for as long as the client
likes, and enough of them exhaust the server's sockets. Here a timer starts when a
connection is made (and when the first byte of each later request on it arrives) and is
cancelled once the headers are complete; when it fires, the server answers 408 and
closes the connection (a connection on which nothing arrived is just closed). The body
has a deadline of its own, in the app (`server.limits.BodyTimeout`), where a refusal can
be a GraphQL error.

They also begin the app's drain when uvicorn asks a connection to shut down (SIGTERM,
server/shutdown.py). `concord serve` runs these protocols (`uvicorn_http_options`):
httptools (a dependency, through uvicorn[standard]), as uvicorn's "auto" would; h11 on
request.
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from server.shutdown import begin_drain

DEFAULT_HEADER_TIMEOUT = 10.0


def _timeout_response(seconds: float) -> bytes:
    message = (
        f"Request headers not received within {seconds:g} s (REQUEST_HEADER_TIMEOUT_SECONDS)."
    ).encode()
    return (
        b"HTTP/1.1 408 Request Timeout\r\n"
        b"content-type: text/plain; charset=utf-8\r\n"
        b"content-length: " + str(len(message)).encode() + b"\r\n"
        b"connection: close\r\n\r\n" + message
    )


class HeaderDeadline(asyncio.Protocol):
    """The timer, shared by both protocols (a mixin before uvicorn's protocol class).

    `header_timeout` is set for the process by `uvicorn_http_options` (uvicorn builds a
    protocol per connection from the class, with no room for an argument of ours).
    """

    header_timeout: ClassVar[float] = DEFAULT_HEADER_TIMEOUT
    _header_timer: asyncio.TimerHandle | None = None
    # Whether a byte of the awaited request has arrived: a connection opened and never
    # used (a browser's preconnect) is closed without an answer.
    _request_begun = False
    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport
    cycle: Any

    def _arm_header_timer(self, begun: bool) -> None:
        self._request_begun = self._request_begun or begun
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self.header_timeout, self._headers_late)

    def _disarm_header_timer(self) -> None:
        self._request_begun = False
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_late(self) -> None:
        self._header_timer = None
        if self.transport.is_closing():
            return
        # A pipelined request's headers may trickle in while an earlier response is
        # still being written: then the connection is only closed.
        idle = self.cycle is None or self.cycle.response_complete
        if self._request_begun and idle:
            self.transport.write(_timeout_response(self.header_timeout))
        self.transport.close()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._arm_header_timer(begun=False)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_timer()
        super().connection_lost(exc)


class H11HeaderTimeout(HeaderDeadline, H11Protocol):
    """uvicorn's h11 protocol with the header deadline."""

    conn: h11.Connection

    def data_received(self, data: bytes) -> None:
        if self.conn.their_state is h11.IDLE:
            self._arm_header_timer(begun=True)  # the first bytes of a request
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:
            self._disarm_header_timer()  # h11 has the whole request line and headers


class HttpToolsHeaderTimeout(HeaderDeadline, HttpToolsProtocol):
    """uvicorn's httptools protocol with the header deadline."""

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm_header_timer(begun=True)  # the first byte of a request

    def on_headers_complete(self) -> None:
        self._disarm_header_timer()
        super().on_headers_complete()


class DrainOnShutdown:
    """A connection told to shut down begins the app's drain first (a mixin, first)."""

    app_state: dict[str, Any]

    def shutdown(self) -> None:
        begin_drain(self.app_state)
        super().shutdown()  # type: ignore[misc]


class ConcordHTTPProtocol(DrainOnShutdown, HttpToolsHeaderTimeout):
    """httptools with the header deadline and the drain on shutdown."""


class ConcordH11Protocol(DrainOnShutdown, H11HeaderTimeout):
    """h11 with the header deadline and the drain on shutdown."""


def uvicorn_http_options(header_timeout: float, http: str = "auto") -> dict[str, Any]:
    """The HTTP protocol `concord serve` gives uvicorn, with REQUEST_HEADER_TIMEOUT_SECONDS.

    Called again in each `--workers` process (the class travels by name, not its setting).
    """
    HeaderDeadline.header_timeout = header_timeout
    return {"http": ConcordH11Protocol if http == "h11" else ConcordHTTPProtocol}
