"""WebSocket details Strawberry leaves open: a message size limit, and the legacy protocol.

* `LimitedWebSocketAdapter` closes the socket with 1009 ("message too big") and a reason
  when a message is larger than the view's `max_message_bytes` (MAX_BODY_BYTES), before
  the message is parsed, on both protocols.
* It also checks each `subscribe` message of `graphql-transport-ws` before Strawberry
  sees it: a payload without a string `query`, or with `variables` that are not an
  object, crashed the socket (1006) or answered INTERNAL_SERVER_ERROR. Such a message now
  closes the socket with 4400 and the reason, as that protocol asks. The legacy `start`
  is held to the same rules by `server.ws_legacy.LegacyProtocolRules`
  (`operation_problem` names what is wrong in both).
* `LegacyProtocolHandler` runs queries and mutations sent with `start` over the legacy
  `graphql-ws` protocol (subscriptions-transport-ws, Apollo's old WebSocketLink, Python's
  gql): Strawberry's handler runs every `start` as a subscription, so a query answered
  INTERNAL_SERVER_ERROR. Here each operation answers like over `graphql-transport-ws`:
  `data` messages, then `complete`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from json import JSONDecodeError

from starlette.websockets import WebSocketDisconnect, WebSocketState
from strawberry.asgi import ASGIWebSocketAdapter
from strawberry.http.exceptions import NonJsonMessageReceived, NonTextMessageReceived
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL, GRAPHQL_WS_PROTOCOL
from strawberry.subscriptions.protocols.graphql_ws.handlers import BaseGraphQLWSHandler
from strawberry.subscriptions.protocols.graphql_ws.types import CompleteMessage, ErrorMessage
from strawberry.types.execution import ExecutionResult, PreExecutionError
from strawberry.types.graphql import OperationType

from resolvers.context import Context

MESSAGE_TOO_BIG = 1009
DEFAULT_MAX_MESSAGE_BYTES = 1_048_576


def too_large(text: str, limit: int) -> bool:
    """Whether `text` is more than `limit` bytes in UTF-8 (encoded only when it may be)."""
    if len(text) <= limit // 4:
        return False
    return len(text) > limit or len(text.encode()) > limit


def operation_problem(message: object) -> str | None:
    """What makes a `subscribe`/`start` message unrunnable; None for any other message."""
    if not isinstance(message, dict) or message.get("type") not in ("subscribe", "start"):
        return None
    if not isinstance(message.get("id"), str) or not message["id"]:
        return "`id` must be a non-empty string"
    payload = message.get("payload")
    if not isinstance(payload, dict):
        return "`payload` must be an object"
    if not isinstance(payload.get("query"), str):
        return "`payload.query` must be a string"
    for name in ("variables", "extensions"):
        if payload.get(name) is not None and not isinstance(payload[name], dict):
            return f"`payload.{name}` must be an object"
    if payload.get("operationName") is not None and not isinstance(payload["operationName"], str):
        return "`payload.operationName` must be a string"
    return None


class LimitedWebSocketAdapter(ASGIWebSocketAdapter):
    """Strawberry's adapter, refusing a message over the limit before decoding it, and an
    operation message that cannot run before the protocol handler sees it."""

    def _modern(self) -> bool:
        """Whether the socket speaks graphql-transport-ws (the view picks the client's first
        protocol it serves); the legacy protocol's rules live in server/ws_legacy.py."""
        requested = self.ws.scope.get("subprotocols") or []
        served = [p for p in requested if p in (GRAPHQL_TRANSPORT_WS_PROTOCOL, GRAPHQL_WS_PROTOCOL)]
        return bool(served) and served[0] == GRAPHQL_TRANSPORT_WS_PROTOCOL

    async def iter_json(
        self, *, ignore_parsing_errors: bool = False
    ) -> AsyncGenerator[object, None]:
        limit: int = getattr(self.view, "max_message_bytes", DEFAULT_MAX_MESSAGE_BYTES)
        try:
            while self.ws.application_state != WebSocketState.DISCONNECTED:
                text = await self.ws.receive_text()
                if too_large(text, limit):
                    await self.close(MESSAGE_TOO_BIG, f"Message larger than {limit} bytes")
                    return
                try:
                    message = self.view.decode_json(text)
                except JSONDecodeError as e:
                    if not ignore_parsing_errors:
                        raise NonJsonMessageReceived from e
                    continue
                problem = operation_problem(message) if self._modern() else None
                if problem is None:
                    yield message
                    continue
                await self.close(4400, f"Invalid subscribe message: {problem}")
                return
        except KeyError as e:  # a binary frame has no "text"
            raise NonTextMessageReceived from e
        except WebSocketDisconnect:
            pass


class LegacyProtocolHandler(BaseGraphQLWSHandler[Context, None]):
    """The `graphql-ws` handler, running queries and mutations as well as subscriptions."""

    async def handle_async_results(
        self,
        operation_id: str,
        query: str,
        operation_name: str | None,
        variables: dict[str, object] | None,
    ) -> None:
        # Strawberry's version of this method, with `stream` (any operation type) in
        # place of `subscribe` (subscriptions only).
        try:
            result_source = await self.schema.stream(
                query=query,
                variable_values=variables,
                operation_name=operation_name,
                context_value=self.context,
                root_value=self.root_value,
                allowed_operation_types=(
                    OperationType.QUERY,
                    OperationType.MUTATION,
                    OperationType.SUBSCRIPTION,
                ),
            )
            self.subscriptions[operation_id] = result_source
            first = True
            async for result in result_source:
                if first and isinstance(result, PreExecutionError):
                    assert result.errors
                    await self.send_message(
                        ErrorMessage(
                            type="error", id=operation_id, payload=result.errors[0].formatted
                        )
                    )
                    return
                if not isinstance(result, ExecutionResult):
                    raise TypeError("incremental delivery is not served")  # no @defer here
                await self.send_data_message(result, operation_id)
                first = False
            await self.send_message(CompleteMessage(type="complete", id=operation_id))
        except asyncio.CancelledError:
            await self.send_message(CompleteMessage(type="complete", id=operation_id))
        finally:
            self.subscriptions.pop(operation_id, None)
            self.tasks.pop(operation_id, None)
