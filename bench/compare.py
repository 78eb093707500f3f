"""Concord against the Node peer, driven by the same client, alternating, in one run.

    .venv/bin/python bench/compare.py --subscribers 1000 5000 10000 --rounds 3
    .venv/bin/python bench/compare.py --subscribers 20000 --workers 2 --rounds 1

For each subscriber count and round it runs both servers, one after the other (the
order alternates between rounds), each fresh, with the same subscriber processes
(`bench/subscribers.py client`: a minimal graphql-transport-ws client that stamps each
frame as it is read) and the same Redis (a `redis-server` of this run, on a free port,
stopped by its pid):

- **Concord**: `concord serve` as the CLI runs it (`--workers N`), REDIS_URL set, the
  embedded SQLite database; events are `createCard` mutations over HTTP, so latency is
  commit-to-receive (`occurredAt`, stamped in the transaction);
- **Node peer** (`bench/peers/node-subs/server.js`: graphql-ws 6, graphql-js 16,
  graphql-redis-subscriptions on one ioredis connection); events are PUBLISHed to
  `ws:<id>` with `ts` = publish time, as its own `publisher.js` does. Its npm
  dependencies are installed on first use into `bench/.cache/node-subs/` (ignored).

Reported per run: delivered/expected, p50/p99/max latency, server CPU per delivery
(the server's processes' user+system time while publishing ÷ deliveries), memory per
idle subscriber ((RSS once all are live - RSS before) / N), connect time (until every
subscription delivered its first event) with the server CPU it took per subscription, and
the ratio Concord ÷ peer of the medians.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import subscribers as sb

ROOT = Path(__file__).resolve().parent
PEER_SOURCE = ROOT / "peers" / "node-subs"
PEER_CACHE = ROOT / ".cache" / "node-subs"
CONCORD = Path(sys.executable).with_name("concord")


def install_peer() -> Path:
    """The peer's server with its pinned npm dependencies, in the ignored cache."""
    PEER_CACHE.mkdir(parents=True, exist_ok=True)
    for name in ("package.json", "server.js"):
        shutil.copyfile(PEER_SOURCE / name, PEER_CACHE / name)
    if not (PEER_CACHE / "node_modules" / "graphql-ws").exists():
        subprocess.run(
            ["npm", "install", "--no-audit", "--no-fund", "--package-lock=false"],
            cwd=PEER_CACHE,
            check=True,
        )
    return PEER_CACHE


async def wait_http(url: str) -> None:
    import httpx

    async with httpx.AsyncClient() as http, asyncio.timeout(60):
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if (await http.get(url)).status_code < 500:
                    return
            await asyncio.sleep(0.1)


class Target:
    """A server under test: start, set up, publish, its processes."""

    name = ""

    def __init__(self, args: argparse.Namespace, redis_port: int, directory: Path) -> None:
        self.args = args
        self.redis_port = redis_port
        self.directory = directory
        self.port = sb.free_port()
        self.process: asyncio.subprocess.Process | None = None
        self.token, self.workspace, self.after, self.board = "", "1", "", ""

    def processes(self) -> list[Any]:
        import psutil

        assert self.process is not None
        root = psutil.Process(self.process.pid)
        return [root, *root.children(recursive=True)]

    def rss(self) -> int:
        return sum(p.memory_info().rss for p in self.processes())

    def cpu(self) -> float:
        return sum(sum(p.cpu_times()[:2]) for p in self.processes())

    async def stop(self) -> None:
        if self.process is None or self.process.returncode is not None:
            return
        processes = self.processes()
        self.process.send_signal(signal.SIGINT)
        try:
            await asyncio.wait_for(self.process.wait(), 20)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()
        for process in processes[1:]:  # workers left behind, by their pid
            with contextlib.suppress(Exception):
                process.kill()


class Concord(Target):
    name = "concord"

    async def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}}
        env.update(
            CONCORD_DATA_DIR=str(self.directory),
            JWT_SECRET=sb.JWT_SECRET,
            LOG_LEVEL="WARNING",
            REDIS_URL=f"redis://127.0.0.1:{self.redis_port}/0",
            # Thousands of operations of one user: counted, never refused.
            RATE_LIMIT_OPERATIONS="1000000000/minute",
        )
        # Migrate once up front: N workers would race to create the SQLite schema.
        await (
            await asyncio.create_subprocess_exec(
                str(CONCORD), "migrate", env=env, stdout=subprocess.DEVNULL
            )
        ).wait()
        log = (self.directory / "concord.log").open("wb")
        self.process = await asyncio.create_subprocess_exec(
            str(CONCORD),
            "serve",
            "--port",
            str(self.port),
            "--workers",
            str(self.args.workers),
            env=env,
            stdout=log,
            stderr=log,
        )
        await wait_http(f"http://127.0.0.1:{self.port}/healthz")

    async def setup(self) -> None:
        import httpx

        driver = sb.Driver(self.args, 0, self.directory)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{self.port}", timeout=60) as h:
            self.token, self.workspace, self.board = await driver.setup(h)
            self.after = await driver.last_cursor(h, self.token, self.workspace)
            await driver.card(h, self.token, self.board, "warm-up")  # each gets it by backfill
            self._driver, self._http_base = driver, f"http://127.0.0.1:{self.port}"

    async def publisher(self) -> Any:
        import httpx

        http = httpx.AsyncClient(base_url=self._http_base, timeout=60)

        async def publish(n: int) -> None:
            await self._driver.card(http, self.token, self.board, f"bench {n}")

        publish.close = http.aclose  # type: ignore[attr-defined]
        return publish


