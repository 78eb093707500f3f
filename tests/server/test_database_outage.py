"""PostgreSQL going away under a stream of writes: fail fast, recover, lose nothing.

Each test starts a PostgreSQL server of its own (tests/postgres_process.py) and serves the
app with uvicorn against it, with short timeouts and a breaker that opens after 3
failures and tries again after 1 s. Writers create cards without pause while the server
is killed (a crash: SIGKILL by process id) or frozen (SIGSTOP), then brought back on the
same port and data directory. What a client must see:

* while the database is down, every request answers 503 with SERVICE_UNAVAILABLE (never
  INTERNAL_SERVER_ERROR, never a hang): mutations, reads on the compiled and the general
  path, a caller the process has not seen yet, and WebSocket operations; once the breaker
  is open, at once; /readyz says not ready, and concord_breaker_state{name="database"} is 1;
* afterwards the same process serves again, without a restart;
* every write that answered with a CardPayload is in the database.
"""

from __future__ import annotations

import asyncio
import logging
import re
import statistics
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from auth.tokens import issue_access_token
from server.settings import Settings
from tests.api import Api, Person, migrate, settings_for
from tests.live import EVENTS, LiveServer, Socket, live_server, socket
from tests.postgres_process import PostgresProcess

pytestmark = pytest.mark.postgres
log = logging.getLogger(__name__)

WRITERS = 3
DOWN_SECONDS = 10.0
# Requests never wait on a dead database longer than this (stopped: the connection is
# refused at once); a frozen one holds a request for its timeouts (1 s each here).
STOPPED_BOUND = 2.0
FROZEN_BOUND = 5.0
# Once the breaker is open, a request is answered without touching the database.
FAST = 0.1
CREATE_CARD = """mutation($i: CreateCardInput!) { createCard(input: $i) {
  __typename ... on CardPayload { card { id title } } } }"""
BOARD = "query($b: ID!) { board(id: $b) { name } }"


@dataclass
class Outcome:
    title: str
    phase: str
    status: int
    kind: str  # the payload's __typename, or the first error's code
    seconds: float
    # The phase when the answer came: a request sent while the database was down may be
    # answered (correctly, with its payload) after it came back.
    ended: str = ""


@pytest.fixture
async def own_postgres() -> AsyncIterator[PostgresProcess]:
    server = PostgresProcess()
    try:
        await server.start()
        await migrate(server.url)
        yield server
    finally:
        await server.remove()


def outage_settings(server: PostgresProcess, tmp_path: Path) -> Settings:
    return settings_for(
        server.url,
        tmp_path,
        database_connect_timeout_seconds=1.0,
        database_statement_timeout_seconds=1.0,
        database_pool_timeout_seconds=1.0,
        breaker_failure_threshold=3,
        breaker_recovery_seconds=1.0,
    )


class Writers:
    """`WRITERS` tasks creating cards one after the other until stopped."""

    def __init__(self, api: Api, person: Person, board_id: str) -> None:
        self.api, self.person, self.board_id = api, person, board_id
        self.phase = "up"
        self.outcomes: list[Outcome] = []
        self._stop = asyncio.Event()
        self._succeeded: dict[str, asyncio.Event] = {}
        self._tasks = [asyncio.create_task(self._write(w)) for w in range(WRITERS)]

    async def _write(self, writer: int) -> None:
        loop = asyncio.get_running_loop()
        n = 0
        while not self._stop.is_set():
            title, phase = f"writer {writer} card {n}", self.phase
            n += 1
            started = loop.time()
            response = await self.api.raw(
                CREATE_CARD, {"i": {"boardId": self.board_id, "title": title}}, self.person.token
            )
            body = response.json()
            payload = (body.get("data") or {}).get("createCard")
            kind = payload["__typename"] if payload else body["errors"][0]["extensions"]["code"]
            self.outcomes.append(
                Outcome(title, phase, response.status_code, kind, loop.time() - started, self.phase)
            )
            if kind == "CardPayload" and phase in self._succeeded:
                self._succeeded[phase].set()
            await asyncio.sleep(0.01)

    def during(self, phase: str) -> list[Outcome]:
        """The requests sent and answered in `phase`."""
        return [o for o in self.outcomes if o.phase == phase and o.ended == phase]

    async def wait_for_success(self, phase: str, timeout: float) -> None:
        self._succeeded[phase] = succeeded = asyncio.Event()
        async with asyncio.timeout(timeout):
            await succeeded.wait()

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)


