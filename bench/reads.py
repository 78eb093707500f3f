"""Benchmark: Concord's reads against PostGraphile 4 on the same PostgreSQL, same data.

One command (from the repository root, after `make install`)::

    .venv/bin/python bench/reads.py --rounds 5 --duration 10

It starts a PostgreSQL cluster of its own (initdb in a temporary directory, a free port,
pg_stat_statements with utility statements tracked, fsync off), creates Concord's schema
with `concord migrate`, loads the data set with bulk SQL (200 users, 10 workspaces x 10
boards x 50 cards x 5 comments, every card assigned; a bench user who owns every workspace),
mints an access token with Concord's own code, and starts one `concord serve` and one
PostGraphile 4.14 process (installed with npm into bench/.node, ignored by git).

Before measuring it checks that both servers return the same `data` for each query, in the
same order, and refuses to go on otherwise. Then, round after round, for each query and
connection count it runs wrk against Concord and PostGraphile back to back, alternating
which goes first, and reports medians (min-max) over the rounds of: req/s, p50/p99
latency, the Concord ÷ PostGraphile ratio of each round, server CPU per request (the server
process tree, from /proc), PostgreSQL CPU per request, and SQL statements and transaction
statements (BEGIN/COMMIT/ROLLBACK) per request from pg_stat_statements. Statement counts in
the summary come from an exact pass of sequential requests after the warm-up.

Results: JSON lines in bench/.results/ (ignored), a markdown table on stdout; `--record`
appends a dated section to bench/RESULTS.md. `--profile` records a py-spy profile of the
Concord process under load (per query) and prints its summary. Filters for quick reruns:
`--only concord|postgraphile|both`, `--queries nested mid trivial`, `--connections 1 32`;
`--concord-env KEY=VALUE` (repeatable) passes settings to Concord; `--vary` cycles through
every workspace / board instead of asking for the same one (a response cache's cold case);
`--postgraphile-jwt` makes PostGraphile verify the same bearer token. Experiments on the
Concord process that leave its code alone: `--concord-gc` (time the garbage collector, or
change it: bench/read_gc.py) and `--profile-native` (C frames in the profile).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import read_gc
import read_measure as rm
import read_profile
import read_queries as rq
import read_report
import read_servers as rs
from read_servers import BenchError, progress

JWT_SECRET = "bench-secret-that-is-long-enough-for-hs256-0123456789abcdef"
RESULTS_DIR = rs.BENCH_DIR / ".results"
RESULTS_MD = rs.BENCH_DIR / "RESULTS.md"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3, help="A/B rounds (default 3)")
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, nargs="+", default=[1, 32], help="wrk -c")
    parser.add_argument(
        "--queries", nargs="+", choices=rq.QUERIES, default=list(rq.QUERIES), help="a subset"
    )
    parser.add_argument(
        "--only",
        choices=["concord", "postgraphile", "both"],
        default="both",
        help="one server alone skips the equality check and the ratios",
    )
    parser.add_argument(
        "--concord-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for the Concord process (repeatable)",
    )
    parser.add_argument(
        "--concord-gc",
        metavar="default|off|freeze|T0,T1,T2",
        help="time Concord's garbage collections (GC ms per request); off, freeze (after "
        "the warm-up) or thresholds change the collector, as an experiment (bench/read_gc.py)",
    )
    parser.add_argument(
        "--vary", action="store_true", help="cycle through every workspace/board per request"
    )
    parser.add_argument(
        "--postgraphile-jwt",
        action="store_true",
        help="make PostGraphile verify the same bearer token (--jwt-secret); off by default",
    )
    parser.add_argument("--warmup", type=int, default=3, help="seconds of load per target first")
    parser.add_argument("--profile", action="store_true", help="py-spy profile of Concord")
    parser.add_argument("--profile-duration", type=int, default=15, help="seconds per query")
    parser.add_argument("--profile-connections", type=int, default=32, help="wrk -c under py-spy")
    parser.add_argument(
        "--profile-native", action="store_true", help="py-spy --native: C frames too (GC)"
    )
    parser.add_argument("--record", action="store_true", help="append to bench/RESULTS.md")
    parser.add_argument("--note", default="", help="a line for the RESULTS.md section")
    args = parser.parse_args(argv)
    for item in args.concord_env:
        if "=" not in item:
            parser.error(f"--concord-env wants KEY=VALUE, got {item!r}")
    return args


def servers_of(args: argparse.Namespace) -> list[str]:
    return list(rq.SERVERS) if args.only == "both" else [args.only]


def require_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() == 0:
        progress("wrk not found: apt-get update && apt-get install -y wrk")
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True)
        found = shutil.which("wrk")
    if not found:
        raise BenchError("wrk is needed: sudo apt-get install -y wrk")
    return found


# --- machine and versions -------------------------------------------------------------


def machine() -> dict[str, Any]:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.M)
    mem = re.search(r"^MemTotal:\s*(\d+) kB", Path("/proc/meminfo").read_text(), re.M)
    return {
        "nproc": os.cpu_count(),
        "cpu": model.group(1).strip() if model else platform.processor(),
        "memory_gib": round(int(mem.group(1)) / 2**20, 1) if mem else None,
        "kernel": platform.release(),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def versions(pg: rs.Postgres, wrk: str) -> dict[str, str]:
    from importlib.metadata import version

    commit = subprocess.run(
        ["git", "-C", str(rs.REPO), "describe", "--always", "--dirty"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    wrk_line = subprocess.run([wrk, "-v"], capture_output=True, text=True, check=False)
    packages = ("strawberry-graphql", "graphql-core", "sqlalchemy", "asyncpg", "uvicorn")
    return {
        "concord_commit": commit,
        "python": platform.python_version(),
        **{name: version(name) for name in packages},
        "postgresql": pg.version(),
        "postgraphile": rs.POSTGRAPHILE_VERSION,
        "node": rs.node_version(),
        "wrk": (wrk_line.stdout + wrk_line.stderr).split("\n")[0].split(" [")[0],
    }


class Results:
    """JSON lines into bench/.results/reads-<UTC time>.jsonl, one object per line."""

    def __init__(self) -> None:
        RESULTS_DIR.mkdir(exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
        self.path = RESULTS_DIR / f"reads-{stamp}.jsonl"

    def write(self, kind: str, **fields: Any) -> None:
        with self.path.open("a") as out:
            out.write(json.dumps({"type": kind, **fields}) + "\n")


def mint_token(user_id: str) -> str:
    """An access token for the bench user, by Concord's own code and settings."""
    import uuid

    from auth.tokens import issue_access_token
    from server.app import token_config
    from server.settings import Settings

    settings = Settings(database_url="postgresql+asyncpg://unused", jwt_secret=JWT_SECRET)
    config = dataclasses.replace(token_config(settings), access_ttl=timedelta(hours=12))
    return issue_access_token(config, uuid.UUID(user_id))


