"""Stopping a Concord process while clients are subscribed: they resume on another one.

Real `concord serve` processes on a scratch PostgreSQL database and the shared Redis
(tests/server/test_live_cluster.py starts them). SIGTERM is the graceful stop: in-flight
mutations finish, WebSockets close with 1001, SSE streams end cleanly, the process exits 0
within SHUTDOWN_GRACE_SECONDS. SIGKILL is the crash: sockets just drop. Either way a client
reconnecting to the other process with its last cursor gets every event exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from server.shutdown import GOING_AWAY, SHUTDOWN_REASON
from tests.api import Api, Person, migrate, settings_for
from tests.live import EVENTS, PROTOCOL, live_server
from tests.server.test_live_cluster import (
    CREATE_CARD,
    ServerProcess,
    concord_processes,
    last_cursor,
)
from tests.services import reachable_redis_url, scratch_postgres_database

PRESENCE = """subscription($b: ID!) { presence(boardId: $b) { present { user { id } } } }"""
GRACE_SECONDS = 10  # SHUTDOWN_GRACE_SECONDS, the default
TIMEOUT = 30.0
EVENT_LOG = """query($w: ID!, $a: String) { events(workspaceId: $w, after: $a, first: 100) {
  edges { node { seq type changes { field newValue } } } pageInfo { hasNextPage endCursor } } }"""


@pytest.fixture
def two_processes(tmp_path: Path) -> Iterator[list[ServerProcess]]:
    """Two fresh `concord serve` processes (each test stops one of them)."""
    reachable_redis_url()
    with (
        scratch_postgres_database() as database_url,
        concord_processes(2, database_url, tmp_path) as servers,
    ):
        yield servers


def title(event: dict[str, Any]) -> Any:
    return next((c["newValue"] for c in event["changes"] if c["field"] == "title"), None)


@dataclass
class Subscriber:
    """One client of `workspaceEvents`: on the first process, then resumed on the second."""

    events: list[dict[str, Any]] = field(default_factory=list)
    close_code: int | None = None
    close_reason: str | None = None
    clean_end: bool | None = None  # SSE: the body ended without an error
    completed: bool = False  # SSE: a `complete` came (it must not: the operation goes on)
    live: asyncio.Event = field(default_factory=asyncio.Event)
    resumed: asyncio.Event = field(default_factory=asyncio.Event)

    def seqs(self) -> list[int]:
        return [e["seq"] for e in self.events]

    def receive(self, event: dict[str, Any], sentinel: str) -> None:
        self.events.append(event)
        if title(event) == sentinel:
            self.live.set()


async def _ws_messages(connection: ClientConnection) -> AsyncIterator[dict[str, Any]]:
    """The socket's messages other than pings (answered); ends when the socket closes."""
    with contextlib.suppress(ConnectionClosed):
        async for raw in connection:
            message: dict[str, Any] = json.loads(raw)
            if message.get("type") == "ping":
                await connection.send(json.dumps({"type": "pong"}))
            elif message.get("type") != "pong":
                yield message


async def _ws_session(
    sub: Subscriber, url: str, person: Person, workspace_id: str, after: str, sentinel: str
) -> ClientConnection:
    """Subscribe on `url` from `after`; collect events until the socket closes."""
    async with connect(url, subprotocols=[PROTOCOL], open_timeout=TIMEOUT) as ws:  # type: ignore[list-item]
        init = {"authorization": f"Bearer {person.token}"}
        await ws.send(json.dumps({"type": "connection_init", "payload": init}))
        variables = {"w": workspace_id, "a": after}
        subscribe = {"query": EVENTS, "variables": variables}
        acked = False
        async for message in _ws_messages(ws):
            if message["type"] == "connection_ack":
                acked = True
                await ws.send(json.dumps({"id": "e", "type": "subscribe", "payload": subscribe}))
                continue
            assert acked, message
            assert message["type"] == "next", message
            assert "errors" not in message["payload"], message
            sub.receive(message["payload"]["data"]["workspaceEvents"], sentinel)
        return ws


async def ws_subscriber(
    sub: Subscriber,
    first: ServerProcess,
    second: ServerProcess,
    person: Person,
    workspace_id: str,
    cursor: str,
    sentinel: str,
) -> None:
    """A graphql-transport-ws client that, when its server goes, resumes on the other."""
    try:
        ws = await _ws_session(sub, first.ws_url, person, workspace_id, cursor, sentinel)
    except OSError:
        ws = None  # the connection itself was lost (SIGKILL mid-handshake)
    if ws is not None:
        sub.close_code = ws.close_code
        sub.close_reason = ws.close_reason
    after = sub.events[-1]["cursor"] if sub.events else cursor
    sub.resumed.set()
    await _ws_session(sub, second.ws_url, person, workspace_id, after, sentinel)


