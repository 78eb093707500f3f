"""workspaceEvents over a real WebSocket: order, resume, close codes, token expiry."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from auth.tokens import issue_access_token
from models.transaction import run_in_transaction
from resolvers import live
from resolvers.unit_of_work import Recorder, change
from tests.api import empty_tables, settings_for
from tests.live import EVENTS, LiveServer, live_server, socket

CREATE_CARD = "mutation($i: CreateCardInput!) { createCard(input: $i) { __typename } }"


def run_cli(*args: str, database_url: str) -> subprocess.CompletedProcess[str]:
    concord = Path(sys.executable).with_name("concord")
    env = {**os.environ, "DATABASE_URL": database_url, "JWT_SECRET": "unused-here"}
    return subprocess.run(
        [str(concord), *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


@pytest.fixture
async def server(database_url: str, tmp_path: Path) -> AsyncIterator[LiveServer]:
    await empty_tables(database_url)
    async with live_server(settings_for(database_url, tmp_path)) as live:
        yield live


async def test_live_events_arrive_in_order_and_resume_after_reconnect(server: LiveServer) -> None:
    api = server.api
    alice = await api.register("alice")
    ws = await api.workspace(alice)
    board = await api.board(alice, ws["id"])

    async with socket(server.ws_url) as s:
        assert (await s.init(alice.token))["type"] == "connection_ack"
        await s.subscribe("1", EVENTS, {"w": ws["id"], "a": None})
        await asyncio.sleep(0.2)  # the subscription is registered before the writes
        for n in range(20):
            await api.ok(
                CREATE_CARD, {"i": {"boardId": board["id"], "title": f"live {n}"}}, alice.token
            )
        received = [(await s.next_data("1"))["workspaceEvents"] for _ in range(20)]
    first_live = received[0]["seq"]
    assert [e["seq"] for e in received] == list(range(first_live, first_live + 20))
    assert [
        e["changes"][0]["newValue"] for e in received if e["changes"][0]["field"] == "title"
    ] == [f"live {n}" for n in range(20)]
    assert all(e["actor"] == {"id": alice.id} for e in received)
    cursor = received[-1]["cursor"]

    # Disconnected: 30 writes happen; reconnecting with the last cursor gets exactly those.
    for n in range(30):
        await api.ok(
            CREATE_CARD, {"i": {"boardId": board["id"], "title": f"missed {n}"}}, alice.token
        )
    async with socket(server.ws_url) as s:
        await s.init(alice.token)
        await s.subscribe("2", EVENTS, {"w": ws["id"], "a": cursor})
        missed = [(await s.next_data("2"))["workspaceEvents"] for _ in range(30)]
        assert [e["seq"] for e in missed] == list(range(first_live + 20, first_live + 50))
        await api.ok(CREATE_CARD, {"i": {"boardId": board["id"], "title": "after"}}, alice.token)
        after = (await s.next_data("2"))["workspaceEvents"]
        assert after["seq"] == first_live + 50
        with pytest.raises(TimeoutError):
            await s.receive(timeout=0.3)


async def test_close_codes(server: LiveServer) -> None:
    alice = await server.api.register("alice")
    async with socket(server.ws_url) as s:
        await s.send_init("not-a-token")
        assert await s.closed_with() == 4403
    async with socket(server.ws_url) as s:
        await s.send_init(None)
        assert await s.closed_with() == 4403
    async with socket(server.ws_url) as s:
        await s.subscribe("1", EVENTS, {"w": "x"})
        assert await s.closed_with() == 4401
    async with socket(server.ws_url) as s:
        await s.init(alice.token)
        await s.send({"type": "connection_init", "payload": {}})
        assert await s.closed_with() == 4429
    async with socket(server.ws_url) as s:
        ws = await server.api.workspace(alice)
        await s.init(alice.token)
        await s.subscribe("dup", EVENTS, {"w": ws["id"]})
        await s.subscribe("dup", EVENTS, {"w": ws["id"]})
        assert await s.closed_with() == 4409
    # The token may come in the upgrade request's Authorization header instead.
    async with socket(server.ws_url, {"Authorization": f"Bearer {alice.token}"}) as s:
        assert (await s.init(None))["type"] == "connection_ack"


async def test_non_member_gets_an_error_and_no_event(server: LiveServer) -> None:
    alice = await server.api.register("alice")
    mallory = await server.api.register("mallory")
    ws = await server.api.workspace(alice)
    async with socket(server.ws_url) as s:
        await s.init(mallory.token)
        await s.subscribe("1", EVENTS, {"w": ws["id"]})
        message = await s.receive()
        assert message["type"] in {"error", "next"}
        errors = message["payload"] if message["type"] == "error" else message["payload"]["errors"]
        assert errors[0]["extensions"]["code"] == "NOT_FOUND"


async def test_cursor_older_than_the_kept_log_is_a_clear_error(
    server: LiveServer, database_url: str
) -> None:
    api = server.api
    alice = await api.register("alice")
    ws = await api.workspace(alice)
    board = await api.board(alice, ws["id"])
    for n in range(5):
        await api.ok(CREATE_CARD, {"i": {"boardId": board["id"], "title": f"c{n}"}}, alice.token)
    events = await api.events(alice, ws["id"])
    early = await api.ok(
        "query($w: ID!) { events(workspaceId: $w, first: 1) { edges { cursor } } }",
        {"w": ws["id"]},
        alice.token,
    )
    early_cursor = early["events"]["edges"][0]["cursor"]
    result = run_cli("prune-events", "--keep", "3", database_url=database_url)
    assert result.returncode == 0, result.stderr
    assert len(await api.events(alice, ws["id"])) == 3

    async with socket(server.ws_url) as s:
        await s.init(alice.token)
        await s.subscribe("old", EVENTS, {"w": ws["id"], "a": early_cursor})
        message = await s.receive()
        errors = message["payload"] if message["type"] == "error" else message["payload"]["errors"]
        assert errors[0]["extensions"]["code"] == "CURSOR_EXPIRED"
        if message["type"] == "next":
            assert await s.receive() == {"id": "old", "type": "complete"}
        # A cursor inside what is kept still resumes exactly.
        kept_from = events[-4]["seq"]
        cursor = (
            await api.ok(
                "query($w: ID!) { events(workspaceId: $w, first: 100) { edges { cursor node { seq } } } }",
                {"w": ws["id"]},
                alice.token,
            )
        )["events"]["edges"][0]
        assert cursor["node"]["seq"] == kept_from + 1
        await s.subscribe("kept", EVENTS, {"w": ws["id"], "a": cursor["cursor"]})
        resumed = [(await s.next_data("kept"))["workspaceEvents"]["seq"] for _ in range(2)]
        assert resumed == [kept_from + 2, kept_from + 3]


async def test_expired_token_closes_the_socket_with_4403(server: LiveServer) -> None:
    alice = await server.api.register("alice")
    tokens = server.api.app.state.services.tokens
    # Issued so that it expires two seconds from now.
    issued = datetime.now(UTC) - tokens.access_ttl + timedelta(seconds=2)
    short_lived = issue_access_token(tokens, uuid.UUID(alice.id), issued)
    async with socket(server.ws_url) as s:
        assert (await s.init(short_lived))["type"] == "connection_ack"
        started = time.monotonic()
        assert await s.closed_with(timeout=10) == 4403
        assert time.monotonic() - started < 3.5


async def test_an_event_whose_publish_was_lost_still_arrives(
    server: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A commit whose publish never happened (the writer lost Redis, say) reaches
    subscribers through the process's log watcher, not only with the next event."""
    monkeypatch.setattr(live, "IDLE_POLL_SECONDS", 0.2)
    api = server.api
    alice = await api.register("alice")
    ws = await api.workspace(alice)
    board = await api.board(alice, ws["id"])
    services = api.app.state.services

    async with socket(server.ws_url) as s:
        await s.init(alice.token)
        await s.subscribe("1", EVENTS, {"w": ws["id"], "a": None})
        await api.ok(
            CREATE_CARD, {"i": {"boardId": board["id"], "title": "published"}}, alice.token
        )
        assert (await s.next_data("1"))["workspaceEvents"]["type"] == "card.created"

        async def unpublished(session: AsyncSession) -> None:
            recorder = Recorder(session, uuid.UUID(alice.id))
            await recorder.record(
                uuid.UUID(ws["id"]),
                "board.renamed",
                "Board",
                uuid.UUID(board["id"]),
                None,
                [change("name", "Board", "Quiet")],
            )

        await run_in_transaction(services.db.writer, unpublished)
        event = (await s.next_data("1", timeout=5))["workspaceEvents"]
        assert event["type"] == "board.renamed"
        assert event["changes"] == [{"field": "name", "newValue": "Quiet"}]