class NodePeer(Target):
    name = "node peer"

    async def start(self) -> None:
        cache = install_peer()
        env = {**os.environ, "PORT": str(self.port), "REDIS_PORT": str(self.redis_port)}
        env["NODE_ENV"] = "production"
        log = (self.directory / "node.log").open("wb")
        self.process = await asyncio.create_subprocess_exec(
            "node", "server.js", cwd=cache, env=env, stdout=log, stderr=log
        )
        await wait_http(f"http://127.0.0.1:{self.port}/stats")

    async def setup(self) -> None:
        self.workspace = f"bench{os.getpid()}"

    async def publisher(self) -> Any:
        from redis.asyncio import Redis

        redis = Redis(port=self.redis_port)

        async def publish(n: int) -> None:
            message = {"seq": n, "entityId": f"e{n % 100}", "type": "entity.updated"}
            message["ts"] = time.time() * 1000
            await redis.publish(f"ws:{self.workspace}", json.dumps(message))

        publish.close = redis.aclose  # type: ignore[attr-defined]
        return publish


async def run_one(target: Target, count: int, args: argparse.Namespace) -> dict[str, Any]:
    peer = isinstance(target, NodePeer)
    clients: list[asyncio.subprocess.Process] = []
    try:
        await target.start()
        await target.setup()
        await asyncio.sleep(1.0)
        rss_before = target.rss()
        processes = max(1, min(4, math.ceil(count / 2500)))
        counts = [count // processes] * processes
        counts[0] += count - sum(counts)
        started = time.monotonic()
        connect_cpu = target.cpu()
        for n in counts:
            clients.append(
                await asyncio.create_subprocess_exec(
                    sys.executable,
                    str(ROOT / "subscribers.py"),
                    "client",
                    "--address",
                    f"127.0.0.1:{target.port}",
                    "--token",
                    target.token or "-",
                    "--workspace",
                    target.workspace,
                    "--after",
                    target.after or "-",
                    "--count",
                    str(n),
                    "--concurrency",
                    str(args.connect_concurrency),
                    *(["--peer", "--burst"] if peer else []),
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    limit=2**30,
                )
            )

        async def line(client: asyncio.subprocess.Process) -> dict[str, Any]:
            assert client.stdout is not None
            raw = await client.stdout.readline()
            if not raw:
                raise RuntimeError(f"a client process of {target.name} exited early")
            message: dict[str, Any] = json.loads(raw)
            return message

        publish = await target.publisher()
        subscribed = await asyncio.gather(*(line(c) for c in clients))
        probes = None
        if peer:
            # No backfill on the peer: probe events (seq 0) until every subscriber has one.
            async def probe() -> None:
                while True:
                    await publish(0)
                    await asyncio.sleep(0.5)

            probes = asyncio.create_task(probe())
        readies = await asyncio.gather(*(line(c) for c in clients))
        connect_seconds = time.monotonic() - started
        connect_cpu = target.cpu() - connect_cpu
        if probes is not None:
            probes.cancel()
        ready_seq = 0 if peer else max(s for m in readies for s in m["seqs"])
        await asyncio.sleep(3.0)
        rss_idle = target.rss()

        total = round(args.rate * args.duration)
        cpu_before = target.cpu()
        t0 = time.monotonic()

        async def at(n: int) -> None:
            await asyncio.sleep(max(0.0, t0 + n / args.rate - time.monotonic()))
            await publish(ready_seq + 1 + n if peer else n)

        await asyncio.gather(*(at(n) for n in range(total)))
        cpu_used = target.cpu() - cpu_before
        for client in clients:
            assert client.stdin is not None
            command = {"first": ready_seq + 1, "last": ready_seq + total, "timeout": args.drain}
            client.stdin.write((json.dumps(command) + "\n").encode())
            await client.stdin.drain()
        results = await asyncio.gather(*(line(c) for c in clients))
        await publish.close()
    finally:
        for client in clients:
            if client.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    client.kill()
            await client.wait()
        await target.stop()

    connected = sum(m["count"] for m in subscribed)
    latencies = sorted(ms for r in results for _, ms in r["latencies_ms"])
    delivered = sum(r["delivered"] for r in results)
    errors: dict[str, int] = {}
    for r in results:
        for key, value in r["errors"].items():
            errors[key] = errors.get(key, 0) + value
    return {
        "server": target.name,
        "workers": args.workers if not peer else 1,
        "subscribers": count,
        "connected": connected,
        "expected": connected * total,
        "delivered": delivered,
        "delivered_pct": round(100 * delivered / max(1, connected * total), 3),
        "duplicates": sum(r["duplicates"] for r in results),
        "out_of_order": sum(r["out_of_order"] for r in results),
        "errors": errors,
        "p50_ms": sb.percentile(latencies, 50),
        "p99_ms": sb.percentile(latencies, 99),
        "max_ms": latencies[-1] if latencies else math.nan,
        "cpu_us_per_delivery": round(1e6 * cpu_used / max(1, delivered), 1),
        "kib_per_idle_subscriber": round((rss_idle - rss_before) / 1024 / count, 1),
        "connect_seconds": round(connect_seconds, 1),
        # Server CPU while the subscriptions were being established, per subscription.
        "connect_cpu_ms_per_subscriber": round(1000 * connect_cpu / max(1, connected), 3),
    }


def summary(results: list[dict[str, Any]]) -> str:
    keys = [
        ("delivered_pct", "delivered %"),
        ("p50_ms", "p50 ms"),
        ("p99_ms", "p99 ms"),
        ("max_ms", "max ms"),
        ("cpu_us_per_delivery", "CPU µs/delivery"),
        ("kib_per_idle_subscriber", "KiB/idle sub"),
        ("connect_seconds", "connect s"),
        ("connect_cpu_ms_per_subscriber", "connect CPU ms/sub"),
    ]
    lines = [
        "| subscribers | server | runs | " + " | ".join(t for _, t in keys) + " |",
        "|---:|---|---:|" + "---:|" * len(keys),
    ]
    groups: dict[int, dict[str, list[dict[str, Any]]]] = {}
    for r in results:
        label = r["server"]
        if label == "concord" and r["workers"] > 1:
            label += f" (--workers {r['workers']})"
        groups.setdefault(r["subscribers"], {}).setdefault(label, []).append(r)
    for count, by_server in sorted(groups.items()):
        medians: dict[str, dict[str, float]] = {}
        for label, runs in sorted(by_server.items()):
            medians[label] = {k: statistics.median(r[k] for r in runs) for k, _ in keys}
            cells = []
            for k, _ in keys:
                values = [r[k] for r in runs]
                cell = f"{medians[label][k]:g}"
                if len(values) > 1:
                    cell += f" ({min(values):g}-{max(values):g})"
                cells.append(cell)
            lines.append(f"| {count:,} | {label} | {len(runs)} | " + " | ".join(cells) + " |")
        peer = medians.get("node peer")
        for label in sorted(medians):
            if not label.startswith("concord") or peer is None:
                continue
            ratio = [f"{medians[label][k] / peer[k]:.2f}x" if peer[k] else "-" for k, _ in keys]
            lines.append(f"| {count:,} | **{label} / peer** | | " + " | ".join(ratio) + " |")
    return "\n".join(lines)


async def main(args: argparse.Namespace) -> None:
    sb.raise_fd_limit()
    directory = Path(tempfile.mkdtemp(prefix="concord-compare-"))
    redis_port = sb.free_port()
    redis = await asyncio.create_subprocess_exec(
        "redis-server",
        "--port",
        str(redis_port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        stdout=subprocess.DEVNULL,
    )
    results: list[dict[str, Any]] = []
    try:
        await asyncio.sleep(0.5)
        for count in args.subscribers:
            for round_ in range(args.rounds):
                order: list[type[Target]] = [Concord, NodePeer]
                if round_ % 2:
                    order.reverse()
                if args.only:
                    order = [t for t in order if t.name.startswith(args.only)]
                for kind in order:
                    run_dir = directory / f"{kind.__name__}-{count}-{round_}"
                    run_dir.mkdir()
                    sb.progress(f"{count} subscribers, round {round_ + 1}: {kind.name}")
                    result = await run_one(kind(args, redis_port, run_dir), count, args)
                    result["round"] = round_ + 1
                    results.append(result)
                    sys.stderr.write(json.dumps(result) + "\n")
                    if args.json:
                        with Path(args.json).open("a") as out:  # noqa: ASYNC230
                            out.write(json.dumps(result) + "\n")
    finally:
        redis.terminate()
        await redis.wait()
    sys.stdout.write(summary(results) + "\n")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subscribers", type=int, nargs="+", default=[1000, 5000, 10000])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rate", type=float, default=1.0, help="events per second")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of publishing")
    parser.add_argument("--drain", type=float, default=15.0)
    parser.add_argument("--workers", type=int, default=1, help="concord serve --workers")
    parser.add_argument("--connect-concurrency", type=int, default=200)
    parser.add_argument("--only", choices=["concord", "node"], help="run one server only")
    parser.add_argument("--json", help="append each run's result to this JSON-lines file")
    parser.add_argument("--summarize", help="only print the table of this JSON-lines file")
    return parser.parse_args()


if __name__ == "__main__":
    arguments = parse_args()
    if arguments.summarize:
        lines = Path(arguments.summarize).read_text().splitlines()
        sys.stdout.write(summary([json.loads(line) for line in lines if line]) + "\n")
    else:
        asyncio.run(main(arguments))
