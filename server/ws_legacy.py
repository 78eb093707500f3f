"""The legacy `graphql-ws` protocol held to the rules of `graphql-transport-ws`.

Strawberry's legacy handler has no connection-init deadline (a socket that never sends
`connection_init` stays open forever), accepts a second `connection_init` (re-authenticating
the socket as someone else), silently ignores invalid JSON, and drops the connection with a
`KeyError` on a `start` without `id`. `LegacyProtocolRules` closes those holes the way
the modern protocol does:

* no `connection_init` within WS_CONNECTION_INIT_TIMEOUT_SECONDS: closed with 4408;
* a second `connection_init`: closed with 4429;
* invalid JSON, a message that is not an object, an unknown type, a `start` without a
  string `id` or without a `query`, a `stop` without `id`: a `connection_error` naming
  the problem, then closed with 4400.

It is a mixin over the handler's public hooks, so it composes with other extensions of
the legacy handler (`class H(LegacyProtocolRules, OtherLegacyHandler)`).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from strawberry.http.exceptions import (
    NonJsonMessageReceived,
    NonTextMessageReceived,
    WebSocketDisconnected,
)
from strawberry.subscriptions.protocols.graphql_ws.handlers import BaseGraphQLWSHandler
from strawberry.subscriptions.protocols.graphql_ws.types import OperationMessage

from server.websocket import operation_problem

KNOWN_TYPES = frozenset({"connection_init", "connection_terminate", "start", "stop"})


class LegacyProtocolRules(BaseGraphQLWSHandler[Any, Any]):
    """Deadline, single init and well-formed messages for `graphql-ws`."""

    _init_received = False

    async def handle(self) -> None:
        deadline = asyncio.create_task(self._connection_init_deadline())
        try:
            try:
                async for message in self.websocket.iter_json():
                    await self.handle_message(message)  # type: ignore[arg-type]
            except NonTextMessageReceived:
                await self.websocket.close(code=1002, reason="WebSocket message type must be text")
            except NonJsonMessageReceived:
                await self._protocol_error("WebSocket message must be valid JSON")
        except WebSocketDisconnected:
            pass
        finally:
            deadline.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await deadline
            if self.keep_alive_task:
                self.keep_alive_task.cancel()
                with contextlib.suppress(BaseException):
                    await self.keep_alive_task
            await self.cleanup()

    async def _connection_init_deadline(self) -> None:
        timeout = getattr(self.view, "connection_init_wait_timeout", None)
        if timeout is None:
            return
        await asyncio.sleep(timeout.total_seconds())
        if not self._init_received:
            with contextlib.suppress(Exception):
                await self.websocket.close(code=4408, reason="Connection initialisation timeout")

    async def _protocol_error(self, reason: str) -> None:
        with contextlib.suppress(Exception):
            await self.send_message({"type": "connection_error", "payload": {"message": reason}})
            await self.websocket.close(code=4400, reason=reason)

    async def handle_message(self, message: OperationMessage) -> None:
        raw: Any = message
        if not isinstance(raw, dict) or not isinstance(raw.get("type"), str):
            await self._protocol_error("A message must be a JSON object with a `type`.")
            return
        kind = raw["type"]
        if kind not in KNOWN_TYPES:
            await self._protocol_error(f"Unknown message type: {kind[:50]!r}.")
            return
        if kind == "connection_init":
            if self._init_received:
                await self.websocket.close(code=4429, reason="Too many initialisation requests")
                return
            self._init_received = True
        elif kind in {"start", "stop"}:
            operation_id = raw.get("id")
            if not isinstance(operation_id, str) or not operation_id:
                await self._protocol_error(f"A `{kind}` message needs a string `id`.")
                return
            problem = operation_problem(raw) if kind == "start" else None
            if problem is not None:
                await self._protocol_error(f"Invalid start message: {problem}")
                return
        await super().handle_message(message)
