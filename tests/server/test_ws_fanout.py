"""The workspaceEvents fan-out over real sockets: shared renders, slow consumers, cleanup.

Each test serves the app with uvicorn as `concord serve` does (tests/live.py) on an
SQLite database of this module; clients are `websockets` connections over TCP.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import socket as stdlib_socket
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import psutil
import pytest
import uvicorn
from redis import Redis as SyncRedis
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from resolvers import live
from resolvers.live_feed import group_hub
from resolvers.validation import DESCRIPTION_MAX
from server.app import create_app
from server.gc_tuning import collector
from tests.api import Api, Person, empty_tables, migrate, settings_for
from tests.live import PROTOCOL, LiveServer, live_server
from tests.services import free_port, reachable_redis_url, redis_url

CARD_FIELDS = "seq cursor type entityId actor { id } changes { field newValue }"
# Three selections: plain; aliased with a fragment and more fields; one whose shape
# depends on a variable used below the root field (two values: two views).
SELECTIONS = {
    "plain": f"""subscription($w: ID!, $a: String) {{
      workspaceEvents(workspaceId: $w, after: $a) {{ {CARD_FIELDS} }} }}""",
    "fragment": """subscription Feed($w: ID!, $a: String) {
      feed: workspaceEvents(workspaceId: $w, after: $a) { ...E } }
      fragment E on Event { seq entityType version occurredAt
        who: actor { id displayName email } changes { field oldValue newValue } }""",
    "variable": """subscription($w: ID!, $a: String, $c: Boolean!) {
      workspaceEvents(workspaceId: $w, after: $a) {
        seq type changes @include(if: $c) { field newValue } } }""",
}
UPDATE_CARD = """mutation($i: UpdateCardInput!) { updateCard(input: $i) { __typename } }"""
SUBSCRIBERS = 500
LAST_CURSOR = """query($w: ID!) { events(workspaceId: $w, first: 100) { edges { cursor } } }"""


@pytest.fixture(scope="module")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('fanout') / 'concord.db'}"
    asyncio.run(migrate(url))
    return url


@pytest.fixture
async def server(sqlite_url: str, tmp_path: Path) -> AsyncIterator[LiveServer]:
    await empty_tables(sqlite_url)
    async with live_server(settings_for(sqlite_url, tmp_path)) as live_:
        yield live_


@asynccontextmanager
async def raw_socket(url: str, person: Person, **options: Any) -> AsyncIterator[ClientConnection]:
    async with connect(url, subprotocols=[PROTOCOL], **options) as ws:  # type: ignore[list-item]
        init = {"type": "connection_init", "payload": {"authorization": f"Bearer {person.token}"}}
        await ws.send(json.dumps(init))
        assert json.loads(await ws.recv())["type"] == "connection_ack"
        yield ws


async def subscribe(ws: ClientConnection, op_id: str, query: str, variables: Any) -> None:
    message = {
        "id": op_id,
        "type": "subscribe",
        "payload": {"query": query, "variables": variables},
    }
    await ws.send(json.dumps(message))


async def frames(ws: ClientConnection, count: int, timeout: float = 20.0) -> list[str]:
    """The next `count` text frames, as the exact strings the server sent."""
    out: list[str] = []
    async with asyncio.timeout(timeout):
        while len(out) < count:
            raw = await ws.recv()
            assert isinstance(raw, str)
            if json.loads(raw).get("type") in {"ping", "pong"}:
                continue
            out.append(raw)
    return out


async def setup_board(api: Api) -> tuple[Person, str, str, str]:
    alice = await api.register()
    ws = await api.workspace(alice)
    board = await api.board(alice, ws["id"])
    edges = (await api.ok(LAST_CURSOR, {"w": ws["id"]}, alice.token))["events"]["edges"]
    return alice, ws["id"], board["id"], edges[-1]["cursor"]


async def eventually(condition: Callable[[], bool], timeout: float) -> None:
    async with asyncio.timeout(timeout):
        while True:
            if condition():
                return
            await asyncio.sleep(0.05)


def members(live_: LiveServer) -> int:
    return group_hub(live_.api.app.state.services).member_count()


async def test_500_subscribers_get_their_selection_byte_equal_to_the_general_path(
    server: LiveServer, sqlite_url: str, tmp_path: Path
) -> None:
    api = server.api
    alice, ws, board, cursor = await setup_board(api)
    variants = [
        ("plain", {}),
        ("fragment", {}),
        ("variable", {"c": True}),
        ("variable", {"c": False}),
    ]
    events = 5
    # The general path: the same app with the fan-out off (Strawberry runs each
    # subscription), on the same database; one socket per variant, operation id "g".
    general = settings_for(sqlite_url, tmp_path / "general", ws_fanout=False)
    async with live_server(general) as plain_server, AsyncExitStack() as stack:
        reference = []
        for name, extra in variants:
            s = await stack.enter_async_context(raw_socket(plain_server.ws_url, alice))
            await subscribe(s, "g", SELECTIONS[name], {"w": ws, "a": cursor, **extra})
            reference.append(s)
        fast: list[tuple[int, str, ClientConnection]] = []
        for n in range(SUBSCRIBERS):
            index = n % len(variants)
            name, extra = variants[index]
            s = await stack.enter_async_context(raw_socket(server.ws_url, alice))
            op_id = "1" if n % 2 else f"op-{n}"  # shared frames, and spliced ones
            await subscribe(s, op_id, SELECTIONS[name], {"w": ws, "a": cursor, **extra})
            fast.append((index, op_id, s))
        await eventually(lambda: members(server) == SUBSCRIBERS, 20)
        assert members(plain_server) == 0  # the reference really is the general path

        card = await api.card(alice, board, "first")
        await api.card(alice, board, "second", description="two")
        await api.ok(
            UPDATE_CARD,
            {"i": {"id": card["id"], "expectedVersion": card["version"], "title": "renamed"}},
            alice.token,
        )
        await api.card(alice, board, "third")
        await api.card(alice, board, "fourth", status="DOING")

        expected = [await frames(s, events) for s in reference]
        received = await asyncio.gather(*(frames(s, events) for _, _, s in fast))

    for frames_ in expected:
        seqs = [json.loads(f)["payload"]["data"] for f in frames_]
        assert all(seqs), frames_
    for (index, op_id, _), got in zip(fast, received, strict=True):
        prefix = '{"id":' + json.dumps(op_id) + ","
        want = [f.replace('{"id":"g",', prefix, 1) for f in expected[index]]
        assert got == want
    plain = [json.loads(f)["payload"]["data"]["workspaceEvents"] for f in expected[0]]
    first = plain[0]["seq"]
    assert [e["seq"] for e in plain] == list(range(first, first + events))
    assert expected[2] != expected[3]  # the variable below the root changes the bytes


# --- slow consumers ----------------------------------------------------------------

QUEUE_SIZE = 8
BIG = "\U0001f600" * DESCRIPTION_MAX  # ~80 KB of UTF-8 JSON per frame (4 bytes each)
FRAME_BYTES = 4 * DESCRIPTION_MAX
BIG_SELECTION = """subscription($w: ID!, $a: String) {
  workspaceEvents(workspaceId: $w, after: $a) { seq cursor changes { newValue } } }"""
SMALL_SELECTION = """subscription($w: ID!, $a: String) {
  workspaceEvents(workspaceId: $w, after: $a) { seq occurredAt } }"""


def flood_size() -> int:
    """Events enough to fill the kernel's buffers for a client that stops reading, and
    then the server's allowance (see tests/server/test_live_faults.py)."""
    try:
        send_buffer_max = int(Path("/proc/sys/net/ipv4/tcp_wmem").read_text().split()[2])
    except (OSError, ValueError, IndexError):
        send_buffer_max = 4 * 1024 * 1024
    return (send_buffer_max + 1024 * 1024) // FRAME_BYTES + QUEUE_SIZE + 8


