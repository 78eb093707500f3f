"""The read benchmark's report: the markdown table and the RESULTS.md section."""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path
from typing import Any

import read_queries as rq


def spread(values: list[float], digits: int = 0) -> str:
    """median (min-max), or just the value for one round."""
    fmt = f"{{:,.{digits}f}}"
    med = fmt.format(statistics.median(values))
    if len(values) == 1 or min(values) == max(values):
        return med
    return f"{med} ({fmt.format(min(values))}-{fmt.format(max(values))})"


def digits_for(values: list[float]) -> int:
    m = statistics.median(values)
    return 0 if m >= 100 else 1 if m >= 10 else 2 if m >= 0.1 else 3


def _cell(values: dict[tuple[str, str], list[float]], server: str, key: str) -> str:
    found = values.get((server, key))
    if not found:
        return "-"
    if key == "rps":
        return spread(found, digits_for(found))
    return f"{statistics.median(found):,.{digits_for(found)}f}"


def _sql(exact: dict[tuple[str, str], dict[str, Any]], server: str, query: str) -> str:
    found = exact.get((server, query))
    return f"{found['sql']:g} + {found['txn']:g}" if found else "-"


def table(runs: list[dict[str, Any]], exact: dict[tuple[str, str], dict[str, Any]]) -> str:
    """The markdown summary: one line per query and connection count, medians over rounds."""
    lines = [
        "| query | conns | Concord req/s | PostGraphile req/s | ratio C÷P | Concord p50 / p99 ms "
        "| PostGraphile p50 / p99 ms | server CPU ms/req C / P | PostgreSQL CPU ms/req C / P "
        "| SQL + BEGIN/COMMIT/ROLLBACK per req C / P |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    with_gc = any("gc_ms_per_req" in r for r in runs)
    if with_gc:
        lines[0] += " Concord GC ms/req (full collections/req) |"
        lines[1] += "---:|"
    keys = sorted({(r["query"], r["connections"]) for r in runs}, key=_order)
    for query, c in keys:
        v: dict[tuple[str, str], list[float]] = {}
        for r in runs:
            if (r["query"], r["connections"]) == (query, c):
                for key in ("rps", "p50_ms", "p99_ms", "cpu_ms_per_req", "db_cpu_ms_per_req"):
                    v.setdefault((r["server"], key), []).append(r[key])
        ratios = _ratios(runs, query, c)
        cells = [
            query,
            str(c),
            _cell(v, "concord", "rps"),
            _cell(v, "postgraphile", "rps"),
            _ratio(ratios),
            f"{_cell(v, 'concord', 'p50_ms')} / {_cell(v, 'concord', 'p99_ms')}",
            f"{_cell(v, 'postgraphile', 'p50_ms')} / {_cell(v, 'postgraphile', 'p99_ms')}",
            f"{_cell(v, 'concord', 'cpu_ms_per_req')} / "
            f"{_cell(v, 'postgraphile', 'cpu_ms_per_req')}",
            f"{_cell(v, 'concord', 'db_cpu_ms_per_req')} / "
            f"{_cell(v, 'postgraphile', 'db_cpu_ms_per_req')}",
            f"{_sql(exact, 'concord', query)} / {_sql(exact, 'postgraphile', query)}",
        ]
        if with_gc:
            mine = [r for r in runs if (r["query"], r["connections"]) == (query, c)]
            gc = [r["gc_ms_per_req"] for r in mine if "gc_ms_per_req" in r]
            full = [r["gc_full_per_req"] for r in mine if "gc_full_per_req" in r]
            cells.append(
                f"{statistics.median(gc):.2f} ({statistics.median(full):.2f})" if gc else "-"
            )
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _ratio(ratios: list[float]) -> str:
    if not ratios:
        return "-"
    med = f"**{statistics.median(ratios):.3f}x**"
    return med if len(ratios) == 1 else f"{med} ({min(ratios):.3f}-{max(ratios):.3f})"


def _order(key: tuple[str, int]) -> tuple[int, int]:
    return rq.QUERIES.index(key[0]), key[1]


def _ratios(runs: list[dict[str, Any]], query: str, c: int) -> list[float]:
    """Concord ÷ PostGraphile req/s of each round (the two runs of a round are adjacent)."""
    by_round: dict[int, dict[str, float]] = {}
    for r in runs:
        if (r["query"], r["connections"]) == (query, c):
            by_round.setdefault(r["round"], {})[r["server"]] = r["rps"]
    return [
        pair["concord"] / pair["postgraphile"]
        for pair in by_round.values()
        if pair.get("postgraphile") and "concord" in pair
    ]


def record_section(
    path: Path,
    args: argparse.Namespace,
    meta: dict[str, Any],
    summary: str,
    profile_text: str,
    raw: str,
) -> None:
    """Append a dated section with the command, machine, versions and table to `path`."""
    m, v = meta["machine"], meta["versions"]
    lines = [
        "",
        f"## Reads vs. PostGraphile: run of {meta['started']}",
        "",
        f"Command: `{meta['command']}`",
        "",
        f"- Machine: {m['nproc']} CPUs ({m['cpu']}), {m['memory_gib']} GiB RAM, Linux "
        f"{m['kernel']}; load average at start {m['loadavg_at_start']} (shared machine: "
        "other sessions' work runs on the same cores, hence alternating rounds and medians).",
        f"- Versions: Concord `{v['concord_commit']}`, Python {v['python']}, Strawberry "
        f"{v['strawberry-graphql']}, graphql-core {v['graphql-core']}, SQLAlchemy "
        f"{v['sqlalchemy']}, asyncpg {v['asyncpg']}, uvicorn {v['uvicorn']}; {v['postgresql']}; "
        f"PostGraphile {v['postgraphile']} on Node {v['node']}; {v['wrk']}.",
        f"- {args.rounds} rounds x {args.duration} s per run, wrk with 1 thread; "
        f"Concord environment: {args.concord_env or 'defaults'}; "
        f"Concord GC: {args.concord_gc or 'untouched, not timed'}; "
        f"PostGraphile JWT: {'on' if args.postgraphile_jwt else 'off'}; "
        f"{'every workspace/board in turn' if args.vary else 'the same workspace/board'}.",
        f"- Raw results: `{raw}` (not committed).",
        "",
        summary,
        "",
    ]
    if profile_text:
        lines += ["Profile of Concord under load (py-spy, `--profile`):", "", profile_text]
    with path.open("a") as out:
        out.write("\n".join(lines))