async def _sse_session(
    sub: Subscriber, url: str, person: Person, workspace_id: str, after: str, sentinel: str
) -> None:
    """One SSE stream of workspaceEvents from `after` (as Last-Event-ID when resuming)."""
    headers = {"accept": "text/event-stream", "authorization": f"Bearer {person.token}"}
    if sub.events:
        headers["last-event-id"] = after
    body = {"query": EVENTS, "variables": {"w": workspace_id, "a": after}}
    async with (
        httpx.AsyncClient(base_url=url, timeout=httpx.Timeout(TIMEOUT, read=None)) as client,
        client.stream("POST", "/graphql", json=body, headers=headers) as response,
    ):
        assert response.status_code == 200
        fields: dict[str, str] = {}
        async for line in response.aiter_lines():
            if line.startswith(":"):
                continue
            if line:
                name, _, value = line.partition(":")
                fields[name] = value.removeprefix(" ")
                continue
            if fields.get("event") == "complete":
                sub.completed = True
            elif fields.get("event") == "next":
                payload = json.loads(fields["data"])
                assert "errors" not in payload, payload
                event = payload["data"]["workspaceEvents"]
                assert fields.get("id") == event["cursor"], fields
                sub.receive(event, sentinel)
            fields = {}


async def sse_subscriber(
    sub: Subscriber,
    first: ServerProcess,
    second: ServerProcess,
    person: Person,
    workspace_id: str,
    cursor: str,
    sentinel: str,
) -> None:
    """An SSE client that, when its stream ends, reconnects to the other server."""
    try:
        await _sse_session(sub, first.url, person, workspace_id, cursor, sentinel)
        sub.clean_end = True
    except httpx.HTTPError:
        sub.clean_end = False
    after = sub.events[-1]["cursor"] if sub.events else cursor
    sub.resumed.set()
    await _sse_session(sub, second.url, person, workspace_id, after, sentinel)


async def event_log(
    api: Api, person: Person, workspace_id: str, after: str
) -> list[dict[str, Any]]:
    """Every event of the workspace after `after`, read from the database."""
    events: list[dict[str, Any]] = []
    cursor: str | None = after
    while True:
        data = await api.ok(EVENT_LOG, {"w": workspace_id, "a": cursor}, person.token)
        page = data["events"]
        events += [edge["node"] for edge in page["edges"]]
        if not page["pageInfo"]["hasNextPage"]:
            return events
        cursor = page["pageInfo"]["endCursor"]