@asynccontextmanager
async def stalled(url: str, person: Person) -> AsyncIterator[ClientConnection]:
    """A client that stops reading: tiny receive buffer, one frame of its own buffer."""
    sock = stdlib_socket.socket()
    sock.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    parts = urlsplit(url)
    await asyncio.get_running_loop().sock_connect(sock, (parts.hostname, parts.port))
    async with raw_socket(url, person, sock=sock, compression=None, max_queue=1) as ws:
        yield ws


async def test_a_stalled_socket_is_cut_off_while_the_others_stay_prompt(
    sqlite_url: str, tmp_path: Path
) -> None:
    await empty_tables(sqlite_url)
    flood = flood_size()
    settings = settings_for(sqlite_url, tmp_path, subscriber_queue_size=QUEUE_SIZE)
    async with live_server(settings) as server, AsyncExitStack() as stack:
        api = server.api
        alice, ws, board, cursor = await setup_board(api)
        slow = await stack.enter_async_context(stalled(server.ws_url, alice))
        await subscribe(slow, "slow", BIG_SELECTION, {"w": ws, "a": cursor})
        others = []
        for n in range(20):
            s = await stack.enter_async_context(raw_socket(server.ws_url, alice))
            await subscribe(s, f"fast-{n}", SMALL_SELECTION, {"w": ws, "a": cursor})
            others.append(s)
        await eventually(lambda: members(server) == 21, 10)

        lags: list[float] = []

        async def read(s: ClientConnection) -> list[int]:
            seqs = []
            async with asyncio.timeout(60):
                while len(seqs) < flood:
                    message = json.loads(await s.recv())
                    if message["type"] != "next":
                        continue
                    event = message["payload"]["data"]["workspaceEvents"]
                    lags.append(time.time() - _epoch(event["occurredAt"]))
                    seqs.append(event["seq"])
            return seqs

        readers = [asyncio.create_task(read(s)) for s in others]
        for n in range(flood):
            await api.card(alice, board, f"card {n}", description=BIG)
        got = await asyncio.gather(*readers)
        assert members(server) == 20  # the stalled one is out of its group

        received_slow = []
        while True:
            message = json.loads(await asyncio.wait_for(slow.recv(), 10))
            if message["type"] == "next" and message["payload"].get("data"):
                received_slow.append(message["payload"]["data"]["workspaceEvents"]["seq"])
                continue
            break
        assert message["type"] == "next", message
        (error,) = message["payload"]["errors"]
        assert error["extensions"]["code"] == "SLOW_CONSUMER", error
        assert json.loads(await asyncio.wait_for(slow.recv(), 10)) == {
            "id": "slow",
            "type": "complete",
        }

    first = got[0][0]
    assert all(seqs == list(range(first, first + flood)) for seqs in got)
    assert received_slow == list(range(first, first + len(received_slow)))
    assert len(received_slow) < flood - QUEUE_SIZE
    # Commit to receive, for every event of every reader: the stalled socket held
    # nobody up (each event waits only for its own commit, render and write).
    assert max(lags) < 1.0, sorted(lags)[-5:]


