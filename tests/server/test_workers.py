"""`concord serve --workers N`: N processes on one port, each with its one Redis connection.

The served processes are real (`concord serve` from the console script) on a free
port, with a redis-server of this test's own; both are stopped by their process ids.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from server.metrics import worker_metrics_dir
from server.shutdown import GOING_AWAY, SHUTDOWN_REASON
from subscriptions.redis import PUBSUB_CLIENT_NAME
from tests.api import Api
from tests.live import PROTOCOL
from tests.services import free_port
from tests.subscriptions.helpers import RedisProcess

CONCORD = Path(sys.executable).with_name("concord")
QUERY = """subscription($w: ID!, $a: String) {
  workspaceEvents(workspaceId: $w, after: $a) { seq type } }"""
LAST_CURSOR = """query($w: ID!) { events(workspaceId: $w, first: 100) { edges { cursor } } }"""


def test_more_than_one_worker_needs_redis(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env["CONCORD_DATA_DIR"] = str(tmp_path)
    result = asyncio.run(_run_to_end([str(CONCORD), "serve", "--workers", "2"], env))
    assert result[0] == 2
    assert "REDIS_URL" in result[1]


async def _run_to_end(command: list[str], env: dict[str, str]) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        *command, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    _, err = await asyncio.wait_for(process.communicate(), 30)
    return process.returncode or 0, err.decode()


@asynccontextmanager
async def _served(env: dict[str, str], port: int) -> AsyncIterator[asyncio.subprocess.Process]:
    process = await asyncio.create_subprocess_exec(
        str(CONCORD), "serve", "--port", str(port), "--workers", "2", env=env
    )
    tree: list[psutil.Process] = []
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            async with asyncio.timeout(30):
                while True:
                    with contextlib.suppress(httpx.HTTPError):
                        if (await http.get("/readyz")).status_code == 200:
                            break
                    await asyncio.sleep(0.1)
        tree = psutil.Process(process.pid).children(recursive=True)
        yield process
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(process.wait(), 20)
            except TimeoutError:
                process.kill()
                await process.wait()
        for child in tree:  # by pid, in case a worker outlived its parent
            with contextlib.suppress(psutil.NoSuchProcess):
                child.kill()


MAX_SUBSCRIBERS = 200


async def test_two_workers_share_the_port_and_both_deliver(tmp_path: Path) -> None:
    redis = RedisProcess(free_port(), tmp_path)
    await redis.start()
    try:
        env = {**os.environ, "CONCORD_DATA_DIR": str(tmp_path), "REDIS_URL": redis.url}
        env["DATABASE_URL"] = f"sqlite+aiosqlite:///{tmp_path / 'concord.db'}"
        env["JWT_SECRET"] = "test-secret-that-is-long-enough-for-hs256-0123456789"
        code, err = await _run_to_end([str(CONCORD), "migrate"], env)
        assert code == 0, err
        port = free_port()
        async with (
            _served(env, port),
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http,
        ):
            api = Api(http, None)
            alice = await api.register()
            ws = await api.workspace(alice)
            board = await api.board(alice, ws["id"])
            edges = (await api.ok(LAST_CURSOR, {"w": ws["id"]}, alice.token))["events"]["edges"]

            async def subscriber() -> int:
                url = f"ws://127.0.0.1:{port}/graphql"
                async with connect(url, subprotocols=[PROTOCOL]) as s:  # type: ignore[list-item]
                    init = {"authorization": f"Bearer {alice.token}"}
                    await s.send(json.dumps({"type": "connection_init", "payload": init}))
                    assert json.loads(await s.recv())["type"] == "connection_ack"
                    variables = {"w": ws["id"], "a": edges[-1]["cursor"]}
                    payload = {"query": QUERY, "variables": variables}
                    await s.send(json.dumps({"id": "1", "type": "subscribe", "payload": payload}))
                    await ready.wait()
                    message = json.loads(await asyncio.wait_for(s.recv(), 10))
                    seq: int = message["payload"]["data"]["workspaceEvents"]["seq"]
                    return seq

            ready = asyncio.Event()
            tasks: list[asyncio.Task[int]] = []
            client = Redis.from_url(redis.url)
            try:
                # Each worker has one pub/sub connection; both have subscribers here. Which
                # process accepts a connection is the kernel's choice (and the second one
                # may still be starting), so subscribers arrive in waves until both have some.
                async with asyncio.timeout(30):
                    while True:
                        if len(tasks) < MAX_SUBSCRIBERS:
                            tasks += [asyncio.create_task(subscriber()) for _ in range(20)]
                        await asyncio.sleep(0.5)
                        clients = await client.client_list()
                        pubsub = [c for c in clients if c["name"] == PUBSUB_CLIENT_NAME]
                        # Two channels each: the workspace's, and the sign-out listener's.
                        if len(pubsub) == 2 and all(c["sub"] == "2" for c in pubsub):
                            break
            finally:
                await client.aclose()
            ready.set()
            await api.card(alice, board["id"], "to every worker")
            seqs = await asyncio.gather(*tasks)
    finally:
        await redis.stop()
    assert len(set(seqs)) == 1, seqs
    assert len(pubsub) == 2


PING = {"query": "query Ping { __typename }"}


def _pings(text_or_families: Any) -> float:
    """concord_graphql_operations_total{operation="Ping"} summed over its other labels."""
    total = 0.0
    for family in text_or_families:
        for sample in family.samples:
            if (
                sample.name == "concord_graphql_operations_total"
                and sample.labels.get("operation") == "Ping"
            ):
                total += sample.value
    return total


def _per_worker(directory: Path) -> dict[str, float]:
    """Each worker's own count, from its own file (counter_<pid>.db)."""
    return {
        path.stem.split("_")[-1]: _pings(MultiProcessCollector.merge([str(path)]))
        for path in directory.glob("counter_*.db")
    }


