"""workspaceEvents when things go wrong: expiring tokens, slow consumers, Redis going away.

Each test runs a real uvicorn server (in the test's event loop) on a scratch PostgreSQL
database of this module. The Redis test starts a redis-server of its own on a free port
and kills it by its process id (see services.md), never the shared one.
"""

from __future__ import annotations

import asyncio
import socket as stdlib_socket
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from websockets.asyncio.client import connect

from auth.tokens import decode_access_token, issue_access_token
from resolvers.live import DEGRADED_POLL_SECONDS, IDLE_POLL_SECONDS
from resolvers.validation import DESCRIPTION_MAX
from tests.api import Api, Person, migrate, settings_for
from tests.live import EVENTS, PROTOCOL, LiveServer, Socket, live_server, socket
from tests.services import free_port, scratch_postgres_database
from tests.subscriptions.helpers import RedisProcess

pytestmark = pytest.mark.postgres

TIMEOUT = 10.0
CREATE_CARD = """mutation($i: CreateCardInput!) { createCard(input: $i) {
  __typename ... on CardPayload { card { id title } } } }"""
LAST_CURSOR = """query($w: ID!) { events(workspaceId: $w, first: 100) {
  edges { cursor } pageInfo { hasNextPage } } }"""


@pytest.fixture(scope="module")
def postgres() -> Iterator[str]:
    """A scratch PostgreSQL database for this module, migrated."""
    with scratch_postgres_database() as url:
        asyncio.run(migrate(url))
        yield url


async def last_cursor(api: Api, person: Person, workspace_id: str) -> str:
    data = await api.ok(LAST_CURSOR, {"w": workspace_id}, person.token)
    assert not data["events"]["pageInfo"]["hasNextPage"]
    cursor: str = data["events"]["edges"][-1]["cursor"]
    return cursor


async def setup_board(api: Api) -> tuple[Person, str, str, str]:
    """A user, their workspace and board, and the cursor of the workspace's last event."""
    alice = await api.register()
    ws = await api.workspace(alice)
    board = await api.board(alice, ws["id"])
    return alice, ws["id"], board["id"], await last_cursor(api, alice, ws["id"])


async def subscribe_events(s: Socket, person: Person, workspace_id: str, after: str) -> None:
    assert (await s.init(person.token))["type"] == "connection_ack"
    await s.subscribe("events", EVENTS, {"w": workspace_id, "a": after})


async def create_card(api: Api, person: Person, board_id: str, title: str, **fields: Any) -> None:
    """createCard over HTTP; must answer 200 with a CardPayload."""
    response = await api.raw(
        CREATE_CARD, {"i": {"boardId": board_id, "title": title, **fields}}, person.token
    )
    assert response.status_code == 200, response.text
    assert response.json()["data"]["createCard"]["__typename"] == "CardPayload", response.text


async def take_events(s: Socket, count: int, timeout: float = TIMEOUT) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    for _ in range(count):
        events.append((await s.next_data("events", timeout))["workspaceEvents"])
    return events


def title(event: dict[str, Any]) -> Any:
    return next(c["newValue"] for c in event["changes"] if c["field"] == "title")


# --- token expiry --------------------------------------------------------------------


async def test_socket_is_closed_with_4403_when_its_token_expires(
    postgres: str, tmp_path: Path
) -> None:
    async with live_server(settings_for(postgres, tmp_path)) as live:
        alice, ws, board, cursor = await setup_board(live.api)
        config = live.api.app.state.services.tokens
        # Issued in the past, so that it expires in 1 to 2 s (`exp` has whole seconds).
        issued = datetime.now(UTC) - config.access_ttl + timedelta(seconds=2)
        token = issue_access_token(config, uuid.UUID(alice.id), now=issued)
        expires_at = decode_access_token(config, token).expires_at
        async with socket(live.ws_url) as s:
            await subscribe_events(s, Person(alice.id, alice.email, token, ""), ws, cursor)
            await create_card(live.api, alice, board, "before expiry")
            assert title((await take_events(s, 1))[0]) == "before expiry"
            code = await s.closed_with(timeout=5)
            closed_at = datetime.now(UTC)
    assert code == 4403
    assert expires_at <= closed_at < expires_at + timedelta(seconds=1), (expires_at, closed_at)


# --- slow consumers ------------------------------------------------------------------

QUEUE_SIZE = 8
# Each event carries a 20,000-character description of astral-plane characters, which
# the server's JSON (orjson, UTF-8) writes as 4 bytes each: ~80 KB per WebSocket frame.
BIG = "\U0001f600" * DESCRIPTION_MAX
FRAME_BYTES = 4 * DESCRIPTION_MAX


def flood_size() -> int:
    """Enough events to fill every buffer between the server and a client that stops
    reading, and then the server's queue: the kernel caps the server's send buffer at
    net.ipv4.tcp_wmem's maximum (the stalled client's receive buffer is pinned small);
    1 MiB more covers the transports' own buffers."""
    try:
        send_buffer_max = int(Path("/proc/sys/net/ipv4/tcp_wmem").read_text().split()[2])
    except (OSError, ValueError, IndexError):
        send_buffer_max = 4 * 1024 * 1024
    return (send_buffer_max + 1024 * 1024) // FRAME_BYTES + QUEUE_SIZE + 8


@asynccontextmanager
async def stalled_socket(url: str) -> AsyncIterator[Socket]:
    """A client that reads only when told to: its socket's receive buffer is tiny, it
    buffers at most one frame, and it asks for no compression (frames stay big)."""
    sock = stdlib_socket.socket()
    sock.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    try:
        parts = urlsplit(url)
        await asyncio.get_running_loop().sock_connect(sock, (parts.hostname, parts.port))
    except BaseException:
        sock.close()
        raise
    async with connect(
        url,
        sock=sock,
        subprotocols=[PROTOCOL],  # type: ignore[list-item]
        compression=None,
        max_queue=1,
    ) as connection:
        yield Socket(connection)