def _epoch(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso).timestamp()


# --- cleanup -----------------------------------------------------------------------


@pytest.fixture(params=["memory", "redis"])
async def any_broker_server(
    request: pytest.FixtureRequest, sqlite_url: str, tmp_path: Path
) -> AsyncIterator[LiveServer]:
    """A served Concord on the in-process broker, or on Redis (as a fleet runs it)."""
    overrides: dict[str, object] = {}
    if request.param == "redis":
        overrides["redis_url"] = reachable_redis_url()
    await empty_tables(sqlite_url)
    async with live_server(settings_for(sqlite_url, tmp_path, **overrides)) as live_:
        yield live_


def open_sockets(port: int) -> int:
    """This process's TCP connections to or from `port` (client and server ends)."""
    return sum(
        1
        for c in psutil.Process().net_connections(kind="tcp")
        if c.status != psutil.CONN_LISTEN
        and (c.laddr.port == port or (c.raddr and c.raddr.port == port))
    )


async def test_2000_connect_subscribe_drop_cycles_leave_nothing_behind(
    any_broker_server: LiveServer,
) -> None:
    server = any_broker_server
    api = server.api
    services = api.app.state.services
    alice, ws, board, cursor = await setup_board(api)
    await api.card(alice, board, "backfilled")  # every subscriber from `cursor` gets it
    query = SELECTIONS["plain"]
    broker = services.broker
    channel = f"workspace:{ws}"

    on_redis = server.api.app.state.settings.redis_url is not None
    redis = SyncRedis.from_url(redis_url()) if on_redis else None

    def counts() -> dict[str, int]:
        return {
            # Redis itself: how many connections are subscribed to the workspace's channel.
            "redis subscriptions": redis.pubsub_numsub(channel)[0][1] if redis else 0,
            "tasks": len(asyncio.all_tasks()),
            "members": members(server),
            "groups": len(group_hub(services).groups),
            "broker subscriptions": broker.hub.subscriber_count(channel),
            "log watchers": len(live.shared_events(services)._watchers),
            "fast-path subscriptions": collector.live,
        }

    gc.collect()
    before = counts()
    sockets = open_sockets(server.port)

    async def sse_cycle(n: int) -> None:
        headers = {"accept": "text/event-stream", "authorization": f"Bearer {alice.token}"}
        body = {"query": query, "variables": {"w": ws, "a": cursor}}
        async with api.client.stream("POST", "/graphql", json=body, headers=headers) as response:
            assert response.status_code == 200
            if n % 10 == 4:
                return  # drop at once
            async for line in response.aiter_lines():
                if line.startswith("data: "):
                    event = json.loads(line.removeprefix("data: "))["data"]["workspaceEvents"]
                    assert event["type"] == "card.created"
                    return  # drop after the first event

    async def cycle(n: int) -> None:
        if n % 5 == 4:
            await sse_cycle(n)  # one in five over SSE (Strawberry's path, not the fan-out)
            return
        async with raw_socket(server.ws_url, alice) as s:
            await subscribe(s, "1", query, {"w": ws, "a": cursor})
            style = n % 4
            if style == 0:
                return  # drop at once: the subscription may still be starting
            (first,) = await frames(s, 1)
            assert json.loads(first)["payload"]["data"]["workspaceEvents"]["type"] == (
                "card.created"
            )
            if style == 1:
                await s.send(json.dumps({"id": "1", "type": "complete"}))
            elif style == 2:
                s.transport.abort()  # no close handshake: the TCP connection just ends

    gate = asyncio.Semaphore(50)

    async def gated(n: int) -> None:
        async with gate:
            try:
                await cycle(n)
            except (ConnectionError, ConnectionClosed):
                pass  # the aborted ones

    try:
        await asyncio.gather(*(gated(n) for n in range(2000)))
        with contextlib.suppress(TimeoutError):
            await eventually(lambda: counts() == before, 15)  # the server notices the drops
        assert counts() == before
        # Not more than before: the HTTP client's idle keep-alive connection may be gone.
        assert open_sockets(server.port) <= sockets
    finally:
        if redis is not None:
            redis.close()


