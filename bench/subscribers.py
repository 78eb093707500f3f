"""Benchmark: many WebSocket subscribers on one workspace, events published over HTTP.

For each subscriber count it starts a fresh Concord process, connects that many real
`graphql-transport-ws` subscriptions to `workspaceEvents` from separate client processes
(so the server's CPU and memory are its own), publishes `createCard` mutations at a fixed
rate, and reports:

- commit-to-receive latency: the client's receive time minus the event's `occurredAt`
  (stamped by the server while committing), p50 / p90 / p99 / max;
- delivered / expected: distinct (subscriber, event) pairs received, with duplicates and
  out-of-order deliveries counted separately (both must be 0);
- memory per idle subscriber: the server's RSS after every subscription delivered one
  event, minus its RSS before any connected, divided by the subscriber count;
- the server's CPU use while publishing.

Usage (from the repository root)::

    .venv/bin/python bench/subscribers.py --subscribers 100 1000 5000 --rate 1 --duration 30
    .venv/bin/python bench/subscribers.py --subscribers 1000 --no-shared-render  # baseline

`--no-shared-render` makes the server render every subscriber's result itself (the schema
without `SharedRenderExecutor`), for a side-by-side baseline. `--database-url` and
`--redis-url` point the server at PostgreSQL and Redis (default: embedded SQLite and the
in-process broker). Experiments that change the server only inside this script:
`--gc-freeze` (gc.freeze() once the subscriptions are live), `--idle-poll S`
(resolvers.live.IDLE_POLL_SECONDS); `--burst` starts every subscription at once (a
reconnect storm); `--profile FILE` writes a cProfile of the publishing phase. Results and
their discussion: bench/RESULTS.md. The clients are a minimal WebSocket implementation on asyncio
protocols, timestamping each frame as it is read from the socket, so that client-side
overhead inflates the latencies as little as Python allows.

`bench/compare.py` drives the same client (`client --peer`) against the Node peer and
Concord in one run, alternating; its results are at the top of bench/RESULTS.md.

The script runs itself in three roles: the driver (default), `serve` (the Concord
process) and `client` (a process of subscribers); they talk over stdin/stdout lines.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import math
import os
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

SHARED_RENDER_ENV = "CONCORD_BENCH_SHARED_RENDER"
PROFILE_ENV = "CONCORD_BENCH_PROFILE"
STATS_ENV = "CONCORD_BENCH_STATS"
GC_FREEZE_ENV = "CONCORD_BENCH_GC_FREEZE"
IDLE_POLL_ENV = "CONCORD_BENCH_IDLE_POLL"
JWT_SECRET = "bench-secret-that-is-long-enough-for-hs256-0123456789abcdef"
PROTOCOL = "graphql-transport-ws"
EVENTS = """subscription($w: ID!, $a: String) { workspaceEvents(workspaceId: $w, after: $a) {
  seq cursor type entityType entityId version occurredAt actor { id displayName }
  changes { field oldValue newValue } } }"""
PEER_EVENTS = "subscription($w: ID!){ workspaceEvents(workspaceId:$w){ seq entityId type ts } }"
CREATE_CARD = """mutation($i: CreateCardInput!) { createCard(input: $i) { __typename } }"""

TEXT, CLOSE, PING, PONG = 0x1, 0x8, 0x9, 0xA


def raise_fd_limit() -> int:
    """Soft limit on open files up to the hard one: every socket is a descriptor."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else 1_048_576
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft


def progress(text: str) -> None:
    sys.stderr.write(f"[{time.strftime('%H:%M:%S')}] {text}\n")
    sys.stderr.flush()


