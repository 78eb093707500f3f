"""Two Concord processes on one PostgreSQL and one Redis: live updates cross processes.

The servers are real OS processes (`concord serve`), started once for the module on a
scratch PostgreSQL database migrated with `concord migrate`, both on the shared Redis.
Every test registers its own users and workspace, so the tests do not see each other.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api import Api, Person
from tests.live import EVENTS, Socket, socket
from tests.services import (
    free_port,
    reachable_redis_url,
    redis_url,
    scratch_postgres_database,
)

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

CONCORD = str(Path(sys.executable).with_name("concord"))
JWT_SECRET = "cluster-test-secret-that-is-long-enough-for-hs256-0123456789"
START_TIMEOUT = 60.0
TIMEOUT = 10.0

CREATE_CARD = """mutation($i: CreateCardInput!) { createCard(input: $i) {
  __typename ... on CardPayload { card { id title } } } }"""
REMOVE_MEMBER = """mutation($i: RemoveMemberInput!) { removeMember(input: $i) { __typename } }"""
LAST_CURSOR = """query($w: ID!) { events(workspaceId: $w, first: 100) {
  edges { cursor } pageInfo { hasNextPage } } }"""
PRESENCE = """subscription($b: ID!) { presence(boardId: $b) { boardId present { user { id } } } }"""


@dataclass
class ServerProcess:
    """One `concord serve` process and where it writes its log."""

    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/graphql"

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


def _concord_env(database_url: str, data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_READ_URL", "DEBUG"}}
    env.update(
        DATABASE_URL=database_url,
        REDIS_URL=redis_url(),
        JWT_SECRET=JWT_SECRET,
        CONCORD_DATA_DIR=str(data_dir),
        LOG_LEVEL="INFO",
    )
    return env


def _wait_ready(server: ServerProcess) -> None:
    """Poll /readyz until it answers 200 (database and broker reachable)."""
    deadline = time.monotonic() + START_TIMEOUT
    last = "no answer"
    with httpx.Client(base_url=server.url, timeout=2) as client:
        while True:
            if server.process.poll() is not None:
                pytest.fail(
                    f"concord serve exited with {server.process.returncode}:\n{server.output()}"
                )
            try:
                response = client.get("/readyz")
                if response.status_code == 200:
                    return
                last = f"{response.status_code} {response.text}"
            except httpx.TransportError as exc:
                last = repr(exc)
            if time.monotonic() > deadline:
                pytest.fail(
                    f"concord serve on port {server.port} not ready within {START_TIMEOUT}s "
                    f"(/readyz: {last}):\n{server.output()}"
                )
            time.sleep(0.05)


def _stop(server: ServerProcess) -> None:
    if server.process.poll() is None:
        server.process.terminate()
        try:
            server.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait()


@contextmanager
def concord_processes(
    count: int, database_url: str, directory: Path, **settings: str
) -> Iterator[list[ServerProcess]]:
    """`count` API processes on the database (migrated first) and the shared Redis;
    `settings` are more environment variables for them (SHUTDOWN_GRACE_SECONDS="5")."""
    env = {**_concord_env(database_url, directory), **settings}
    servers: list[ServerProcess] = []
    try:
        # A PostgreSQL server is not migrated on start, so the processes can start while
        # `concord migrate` runs; they are used only once it is done.
        for n in range(count):
            port = free_port()
            log = directory / f"server-{n}.log"
            with log.open("wb") as out:
                process = subprocess.Popen(
                    [CONCORD, "serve", "--port", str(port)],
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            servers.append(ServerProcess(process, port, log))
        migrate = subprocess.run(
            [CONCORD, "migrate"], env=env, capture_output=True, text=True, timeout=START_TIMEOUT
        )
        assert migrate.returncode == 0, migrate.stdout + migrate.stderr
        for server in servers:
            _wait_ready(server)
        yield servers
    finally:
        for server in servers:
            _stop(server)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[ServerProcess]]:
    reachable_redis_url()
    with (
        scratch_postgres_database() as database_url,
        concord_processes(2, database_url, tmp_path_factory.mktemp("cluster")) as servers,
    ):
        yield servers


@asynccontextmanager
async def apis(servers: list[ServerProcess]) -> AsyncIterator[list[Api]]:
    """An HTTP GraphQL client per server."""
    async with AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(httpx.AsyncClient(base_url=s.url, timeout=30))
            for s in servers
        ]
        yield [Api(client, None) for client in clients]


async def last_cursor(api: Api, person: Person, workspace_id: str) -> str:
    data = await api.ok(LAST_CURSOR, {"w": workspace_id}, person.token)
    assert not data["events"]["pageInfo"]["hasNextPage"]
    cursor: str = data["events"]["edges"][-1]["cursor"]
    return cursor


async def subscribe_events(s: Socket, person: Person, workspace_id: str, after: str) -> None:
    assert (await s.init(person.token))["type"] == "connection_ack"
    await s.subscribe("events", EVENTS, {"w": workspace_id, "a": after})


async def next_message(s: Socket, timeout: float = TIMEOUT) -> dict[str, Any]:
    """The next graphql-transport-ws message other than a ping."""
    while True:
        message = await s.receive(timeout)
        if message.get("type") != "ping":
            return message
        await s.send({"type": "pong"})


async def take_events(s: Socket, count: int) -> list[dict[str, Any]]:
    """The next `count` events on the "events" operation; fails on anything else."""
    events: list[dict[str, Any]] = []
    for _ in range(count):
        events.append((await s.next_data("events", TIMEOUT))["workspaceEvents"])
    return events


def title(event: dict[str, Any]) -> Any:
    return next(c["newValue"] for c in event["changes"] if c["field"] == "title")


async def test_writes_on_one_process_reach_a_subscriber_on_another(
    cluster: list[ServerProcess],
) -> None:
    _a, b = cluster
    async with apis(cluster) as (api_a, api_b):
        alice = await api_a.register()
        ws = await api_a.workspace(alice)
        board = await api_a.board(alice, ws["id"])
        cursor = await last_cursor(api_b, alice, ws["id"])
        async with socket(b.ws_url) as s:
            await subscribe_events(s, alice, ws["id"], cursor)
            # Once the first write is delivered on B, B's subscription is live.
            await api_a.card(alice, board["id"], "sentinel")
            (sentinel,) = await take_events(s, 1)
            assert title(sentinel) == "sentinel"

            async def writer(w: int) -> None:
                for n in range(10):
                    data = await api_a.ok(
                        CREATE_CARD,
                        {"i": {"boardId": board["id"], "title": f"w{w}-{n}"}},
                        alice.token,
                    )
                    assert data["createCard"]["__typename"] == "CardPayload", data

            await asyncio.gather(*(writer(w) for w in range(5)))
            received = await take_events(s, 50)
            with pytest.raises(TimeoutError):
                await s.receive(timeout=0.3)  # nothing twice, nothing extra

    first = sentinel["seq"] + 1
    assert [e["seq"] for e in received] == list(range(first, first + 50))
    titles = [title(e) for e in received]
    assert sorted(titles) == sorted(f"w{w}-{n}" for w in range(5) for n in range(10))
    for w in range(5):  # each writer's cards in the order it wrote them
        assert [t for t in titles if t.startswith(f"w{w}-")] == [f"w{w}-{n}" for n in range(10)]


async def test_a_removed_member_stops_receiving_and_the_others_go_on(
    cluster: list[ServerProcess],
) -> None:
    a, b = cluster
    async with apis(cluster) as (api_a, _api_b):
        alice, bob, carol = [await api_a.register() for _ in range(3)]
        ws = await api_a.workspace(alice)
        board = await api_a.board(alice, ws["id"])
        await api_a.add_member(alice, ws["id"], bob, "EDITOR")
        await api_a.add_member(alice, ws["id"], carol, "VIEWER")
        cursor = await last_cursor(api_a, alice, ws["id"])
        async with socket(a.ws_url) as sa, socket(b.ws_url) as sb, socket(b.ws_url) as sc:
            for s, person in ((sa, alice), (sb, bob), (sc, carol)):
                await subscribe_events(s, person, ws["id"], cursor)
            await api_a.card(alice, board["id"], "before")
            for s in (sa, sb, sc):
                assert title((await take_events(s, 1))[0]) == "before"

            data = await api_a.ok(
                REMOVE_MEMBER, {"i": {"workspaceId": ws["id"], "userId": bob.id}}, alice.token
            )
            assert data["removeMember"]["__typename"] == "DeletePayload", data
            await api_a.card(alice, board["id"], "after")

            # Bob: at most the event that removed him, then an error, then nothing.
            message = await next_message(sb)
            if message["type"] == "next" and message["payload"].get("data"):
                assert message["payload"]["data"]["workspaceEvents"]["type"] == "member.removed"
                message = await next_message(sb)
            errors = (
                message["payload"] if message["type"] == "error" else message["payload"]["errors"]
            )
            assert errors[0]["extensions"]["code"] == "NOT_FOUND", message
            if message["type"] == "next":
                assert (await next_message(sb))["type"] == "complete"

            # Alice and Carol: the removal, then the next card.
            for s in (sa, sc):
                removed, after = await take_events(s, 2)
                assert removed["type"] == "member.removed"
                assert title(after) == "after"
            with pytest.raises(TimeoutError):
                await sb.receive(timeout=0.3)

            # Subscribing again is refused like for any non-member.
            await sb.subscribe("again", EVENTS, {"w": ws["id"], "a": cursor})
            message = await next_message(sb)
            errors = (
                message["payload"] if message["type"] == "error" else message["payload"]["errors"]
            )
            assert errors[0]["extensions"]["code"] == "NOT_FOUND", message


def present(data: dict[str, Any]) -> set[str]:
    return {entry["user"]["id"] for entry in data["presence"]["present"]}


async def until(s: Socket, op_id: str, condition: Callable[[set[str]], bool]) -> set[str]:
    """Presence values of `op_id` until one satisfies `condition` (repeats are allowed)."""
    seen: list[set[str]] = []
    try:
        async with asyncio.timeout(TIMEOUT):
            while True:
                viewers = present(await s.next_data(op_id, TIMEOUT))
                seen.append(viewers)
                if condition(viewers):
                    return viewers
    except TimeoutError:
        raise AssertionError(f"no presence value as expected within {TIMEOUT}s: {seen}") from None


async def test_presence_across_processes(cluster: list[ServerProcess]) -> None:
    a, b = cluster
    async with apis(cluster) as (api_a, _api_b):
        alice, bob = await api_a.register(), await api_a.register()
        ws = await api_a.workspace(alice)
        board = await api_a.board(alice, ws["id"])
        await api_a.add_member(alice, ws["id"], bob, "VIEWER")
        both = {alice.id, bob.id}
        async with socket(a.ws_url) as sa:
            assert (await sa.init(alice.token))["type"] == "connection_ack"
            await sa.subscribe("p", PRESENCE, {"b": board["id"]})
            assert await until(sa, "p", lambda v: alice.id in v) == {alice.id}
            async with socket(b.ws_url) as sb:
                assert (await sb.init(bob.token))["type"] == "connection_ack"
                await sb.subscribe("p", PRESENCE, {"b": board["id"]})
                # Each sees the other arrive.
                assert await until(sb, "p", lambda v: v == both) == both
                assert await until(sa, "p", lambda v: v == both) == both
            # Bob's socket closed (process B): Alice, on A, sees him leave.
            assert await until(sa, "p", lambda v: bob.id not in v) == {alice.id}

        async with socket(b.ws_url) as sb:
            assert (await sb.init(bob.token))["type"] == "connection_ack"
            await sb.subscribe("p", PRESENCE, {"b": board["id"]})
            assert await until(sb, "p", lambda v: v == {bob.id}) == {bob.id}
            async with socket(a.ws_url) as sa:
                assert (await sa.init(alice.token))["type"] == "connection_ack"
                await sa.subscribe("p", PRESENCE, {"b": board["id"]})
                assert await until(sb, "p", lambda v: v == both) == both
            # Alice's socket closed (process A): Bob, on B, sees her leave.
            assert await until(sb, "p", lambda v: alice.id not in v) == {bob.id}


LOGOUT = """mutation($t: String!) { logout(refreshToken: $t) { __typename } }"""


async def test_logout_on_one_process_signs_the_login_out_on_the_other(
    cluster: list[ServerProcess],
) -> None:
    _a, b = cluster
    async with apis(cluster) as (api_a, api_b):
        alice = await api_a.register()
        ws = await api_a.workspace(alice)
        cursor = await last_cursor(api_b, alice, ws["id"])
        async with socket(b.ws_url) as s:
            await subscribe_events(s, alice, ws["id"], cursor)
            await api_b.board(alice, ws["id"])  # B's subscription is live once this arrives
            assert len(await take_events(s, 1)) == 1

            started = time.monotonic()
            out = await api_a.ok(LOGOUT, {"t": alice.refresh_token}, alice.token)
            assert out["logout"]["__typename"] == "LogoutPayload"
            # The next request to B already refuses the token; B closes the socket itself.
            refused = await api_b.raw("{ me { id } }", token=alice.token)
            assert refused.status_code == 401
            assert refused.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
            assert await s.closed_with(timeout=TIMEOUT) == 4403
            assert time.monotonic() - started <= 3.0