async def wait_for(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        await asyncio.sleep(0.05)


async def wait_exit(process: subprocess.Popen[bytes], timeout: float) -> int | None:
    """The process's exit code, or None when it still runs after `timeout`."""
    with contextlib.suppress(subprocess.TimeoutExpired):
        await asyncio.to_thread(process.wait, timeout)
    return process.poll()


@dataclass
class Burst:
    """Mutations through one server until it stops answering: what it confirmed."""

    api: Api
    person: Person
    board_id: str
    confirmed: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    answers_other_than_200: list[str] = field(default_factory=list)

    async def writer(self, w: int, count: int) -> None:
        for n in range(count):
            name = f"w{w}-{n}"
            try:
                response = await self.api.raw(
                    CREATE_CARD, {"i": {"boardId": self.board_id, "title": name}}, self.person.token
                )
            except httpx.TransportError:
                self.refused.append(name)  # the server is gone: this writer stops
                return
            if response.status_code != 200:
                self.answers_other_than_200.append(f"{name}: {response.status_code}")
                return
            data = response.json()["data"]
            assert data["createCard"]["__typename"] == "CardPayload", data
            self.confirmed.append(name)


def assert_resumed_exactly(subs: list[Subscriber], log: list[dict[str, Any]]) -> None:
    expected = [e["seq"] for e in log]
    for n, sub in enumerate(subs):
        got = sub.seqs()
        assert got == expected, (
            f"subscriber {n}: missing {sorted(set(expected) - set(got))[:10]}, "
            f"repeated {sorted({s for s in got if got.count(s) > 1})[:10]}, "
            f"unexpected {sorted(set(got) - set(expected))[:10]}"
        )


@asynccontextmanager
async def running(tasks: list[asyncio.Task[None]]) -> AsyncIterator[None]:
    """Cancel the subscriber tasks at the end; a task that failed fails the test."""
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
            raise result


WS_SUBSCRIBERS = 50
SSE_SUBSCRIBERS = 5
WRITERS = 5
PER_WRITER = 60


@pytest.mark.postgres
@pytest.mark.redis
async def test_sigterm_mid_burst_drains_and_every_subscriber_resumes_on_the_other_process(
    two_processes: list[ServerProcess],
) -> None:
    a, b = two_processes
    async with (
        httpx.AsyncClient(base_url=a.url, timeout=TIMEOUT) as http_a,
        httpx.AsyncClient(base_url=b.url, timeout=TIMEOUT) as http_b,
    ):
        api_a, api_b = Api(http_a, None), Api(http_b, None)
        alice = await api_b.register()
        ws = (await api_b.workspace(alice))["id"]
        board = (await api_b.board(alice, ws))["id"]
        cursor = await last_cursor(api_b, alice, ws)

        ws_subs = [Subscriber() for _ in range(WS_SUBSCRIBERS)]
        sse_subs = [Subscriber() for _ in range(SSE_SUBSCRIBERS)]
        tasks = [
            asyncio.create_task(ws_subscriber(s, a, b, alice, ws, cursor, "sentinel"))
            for s in ws_subs
        ] + [
            asyncio.create_task(sse_subscriber(s, a, b, alice, ws, cursor, "sentinel"))
            for s in sse_subs
        ]
        subs = ws_subs + sse_subs
        async with running(tasks):
            await api_b.card(alice, board, "sentinel")  # every subscription on A is live
            await wait_for(
                lambda: all(s.live.is_set() for s in subs), TIMEOUT, "all subscribed on A"
            )

            burst = Burst(api_a, alice, board)
            writers = [asyncio.create_task(burst.writer(w, PER_WRITER)) for w in range(WRITERS)]
            await wait_for(lambda: len(burst.confirmed) >= 25, TIMEOUT, "25 mutations on A")
            a.process.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            code = await wait_exit(a.process, GRACE_SECONDS + 20)
            took = time.monotonic() - signalled
            await asyncio.gather(*writers)

            assert code == 0, a.output()
            assert took < GRACE_SECONDS + 5, f"A took {took:.1f}s to exit:\n{a.output()}"
            assert burst.answers_other_than_200 == []
            assert burst.refused, "the burst ended before A stopped: not mid-burst"

            log = await event_log(api_b, alice, ws, cursor)
            logged = {title(e) for e in log if e["type"] == "card.created"}
            assert set(burst.confirmed) <= logged, set(burst.confirmed) - logged
            last = log[-1]["seq"]
            await wait_for(
                lambda: all(s.events and s.events[-1]["seq"] >= last for s in subs),
                TIMEOUT,
                "every subscriber resumed on B up to the last event",
            )
            await asyncio.sleep(0.5)  # anything sent twice would arrive meanwhile

    for sub in ws_subs:
        assert sub.resumed.is_set()
        assert (sub.close_code, sub.close_reason) == (GOING_AWAY, SHUTDOWN_REASON)
    for sub in sse_subs:
        assert sub.resumed.is_set()
        assert sub.clean_end is True, "an SSE stream was cut off instead of ended"
        assert not sub.completed, "an SSE stream said `complete` though the operation goes on"
    assert_resumed_exactly(subs, log)


KILLED_SUBSCRIBERS = 200


@pytest.mark.postgres
@pytest.mark.redis
async def test_sigkill_of_a_process_holding_200_subscribers_loses_nothing(
    two_processes: list[ServerProcess],
) -> None:
    a, b = two_processes
    async with httpx.AsyncClient(base_url=b.url, timeout=TIMEOUT) as http_b:
        api_b = Api(http_b, None)
        alice = await api_b.register()
        ws = (await api_b.workspace(alice))["id"]
        board = (await api_b.board(alice, ws))["id"]
        cursor = await last_cursor(api_b, alice, ws)

        subs = [Subscriber() for _ in range(KILLED_SUBSCRIBERS)]
        tasks: list[asyncio.Task[None]] = []
        async with running(tasks):
            # In waves, so that the connection handshakes do not all queue at once.
            for wave in range(0, KILLED_SUBSCRIBERS, 50):
                tasks += [
                    asyncio.create_task(ws_subscriber(s, a, b, alice, ws, cursor, "sentinel"))
                    for s in subs[wave : wave + 50]
                ]
                await asyncio.sleep(0.2)
            await api_b.card(alice, board, "sentinel")
            await wait_for(
                lambda: all(s.live.is_set() for s in subs), TIMEOUT, "all subscribed on A"
            )

            # Writes through B go on while A dies: some events reach A's subscribers
            # live, the rest they read from the log when they resume on B.
            burst = Burst(api_b, alice, board)
            writers = [asyncio.create_task(burst.writer(w, 20)) for w in range(WRITERS)]
            await wait_for(lambda: len(burst.confirmed) >= 25, TIMEOUT, "25 mutations on B")
            a.process.send_signal(signal.SIGKILL)
            await asyncio.gather(*writers)
            assert len(burst.confirmed) == WRITERS * 20, burst.refused

            log = await event_log(api_b, alice, ws, cursor)
            last = log[-1]["seq"]
            await wait_for(
                lambda: all(s.events and s.events[-1]["seq"] >= last for s in subs),
                TIMEOUT,
                "every subscriber resumed on B up to the last event",
            )
            await asyncio.sleep(0.5)

    assert a.process.wait(timeout=TIMEOUT) == -signal.SIGKILL
    assert all(s.resumed.is_set() for s in subs)
    # No close frame from a killed process: the connections just ended.
    assert {s.close_code for s in subs} <= {1006, None}
    assert_resumed_exactly(subs, log)


async def _first(connection: ClientConnection, kind: str) -> dict[str, Any]:
    """The next message of type `kind` (keep-alives and pings skipped)."""
    async with asyncio.timeout(TIMEOUT):
        while True:
            message: dict[str, Any] = json.loads(await connection.recv())
            if message["type"] == kind:
                return message


async def _closed(connection: ClientConnection) -> tuple[int | None, str | None]:
    with contextlib.suppress(ConnectionClosed):
        async with asyncio.timeout(TIMEOUT):
            async for _ in connection:
                pass
    return connection.close_code, connection.close_reason


async def test_stopping_closes_every_kind_of_socket_with_1001_and_ends_event_streams(
    tmp_path: Path,
) -> None:
    """In one process: the fan-out path, Strawberry's path, the legacy protocol, a socket
    not yet initialised, and an SSE stream, open when the server is told to stop."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'concord.db'}"
    await migrate(url)
    async with (
        live_server(settings_for(url, tmp_path)) as live,
        contextlib.AsyncExitStack() as stack,
    ):
        assert live.server is not None
        api = live.api
        alice = await api.register()
        ws = (await api.workspace(alice))["id"]
        board = (await api.board(alice, ws))["id"]
        init = {"authorization": f"Bearer {alice.token}"}

        async def opened(protocol: str) -> ClientConnection:
            connection = await stack.enter_async_context(
                connect(live.ws_url, subprotocols=[protocol])  # type: ignore[list-item]
            )
            await connection.send(json.dumps({"type": "connection_init", "payload": init}))
            await _first(connection, "connection_ack")
            return connection

        fast = await opened(PROTOCOL)
        payload = {"query": EVENTS, "variables": {"w": ws}}
        await fast.send(json.dumps({"id": "e", "type": "subscribe", "payload": payload}))
        general = await opened(PROTOCOL)
        payload = {"query": PRESENCE, "variables": {"b": board}}
        await general.send(json.dumps({"id": "p", "type": "subscribe", "payload": payload}))
        await _first(general, "next")
        legacy = await opened("graphql-ws")
        await legacy.send(json.dumps({"id": "p", "type": "start", "payload": payload}))
        await _first(legacy, "data")
        uninitialised = await stack.enter_async_context(
            connect(live.ws_url, subprotocols=[PROTOCOL])  # type: ignore[list-item]
        )
        sse = await stack.enter_async_context(
            api.client.stream(
                "POST",
                "/graphql",
                json={"query": EVENTS, "variables": {"w": ws}},
                headers={"accept": "text/event-stream", "authorization": f"Bearer {alice.token}"},
            )
        )
        await api.card(alice, board, "live")
        await _first(fast, "next")  # the fan-out subscription is live

        live.server.should_exit = True  # what uvicorn does on SIGTERM
        async with asyncio.timeout(TIMEOUT):
            lines = [line async for line in sse.aiter_lines()]  # ends, without an error
        closes = {
            name: await _closed(connection)
            for name, connection in [
                ("fan-out", fast),
                ("strawberry", general),
                ("legacy", legacy),
                ("uninitialised", uninitialised),
            ]
        }
    assert closes == dict.fromkeys(closes, (GOING_AWAY, SHUTDOWN_REASON)), closes
    assert any(line.startswith("event: next") for line in lines), lines  # the card
    assert "event: complete" not in lines, lines
    assert lines[-2:] == [": shutting down: reconnect with Last-Event-ID to resume", ""], lines
