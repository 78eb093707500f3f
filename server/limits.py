"""Request body limits: refuse large bodies before anything parses them, and bodies that
do not arrive in time."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send


def _error(message: str, code: str) -> bytes:
    return json.dumps({"errors": [{"message": message, "extensions": {"code": code}}]}).encode()


class BodySizeLimit:
    """413 with a GraphQL error when an HTTP body exceeds `max_bytes`.

    Checks Content-Length first, then counts streamed chunks, since a chunked upload has
    no declared length.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def _reject(self, send: Send) -> None:
        body = _error(f"Request body is larger than {self.max_bytes} bytes.", "PAYLOAD_TOO_LARGE")
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if declared_too_large(scope, self.max_bytes):
            await self._reject(send)
            return
        counted = counting(receive, self.max_bytes)
        await _refusing(self.app, scope, counted, send, _TooLarge, self._reject)


class _TooLarge(Exception):
    pass


class BodyTimeout:
    """408 with a GraphQL error when an HTTP body is not complete within `seconds`.

    The deadline starts when the app gets the request (its headers complete: see
    `server.http_protocol` for those) and applies to `receive` until the last body chunk;
    the handler waiting for the body is interrupted then, and the connection is closed
    (the rest of the body is never read). Later `receive` calls (an SSE stream watching
    for the client going away) are not timed.
    """

    def __init__(self, app: ASGIApp, seconds: float) -> None:
        self.app = app
        self.seconds = seconds

    async def _reject(self, send: Send) -> None:
        body = json.dumps(
            {
                "errors": [
                    {
                        "message": f"The request body did not arrive within {self.seconds:g} s.",
                        "extensions": {
                            "code": "REQUEST_TIMEOUT",
                            "limit": "REQUEST_BODY_TIMEOUT_SECONDS",
                        },
                    }
                ]
            }
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 408,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        timed = timing(receive, self.seconds)
        await _refusing(self.app, scope, timed, send, _TooSlow, self._reject)


class _TooSlow(Exception):
    pass


async def _refusing(
    app: ASGIApp,
    scope: Scope,
    receive: Receive,
    send: Send,
    refused: type[Exception],
    reject: Callable[[Send], Awaitable[None]],
) -> None:
    """Run `app`; when its `receive` raised `refused` before a response started, `reject`."""
    started = False

    async def tracking_send(message: Message) -> None:
        nonlocal started
        if message["type"] == "http.response.start":
            started = True
        await send(message)

    try:
        await app(scope, receive, tracking_send)
    except refused:
        if not started:
            await reject(send)


def declared_too_large(scope: Scope, max_bytes: int) -> bool:
    """Whether the request's Content-Length is over `max_bytes` (nothing read yet)."""
    return any(
        name == b"content-length" and value.isdigit() and int(value) > max_bytes
        for name, value in scope["headers"]
    )


def counting(receive: Receive, max_bytes: int) -> Receive:
    """`receive`, raising _TooLarge once the body so far is over `max_bytes` (a chunked
    upload declares no length)."""
    received = 0

    async def counted() -> Message:
        nonlocal received
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > max_bytes:
                raise _TooLarge
        return message

    return counted


def timing(receive: Receive, seconds: float) -> Receive:
    """`receive`, raising _TooSlow when the body is not complete `seconds` from now; the
    calls after the last body chunk (a stream watching for a disconnect) are not timed."""
    deadline = asyncio.get_running_loop().time() + seconds
    complete = False

    async def timed() -> Message:
        nonlocal complete
        if complete:
            return await receive()
        try:
            async with asyncio.timeout_at(deadline):
                message = await receive()
        except TimeoutError:
            raise _TooSlow from None
        if message["type"] != "http.request" or not message.get("more_body", False):
            complete = True
        return message

    return timed
