"""GraphQL over Server-Sent Events on a served Concord, read as raw SSE messages.

What a browser's EventSource or a proxy-friendly client relies on: `id:` lines carrying the
cursor, `Last-Event-ID` resuming exactly after it, a clean end when the client goes away,
and a clear 400 for a subscription sent without `Accept: text/event-stream`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis import Redis as SyncRedis

from auth.revocation import CHANNEL as REVOCATIONS
from auth.tokens import issue_access_token
from subscriptions.fanout import FanoutHub
from tests.api import Api, Person, empty_tables, settings_for
from tests.live import EVENTS, LiveServer, live_server
from tests.services import reachable_redis_url, redis_url

SSE = {"accept": "text/event-stream"}


def stream_channels(hub: FanoutHub) -> list[str]:
    """The broker channels open for operations (the app's revocation listener's excepted)."""
    return [channel for channel in hub.channels() if channel != REVOCATIONS]


@pytest.fixture
async def server(database_url: str, tmp_path: Path) -> AsyncIterator[LiveServer]:
    await empty_tables(database_url)
    async with live_server(settings_for(database_url, tmp_path)) as live:
        yield live


class Stream:
    """The SSE messages of one response, as dicts of their fields."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.lines = response.aiter_lines()

    async def message(self, timeout: float = 5.0) -> dict[str, str]:
        """The next message; comments (heartbeats) are skipped."""
        fields: dict[str, str] = {}
        while True:
            line = await asyncio.wait_for(anext(self.lines), timeout)
            if line == "":
                if fields:
                    return fields
                continue
            if line.startswith(":"):
                continue
            name, _, value = line.partition(":")
            fields[name] = value.removeprefix(" ")

    async def next_data(self) -> tuple[str | None, dict[str, Any]]:
        """The next `next` message's id and its payload's data (which must have no errors)."""
        message = await self.message()
        assert message["event"] == "next", message
        payload = json.loads(message["data"])
        assert "errors" not in payload, payload
        return message.get("id"), payload["data"]


@asynccontextmanager
async def stream(
    api: Api,
    query: str,
    variables: dict[str, Any],
    token: str | None,
    method: str = "POST",
    headers: dict[str, str] | None = None,
) -> AsyncIterator[Stream]:
    sent = {**SSE, **(headers or {})}
    if token:
        sent["authorization"] = f"Bearer {token}"
    if method == "POST":
        request = api.client.stream(
            "POST", "/graphql", json={"query": query, "variables": variables}, headers=sent
        )
    else:
        params = {"query": query, "variables": json.dumps(variables)}
        request = api.client.stream("GET", "/graphql", params=params, headers=sent)
    async with request as response:
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"].startswith("text/event-stream")
        yield Stream(response)


async def cards(api: Api, person: Person, board_id: str, *titles: str) -> None:
    for title in titles:
        await api.card(person, board_id, title)


async def first_cursor(api: Api, person: Person, workspace_id: str) -> str:
    data = await api.ok(
        "query($w: ID!) { events(workspaceId: $w, first: 1) { edges { cursor } } }",
        {"w": workspace_id},
        person.token,
    )
    cursor: str = data["events"]["edges"][0]["cursor"]
    return cursor


async def test_a_subscription_without_event_stream_is_a_clear_400(
    server: LiveServer, caplog: pytest.LogCaptureFixture
) -> None:
    api = server.api
    alice = await api.register("alice")
    ws = await api.workspace(alice)
    caplog.set_level(logging.INFO)
    post = await api.raw(EVENTS, {"w": ws["id"]}, alice.token)
    get = await api.client.get(
        "/graphql",
        params={"query": EVENTS, "variables": json.dumps({"w": ws["id"]})},
        headers={"accept": "application/json", "authorization": f"Bearer {alice.token}"},
    )
    for response in (post, get):
        assert response.status_code == 400, response.text
        error = response.json()["errors"][0]
        assert error["extensions"]["code"] == "BAD_REQUEST"
        for transport in ("text/event-stream", "graphql-transport-ws", "graphql-ws"):
            assert transport in error["message"]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_events_carry_their_cursor_as_id_and_last_event_id_resumes(
    server: LiveServer,
) -> None:
    api = server.api
    alice = await api.register("alice")
    ws = await api.workspace(alice)
    board = await api.board(alice, ws["id"])
    start = await first_cursor(api, alice, ws["id"])
    await cards(api, alice, board["id"], "a", "b")

    async with stream(api, EVENTS, {"w": ws["id"], "a": start}, alice.token) as s:
        # From the log: the owner's membership, the board and the two cards; then live.
        received = [await s.next_data() for _ in range(4)]
        await cards(api, alice, board["id"], "c")
        received.append(await s.next_data())
    assert [data["workspaceEvents"]["seq"] for _, data in received] == [2, 3, 4, 5, 6]
    # The SSE id of each message is the event's cursor.
    assert [event_id for event_id, _ in received] == [
        data["workspaceEvents"]["cursor"] for _, data in received
    ]
    last_id = received[-1][0]
    assert last_id is not None

    await cards(api, alice, board["id"], "missed 1", "missed 2")
    # A reconnect sends the last id it saw; it wins over the (older) `after` argument.
    for method in ("POST", "GET"):
        async with stream(
            api,
            EVENTS,
            {"w": ws["id"], "a": start},
            alice.token,
            method,
            {"last-event-id": last_id},
        ) as s:
            resumed = [(await s.next_data())[1]["workspaceEvents"] for _ in range(2)]
            assert [e["seq"] for e in resumed] == [7, 8]
            assert [e["changes"][0]["newValue"] for e in resumed] == ["missed 1", "missed 2"]
            with pytest.raises(TimeoutError):
                await s.message(timeout=0.3)