def emit(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


# --- a minimal graphql-transport-ws client ---------------------------------------------


def client_frame(opcode: int, payload: bytes) -> bytes:
    """A final client frame. Clients must mask; a zero key leaves the payload as is."""
    n = len(payload)
    if n < 126:
        header = bytes([0x80 | opcode, 0x80 | n])
    elif n < 65536:
        header = bytes([0x80 | opcode, 0x80 | 126]) + n.to_bytes(2, "big")
    else:
        header = bytes([0x80 | opcode, 0x80 | 127]) + n.to_bytes(8, "big")
    return header + b"\0\0\0\0" + payload


class Subscriber(asyncio.Protocol):
    """One WebSocket connection with one `workspaceEvents` subscription."""

    def __init__(
        self,
        host: str,
        port: int,
        token: str,
        workspace: str,
        after: str,
        peer: bool = False,
    ) -> None:
        loop = asyncio.get_running_loop()
        self.host, self.port = host, port
        self.init = json.dumps(
            {"type": "connection_init", "payload": {"authorization": f"Bearer {token}"}}
        ).encode()
        # The Node peer's schema (bench/peers/node-subs/server.js): its own selection,
        # and `ts` (publish time, epoch ms) instead of `occurredAt`.
        self.peer = peer
        query, variables = (EVENTS, {"w": workspace, "a": after})
        if peer:
            query, variables = PEER_EVENTS, {"w": workspace}
        self.request = json.dumps(
            {"id": "1", "type": "subscribe", "payload": {"query": query, "variables": variables}}
        ).encode()
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.upgraded = False
        self.subscribed: asyncio.Future[None] = loop.create_future()
        self.first_event: asyncio.Future[int] = loop.create_future()
        self.received: list[tuple[int, float]] = []  # (seq, seconds since occurredAt)
        self.errors: list[str] = []
        self.closed = False

    @property
    def last_seq(self) -> int:
        return self.received[-1][0] if self.received else 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        key = base64.b64encode(os.urandom(16)).decode()
        transport.write(
            (
                f"GET /graphql HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                f"Sec-WebSocket-Protocol: {PROTOCOL}\r\n\r\n"
            ).encode()
        )

    def data_received(self, data: bytes) -> None:
        now = time.time()  # as close to the socket as Python gets
        self.buffer += data
        if not self.upgraded:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            status = bytes(self.buffer[: self.buffer.find(b"\r\n")])
            del self.buffer[: end + 4]
            if b" 101 " not in status:
                self._fail(f"handshake: {status.decode(errors='replace')}")
                return
            self.upgraded = True
            self.send(TEXT, self.init)
        buffer = self.buffer
        while len(buffer) >= 2:
            length, offset = buffer[1] & 0x7F, 2
            if length == 126:
                if len(buffer) < 4:
                    return
                length, offset = int.from_bytes(buffer[2:4], "big"), 4
            elif length == 127:
                if len(buffer) < 10:
                    return
                length, offset = int.from_bytes(buffer[2:10], "big"), 10
            end = offset + length
            if len(buffer) < end:
                return
            opcode, payload = buffer[0] & 0x0F, bytes(buffer[offset:end])
            del buffer[:end]
            self._frame(opcode, payload, now)

    def _frame(self, opcode: int, payload: bytes, now: float) -> None:
        if opcode == PING:
            self.send(PONG, payload)
        elif opcode == CLOSE:
            code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
            self._fail(f"closed by the server: {code}")
        elif opcode == TEXT:
            self._message(json.loads(payload), now)

    def _message(self, message: dict[str, Any], now: float) -> None:
        kind = message.get("type")
        if kind == "connection_ack":
            self.send(TEXT, self.request)
            if not self.subscribed.done():
                self.subscribed.set_result(None)
        elif kind == "next":
            body = message["payload"]
            for error in body.get("errors") or []:
                self.errors.append(error.get("extensions", {}).get("code", error.get("message")))
            event = (body.get("data") or {}).get("workspaceEvents")
            if event is not None:
                if self.peer:
                    occurred = event["ts"] / 1000
                else:
                    occurred = datetime.fromisoformat(event["occurredAt"]).timestamp()
                self.received.append((event["seq"], now - occurred))
                if not self.first_event.done():
                    self.first_event.set_result(event["seq"])
        elif kind == "ping":
            self.send(TEXT, b'{"type":"pong"}')
        elif kind in {"error", "complete"}:
            self.errors.append(f"{kind}: {message.get('payload')}")
            if not self.first_event.done():
                self.first_event.set_exception(RuntimeError(f"subscription ended: {kind}"))
                self.first_event.exception()  # retrieved: no "never retrieved" warning

    def send(self, opcode: int, payload: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(client_frame(opcode, payload))

    def close(self) -> None:
        self.send(CLOSE, (1000).to_bytes(2, "big"))
        if self.transport is not None:
            self.transport.close()

    def _fail(self, reason: str) -> None:
        self.errors.append(reason)
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        for future in (self.subscribed, self.first_event):
            if not future.done():
                future.set_exception(ConnectionError(f"connection lost: {self.errors or exc}"))
                future.exception()  # retrieved: no "never retrieved" warning


async def open_subscribers(
    address: str,
    token: str,
    workspace: str,
    after: str,
    count: int,
    concurrency: int,
    *,
    burst: bool = False,
    peer: bool = False,
) -> tuple[list[Subscriber], int]:
    """`count` subscriptions, at most `concurrency` starting at a time; (live, failed).

    A subscription has started once its first event (backfilled: `after` is before the
    last event) arrived. With `burst`, only the connection_ack is awaited, so every
    subscription's start (its database reads) runs on the server at once.
    """
    host, port = address.rsplit(":", 1)
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(concurrency)

    async def one() -> Subscriber:
        async with gate:
            subscriber = Subscriber(host, int(port), token, workspace, after, peer)
            await loop.create_connection(lambda: subscriber, host, int(port))
            await asyncio.wait_for(subscriber.subscribed, 60)
            if not burst:
                await asyncio.wait_for(subscriber.first_event, 120)
            return subscriber

    results = await asyncio.gather(*(one() for _ in range(count)), return_exceptions=True)
    live = [r for r in results if isinstance(r, Subscriber)]
    return live, count - len(live)


async def client_main(args: argparse.Namespace) -> None:
    """A process of subscribers, driven by JSON lines on stdin, reporting on stdout."""
    raise_fd_limit()
    subscribers, failed = await open_subscribers(
        args.address,
        args.token,
        args.workspace,
        args.after,
        args.count,
        args.concurrency,
        burst=args.burst,
        peer=args.peer,
    )
    emit({"event": "subscribed", "count": len(subscribers), "failed": failed})
    firsts = await asyncio.gather(
        *(asyncio.wait_for(s.first_event, 300) for s in subscribers), return_exceptions=True
    )
    seqs = {f for f in firsts if isinstance(f, int)}
    emit(
        {
            "event": "ready",
            "seqs": sorted(seqs),
            "without": len(firsts) - sum(isinstance(f, int) for f in firsts),
        }
    )
    command = json.loads(await asyncio.to_thread(sys.stdin.readline))
    first, last = command["first"], command["last"]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + command["timeout"]
    while loop.time() < deadline:
        if all(s.last_seq >= last or s.closed for s in subscribers):
            break
        await asyncio.sleep(0.05)
    latencies: list[tuple[int, float]] = []
    delivered = duplicates = out_of_order = 0
    errors: dict[str, int] = {}
    for s in subscribers:
        seen: set[int] = set()
        previous = 0
        for seq, latency in s.received:
            if seq == 0:
                continue  # the peer's readiness probes (all seq 0), not events
            if seq <= previous:
                out_of_order += seq not in seen
            previous = max(previous, seq)
            if seq in seen:
                duplicates += 1
                continue
            seen.add(seq)
            if first <= seq <= last:
                delivered += 1
                latencies.append((seq, round(latency * 1000, 3)))
        for error in s.errors:
            errors[error] = errors.get(error, 0) + 1
        s.close()
    emit(
        {
            "event": "result",
            "subscribers": len(subscribers),
            "delivered": delivered,
            "duplicates": duplicates,
            "out_of_order": out_of_order,
            "closed": sum(s.closed for s in subscribers),
            "errors": errors,
            "latencies_ms": latencies,
        }
    )
    await asyncio.sleep(0.2)  # let the close frames go out


# --- the server ------------------------------------------------------------------------


def serve_main(args: argparse.Namespace) -> None:
    """Concord as `concord serve` runs it; optionally without the shared rendering."""
    import uvicorn
    from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext

    from server.app import create_app
    from server.graphql_app import ConcordGraphQL
    from server.logging import configure_logging
    from server.settings import load_settings
    from server.ws_protocol import uvicorn_ws_options

    raise_fd_limit()
    idle_poll = os.environ.get(IDLE_POLL_ENV)
    if idle_poll:
        # Experiment: how often an idle subscription re-reads the log (a module constant).
        import resolvers.live

        resolvers.live.IDLE_POLL_SECONDS = float(idle_poll)
    settings = load_settings()
    configure_logging(settings.log_level)
    app = create_app(settings)
    if os.environ.get(SHARED_RENDER_ENV) == "0":
        # What the schema is without `execution_context_class=SharedRenderExecutor`.
        for route in app.routes:
            endpoint = getattr(route, "endpoint", None)
            if isinstance(endpoint, ConcordGraphQL):
                endpoint.schema.execution_context_class = StrawberryGraphQLCoreExecutionContext

    def run() -> None:
        uvicorn.run(
            app,
            host="127.0.0.1",
            port=args.port,
            log_config=None,
            backlog=4096,
            **uvicorn_ws_options(settings.ws_compression),
        )

    # The driver brackets the publishing phase with SIGUSR1 and SIGUSR2. In between the
    # server counts the garbage collector's pauses (and, when asked, runs cProfile);
    # SIGUSR2 writes them to the stats file.
    import cProfile
    import gc

    stats_path = os.environ.get(STATS_ENV)
    profile = os.environ.get(PROFILE_ENV)
    profiler = cProfile.Profile()
    gc_seconds = [0.0, 0.0, 0.0]
    gc_runs = [0, 0, 0]
    gc_pause = {"started": 0.0, "max": 0.0}
    measuring = [False]

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if not measuring[0]:
            return
        if phase == "start":
            gc_pause["started"] = time.perf_counter()
            return
        pause = time.perf_counter() - gc_pause["started"]
        gc_seconds[info["generation"]] += pause
        gc_runs[info["generation"]] += 1
        gc_pause["max"] = max(gc_pause["max"], pause)

    def start(*_: object) -> None:
        if os.environ.get(GC_FREEZE_ENV) == "1":
            # Experiment: move everything alive now (the subscriptions) out of the
            # collector's reach, so that full collections stop traversing it.
            gc.collect()
            gc.freeze()
        measuring[0] = True
        if profile:
            profiler.enable()

    def stop(*_: object) -> None:
        if profile:
            profiler.disable()
            profiler.dump_stats(profile)
        measuring[0] = False
        if stats_path:
            stats = {
                "gc_seconds": gc_seconds,
                "gc_collections": gc_runs,
                "gc_max_pause": gc_pause["max"],
            }
            Path(stats_path).write_text(json.dumps(stats))

    gc.callbacks.append(on_gc)
    signal.signal(signal.SIGUSR1, start)
    signal.signal(signal.SIGUSR2, stop)
    run()


# --- the driver ------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def percentile(sorted_values: Sequence[float], p: float) -> float:
    if not sorted_values:
        return math.nan
    index = min(len(sorted_values) - 1, math.ceil(p / 100 * len(sorted_values)) - 1)
    return sorted_values[max(index, 0)]


class Driver:
    """One benchmark run: a server, its subscriber processes, the publisher."""

    def __init__(self, args: argparse.Namespace, subscribers: int, directory: Path) -> None:
        self.args = args
        self.subscribers = subscribers
        self.directory = directory
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"

    def server_env(self) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in {"DATABASE_URL", "DATABASE_READ_URL", "REDIS_URL"}
        }
        env.update(
            CONCORD_DATA_DIR=str(self.directory),
            JWT_SECRET=JWT_SECRET,
            LOG_LEVEL="WARNING",
            # Thousands of subscriptions of one user: counted, never refused.
            RATE_LIMIT_OPERATIONS="1000000000/minute",
            SUBSCRIBER_QUEUE_SIZE=str(self.args.queue_size),
            **{SHARED_RENDER_ENV: "0" if self.args.no_shared_render else "1"},
        )
        env[STATS_ENV] = str(self.directory / "server-stats.json")
        env[GC_FREEZE_ENV] = "1" if self.args.gc_freeze else "0"
        if self.args.idle_poll:
            env[IDLE_POLL_ENV] = str(self.args.idle_poll)
        if self.args.profile:
            env[PROFILE_ENV] = str(Path(self.args.profile).resolve())
        if self.args.database_url:
            env["DATABASE_URL"] = self.args.database_url
        if self.args.redis_url:
            env["REDIS_URL"] = self.args.redis_url
        return env

    async def gql(self, http: Any, query: str, variables: dict[str, Any], token: str = "") -> Any:
        headers = {"authorization": f"Bearer {token}"} if token else {}
        response = await http.post(
            "/graphql", json={"query": query, "variables": variables}, headers=headers
        )
        body = response.json()
        if response.status_code != 200 or body.get("errors"):
            raise RuntimeError(f"{response.status_code}: {body}")
        return body["data"]

    async def setup(self, http: Any) -> tuple[str, str, str]:
        """A user, a workspace and a board: (token, workspace id, board id)."""
        name = f"bench{os.getpid()}{time.monotonic_ns()}"
        data = await self.gql(
            http,
            """mutation($i: RegisterInput!) { register(input: $i) {
                 ... on AuthPayload { accessToken } } }""",
            {
                "i": {
                    "email": f"{name}@example.com",
                    "password": "bench password 1",
                    "displayName": name,
                }
            },
        )
        token = data["register"]["accessToken"]
        data = await self.gql(
            http,
            """mutation($i: CreateWorkspaceInput!) { createWorkspace(input: $i) {
                 ... on WorkspacePayload { workspace { id } } } }""",
            {"i": {"name": "Bench"}},
            token,
        )
        workspace = data["createWorkspace"]["workspace"]["id"]
        data = await self.gql(
            http,
            """mutation($i: CreateBoardInput!) { createBoard(input: $i) {
                 ... on BoardPayload { board { id } } } }""",
            {"i": {"workspaceId": workspace, "name": "Bench"}},
            token,
        )
        return token, workspace, data["createBoard"]["board"]["id"]

    async def last_cursor(self, http: Any, token: str, workspace: str) -> str:
        data = await self.gql(
            http,
            "query($w: ID!) { events(workspaceId: $w, first: 100) { edges { cursor } } }",
            {"w": workspace},
            token,
        )
        cursor: str = data["events"]["edges"][-1]["cursor"]
        return cursor

    async def card(self, http: Any, token: str, board: str, title: str) -> None:
        data = await self.gql(http, CREATE_CARD, {"i": {"boardId": board, "title": title}}, token)
        if data["createCard"]["__typename"] != "CardPayload":
            raise RuntimeError(data)

    async def run(self) -> dict[str, Any]:
        import httpx
        import psutil

        args = self.args
        if args.database_url and not args.database_url.startswith("sqlite"):
            migrate = await asyncio.create_subprocess_exec(
                str(Path(sys.executable).with_name("concord")),
                "migrate",
                env=self.server_env(),
                stdout=subprocess.DEVNULL,
            )
            if await migrate.wait() != 0:
                raise RuntimeError("concord migrate failed")
        logs = Path(args.logs) if args.logs else self.directory
        logs.mkdir(parents=True, exist_ok=True)
        log = (logs / f"server-{self.subscribers}-{time.strftime('%H%M%S')}.log").open("wb")
        server = await asyncio.create_subprocess_exec(
            sys.executable,
            __file__,
            "serve",
            "--port",
            str(self.port),
            env=self.server_env(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        clients: list[asyncio.subprocess.Process] = []
        try:
            # A saturated server answers mutations late; late is data, not a failure.
            async with httpx.AsyncClient(base_url=self.base, timeout=600) as http:
                for _ in range(600):
                    with contextlib.suppress(httpx.TransportError):
                        if (await http.get("/readyz")).status_code == 200:
                            break
                    await asyncio.sleep(0.05)
                else:
                    raise RuntimeError("the server did not get ready")
                token, workspace, board = await self.setup(http)
                # Warm-up: one subscription end to end, so lazy imports and caches are
                # in the baseline, not in the per-subscriber memory. The subscribers
                # resume from before the warm-up event: each gets it by backfill, which
                # tells the client that its subscription has started.
                ws_url = f"127.0.0.1:{self.port}"
                cursor = await self.last_cursor(http, token, workspace)
                warm, _ = await open_subscribers(ws_url, token, workspace, cursor, 1, 1, burst=True)
                await self.card(http, token, board, "warm-up")
                await asyncio.wait_for(warm[0].first_event, 30)
                warm[0].close()
                await asyncio.sleep(1.0)
                process = psutil.Process(server.pid)
                rss_before = process.memory_info().rss
                progress(
                    f"{self.subscribers} subscribers: server up, RSS {rss_before / 2**20:.1f} MiB"
                )

                processes = args.client_processes or max(
                    1, min(4, math.ceil(self.subscribers / 2500))
                )
                counts = [self.subscribers // processes] * processes
                counts[0] += self.subscribers - sum(counts)
                started = time.monotonic()
                for count in counts:
                    clients.append(
                        await asyncio.create_subprocess_exec(
                            sys.executable,
                            __file__,
                            "client",
                            "--address",
                            ws_url,
                            "--token",
                            token,
                            "--workspace",
                            workspace,
                            "--after",
                            cursor,
                            "--count",
                            str(count),
                            "--concurrency",
                            str(args.connect_concurrency),
                            *(["--burst"] if args.burst else []),
                            stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE,
                            limit=2**30,
                        )
                    )

                async def line(client: asyncio.subprocess.Process) -> dict[str, Any]:
                    assert client.stdout is not None
                    raw = await client.stdout.readline()
                    if not raw:
                        raise RuntimeError("a client process exited early")
                    message: dict[str, Any] = json.loads(raw)
                    return message

                subscribed = await asyncio.gather(*(line(c) for c in clients))
                subscribe_seconds = time.monotonic() - started
                progress(f"connected and subscribed in {subscribe_seconds:.1f}s")
                connected = sum(m["count"] for m in subscribed)
                failed = sum(m["failed"] for m in subscribed)
                readies = await asyncio.gather(*(line(c) for c in clients))
                connect_seconds = time.monotonic() - started
                ready_seq = max(s for m in readies for s in m["seqs"])
                await asyncio.sleep(args.settle)
                rss_idle = process.memory_info().rss
                # What the idle subscriptions cost by themselves: no event is published.
                idle_cpu_before = sum(process.cpu_times()[:2])
                await asyncio.sleep(args.idle)
                idle_cpu = sum(process.cpu_times()[:2]) - idle_cpu_before
                progress(f"all live after {connect_seconds:.1f}s; publishing")

                # Publish at a fixed rate; each mutation on its own task, so a slow one
                # does not delay the schedule.
                total = round(args.rate * args.duration)
                server.send_signal(signal.SIGUSR1)
                cpu_before = sum(process.cpu_times()[:2])
                publish_started = time.monotonic()

                mutation_ms: list[float] = []

                async def publish(n: int) -> bool:
                    await asyncio.sleep(
                        max(0.0, publish_started + n / args.rate - time.monotonic())
                    )
                    sent = time.monotonic()
                    try:
                        await self.card(http, token, board, f"bench {n}")
                    except (RuntimeError, httpx.HTTPError):
                        return False
                    mutation_ms.append(round((time.monotonic() - sent) * 1000, 3))
                    return True

                outcomes = await asyncio.gather(*(publish(n) for n in range(total)))
                published = sum(outcomes)
                cpu_used = sum(process.cpu_times()[:2]) - cpu_before
                server.send_signal(signal.SIGUSR2)
                progress("published; draining")
                wall = time.monotonic() - publish_started
                for client in clients:
                    assert client.stdin is not None
                    command = {
                        "first": ready_seq + 1,
                        "last": ready_seq + published,
                        "timeout": args.drain,
                    }
                    client.stdin.write((json.dumps(command) + "\n").encode())
                    await client.stdin.drain()
                results = await asyncio.gather(*(line(c) for c in clients))
                rss_end = process.memory_info().rss
                stats_file = self.directory / "server-stats.json"
                for _ in range(200):
                    if stats_file.exists():
                        break
                    await asyncio.sleep(0.05)
                stats = json.loads(stats_file.read_text()) if stats_file.exists() else {}
        finally:
            for client in clients:
                if client.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        client.kill()
                await client.wait()
            if server.returncode is None:
                server.terminate()
                try:
                    await asyncio.wait_for(server.wait(), 20)
                except TimeoutError:
                    server.kill()
                    await server.wait()
            log.close()

        latencies = sorted(ms for r in results for _, ms in r["latencies_ms"])
        by_event: dict[int, list[float]] = {}
        for r in results:
            for seq, ms in r["latencies_ms"]:
                by_event.setdefault(seq, []).append(ms)
        firsts = sorted(min(values) for values in by_event.values())
        lasts = sorted(max(values) for values in by_event.values())
        errors: dict[str, int] = {}
        for r in results:
            for key, value in r["errors"].items():
                errors[key] = errors.get(key, 0) + value
        expected = connected * published
        return {
            "subscribers": self.subscribers,
            "connected": connected,
            "connect_failed": failed,
            "connect_seconds": round(connect_seconds, 1),
            "acked_seconds": round(subscribe_seconds, 1),
            "shared_render": not args.no_shared_render,
            "variant": variant(args),
            "rate": args.rate,
            "published": published,
            "expected": expected,
            "delivered": sum(r["delivered"] for r in results),
            "delivered_pct": round(100 * sum(r["delivered"] for r in results) / expected, 3)
            if expected
            else math.nan,
            "duplicates": sum(r["duplicates"] for r in results),
            "out_of_order": sum(r["out_of_order"] for r in results),
            "closed": sum(r["closed"] for r in results),
            "errors": errors,
            "p50_ms": percentile(latencies, 50),
            "p90_ms": percentile(latencies, 90),
            "p99_ms": percentile(latencies, 99),
            "max_ms": latencies[-1] if latencies else math.nan,
            # Per event: when its first and its last subscriber got it (medians).
            "first_ms": percentile(firsts, 50),
            "last_ms": percentile(lasts, 50),
            "mutation_p50_ms": percentile(sorted(mutation_ms), 50),
            "mutation_p99_ms": percentile(sorted(mutation_ms), 99),
            "publish_seconds": round(wall, 1),
            "server_cpu_pct": round(100 * cpu_used / wall, 1),
            "idle_cpu_pct": round(100 * idle_cpu / args.idle, 1),
            # Server CPU per delivered event per subscriber (the publishing phase).
            "cpu_us_per_delivery": round(
                1e6 * cpu_used / max(1, sum(r["delivered"] for r in results))
            ),
            "gc_full_collections": stats.get("gc_collections", [0, 0, 0])[2],
            "gc_seconds": round(sum(stats.get("gc_seconds", [])), 3),
            "gc_max_pause_ms": round(1000 * stats.get("gc_max_pause", math.nan), 1),
            "rss_before_mib": round(rss_before / 2**20, 1),
            "rss_idle_mib": round(rss_idle / 2**20, 1),
            "rss_end_mib": round(rss_end / 2**20, 1),
            "kib_per_idle_subscriber": round((rss_idle - rss_before) / 1024 / self.subscribers, 1),
        }


def variant(args: argparse.Namespace) -> str:
    parts = ["baseline" if args.no_shared_render else "shared render"]
    if args.gc_freeze:
        parts.append("gc.freeze")
    if args.idle_poll:
        parts.append(f"idle poll {args.idle_poll:g}s")
    if args.redis_url:
        parts.append("Redis")
    return " + ".join(parts)


def report(results: list[dict[str, Any]]) -> str:
    columns = [
        ("subscribers", "subs"),
        ("variant", "variant"),
        ("published", "events"),
        ("delivered_pct", "delivered %"),
        ("duplicates", "dup"),
        ("out_of_order", "ooo"),
        ("p50_ms", "p50 ms"),
        ("p90_ms", "p90 ms"),
        ("p99_ms", "p99 ms"),
        ("max_ms", "max ms"),
        ("first_ms", "first sub ms"),
        ("last_ms", "last sub ms"),
        ("mutation_p50_ms", "mutation ms"),
        ("mutation_p99_ms", "mutation p99 ms"),
        ("publish_seconds", "publish s"),
        ("server_cpu_pct", "server CPU %"),
        ("idle_cpu_pct", "idle CPU %"),
        ("cpu_us_per_delivery", "CPU µs/delivery"),
        ("gc_max_pause_ms", "max GC pause ms"),
        ("kib_per_idle_subscriber", "KiB/idle sub"),
        ("connect_seconds", "connect s"),
    ]
    lines = [
        "| " + " | ".join(title for _, title in columns) + " |",
        "|" + "---|" * len(columns),
    ]
    for r in results:
        lines.append("| " + " | ".join(str(r[key]) for key, _ in columns) + " |")
    return "\n".join(lines)


async def driver_main(args: argparse.Namespace) -> list[dict[str, Any]]:
    # SIGTERM (e.g. from `timeout`) unwinds like Ctrl-C, so the server and clients stop.
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    limit = raise_fd_limit()
    needed = max(args.subscribers) + 256
    if limit < needed:
        sys.stderr.write(f"warning: open-file limit {limit} < {needed} needed\n")
    results = []
    for count in args.subscribers:
        with tempfile.TemporaryDirectory(prefix="concord-bench-") as directory:
            result = await Driver(args, count, Path(directory)).run()
        results.append(result)
        sys.stderr.write(json.dumps(result) + "\n")
    return results


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    roles = parser.add_subparsers(dest="role")
    serve = roles.add_parser("serve", help="(internal) the Concord server")
    serve.add_argument("--port", type=int, required=True)
    client = roles.add_parser("client", help="(internal) a process of subscribers")
    for name in ("--address", "--token", "--workspace", "--after"):
        client.add_argument(name, required=True)
    client.add_argument("--count", type=int, required=True)
    client.add_argument("--concurrency", type=int, default=100)
    client.add_argument("--burst", action="store_true")
    client.add_argument("--peer", action="store_true", help="the Node peer's schema")
    parser.add_argument("--subscribers", type=int, nargs="+", default=[100, 1000, 5000])
    parser.add_argument("--rate", type=float, default=1.0, help="events per second")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of publishing")
    parser.add_argument(
        "--drain",
        type=float,
        default=30.0,
        help="seconds to wait for stragglers after the last publish",
    )
    parser.add_argument(
        "--settle",
        type=float,
        default=2.0,
        help="seconds between the last subscription and the idle RSS",
    )
    parser.add_argument(
        "--idle", type=float, default=10.0, help="seconds of measuring the idle server's CPU"
    )
    parser.add_argument(
        "--no-shared-render",
        action="store_true",
        help="baseline: every subscriber renders its own result",
    )
    parser.add_argument("--database-url", help="default: embedded SQLite in a temp dir")
    parser.add_argument("--redis-url", help="default: the in-process broker")
    parser.add_argument(
        "--queue-size", type=int, default=1000, help="SUBSCRIBER_QUEUE_SIZE of the server"
    )
    parser.add_argument(
        "--client-processes",
        type=int,
        default=0,
        help="default: one per 2,500 subscribers, at most 4",
    )
    parser.add_argument(
        "--connect-concurrency", type=int, default=50, help="subscriptions starting at once"
    )
    parser.add_argument(
        "--burst",
        action="store_true",
        help="do not wait for a subscription to start before opening the next one: "
        "the server starts them all at once (a reconnect storm)",
    )
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--logs", help="keep the server logs in this directory")
    parser.add_argument(
        "--idle-poll",
        type=float,
        help="experiment: seconds between an idle subscription's log reads "
        "(resolvers.live.IDLE_POLL_SECONDS)",
    )
    parser.add_argument(
        "--gc-freeze",
        action="store_true",
        help="experiment: gc.freeze() in the server once every subscription is live",
    )
    parser.add_argument(
        "--profile", help="profile the server while publishing; write the stats to this file"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.role == "serve":
        serve_main(args)
    elif args.role == "client":
        asyncio.run(client_main(args))
    else:
        results = asyncio.run(driver_main(args))
        sys.stdout.write(report(results) + "\n")
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
