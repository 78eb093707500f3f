"""Authorization per operation on an open WebSocket: a removed member stops reading at once."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.api import empty_tables, settings_for
from tests.live import LiveServer, Socket, live_server, socket

REMOVE = """mutation($i: RemoveMemberInput!) { removeMember(input: $i) { __typename } }"""
READS = {
    "workspace": "query($w: ID!) { workspace(id: $w) { id name } }",
    "events": "query($w: ID!) { events(workspaceId: $w) { nodes { seq type } } }",
    "card": "query($c: ID!) { card(id: $c) { id title } }",
}
PRESENCE = "subscription($b: ID!) { presence(boardId: $b) { present { user { id } } } }"


@pytest.fixture
async def server(database_url: str, tmp_path: Path) -> AsyncIterator[LiveServer]:
    await empty_tables(database_url)
    async with live_server(settings_for(database_url, tmp_path)) as live:
        yield live


async def operation(s: Socket, op_id: str, query: str, variables: dict[str, Any]) -> dict[str, Any]:
    """A query over the socket: its one result payload (data and errors)."""
    await s.subscribe(op_id, query, variables)
    while True:
        message = await s.receive()
        if message.get("type") == "ping":
            await s.send({"type": "pong"})
            continue
        assert message.get("id") == op_id, message
        if message["type"] == "error":
            return {"data": None, "errors": message["payload"]}
        assert message["type"] == "next", message
        payload: dict[str, Any] = message["payload"]
        assert (await s.receive())["type"] == "complete"
        return payload


async def test_removed_member_reads_nothing_more_on_an_open_socket(server: LiveServer) -> None:
    api = server.api
    alice = await api.register("alice")
    bob = await api.register("bob")
    ws = await api.workspace(alice)
    board = await api.board(alice, ws["id"])
    await api.add_member(alice, ws["id"], bob, "EDITOR")
    variables = {"w": ws["id"], "c": None}

    async with socket(server.ws_url) as s:
        assert (await s.init(bob.token))["type"] == "connection_ack"
        # Bob reads while a member: the socket's first operations see the workspace.
        before = await operation(s, "1", READS["workspace"], {"w": ws["id"]})
        assert before["data"]["workspace"]["id"] == ws["id"]
        await operation(s, "2", READS["events"], {"w": ws["id"]})
        removed = await api.ok(
            REMOVE, {"i": {"workspaceId": ws["id"], "userId": bob.id}}, alice.token
        )
        assert removed["removeMember"]["__typename"] == "DeletePayload", removed
        secret = await api.card(alice, board["id"], "after the removal")
        variables["c"] = secret["id"]

        for n, (name, query) in enumerate(READS.items()):
            over_ws = await operation(s, f"after-{n}", query, variables)
            over_http = await api(query, variables, bob.token)
            assert over_ws == over_http, (name, over_ws, over_http)
            assert "after the removal" not in str(over_ws)
            if over_ws.get("errors"):
                assert over_ws["errors"][0]["extensions"]["code"] == "NOT_FOUND"
            else:
                assert over_ws["data"][name] is None, over_ws


async def test_removed_member_presence_ends(server: LiveServer) -> None:
    api = server.api
    alice = await api.register("alice")
    bob = await api.register("bob")
    ws = await api.workspace(alice)
    board = await api.board(alice, ws["id"])
    await api.add_member(alice, ws["id"], bob, "VIEWER")

    async with socket(server.ws_url) as bob_socket, socket(server.ws_url) as alice_socket:
        await bob_socket.init(bob.token)
        await bob_socket.subscribe("p", PRESENCE, {"b": board["id"]})
        first = await bob_socket.next_data("p")
        assert [v["user"]["id"] for v in first["presence"]["present"]] == [bob.id]
        await api.ok(REMOVE, {"i": {"workspaceId": ws["id"], "userId": bob.id}}, alice.token)

        # Alice arrives: Bob, no longer a member, must not learn it; his view ends.
        await alice_socket.init(alice.token)
        await alice_socket.subscribe("p", PRESENCE, {"b": board["id"]})
        await alice_socket.next_data("p")
        message = await bob_socket.receive()
        while message["payload"]["data"] is not None:
            # Bob's own arrival may still be on its way from before the removal.
            assert alice.id not in str(message), message
            message = await bob_socket.receive()
        assert message["id"] == "p", message
        assert message["type"] == "next", message
        assert message["payload"]["errors"][0]["extensions"]["code"] == "NOT_FOUND"
        assert (await bob_socket.receive())["type"] == "complete"


async def test_operations_per_socket_are_limited(database_url: str, tmp_path: Path) -> None:
    await empty_tables(database_url)
    async with live_server(settings_for(database_url, tmp_path, ws_max_operations=2)) as server:
        alice = await server.api.register()
        ws = await server.api.workspace(alice)
        board = await server.api.board(alice, ws["id"])
        async with socket(server.ws_url) as s:
            await s.init(alice.token)
            for op_id in ("1", "2", "3"):
                await s.subscribe(op_id, PRESENCE, {"b": board["id"]})
            refused = await s.receive()
            while refused.get("id") != "3":
                refused = await s.receive()
            assert refused["type"] == "error"
            assert "limit" in refused["payload"][0]["message"]


async def test_time_limit_applies_to_operations_on_a_socket(
    database_url: str, tmp_path: Path
) -> None:
    await empty_tables(database_url)
    hurried = settings_for(database_url, tmp_path, request_timeout_seconds=0.001)
    async with live_server(hurried) as server:
        # Registered directly: over HTTP the same limit would stop the registration too.
        normal = settings_for(database_url, tmp_path)
        async with live_server(normal) as patient:
            alice = await patient.api.register()
        async with socket(server.ws_url) as s:
            await s.init(alice.token)
            answer = await operation(
                s, "1", 'mutation { createWorkspace(input: {name: "Never"}) { __typename } }', {}
            )
        error = answer["errors"][0]
        assert error["extensions"]["code"] == "TIMEOUT", answer
        assert error["extensions"]["limit"] == "REQUEST_TIMEOUT_SECONDS"
        async with live_server(normal) as patient:
            data = await patient.api.ok("{ workspaces { nodes { name } } }", token=alice.token)
        assert data["workspaces"]["nodes"] == []