async def test_queries_and_mutations_are_one_next_then_complete(server: LiveServer) -> None:
    api = server.api
    alice = await api.register("alice")
    async with stream(api, "{ me { id } }", {}, alice.token, "GET") as s:
        assert await s.next_data() == (None, {"me": {"id": alice.id}})
        assert await s.message() == {"event": "complete", "data": ""}
    mutation = "mutation($i: CreateWorkspaceInput!) { createWorkspace(input: $i) { __typename } }"
    async with stream(api, mutation, {"i": {"name": "Over SSE"}}, alice.token) as s:
        assert (await s.next_data())[1] == {"createWorkspace": {"__typename": "WorkspacePayload"}}
        assert await s.message() == {"event": "complete", "data": ""}
    # The same limits as every transport, reported in the stream as the protocol asks.
    deep = "subscription($w: ID!) { workspaceEvents(workspaceId: $w) { " + (
        "actor { id } " + "".join(f"a{n}: seq " for n in range(40)) + "} }"
    )
    async with stream(api, deep, {"w": str(uuid.uuid4())}, alice.token) as s:
        message = await s.message()
        assert message["event"] == "next"
        errors = json.loads(message["data"])["errors"]
        assert errors[0]["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
        assert await s.message() == {"event": "complete", "data": ""}


@pytest.fixture(params=["memory", "redis"])
async def any_broker_server(
    request: pytest.FixtureRequest, database_url: str, tmp_path: Path
) -> AsyncIterator[LiveServer]:
    """A served Concord on the in-process broker, or on Redis (as a fleet runs it)."""
    overrides: dict[str, object] = {}
    if request.param == "redis":
        overrides["redis_url"] = reachable_redis_url()
    await empty_tables(database_url)
    async with live_server(settings_for(database_url, tmp_path, **overrides)) as live:
        yield live


async def test_a_closed_stream_leaves_no_subscription_or_task_behind(
    any_broker_server: LiveServer,
) -> None:
    server = any_broker_server
    api = server.api
    alice = await api.register("alice")
    ws = await api.workspace(alice)
    board = await api.board(alice, ws["id"])
    services = api.app.state.services
    hub = services.broker.hub
    presence = "subscription($b: ID!) { presence(boardId: $b) { present { user { id } } } }"
    on_redis = services.broker.__class__.__name__ == "RedisBroker"
    before = asyncio.all_tasks()

    for _ in range(3):
        async with (
            stream(api, EVENTS, {"w": ws["id"]}, alice.token) as events,
            stream(api, presence, {"b": board["id"]}, alice.token) as viewers,
        ):
            present = json.loads((await viewers.message())["data"])["data"]["presence"]
            assert present == {"present": [{"user": {"id": alice.id}}]}
            await cards(api, alice, board["id"], "seen")
            assert (await events.next_data())[1]["workspaceEvents"]["type"] == "card.created"
            assert len(stream_channels(hub)) == 2
            if on_redis:
                assert redis_subscribers(f"workspace:{ws['id']}") == 1
        # The client hung up: the server stops both operations.

    async def settled() -> bool:
        # The server's per-connection tasks end with it; what is left must be what was there.
        return not stream_channels(hub) and asyncio.all_tasks() <= before | {asyncio.current_task()}

    for _ in range(100):
        if await settled():
            break
        await asyncio.sleep(0.05)
    assert stream_channels(hub) == []
    leaked = asyncio.all_tasks() - before - {asyncio.current_task()}
    assert not leaked, leaked
    assert services.presence is not None
    assert await services.presence.present(board["id"]) == []
    if on_redis:
        # Redis itself holds no subscription of this workspace or board any more.
        for channel in (f"workspace:{ws['id']}", f"presence:{board['id']}"):
            for _ in range(100):
                if not redis_subscribers(channel):
                    break
                await asyncio.sleep(0.05)
            assert redis_subscribers(channel) == 0, channel


def redis_subscribers(channel: str) -> int:
    """How many connections Redis has subscribed to `channel`."""
    redis = SyncRedis.from_url(redis_url())
    try:
        count: int = redis.pubsub_numsub(channel)[0][1]
        return count
    finally:
        redis.close()


async def test_the_stream_ends_when_the_token_expires(server: LiveServer) -> None:
    api = server.api
    alice = await api.register("alice")
    ws = await api.workspace(alice)
    tokens = api.app.state.services.tokens
    issued = datetime.now(UTC) - tokens.access_ttl + timedelta(seconds=1.5)
    short_lived = issue_access_token(tokens, uuid.UUID(alice.id), issued)
    async with stream(api, EVENTS, {"w": ws["id"]}, short_lived) as s:
        message = await s.message(timeout=5)
        assert message["event"] == "next"
        error = json.loads(message["data"])["errors"][0]
        assert error["extensions"]["code"] == "UNAUTHENTICATED"
        assert "Last-Event-ID" in error["message"]
        assert await s.message() == {"event": "complete", "data": ""}
    assert stream_channels(api.app.state.services.broker.hub) == []
    # A token that is already invalid never gets a stream.
    response = await api.client.post(
        "/graphql",
        json={"query": EVENTS, "variables": {"w": ws["id"]}},
        headers={**SSE, "authorization": "Bearer not-a-token"},
    )
    assert response.status_code == 401
    assert response.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
