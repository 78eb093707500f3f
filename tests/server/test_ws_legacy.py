"""The legacy graphql-ws protocol: deadline, one connection_init, malformed messages."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect

from tests.api import empty_tables, settings_for
from tests.live import LiveServer, live_server


@pytest.fixture
async def server(database_url: str, tmp_path: Path) -> AsyncIterator[LiveServer]:
    await empty_tables(database_url)
    settings = settings_for(database_url, tmp_path, ws_connection_init_timeout_seconds=0.5)
    async with live_server(settings) as live:
        yield live


@asynccontextmanager
async def legacy(server: LiveServer) -> AsyncIterator[ClientConnection]:
    async with connect(server.ws_url, subprotocols=["graphql-ws"]) as connection:  # type: ignore[list-item]
        yield connection


async def messages_until_closed(connection: ClientConnection) -> list[dict[str, Any]]:
    received = []
    try:
        while True:
            received.append(json.loads(await asyncio.wait_for(connection.recv(), 5)))
    except Exception:
        pass
    return received


async def test_no_connection_init_closes_with_4408(server: LiveServer) -> None:
    async with legacy(server) as connection:
        await messages_until_closed(connection)
        assert connection.close_code == 4408


async def test_second_connection_init_is_refused(server: LiveServer) -> None:
    alice = await server.api.register()
    mallory = await server.api.register()
    async with legacy(server) as connection:
        init = {"type": "connection_init", "payload": {"authorization": f"Bearer {alice.token}"}}
        await connection.send(json.dumps(init))
        assert json.loads(await connection.recv())["type"] == "connection_ack"
        await asyncio.sleep(0.7)  # past the deadline: an acknowledged socket stays open
        again = {"type": "connection_init", "payload": {"authorization": f"Bearer {mallory.token}"}}
        await connection.send(json.dumps(again))
        received = await messages_until_closed(connection)
        assert connection.close_code == 4429
        assert all(m["type"] != "connection_ack" for m in received), received


@pytest.mark.parametrize(
    ("message", "problem"),
    [
        ("{not json", "valid JSON"),
        ("7", "JSON object"),
        (json.dumps({"type": "start", "payload": {"query": "{ me { id } }"}}), "`id`"),
        (json.dumps({"type": "start", "id": "1"}), "`payload` must be an object"),
        (json.dumps({"type": "start", "id": "1", "payload": {}}), "`payload.query`"),
        (
            json.dumps(
                {"type": "start", "id": "1", "payload": {"query": "{ me { id } }", "variables": 3}}
            ),
            "`payload.variables`",
        ),
        (json.dumps({"type": "subscribe", "id": "1"}), "Unknown message type"),
    ],
)
async def test_malformed_messages_get_a_protocol_error(
    server: LiveServer, message: str, problem: str
) -> None:
    alice = await server.api.register()
    async with legacy(server) as connection:
        init = {"type": "connection_init", "payload": {"authorization": f"Bearer {alice.token}"}}
        await connection.send(json.dumps(init))
        assert json.loads(await connection.recv())["type"] == "connection_ack"
        await connection.send(message)
        received = await messages_until_closed(connection)
        assert connection.close_code == 4400, received
        errors = [m for m in received if m["type"] == "connection_error"]
        assert problem in errors[0]["payload"]["message"], received
