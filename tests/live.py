"""A real uvicorn server on a free port, and a graphql-transport-ws client for it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import uvicorn
from websockets.asyncio.client import ClientConnection, connect

from server.app import create_app
from server.settings import Settings
from server.ws_protocol import uvicorn_ws_options
from tests.api import Api
from tests.services import free_port

PROTOCOL = "graphql-transport-ws"


class LiveServer:
    def __init__(self, port: int, api: Api, server: uvicorn.Server | None = None) -> None:
        self.port = port
        self.api = api
        self.ws_url = f"ws://127.0.0.1:{port}/graphql"
        self.server = server  # `server.should_exit = True` stops it as SIGTERM does


@asynccontextmanager
async def live_server(settings: Settings) -> AsyncIterator[LiveServer]:
    """Serve the app with uvicorn in this event loop; an HTTP client talks to it over TCP."""
    port = free_port()
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        log_config=None,
        lifespan="on",
        **uvicorn_ws_options(settings.ws_compression),  # as `concord serve` runs it
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.02)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            yield LiveServer(port, Api(client, app), server)
    finally:
        server.should_exit = True
        await task


class Socket:
    """One graphql-transport-ws connection."""

    def __init__(self, connection: ClientConnection) -> None:
        self.connection = connection

    async def send(self, message: dict[str, Any]) -> None:
        await self.connection.send(json.dumps(message))

    async def receive(self, timeout: float = 5.0) -> dict[str, Any]:
        raw = await asyncio.wait_for(self.connection.recv(), timeout)
        message: dict[str, Any] = json.loads(raw)
        return message

    async def send_init(self, token: str | None) -> None:
        payload = {"authorization": f"Bearer {token}"} if token else {}
        await self.send({"type": "connection_init", "payload": payload})

    async def init(self, token: str | None) -> dict[str, Any]:
        """connection_init, and the server's answer (connection_ack when accepted)."""
        await self.send_init(token)
        return await self.receive()

    async def subscribe(self, op_id: str, query: str, variables: dict[str, Any]) -> None:
        await self.send(
            {"id": op_id, "type": "subscribe", "payload": {"query": query, "variables": variables}}
        )

    async def next_data(self, op_id: str, timeout: float = 5.0) -> dict[str, Any]:
        """The next `next` payload's data for `op_id`; fails on an error message."""
        while True:
            message = await self.receive(timeout)
            if message.get("type") == "ping":
                await self.send({"type": "pong"})
                continue
            assert message.get("id") == op_id, message
            assert message["type"] == "next", message
            assert "errors" not in message["payload"], message
            data: dict[str, Any] = message["payload"]["data"]
            return data

    async def closed_with(self, timeout: float = 5.0) -> int | None:
        """Wait for the server to close the socket; its close code."""
        try:
            while True:
                await asyncio.wait_for(self.connection.recv(), timeout)
        except Exception:
            pass
        return self.connection.close_code


@asynccontextmanager
async def socket(url: str, headers: dict[str, str] | None = None) -> AsyncIterator[Socket]:
    async with connect(
        url, subprotocols=[PROTOCOL], additional_headers=headers or {}
    ) as connection:  # type: ignore[list-item]
        yield Socket(connection)


EVENTS = """subscription($w: ID!, $a: String) { workspaceEvents(workspaceId: $w, after: $a) {
  seq cursor type entityId actor { id } changes { field newValue } } }"""