async def test_two_workers_metrics_are_summed_in_one_scrape(tmp_path: Path) -> None:
    redis = RedisProcess(free_port(), tmp_path)
    await redis.start()
    metrics_dir = tmp_path / "metrics"
    try:
        env = {**os.environ, "CONCORD_DATA_DIR": str(tmp_path), "REDIS_URL": redis.url}
        env["DATABASE_URL"] = f"sqlite+aiosqlite:///{tmp_path / 'concord.db'}"
        env["JWT_SECRET"] = "test-secret-that-is-long-enough-for-hs256-0123456789"
        env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
        code, err = await _run_to_end([str(CONCORD), "migrate"], env)
        assert code == 0, err
        port = free_port()
        base = f"http://127.0.0.1:{port}"

        async def ping() -> None:
            # A connection of its own: the kernel picks the worker that accepts it.
            async with httpx.AsyncClient(base_url=base, timeout=30) as http:
                assert (await http.post("/graphql", json=PING)).status_code == 200

        sent = 0
        async with _served(env, port):
            async with asyncio.timeout(60):
                while True:
                    await asyncio.gather(*(ping() for _ in range(10)))
                    sent += 10
                    counts = _per_worker(metrics_dir)
                    if len([c for c in counts.values() if c > 0]) >= 2:
                        break
            assert sum(counts.values()) == sent
            for _ in range(4):  # whichever worker answers the scrape reports both
                async with httpx.AsyncClient(base_url=base, timeout=30) as http:
                    text = (await http.get("/metrics")).text
                assert _pings(text_string_to_metric_families(text)) == sent
        assert all(c < sent for c in counts.values())
    finally:
        await redis.stop()


def test_serve_sets_up_a_metrics_directory_for_its_workers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    with worker_metrics_dir() as made:
        assert os.environ["PROMETHEUS_MULTIPROC_DIR"] == str(made)
        assert made.is_dir()
    assert not made.exists()
    assert "PROMETHEUS_MULTIPROC_DIR" not in os.environ
    # The operator's own directory is kept, without the files of an earlier run.
    given = tmp_path / "given"
    given.mkdir()
    (given / "counter_1.db").write_bytes(b"old")
    (given / "notes.txt").write_text("kept")
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(given))
    with worker_metrics_dir() as used:
        assert used == given
        assert not (given / "counter_1.db").exists()
    assert (given / "notes.txt").read_text() == "kept"


GRACE_SECONDS = 2