def prepare_database(pg: rs.Postgres) -> rq.Ids:
    env = {**os.environ, "DATABASE_URL": pg.url("postgresql+asyncpg")}
    concord = Path(sys.executable).parent / "concord"
    progress(rs.run([str(concord), "migrate"], env=env).strip())
    started = time.monotonic()
    pg.psql(rs.DATABASE, rq.DATASET_SQL)
    counts = json.loads(pg.psql(rs.DATABASE, rq.COUNTS_SQL))
    progress(f"data set in {time.monotonic() - started:.1f} s: {counts}")
    return rq.Ids.parse(pg.psql(rs.DATABASE, rq.IDS_SQL))


def make_targets(
    args: argparse.Namespace,
    workdir: Path,
    urls: dict[str, tuple[str, int]],
    ids: rq.Ids,
    token: str,
) -> dict[tuple[str, str], rm.Target]:
    targets = {}
    for server, (url, pid) in urls.items():
        headers = {"Content-Type": "application/json"}
        if server == "concord" or args.postgraphile_jwt:
            headers["Authorization"] = f"Bearer {token}"
        for query in args.queries:
            bodies = [
                rq.body(server, query, ids, values)
                for values in rq.variables(query, ids, args.vary)
            ]
            script = workdir / f"{server}-{query}.lua"
            script.write_text(rq.wrk_script("/graphql", bodies, headers))
            target = rm.Target(server, query, url, pid, bodies, headers, script)
            if server == "concord" and args.concord_gc:
                target.gc_stats = workdir / "gc-stats.json"
            targets[(server, query)] = target
    return targets


def benchmark(
    args: argparse.Namespace,
    wrk: str,
    pg: rs.Postgres,
    targets: dict[tuple[str, str], rm.Target],
    results: Results,
) -> list[dict[str, Any]]:
    servers = servers_of(args)
    runs = []
    for round_no in range(1, args.rounds + 1):
        # Alternate which server goes first, so neither always gets the quieter slot.
        order = servers if round_no % 2 else list(reversed(servers))
        for query, c in rq.combos(args.queries, args.connections):
            for server in order:
                target = targets[(server, query)]
                found = rm.measure(wrk, pg, target, c, args.duration)
                run = {"round": round_no, "server": server, "query": query, "connections": c}
                run.update(found)
                runs.append(run)
                results.write("run", **run)
                gc = found.get("gc_ms_per_req")
                progress(
                    f"round {round_no} {query} c={c} {server}: {found['rps']:.1f} req/s, "
                    f"p50 {found['p50_ms']:.1f} ms, p99 {found['p99_ms']:.1f} ms, "
                    f"CPU {found['cpu_ms_per_req']:.2f} ms/req, "
                    f"{found['server_cores_busy']:.2f} cores busy, errors {found['errors']}"
                    + ("" if gc is None else f", GC {gc:.2f} ms/req")
                )
    return runs