async def setup(live: LiveServer) -> tuple[Person, str, str]:
    alice = await live.api.register()
    workspace = await live.api.workspace(alice)
    board = await live.api.board(alice, workspace["id"])
    return alice, workspace["id"], board["id"]


async def first_message(ws: Socket, op_id: str) -> dict[str, Any]:
    """The first message about operation `op_id` (others' `complete`s are skipped)."""
    while True:
        message = await ws.receive()
        if message.get("id") == op_id:
            return message


async def breaker_state(live: LiveServer) -> float:
    metrics = (await live.api.client.get("/metrics")).text
    match = re.search(r'^concord_breaker_state\{name="database"\} (\S+)$', metrics, re.M)
    assert match, "concord_breaker_state{name=database} is not exported"
    return float(match[1])


async def timed(coro: Any) -> tuple[Any, float]:
    loop = asyncio.get_running_loop()
    started = loop.time()
    result = await coro
    return result, loop.time() - started


def assert_unavailable(outcomes: list[Outcome]) -> None:
    """Every one a 503 with SERVICE_UNAVAILABLE."""
    wrong = [o for o in outcomes if (o.status, o.kind) != (503, "SERVICE_UNAVAILABLE")]
    assert not wrong, wrong[:5]


async def assert_nothing_lost(server: PostgresProcess, writers: Writers) -> None:
    rows = await server.fetch("SELECT title FROM cards")
    stored = {row["title"] for row in rows}
    answered = [o.title for o in writers.outcomes if o.kind == "CardPayload"]
    assert answered, "no write succeeded at all"
    lost = [title for title in answered if title not in stored]
    assert not lost, f"{len(lost)} writes answered with a CardPayload are not stored: {lost[:5]}"


