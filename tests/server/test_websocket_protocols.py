"""Both WebSocket protocols on a served Concord: the legacy `graphql-ws` (as
subscriptions-transport-ws, Apollo's old WebSocketLink and Python's gql speak it) runs
queries and mutations like `graphql-transport-ws`; a message over the size limit closes
either kind of socket with 1009 and a reason before it is parsed; an operation message
that cannot run says why."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect

from tests.api import empty_tables, settings_for
from tests.live import EVENTS, LiveServer, live_server, socket
from tests.services import free_port

LEGACY = "graphql-ws"
LIMIT = 8192


@pytest.fixture
async def server(database_url: str, tmp_path: Path) -> AsyncIterator[LiveServer]:
    await empty_tables(database_url)
    async with live_server(settings_for(database_url, tmp_path, max_body_bytes=LIMIT)) as live:
        yield live


class LegacySocket:
    """One subscriptions-transport-ws connection."""

    def __init__(self, connection: ClientConnection) -> None:
        self.connection = connection

    async def send(self, message: dict[str, Any]) -> None:
        await self.connection.send(json.dumps(message))

    async def receive(self, timeout: float = 5.0) -> dict[str, Any]:
        message: dict[str, Any] = json.loads(
            await asyncio.wait_for(self.connection.recv(), timeout)
        )
        return message

    async def init(self, token: str) -> None:
        await self.send(
            {"type": "connection_init", "payload": {"authorization": f"Bearer {token}"}}
        )
        assert await self.receive() == {"type": "connection_ack"}

    async def start(self, op_id: str, query: str, variables: dict[str, Any]) -> None:
        payload = {"query": query, "variables": variables}
        await self.send({"id": op_id, "type": "start", "payload": payload})


@asynccontextmanager
async def legacy(url: str) -> AsyncIterator[LegacySocket]:
    async with connect(url, subprotocols=[LEGACY]) as connection:  # type: ignore[list-item]
        assert connection.subprotocol == LEGACY
        yield LegacySocket(connection)


ME = "query Me { me { id displayName } }"
CREATE = """mutation($i: CreateWorkspaceInput!) { createWorkspace(input: $i) {
  __typename ... on WorkspacePayload { workspace { name } } } }"""


async def test_legacy_protocol_runs_queries_and_mutations(server: LiveServer) -> None:
    alice = await server.api.register("alice")
    async with legacy(server.ws_url) as s:
        await s.init(alice.token)
        await s.start("q", ME, {})
        assert await s.receive() == {
            "type": "data",
            "id": "q",
            "payload": {"data": {"me": {"id": alice.id, "displayName": "alice"}}},
        }
        assert await s.receive() == {"type": "complete", "id": "q"}

        await s.start("m", CREATE, {"i": {"name": "Legacy"}})
        created = await s.receive()
        assert created["payload"] == {
            "data": {
                "createWorkspace": {
                    "__typename": "WorkspacePayload",
                    "workspace": {"name": "Legacy"},
                }
            }
        }
        assert await s.receive() == {"type": "complete", "id": "m"}
        workspaces = await server.api.ok("{ workspaces { nodes { name } } }", None, alice.token)
        assert workspaces["workspaces"]["nodes"] == [{"name": "Legacy"}]

        # The same answers as over graphql-transport-ws.
        async with socket(server.ws_url) as modern:
            await modern.init(alice.token)
            await modern.subscribe("q", ME, {})
            assert (await modern.next_data("q")) == {"me": {"id": alice.id, "displayName": "alice"}}

        # Subscriptions still work on the same socket, and errors say what is wrong.
        ws = (await server.api.ok("{ workspaces { nodes { id } } }", None, alice.token))[
            "workspaces"
        ]["nodes"][0]
        await s.start("s", EVENTS, {"w": ws["id"]})
        await asyncio.sleep(0.2)
        await server.api.board(alice, ws["id"])
        event = await s.receive()
        assert event["payload"]["data"]["workspaceEvents"]["type"] == "board.created"
        await s.send({"id": "s", "type": "stop"})
        assert await s.receive() == {"type": "complete", "id": "s"}
        await s.start("bad", "{ me { nope } }", {})
        error = await s.receive()
        assert error["type"] == "error"
        assert error["payload"]["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"


def padded(query: str, size: int) -> str:
    """`query` padded with whitespace to `size` bytes of JSON message."""
    message = json.dumps({"id": "big", "type": "subscribe", "payload": {"query": query}})
    return query + " " * (size - len(message))


async def closed(connection: ClientConnection) -> tuple[int | None, str | None]:
    """Wait until the server closes the socket; its close code and reason."""
    await asyncio.wait_for(connection.wait_closed(), 5)
    return connection.close_code, connection.close_reason


async def test_a_message_over_the_limit_closes_the_socket_before_parsing(
    server: LiveServer,
) -> None:
    alice = await server.api.register("alice")
    # Just under the limit: parsed and answered.
    async with socket(server.ws_url) as s:
        await s.init(alice.token)
        await s.subscribe("small", padded(ME, LIMIT - 100), {})
        assert (await s.next_data("small"))["me"]["id"] == alice.id

    for protocol in ("graphql-transport-ws", LEGACY):
        # Over it: closed with 1009, whether the message is valid JSON or not (so the size
        # is checked first), and before or after connection_init.
        for before_init, message in (
            (True, json.dumps({"type": "connection_init", "payload": {"x": "y" * LIMIT}})),
            (False, "{" + "x" * 3_000_000),
            (False, json.dumps({"id": "1", "type": "start", "payload": {"query": "y" * LIMIT}})),
        ):
            async with connect(server.ws_url, subprotocols=[protocol]) as connection:  # type: ignore[list-item]
                if not before_init:
                    init = {
                        "type": "connection_init",
                        "payload": {"authorization": f"Bearer {alice.token}"},
                    }
                    await connection.send(json.dumps(init))
                    assert json.loads(await connection.recv())["type"] == "connection_ack"
                await connection.send(message)
                code, reason = await closed(connection)
                assert code == 1009, (protocol, code, reason)
                assert reason == f"Message larger than {LIMIT} bytes"


BAD_PAYLOADS: list[tuple[object, str]] = [
    (None, "`payload` must be an object"),
    ({}, "`payload.query` must be a string"),
    ({"query": 5}, "`payload.query` must be a string"),
    ({"query": ME, "variables": 3}, "`payload.variables` must be an object"),
    ({"query": ME, "operationName": ["Me"]}, "`payload.operationName` must be a string"),
]


async def test_an_operation_message_that_cannot_run_says_why(
    server: LiveServer, caplog: pytest.LogCaptureFixture
) -> None:
    alice = await server.api.register("alice")
    caplog.set_level(logging.INFO)
    # Legacy: held to the modern protocol's rules, a `connection_error` naming the problem
    # and 4400 (server/ws_legacy.py).
    for payload, problem in BAD_PAYLOADS:
        async with legacy(server.ws_url) as s:
            await s.init(alice.token)
            await s.send({"id": "bad", "type": "start", "payload": payload})
            reason = f"Invalid start message: {problem}"
            assert await s.receive() == {"type": "connection_error", "payload": {"message": reason}}
            assert await closed(s.connection) == (4400, reason)
    async with legacy(server.ws_url) as s:
        await s.init(alice.token)
        await s.start("q", ME, {})
        assert (await s.receive())["payload"]["data"]["me"]["id"] == alice.id
    # graphql-transport-ws: the protocol's 4400, with the reason.
    for payload, problem in BAD_PAYLOADS:
        async with socket(server.ws_url) as t:
            await t.init(alice.token)
            await t.send({"id": "bad", "type": "subscribe", "payload": payload})
            assert await closed(t.connection) == (4400, f"Invalid subscribe message: {problem}")
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_concord_serve_refuses_a_large_message_before_buffering_it(tmp_path: Path) -> None:
    """`concord serve` hands the limit to the WebSocket library, which refuses the frame."""
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'concord.db'}",
        "CONCORD_DATA_DIR": str(tmp_path),
        "JWT_SECRET": "test-secret-that-is-long-enough-for-hs256-0123456789",
        "MAX_BODY_BYTES": str(LIMIT),
    }
    concord = Path(sys.executable).with_name("concord")
    process = await asyncio.create_subprocess_exec(
        str(concord),
        "serve",
        "--port",
        str(port),
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            while True:
                assert process.returncode is None, "concord serve exited"
                try:
                    if (await client.get("/healthz")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "concord serve did not start"
                await asyncio.sleep(0.1)
        url = f"ws://127.0.0.1:{port}/graphql"
        async with connect(url, subprotocols=["graphql-transport-ws"]) as connection:  # type: ignore[list-item]
            await connection.send("x" * (LIMIT + 1))
            code, reason = await closed(connection)
        assert code == 1009
        # Refused by the WebSocket library while reading the frame (the app's own check,
        # after the whole message is in memory, says "Message larger than …").
        # (websockets words it "frame exceeds …" or "frame with N bytes exceeds …")
        assert reason.startswith("frame"), reason
        assert reason.endswith(f"exceeds limit of {LIMIT} bytes"), reason
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), 10)


async def test_a_message_nested_too_deep_closes_with_4400_not_a_crash(
    server: LiveServer, caplog: pytest.LogCaptureFixture
) -> None:
    """JSON nested past the standard library decoder's recursion limit raised RecursionError
    out of the socket's loop (found with the HTTP fuzz, tests/fuzz): now it is refused like
    any other message that is not JSON."""
    alice = await server.api.register("alice")
    caplog.set_level(logging.INFO)
    deep = "[" * 3000 + "]" * 3000
    assert len(deep) < LIMIT
    async with socket(server.ws_url) as t:
        await t.init(alice.token)
        await t.connection.send(deep)
        code, _ = await closed(t.connection)
        assert code == 4400
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
