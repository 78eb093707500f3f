"""What operators and subscribers see: each unexpected error logged once, with its traceback,
on every transport; and `presence` sending each value once."""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.api import empty_tables, settings_for
from tests.live import EVENTS, LiveServer, live_server, socket
from tests.server.test_sse import stream
from tests.server.test_websocket_protocols import legacy

HISTORY = "query($w: ID!) { events(workspaceId: $w) { nodes { seq } } }"


@pytest.fixture
async def sqlite_server(tmp_path: Path) -> AsyncIterator[tuple[LiveServer, Path]]:
    path = tmp_path / "concord.db"
    async with live_server(settings_for(f"sqlite+aiosqlite:///{path}", tmp_path)) as live:
        yield live, path


def unexpected(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_each_unexpected_error_is_logged_once_with_its_traceback(
    sqlite_server: tuple[LiveServer, Path], caplog: pytest.LogCaptureFixture
) -> None:
    server, path = sqlite_server
    api = server.api
    alice = await api.register("alice")
    ws = await api.workspace(alice)
    # The fault: the event log's table is gone, so reading it fails inside the driver.
    with sqlite3.connect(path) as db:
        db.execute("DROP TABLE events")

    async def http() -> dict[str, Any]:
        return await api(HISTORY, {"w": ws["id"]}, alice.token)

    async def sse(query: str) -> dict[str, Any]:
        async with stream(api, query, {"w": ws["id"]}, alice.token) as s:
            payload: dict[str, Any] = json.loads((await s.message())["data"])
            return payload

    async def transport_ws(query: str) -> dict[str, Any]:
        async with socket(server.ws_url) as s:
            await s.init(alice.token)
            await s.subscribe("1", query, {"w": ws["id"]})
            message = await s.receive()
            payload: dict[str, Any] = message["payload"]
            return payload if message["type"] == "next" else {"errors": payload}

    async def legacy_ws(query: str) -> dict[str, Any]:
        async with legacy(server.ws_url) as s:
            await s.init(alice.token)
            await s.start("1", query, {"w": ws["id"]})
            payload: dict[str, Any] = (await s.receive())["payload"]
            return payload

    for name, call in (
        ("HTTP query", http),
        ("SSE query", lambda: sse(HISTORY)),
        ("SSE subscription", lambda: sse(EVENTS)),
        ("graphql-transport-ws query", lambda: transport_ws(HISTORY)),
        ("graphql-transport-ws subscription", lambda: transport_ws(EVENTS)),
        ("graphql-ws query", lambda: legacy_ws(HISTORY)),
        ("graphql-ws subscription", lambda: legacy_ws(EVENTS)),
    ):
        caplog.clear()
        payload = await call()
        assert payload["errors"][0]["message"] == "Unexpected error.", (name, payload)
        assert payload["errors"][0]["extensions"] == {"code": "INTERNAL_SERVER_ERROR"}
        await asyncio.sleep(0.1)  # anything logged after the answer is counted too
        logged = unexpected(caplog)
        assert len(logged) == 1, (name, [r.getMessage() for r in logged])
        assert logged[0].getMessage().startswith("unexpected error")
        assert logged[0].exc_info is not None
        assert "no such table: events" in str(logged[0].exc_info[1])


PRESENCE = "subscription($b: ID!) { presence(boardId: $b) { present { user { displayName } } } }"


@pytest.fixture
async def server(database_url: str, tmp_path: Path) -> AsyncIterator[LiveServer]:
    await empty_tables(database_url)
    async with live_server(settings_for(database_url, tmp_path)) as live:
        yield live


async def test_presence_sends_each_value_once(server: LiveServer) -> None:
    api = server.api
    alice = await api.register("alice")
    bob = await api.register("bob")
    ws = await api.workspace(alice)
    await api.add_member(alice, ws["id"], bob, "EDITOR")
    board = await api.board(alice, ws["id"])

    def names(data: dict[str, Any]) -> list[str]:
        return [entry["user"]["displayName"] for entry in data["presence"]["present"]]

    seen: list[list[str]] = []
    async with socket(server.ws_url) as a:
        await a.init(alice.token)
        await a.subscribe("p", PRESENCE, {"b": board["id"]})
        seen.append(names(await a.next_data("p")))
        with pytest.raises(TimeoutError):
            await a.receive(timeout=0.5)  # no second copy of the first value
        async with socket(server.ws_url) as b:
            await b.init(bob.token)
            await b.subscribe("p", PRESENCE, {"b": board["id"]})
            assert names(await b.next_data("p")) == ["alice", "bob"]
            seen.append(names(await a.next_data("p")))
            # A second view of someone already present changes nothing: nothing is sent.
            await b.subscribe("again", PRESENCE, {"b": board["id"]})
            assert names(await b.next_data("again")) == ["alice", "bob"]
            with pytest.raises(TimeoutError):
                await a.receive(timeout=0.5)
        seen.append(names(await a.next_data("p")))
        with pytest.raises(TimeoutError):
            await a.receive(timeout=0.5)
    assert seen == [["alice"], ["alice", "bob"], ["alice"]]