async def test_a_killed_database_fails_requests_fast_and_the_app_recovers(
    own_postgres: PostgresProcess, tmp_path: Path
) -> None:
    async with live_server(outage_settings(own_postgres, tmp_path)) as live:
        alice, workspace, board = await setup(live)
        token = alice.token
        async with socket(live.ws_url) as ws:
            assert (await ws.init(token))["type"] == "connection_ack"
            for _ in range(2):  # learnt by the compiled read path, then answered by it
                await live.api.ok(BOARD, {"b": board}, token)
            writers = Writers(live.api, alice, board)
            await asyncio.sleep(1.0)

            await own_postgres.kill()
            writers.phase = "down"
            await asyncio.sleep(DOWN_SECONDS / 2)
            # The breaker is open by now: everything answers at once.
            assert await breaker_state(live) == 1.0
            ready, ready_seconds = await timed(live.api.client.get("/readyz"))
            read, read_seconds = await timed(live.api.raw(BOARD, {"b": board}, token))
            general, _ = await timed(live.api.raw("{ me { id } }", None, token))
            # A caller this process has not seen yet: its token's user cannot be checked.
            stranger = issue_access_token(live.api.app.state.services.tokens, uuid.uuid4())
            unknown, _ = await timed(live.api.raw(BOARD, {"b": board}, stranger))
            await ws.subscribe("q", BOARD, {"b": board})
            over_ws = await first_message(ws, "q")
            await ws.subscribe("live", EVENTS, {"w": workspace, "a": None})
            live_over_ws = await first_message(ws, "live")
            await asyncio.sleep(DOWN_SECONDS / 2)

            writers.phase = "restarting"
            await own_postgres.start()  # the same port and data directory
            writers.phase = "back"
            await writers.wait_for_success("back", timeout=10.0)
            await asyncio.sleep(0.5)
            await writers.stop()
            ready_again = await live.api.client.get("/readyz")
            state_again = await breaker_state(live)

    down = writers.during("down")
    durations = [o.seconds for o in down]
    log.warning(  # the numbers behind the bounds, for the record
        f"down: {len(down)} requests, median {statistics.median(durations) * 1000:.1f} ms, "
        f"max {max(durations) * 1000:.0f} ms; /readyz {ready_seconds * 1000:.0f} ms"
    )
    assert_unavailable(down)
    assert max(durations) < STOPPED_BOUND
    assert statistics.median(durations) < FAST
    assert len(down) > 20, "the writers were held up: requests did not fail fast"

    assert ready.status_code == 503
    assert ready.json()["checks"]["database"] == "unavailable"
    assert ready_seconds < FAST * 10
    assert read.status_code == 503, read.text
    assert read.json()["errors"][0]["extensions"]["code"] == "SERVICE_UNAVAILABLE"
    assert int(read.headers["retry-after"]) >= 1
    assert read_seconds < STOPPED_BOUND
    assert general.status_code == 503, general.text
    assert general.json()["errors"][0]["extensions"]["code"] == "SERVICE_UNAVAILABLE"
    assert unknown.status_code == 503, unknown.text
    assert unknown.json()["errors"][0]["extensions"]["code"] == "SERVICE_UNAVAILABLE"
    assert over_ws["id"] == "q"
    assert over_ws["payload"]["errors"][0]["extensions"]["code"] == "SERVICE_UNAVAILABLE"
    assert live_over_ws["id"] == "live"
    assert live_over_ws["payload"]["errors"][0]["extensions"]["code"] == "SERVICE_UNAVAILABLE"

    back = writers.during("back")
    assert {(o.status, o.kind) for o in back} <= {
        (503, "SERVICE_UNAVAILABLE"),
        (200, "CardPayload"),
    }
    assert back[-1].kind == "CardPayload"
    assert ready_again.status_code == 200
    assert state_again == 0.0
    # Sent before the kill; the last of these were under way at the kill.
    up = [o for o in writers.outcomes if o.phase == "up"]
    assert {(o.status, o.kind) for o in up} <= {(503, "SERVICE_UNAVAILABLE"), (200, "CardPayload")}
    assert up[0].kind == "CardPayload"
    await assert_nothing_lost(own_postgres, writers)


async def test_a_frozen_database_holds_no_request_beyond_its_timeouts(
    own_postgres: PostgresProcess, tmp_path: Path
) -> None:
    async with live_server(outage_settings(own_postgres, tmp_path)) as live:
        alice, _, board = await setup(live)
        writers = Writers(live.api, alice, board)
        await asyncio.sleep(1.0)

        own_postgres.freeze()
        writers.phase = "down"
        # Before the breaker has opened, /readyz itself is bounded.
        ready, ready_seconds = await timed(live.api.client.get("/readyz"))
        await asyncio.sleep(DOWN_SECONDS)
        later, later_seconds = await timed(live.api.client.get("/readyz"))
        writers.phase = "restarting"
        own_postgres.thaw()
        writers.phase = "back"
        await writers.wait_for_success("back", timeout=10.0)
        await asyncio.sleep(0.5)
        await writers.stop()
        ready_again = await live.api.client.get("/readyz")

    down = writers.during("down")
    durations = sorted(o.seconds for o in down)
    log.warning(
        f"frozen: {len(down)} requests, median {statistics.median(durations) * 1000:.1f} ms, "
        f"max {durations[-1] * 1000:.0f} ms; /readyz {ready_seconds * 1000:.0f} ms, "
        f"then {later_seconds * 1000:.0f} ms"
    )
    assert_unavailable(down)
    assert durations[-1] < FROZEN_BOUND
    # The first few wait for their timeouts and open the breaker; the rest fail at once.
    assert statistics.median(durations) < FAST
    assert ready.status_code == 503
    assert ready_seconds < 3.0
    assert later.status_code == 503
    assert later.json()["checks"]["database"] == "unavailable"
    assert later_seconds < 3.0

    back = writers.during("back")
    assert {(o.status, o.kind) for o in back} <= {
        (503, "SERVICE_UNAVAILABLE"),
        (200, "CardPayload"),
    }
    assert back[-1].kind == "CardPayload"
    assert ready_again.status_code == 200
    await assert_nothing_lost(own_postgres, writers)
