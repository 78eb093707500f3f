"""Test helpers: deadlines instead of fixed sleeps, fast Redis brokers, a private redis-server."""

from __future__ import annotations

import asyncio
import shutil
import signal
import subprocess
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

from redis.asyncio import Redis
from redis.exceptions import RedisError

from subscriptions.redis import RedisBroker
from tests.services import unavailable

TIMEOUT = 5.0
PRESENCE_TTL = 0.4


def fast_redis_broker(url: str, **options: float) -> RedisBroker:
    """A RedisBroker with a unique connection name and test-sized timings."""
    settings = {
        "timeout": 2.0,
        "health_check_interval": 1.0,
        "min_backoff": 0.02,
        "max_backoff": 0.2,
    } | options
    return RedisBroker(url, client_name=f"concord-pubsub-test-{uuid.uuid4().hex}", **settings)


async def take(subscription: AsyncIterator[str], count: int) -> list[str]:
    """The next `count` messages of the subscription; fails after TIMEOUT seconds."""
    received: list[str] = []
    try:
        async with asyncio.timeout(TIMEOUT):
            while len(received) < count:
                received.append(await anext(subscription))
    except TimeoutError:
        raise AssertionError(
            f"got {len(received)} of {count} messages within {TIMEOUT}s: {received}"
        ) from None
    return received


async def next_message(subscription: AsyncIterator[str]) -> str:
    """The next message, or whatever the subscription raises instead (within TIMEOUT)."""
    async with asyncio.timeout(TIMEOUT):
        return await anext(subscription)


async def wait_until(condition: Callable[[], Awaitable[bool]], what: str) -> None:
    """Poll `condition` until it holds; fail with `what` after TIMEOUT seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + TIMEOUT
    while not await condition():
        if loop.time() > deadline:
            raise AssertionError(f"not within {TIMEOUT}s: {what}")
        await asyncio.sleep(0.01)


class RedisProcess:
    """A redis-server of the test's own, on its own port, to stop and start at will.

    Fault-injection tests use it instead of the shared server (see services.md).
    """

    def __init__(self, port: int, directory: Path) -> None:
        self.port = port
        self.url = f"redis://127.0.0.1:{port}/0"
        self._directory = directory
        self._process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        executable = shutil.which("redis-server")
        if executable is None:
            unavailable("redis-server is not installed")
            return
        self._process = await asyncio.create_subprocess_exec(
            executable,
            *("--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self._directory)),
            *("--save", "", "--appendonly", "no", "--daemonize", "no"),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        await wait_until(self._answers, f"redis-server on port {self.port} answers PING")

    async def stop(self) -> None:
        """Kill the server by its process id (no clean shutdown, like a crash)."""
        process, self._process = self._process, None
        if process is not None and process.returncode is None:
            process.kill()
            await process.wait()

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): connections stay open but nothing answers."""
        if self._process is not None:
            self._process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self._process is not None:
            self._process.send_signal(signal.SIGCONT)

    async def _answers(self) -> bool:
        if self._process is not None and self._process.returncode is not None:
            raise AssertionError(f"redis-server on port {self.port} exited")
        client = Redis.from_url(self.url, socket_connect_timeout=1, socket_timeout=1)
        try:
            return bool(await client.ping())
        except (RedisError, OSError):
            return False
        finally:
            await client.aclose()