def profile(
    args: argparse.Namespace, wrk: str, targets: dict[tuple[str, str], rm.Target], workdir: Path
) -> str:
    """A py-spy profile of Concord per query under load; the text summaries."""
    texts = []
    for query in args.queries:
        target = targets[("concord", query)]
        rs.wait_idle(target.pid)
        folded = RESULTS_DIR / f"profile-{query}-{datetime.now(UTC):%Y%m%d-%H%M%S}.txt"
        progress(f"profiling Concord on {query} for {args.profile_duration} s → {folded}")
        spy = read_profile.record(
            target.pid, args.profile_duration, folded, native=args.profile_native
        )
        time.sleep(1)  # py-spy attaches before the load starts
        out = rm.run_wrk(wrk, target, args.profile_connections, args.profile_duration)
        _, err = spy.communicate(timeout=120)
        if spy.returncode != 0 or not folded.exists():
            raise BenchError(f"py-spy failed: {err.decode(errors='replace')}")
        title = (
            f"{query}, c={args.profile_connections}, {args.profile_duration} s "
            f"({out['requests']} requests under the profiler)"
        )
        texts.append(read_profile.summarise(folded, title))
    return "\n".join(texts)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # A `kill` of the driver stops the servers too, like Ctrl-C does (see `finally`).
    signal.signal(signal.SIGTERM, _interrupt)
    wrk = require_wrk()
    workdir = Path(tempfile.mkdtemp(prefix="concord-reads-"))
    pg = rs.Postgres(workdir, rs.free_port())
    started: list[Any] = [pg]
    results = Results()
    try:
        pg.start()
        ids = prepare_database(pg)
        token = mint_token(ids.user)
        urls: dict[str, tuple[str, int]] = {}
        servers = servers_of(args)
        if "concord" in servers:
            env = dict(item.split("=", 1) for item in args.concord_env)
            if args.concord_gc:
                env.update(read_gc.prepare(workdir, args.concord_gc)[0])
            db_url = pg.url("postgresql+asyncpg")
            concord, url = rs.start_concord(workdir, db_url, JWT_SECRET, env, started)
            urls["concord"] = (url, concord.pid)
        if "postgraphile" in servers:
            jwt = (JWT_SECRET, "concord", "concord") if args.postgraphile_jwt else None
            graphile, url = rs.start_postgraphile(workdir, pg.url(), jwt, started)
            urls["postgraphile"] = (url, graphile.pid)
        targets = make_targets(args, workdir, urls, ids, token)
        meta = {
            "started": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "command": shlex.join([".venv/bin/python", "bench/reads.py", *sys.argv[1:]]),
            "args": vars(args),
            "machine": machine(),
            "versions": versions(pg, wrk),
        }
        results.write("meta", **meta)
        if len(servers) == 2:
            rows = rm.check_answers(targets, args.queries)
            results.write("checked", objects=rows)
        if args.warmup > 0:
            # Pools filled, code paths warm: the first requests open connections (unpinged).
            for target in targets.values():
                progress(f"warm-up: {target.server} {target.query}")
                rm.run_wrk(wrk, target, max(args.connections), args.warmup)
                rs.wait_idle(target.pid)
        if args.concord_gc == "freeze" and "concord" in urls:
            read_gc.freeze(urls["concord"][1])
        exact = {key: rm.exact_statements(pg, t) for key, t in targets.items()}
        for (server, query), found in exact.items():
            results.write("statements", server=server, query=query, **found)
            progress(f"{server} {query}: {found['sql']:g} statements + {found['txn']:g} txn")
        runs = benchmark(args, wrk, pg, targets, results) if args.rounds > 0 else []
        summary = read_report.table(runs, exact) if runs else ""
        if summary:
            sys.stdout.write(summary + "\n")
        profile_text = ""
        if args.profile and "concord" in servers:
            profile_text = profile(args, wrk, targets, workdir)
            sys.stdout.write("\n" + profile_text + "\n")
            results.write("profile", text=profile_text)
        if args.record:
            raw = str(results.path.relative_to(rs.REPO))
            read_report.record_section(RESULTS_MD, args, meta, summary, profile_text, raw)
            progress(f"appended to {RESULTS_MD}")
        progress(f"results: {results.path}")
        return 0
    except BenchError as exc:
        progress(f"error: {exc}")
        return 1
    except KeyboardInterrupt:
        progress("interrupted: stopping the servers")
        return 130
    finally:
        rs.stop_all(started)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
