"""One measured run of the read benchmark: wrk, CPU from /proc, pg_stat_statements.

`measure` is one wrk run against one server and query; `exact_statements` counts the SQL of
a few sequential requests; `check_answers` makes both servers prove they agree first.
"""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import read_gc
import read_queries as rq
import read_servers as rs
from read_servers import BenchError, progress

TXN = re.compile(r"^\s*(begin|commit|rollback|start|end|abort|savepoint|release)\b", re.I)
EXACT_REQUESTS = 5

# --- statistics from pg_stat_statements -------------------------------------------------

STATS_SQL = f"""
SELECT coalesce(json_agg(json_build_object('query', left(query, 400), 'calls', calls)
                ORDER BY calls DESC), '[]')
FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid
WHERE d.datname = '{rs.DATABASE}'
"""


def reset_statements(pg: rs.Postgres) -> None:
    pg.psql("postgres", "SELECT pg_stat_statements_reset()")


def read_statements(pg: rs.Postgres) -> tuple[int, int, list[dict[str, Any]]]:
    """(statements, transaction statements, the statements with their calls) since reset."""
    rows: list[dict[str, Any]] = json.loads(pg.psql("postgres", STATS_SQL))
    txn = sum(r["calls"] for r in rows if TXN.match(r["query"]))
    other = sum(r["calls"] for r in rows if not TXN.match(r["query"]))
    return other, txn, rows


# --- the benchmark --------------------------------------------------------------------


@dataclasses.dataclass
class Target:
    server: str
    query: str
    url: str
    pid: int
    bodies: list[dict[str, Any]]
    headers: dict[str, str]
    script: Path
    gc_stats: Path | None = None


def run_wrk(
    wrk: str, target: Target, connections: int, duration: int, timeout: int = 60
) -> dict[str, Any]:
    argv = [wrk, "-t1", f"-c{connections}", f"-d{duration}s", f"--timeout={timeout}s"]
    argv += ["--latency", "-s", str(target.script), target.url]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("WRKJSON ")), None)
    if done.returncode != 0 or line is None:
        raise BenchError(f"wrk failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    result: dict[str, Any] = json.loads(line.removeprefix("WRKJSON "))
    return result


def measure(
    wrk: str, pg: rs.Postgres, target: Target, connections: int, duration: int
) -> dict[str, Any]:
    """One wrk run with the server's and PostgreSQL's CPU and the statements it caused.

    When wrk stops, each connection still has a request in flight that it does not count;
    the server finishes those anyway. So CPU and statements are read once the server is
    idle again and divided by the requests wrk counted plus one per connection: without
    that, a slow query at 32 connections (a handful of requests per run) would be charged
    the partial work of 32 uncounted requests.
    """
    rs.wait_idle(target.pid)
    gc0 = read_gc.snapshot(target.pid, target.gc_stats) if target.gc_stats else None
    reset_statements(pg)
    cpu0, db0 = rs.tree_cpu_seconds(target.pid), rs.tree_cpu_seconds(pg.pid)
    started = time.monotonic()
    out = run_wrk(wrk, target, connections, duration)
    loaded = time.monotonic() - started
    cpu_loaded = rs.tree_cpu_seconds(target.pid)
    rs.wait_idle(target.pid)
    cpu1, db1 = rs.tree_cpu_seconds(target.pid), rs.tree_cpu_seconds(pg.pid)
    statements, txn, _ = read_statements(pg)
    served = out["requests"] + connections
    errors = sum(out[k] for k in ("connect", "read", "write", "status", "timeout"))
    gc: dict[str, float] = {}
    if gc0 is not None and target.gc_stats is not None:
        gc = read_gc.difference(gc0, read_gc.snapshot(target.pid, target.gc_stats), served)
    return {
        **gc,
        "requests": out["requests"],
        "errors": errors,
        "rps": out["requests"] / (out["duration_us"] / 1e6),
        "p50_ms": out["p50_us"] / 1000,
        "p90_ms": out["p90_us"] / 1000,
        "p99_ms": out["p99_us"] / 1000,
        "max_ms": out["max_us"] / 1000,
        "cpu_ms_per_req": 1000 * (cpu1 - cpu0) / served,
        # Cores the server got while wrk ran: well under 1 means the machine starved it.
        "server_cores_busy": (cpu_loaded - cpu0) / loaded,
        "db_cpu_ms_per_req": 1000 * (db1 - db0) / served,
        "sql_per_req": statements / served,
        "txn_per_req": txn / served,
    }


def exact_statements(pg: rs.Postgres, target: Target) -> dict[str, Any]:
    """Statements per request from a few sequential requests (no request cut off)."""
    rs.wait_idle(target.pid)
    reset_statements(pg)
    for i in range(EXACT_REQUESTS):
        rs.http_post(target.url, target.bodies[i % len(target.bodies)], target.headers)
    statements, txn, rows = read_statements(pg)
    return {
        "sql": statements / EXACT_REQUESTS,
        "txn": txn / EXACT_REQUESTS,
        "statements": [
            {"calls_per_req": r["calls"] / EXACT_REQUESTS, "query": r["query"]} for r in rows
        ],
    }


def check_answers(targets: dict[tuple[str, str], Target], queries: list[str]) -> dict[str, int]:
    """Both servers return the same data for every request body; rows per query."""
    rows: dict[str, int] = {}
    for query in queries:
        mine = [t for (server, q), t in targets.items() if q == query]
        for i in range(len(mine[0].bodies)):
            answers = {t.server: rs.http_post(t.url, t.bodies[i], t.headers) for t in mine}
            wrong = rq.check_equal(query, answers)
            if wrong:
                raise BenchError(f"{query}: the servers disagree, not benchmarking:\n{wrong}")
            rows[query] = rq.count_rows(next(iter(answers.values()))["data"])
        progress(f"{query}: {len(mine[0].bodies)} request(s) checked, {rows[query]} objects each")
    return rows