async def _both_workers_subscribed(redis_url: str) -> bool:
    client = Redis.from_url(redis_url)
    try:
        clients = await client.client_list()
    finally:
        await client.aclose()
    pubsub = [c for c in clients if c["name"] == PUBSUB_CLIENT_NAME]
    # Two channels each: the workspace's, and the sign-out listener's.
    return len(pubsub) == 2 and all(c["sub"] == "2" for c in pubsub)


async def test_sigterm_drains_every_worker_and_exits_0(tmp_path: Path) -> None:
    """`--workers 2` and SIGTERM to the parent: every worker closes its WebSockets with
    1001, ends its SSE streams, gives an unfinished request SHUTDOWN_GRACE_SECONDS, and
    the command exits 0."""
    redis = RedisProcess(free_port(), tmp_path)
    await redis.start()
    try:
        env = {**os.environ, "CONCORD_DATA_DIR": str(tmp_path), "REDIS_URL": redis.url}
        env["DATABASE_URL"] = f"sqlite+aiosqlite:///{tmp_path / 'concord.db'}"
        env["JWT_SECRET"] = "test-secret-that-is-long-enough-for-hs256-0123456789"
        env["SHUTDOWN_GRACE_SECONDS"] = str(GRACE_SECONDS)
        code, err = await _run_to_end([str(CONCORD), "migrate"], env)
        assert code == 0, err
        port = free_port()
        url = f"ws://127.0.0.1:{port}/graphql"
        async with (
            _served(env, port) as process,
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http,
            contextlib.AsyncExitStack() as stack,
        ):
            api = Api(http, None)
            alice = await api.register()
            ws = await api.workspace(alice)
            sockets = []
            async with asyncio.timeout(30):  # until each worker has subscribers
                while len(sockets) < MAX_SUBSCRIBERS:
                    for _ in range(10):
                        s = await stack.enter_async_context(connect(url, subprotocols=[PROTOCOL]))  # type: ignore[list-item]
                        init = {"authorization": f"Bearer {alice.token}"}
                        await s.send(json.dumps({"type": "connection_init", "payload": init}))
                        assert json.loads(await s.recv())["type"] == "connection_ack"
                        payload = {"query": QUERY, "variables": {"w": ws["id"]}}
                        await s.send(
                            json.dumps({"id": "1", "type": "subscribe", "payload": payload})
                        )
                        sockets.append(s)
                    await asyncio.sleep(0.3)
                    if await _both_workers_subscribed(redis.url):
                        break
            sse = await stack.enter_async_context(
                http.stream(
                    "POST",
                    "/graphql",
                    json={"query": QUERY, "variables": {"w": ws["id"]}},
                    headers={
                        "accept": "text/event-stream",
                        "authorization": f"Bearer {alice.token}",
                    },
                )
            )
            assert sse.status_code == 200
            # A request that never finishes: its body is announced, a tenth of it sent.
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(
                b"POST /graphql HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                b"content-length: 1000\r\n\r\n" + b" " * 100
            )
            await writer.drain()
            await asyncio.sleep(0.5)  # the request has reached a worker

            process.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            sse_lines = [line async for line in sse.aiter_lines()]  # ends without an error
            closes = [await _close_of(s) for s in sockets]
            async with asyncio.timeout(GRACE_SECONDS + 20):
                returncode = await process.wait()
            took = time.monotonic() - signalled
            # Cancelled at the end of the grace period (uvicorn answers 500 and closes).
            cut_off = await reader.read()
            writer.close()
    finally:
        await redis.stop()
    assert returncode == 0
    # The unfinished request held the shutdown for the grace period, not longer.
    assert GRACE_SECONDS * 0.9 <= took < GRACE_SECONDS + 10, took
    assert cut_off.startswith(b"HTTP/1.1 500 ") or cut_off == b"", cut_off
    assert set(closes) == {(GOING_AWAY, SHUTDOWN_REASON)}, closes
    assert "event: complete" not in sse_lines, sse_lines
    assert any(line.startswith(": shutting down") for line in sse_lines), sse_lines


async def _close_of(s: ClientConnection) -> tuple[int | None, str | None]:
    with contextlib.suppress(ConnectionClosed):
        async with asyncio.timeout(30):
            async for _ in s:
                pass
    return s.close_code, s.close_reason
