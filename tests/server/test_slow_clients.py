"""Slow clients: request headers (REQUEST_HEADER_TIMEOUT_SECONDS, the uvicorn protocol
`concord serve` runs) and request bodies (REQUEST_BODY_TIMEOUT_SECONDS, the app) that do not
arrive in time are cut off, while everyone else is served."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
import uvicorn

from server.app import create_app
from server.http_protocol import HeaderDeadline, uvicorn_http_options
from server.ws_protocol import uvicorn_ws_options
from tests.api import running_app, settings_for
from tests.services import free_port

CONCORD = Path(sys.executable).with_name("concord")
SECRET = "test-secret-that-is-long-enough-for-hs256-0123456789"
# Slow enough that the server's deadline comes long before the client would finish.
HEADERS = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Padding: " + b"a" * 60 + b"\r\n\r\n"


async def test_a_body_that_does_not_arrive_in_time_gets_408(tmp_path: Path) -> None:
    settings = settings_for(
        f"sqlite+aiosqlite:///{tmp_path / 'concord.db'}",
        tmp_path,
        request_body_timeout_seconds=0.5,
    )
    rest_sent = False

    async def slow_body() -> AsyncIterator[bytes]:
        nonlocal rest_sent
        yield b'{"query": "{ __typ'
        await asyncio.sleep(60)
        rest_sent = True
        yield b'ename }"}'

    async with running_app(settings) as api:
        answer = await api.client.post(
            "/graphql",
            content=slow_body(),
            headers={"content-type": "application/json", "content-length": "30"},
        )
        assert answer.status_code == 408
        assert answer.headers["connection"] == "close"
        (error,) = answer.json()["errors"]
        assert error["extensions"] == {
            "code": "REQUEST_TIMEOUT",
            "limit": "REQUEST_BODY_TIMEOUT_SECONDS",
        }
        assert not rest_sent  # the handler stopped waiting for it
        # A body that arrives in time is answered as usual.
        assert (await api.raw("{ __typename }")).json() == {"data": {"__typename": "Query"}}


async def trickle(port: int, data: bytes, start: int = 0) -> tuple[bytes, int]:
    """Send `data[start:]` one byte a second after `data[:start]` at once; what the server
    answered until it closed the connection, and how many bytes it had been sent by then."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    sent = 0

    async def send() -> None:
        nonlocal sent
        writer.write(data[:start])
        sent = start
        # Half a second out of step with the whole-second deadlines: a byte arriving just
        # as the server closes would make its kernel answer with a reset, which can
        # overtake the 408 (the server does no lingering close).
        await asyncio.sleep(0.5)
        for byte in data[start:]:
            await asyncio.sleep(1)
            writer.write(bytes([byte]))
            await writer.drain()
            sent += 1

    sending = asyncio.create_task(send())
    try:
        async with asyncio.timeout(60):
            answer = await reader.read()  # until the server closes the connection
    finally:
        sending.cancel()
        await asyncio.gather(sending, return_exceptions=True)
        writer.close()
    return answer, sent


async def assert_slow_headers_are_cut_off(port: int) -> None:
    """The server closes a connection whose headers trickle in, serving others meanwhile."""
    slow = asyncio.create_task(trickle(port, HEADERS))
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
        for _ in range(3):
            assert (await client.get("/healthz")).json() == {"status": "ok"}
            await asyncio.sleep(0.3)
    answer, sent = await slow
    assert sent < len(HEADERS)  # closed long before the headers were complete
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert b"REQUEST_HEADER_TIMEOUT_SECONDS" in answer


async def assert_slow_body_gets_408(port: int) -> None:
    body = json.dumps({"query": "{ __typename }", "padding": "x" * 60}).encode()
    head = (
        b"POST /graphql HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n"
    )
    answer, sent = await trickle(port, head + body, start=len(head) + 5)
    assert sent < len(head) + len(body)
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert b'"REQUEST_BODY_TIMEOUT_SECONDS"' in answer


@asynccontextmanager
async def concord_serve(tmp_path: Path, **environment: str) -> AsyncIterator[int]:
    """`concord serve` in a process of its own; its port once /healthz answers."""
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'concord.db'}",
        "CONCORD_DATA_DIR": str(tmp_path),
        "JWT_SECRET": SECRET,
        **environment,
    }
    process = await asyncio.create_subprocess_exec(
        str(CONCORD),
        "serve",
        "--port",
        str(port),
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        async with httpx.AsyncClient() as client:
            while True:
                assert process.returncode is None, "concord serve exited"
                try:
                    await client.get(f"http://127.0.0.1:{port}/healthz")
                    break
                except httpx.TransportError:
                    assert time.monotonic() < deadline, "concord serve did not start"
                    await asyncio.sleep(0.1)
        yield port
    finally:
        process.terminate()
        await process.wait()


async def test_concord_serve_cuts_off_slow_headers_and_slow_bodies(tmp_path: Path) -> None:
    async with concord_serve(
        tmp_path, REQUEST_HEADER_TIMEOUT_SECONDS="2", REQUEST_BODY_TIMEOUT_SECONDS="2"
    ) as port:
        await asyncio.gather(assert_slow_headers_are_cut_off(port), assert_slow_body_gets_408(port))


@pytest.mark.parametrize("http", ["httptools", "h11"])
async def test_both_http_protocols_time_out_headers(
    tmp_path: Path, http: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """uvicorn's two HTTP implementations (`concord serve` runs httptools), also for the
    second request on a kept-alive connection."""
    # The deadline is the process's (a class attribute): put it back afterwards.
    monkeypatch.setattr(HeaderDeadline, "header_timeout", HeaderDeadline.header_timeout)
    settings = settings_for(f"sqlite+aiosqlite:///{tmp_path / 'concord.db'}", tmp_path)
    port = free_port()
    config = uvicorn.Config(
        create_app(settings),
        host="127.0.0.1",
        port=port,
        log_config=None,
        # The HTTP protocol of the second replaces the first's (the header deadline's).
        **{**uvicorn_ws_options(False), **uvicorn_http_options(2.0, http=http)},
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            assert not task.done()
            await asyncio.sleep(0.02)
        await assert_slow_headers_are_cut_off(port)
        # A client that keeps its connection between requests is not cut off.
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            for _ in range(2):
                assert (await client.get("/healthz")).status_code == 200
                await asyncio.sleep(2.5)  # longer than the header deadline, idle
        # A connection on which nothing is sent (a browser's preconnect): closed, unanswered.
        assert await trickle(port, b"") == (b"", 0)
        # A kept-alive connection: the first request at once, the second trickling in.
        first = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
        answer, sent = await trickle(port, first + HEADERS, start=len(first) + 3)
        assert sent < len(first) + len(HEADERS)
        assert answer.startswith(b"HTTP/1.1 200 ")
        assert b"HTTP/1.1 408 " in answer
    finally:
        server.should_exit = True
        await task
