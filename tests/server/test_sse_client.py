"""The `graphql-sse` reference client (npm, exact version) against a served Concord.

The client runs in node (tests/server/js/sse_client.cjs) in "distinct connections" mode, as
an application would use it, and reports every result it hands over. Without node or npm
the test skips on a laptop and fails under CI=true.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from auth.revocation import CHANNEL as REVOCATIONS
from subscriptions.fanout import FanoutHub
from tests.api import empty_tables, settings_for
from tests.live import EVENTS, LiveServer, live_server
from tests.npm import node, npm_packages

GRAPHQL_SSE = ("graphql-sse", "2.6.1")
SCRIPT = Path(__file__).with_name("js") / "sse_client.cjs"


def stream_channels(hub: FanoutHub) -> list[str]:
    """The broker channels open for operations (the app's revocation listener's excepted)."""
    return [channel for channel in hub.channels() if channel != REVOCATIONS]


@pytest.fixture
async def server(database_url: str, tmp_path: Path) -> AsyncIterator[LiveServer]:
    await empty_tables(database_url)
    async with live_server(settings_for(database_url, tmp_path)) as live:
        yield live


class Client:
    """One node process running the client; what it printed, line by line."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    async def report(self, timeout: float = 10.0) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = await asyncio.wait_for(self.process.stdout.readline(), timeout)
        if not line:
            assert self.process.stderr is not None
            raise AssertionError(f"the client ended: {(await self.process.stderr.read()).decode()}")
        report: dict[str, Any] = json.loads(line)
        return report

    async def result(self) -> dict[str, Any]:
        """The next result the client handed over (after its `connected`)."""
        report = await self.report()
        if report == {"connected": True}:
            report = await self.report()
        assert "next" in report, report
        result: dict[str, Any] = report["next"]
        return result

    async def event(self) -> dict[str, Any]:
        result = await self.result()
        assert "errors" not in result, result
        event: dict[str, Any] = result["data"]["workspaceEvents"]
        return event


@asynccontextmanager
async def graphql_sse(
    server: LiveServer,
    query: str,
    variables: dict[str, Any],
    headers: dict[str, str],
    take: int | None = None,
) -> AsyncIterator[Client]:
    modules = npm_packages(dict([GRAPHQL_SSE]))
    options = {
        "url": f"http://127.0.0.1:{server.port}/graphql",
        "query": query,
        "variables": variables,
        "headers": headers,
        "take": take,
    }
    process = await asyncio.create_subprocess_exec(
        node(),
        str(SCRIPT),
        json.dumps(options),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "NODE_PATH": str(modules)},
    )
    try:
        yield Client(process)
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


async def test_the_graphql_sse_client_streams_resumes_and_is_refused(server: LiveServer) -> None:
    api = server.api
    alice = await api.register("alice")
    mallory = await api.register("mallory")
    ws = await api.workspace(alice)
    board = await api.board(alice, ws["id"])
    first = await api.ok(
        "query($w: ID!) { events(workspaceId: $w, first: 1) { edges { cursor } } }",
        {"w": ws["id"]},
        alice.token,
    )
    start = first["events"]["edges"][0]["cursor"]
    for title in ("a", "b"):
        await api.card(alice, board["id"], title)

    async def create(*titles: str) -> None:
        for title in titles:
            await api.card(alice, board["id"], title)

    # Events arrive in order: the log after `start`, then live ones.
    async with graphql_sse(
        server, EVENTS, {"w": ws["id"], "a": start}, bearer(alice.token), 6
    ) as c:
        received = [await c.event() for _ in range(4)]
        await create("live 1", "live 2")
        received += [await c.event() for _ in range(2)]
        assert await c.report() == {"stopped": True}
    assert [e["seq"] for e in received] == [2, 3, 4, 5, 6, 7]
    assert [e["changes"][0]["newValue"] for e in received[2:]] == ["a", "b", "live 1", "live 2"]
    last = received[-1]["cursor"]

    # While nobody listens, three more; a resume gets exactly those, by header or argument.
    await create("missed 1", "missed 2", "missed 3")
    by_header = {**bearer(alice.token), "Last-Event-ID": last}
    for variables, headers in (
        ({"w": ws["id"], "a": start}, by_header),
        ({"w": ws["id"], "a": last}, bearer(alice.token)),
    ):
        async with graphql_sse(server, EVENTS, variables, headers, 3) as c:
            resumed = [await c.event() for _ in range(3)]
            assert await c.report() == {"stopped": True}
        assert [e["seq"] for e in resumed] == [8, 9, 10]
        assert [e["changes"][0]["newValue"] for e in resumed] == [
            "missed 1",
            "missed 2",
            "missed 3",
        ]

    # A bad token is refused before any stream starts.
    async with graphql_sse(server, EVENTS, {"w": ws["id"]}, bearer("not-a-token")) as c:
        refused = await c.report()
        assert refused["status"] == 401, refused

    # Someone outside the workspace gets NOT_FOUND, and the operation completes.
    async with graphql_sse(server, EVENTS, {"w": ws["id"]}, bearer(mallory.token)) as c:
        result = await c.result()
        assert result["errors"][0]["extensions"]["code"] == "NOT_FOUND"
        assert "data" not in result or result["data"] is None
        assert await c.report() == {"complete": True}

    # Every client is gone: no subscription is left on the broker.
    hub = api.app.state.services.broker.hub
    for _ in range(100):
        if not stream_channels(hub):
            break
        await asyncio.sleep(0.05)
    assert stream_channels(hub) == []