async def test_a_slow_consumer_is_cut_off_and_a_fast_one_gets_everything(
    postgres: str, tmp_path: Path
) -> None:
    flood = flood_size()
    settings = settings_for(postgres, tmp_path, subscriber_queue_size=QUEUE_SIZE)
    async with live_server(settings) as live:
        alice, ws, board, cursor = await setup_board(live.api)
        async with socket(live.ws_url) as fast, stalled_socket(live.ws_url) as slow:
            await subscribe_events(fast, alice, ws, cursor)
            await subscribe_events(slow, alice, ws, cursor)

            async def read_fast() -> list[dict[str, Any]]:
                return await take_events(fast, flood)

            reader = asyncio.create_task(read_fast())
            for n in range(flood):
                await create_card(live.api, alice, board, f"card {n}", description=BIG)
            received_fast = await reader

            # The slow one reads now: what the buffers held, then the reason it was cut off.
            received_slow: list[dict[str, Any]] = []
            while True:
                message = await slow.receive(TIMEOUT)
                if message["type"] == "next" and message["payload"].get("data"):
                    received_slow.append(message["payload"]["data"]["workspaceEvents"])
                    continue
                break
            assert message["type"] == "next", message
            (error,) = message["payload"]["errors"]
            assert error["extensions"]["code"] == "SLOW_CONSUMER", error
            assert "after" in error["message"], error
            assert "cursor" in error["message"], error
            assert (await slow.receive(TIMEOUT))["type"] == "complete"

            # Resuming with the last cursor it got delivers the rest, exactly once.
            resume_after = received_slow[-1]["cursor"] if received_slow else cursor
            async with socket(live.ws_url) as again:
                await subscribe_events(again, alice, ws, resume_after)
                rest = await take_events(again, flood - len(received_slow))

    first = received_fast[0]["seq"]
    assert [e["seq"] for e in received_fast] == list(range(first, first + flood))
    assert [title(e) for e in received_fast] == [f"card {n}" for n in range(flood)]
    assert len(received_slow) < flood - QUEUE_SIZE
    assert [e["seq"] for e in received_slow + rest] == list(range(first, first + flood))


# --- Redis going away ----------------------------------------------------------------


@pytest.fixture
async def own_redis(tmp_path: Path) -> AsyncIterator[RedisProcess]:
    """A redis-server of this test's own on a free port, killed by its pid afterwards."""
    server = RedisProcess(free_port(), tmp_path)
    try:
        await server.start()
        yield server
    finally:
        await server.stop()


async def wait_ready(live: LiveServer) -> None:
    """Until /readyz answers 200: the broker's pub/sub connection is up again."""
    async with asyncio.timeout(TIMEOUT):
        while True:
            if (await live.api.client.get("/readyz")).status_code == 200:
                return
            await asyncio.sleep(0.05)


async def test_events_survive_redis_going_down_during_writes(
    postgres: str, tmp_path: Path, own_redis: RedisProcess
) -> None:
    settings = settings_for(postgres, tmp_path, redis_url=own_redis.url)
    async with live_server(settings) as live:
        alice, ws, board, cursor = await setup_board(live.api)
        async with socket(live.ws_url) as s:
            await subscribe_events(s, alice, ws, cursor)
            for n in range(3):
                await create_card(live.api, alice, board, f"up {n}")
            received = await take_events(s, 3)

            await own_redis.stop()
            for n in range(5):  # committed, answered 200; the publish fails and is logged
                await create_card(live.api, alice, board, f"down {n}")
            await own_redis.start()  # the same port
            await wait_ready(live)
            for n in range(3):
                await create_card(live.api, alice, board, f"back {n}")

            received += await take_events(s, 8)
            with pytest.raises(TimeoutError):
                await s.receive(timeout=0.3)  # nothing twice

    first = received[0]["seq"]
    assert [e["seq"] for e in received] == list(range(first, first + 11))
    assert [title(e) for e in received] == [
        *(f"up {n}" for n in range(3)),
        *(f"down {n}" for n in range(5)),
        *(f"back {n}" for n in range(3)),
    ]


async def test_while_redis_is_down_events_arrive_by_polling_the_log(
    postgres: str, tmp_path: Path, own_redis: RedisProcess
) -> None:
    # resolvers/live.py: "while the broker is down, read the log instead of waiting for
    # messages", every DEGRADED_POLL_SECONDS (1 s). A subscriber idle when Redis dies
    # must get what is committed meanwhile without waiting for Redis to come back.
    settings = settings_for(postgres, tmp_path, redis_url=own_redis.url)
    async with live_server(settings) as live:
        alice, ws, board, cursor = await setup_board(live.api)
        async with socket(live.ws_url) as s:
            await subscribe_events(s, alice, ws, cursor)
            await create_card(live.api, alice, board, "up")
            await take_events(s, 1)
            await own_redis.stop()
            await create_card(live.api, alice, board, "down")
            try:
                (event,) = await take_events(s, 1, timeout=DEGRADED_POLL_SECONDS * 3)
            except TimeoutError:
                pytest.fail(
                    f"an event committed while Redis was down did not arrive within "
                    f"{DEGRADED_POLL_SECONDS * 3}s: a subscriber already waiting on the "
                    f"broker when it went down waits IDLE_POLL_SECONDS ({IDLE_POLL_SECONDS}s) "
                    "before it reads the log"
                )
            assert title(event) == "down"