# --- membership --------------------------------------------------------------------

REMOVE_MEMBER = """mutation($i: RemoveMemberInput!) { removeMember(input: $i) { __typename } }"""


async def test_a_removed_member_is_cut_off_and_cannot_subscribe_again(server: LiveServer) -> None:
    api = server.api
    alice, ws, _board, cursor = await setup_board(api)
    bob = await api.register()
    await api.add_member(alice, ws, bob, "VIEWER")
    query = SELECTIONS["plain"]
    async with raw_socket(server.ws_url, alice) as owner, raw_socket(server.ws_url, bob) as s:
        # The owner keeps the workspace's group running (and its memory of members).
        await subscribe(owner, "1", query, {"w": ws, "a": None})
        await subscribe(s, "1", query, {"w": ws, "a": None})
        await subscribe(s, "2", query, {"w": ws, "a": None})  # a second one, known member
        await eventually(lambda: members(server) == 3, 10)
        data = await api.ok(
            REMOVE_MEMBER, {"i": {"workspaceId": ws, "userId": bob.id}}, alice.token
        )
        assert data["removeMember"]["__typename"] == "DeletePayload", data
        got = [json.loads(f) for f in await frames(s, 6)]
        for op_id in ("1", "2"):
            mine = [m for m in got if m["id"] == op_id]
            assert mine[0]["payload"]["data"]["workspaceEvents"]["type"] == "member.removed"
            assert mine[1]["payload"]["errors"][0]["extensions"]["code"] == "NOT_FOUND"
            assert mine[2] == {"id": op_id, "type": "complete"}

        # Subscribing again, while the group that knew Bob as a member still runs.
        await subscribe(s, "3", query, {"w": ws, "a": cursor})
        (answer,) = [json.loads(f) for f in await frames(s, 1)]
        assert answer["payload"]["errors"][0]["extensions"]["code"] == "NOT_FOUND", answer
        assert members(server) == 1


async def test_under_a_plain_uvicorn_frames_go_through_asgi(
    sqlite_url: str, tmp_path: Path
) -> None:
    """Served without ConcordWebSocketProtocol (`uvicorn server.app:…` with its own
    WebSocket implementation), the fast path still delivers, through ASGI sends."""
    await empty_tables(sqlite_url)
    app = create_app(settings_for(sqlite_url, tmp_path))
    port = free_port()
    config = uvicorn.Config(app, port=port, log_config=None, ws="websockets-sansio")
    uvicorn_server = uvicorn.Server(config)
    task = asyncio.create_task(uvicorn_server.serve())
    try:
        await eventually(lambda: uvicorn_server.started, 10)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            api = Api(http, app)
            alice, ws, board, cursor = await setup_board(api)
            url = f"ws://127.0.0.1:{port}/graphql"
            async with raw_socket(url, alice) as s:
                await subscribe(s, "1", SELECTIONS["plain"], {"w": ws, "a": cursor})
                await api.card(alice, board, "one")
                await api.card(alice, board, "two")
                got = [json.loads(f) for f in await frames(s, 2)]
                assert group_hub(app.state.services).member_count() == 1
    finally:
        uvicorn_server.should_exit = True
        await task
    titles = [m["payload"]["data"]["workspaceEvents"]["changes"][0]["newValue"] for m in got]
    assert titles == ["one", "two"]
