"""Profile the Concord process under load with py-spy and summarise where its CPU goes.

py-spy samples the running server from outside (no code change, no restart) at 100 Hz while
wrk drives one query; `--nolineno` folds samples per function. The summary has three views:

- shares: the fraction of samples whose stack passes through a part of the request's path
  (authentication, parsing, validation, extension hooks, sessions and transactions, …);
  they overlap (a resolver's SQL is inside the resolver), so they do not add up to 100 %.
  A stack starts at the task that runs: graphql-core completes awaited fields in tasks of
  their own and DataLoader batches run in theirs, so "inside the request" cannot be told
  from the stack; the `Runner.run` frame's self time is the event loop itself (uvloop);
- self time by package: where the CPU actually was, grouped by the leaf frame's package;
- the top functions by self and by inclusive time.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

# (label, pattern on a frame "function (package/file.py)"): a sample counts if any frame of
# its stack matches. py-spy names files relative to their sys.path entry.
SHARES: list[tuple[str, str]] = [
    ("authentication (bearer token, JWT, known-user check)", r"^BearerTokenBackend\.authent"),
    ("GraphQL view: Strawberry's HTTP handling and execution", r"^AsyncBaseHTTPView\.run "),
    ("GraphQL parse", r"^_parse_operation_document |\(graphql/language/parser\.py\)"),
    ("GraphQL validation (graphql-core's rules)", r"^validate \(graphql/validation/validate"),
    (
        "limit extensions (depth, aliases, tokens)",
        r"\(strawberry/extensions/(query_depth_limiter|max_aliases|max_tokens)\.py\)",
    ),
    (
        "extension hooks (runner, contexts, ErrorCodes)",
        r"\(strawberry/extensions/(runner|context|base_extension)\.py\)|\(schema/errors\.py\)",
    ),
    ("GraphQL execution (graphql-core executor, all resolvers)", r"\(graphql/execution/"),
    ("Strawberry per-field wrappers", r"wrap_field_extensions|from_resolver\.<locals>"),
    ("Concord resolvers/ (use cases, loaders)", r"\(resolvers/\w+\.py\)"),
    ("Concord schema/ (type and field functions)", r"\(schema/(?!errors)\w+\.py\)"),
    ("cursor encoding", r"^encode_cursor "),
    ("DataLoader batch functions (their SQL included)", r"^dispatch_batch "),
    (
        "sessions and transactions (begin, pre-ping, close, rollback, pool)",
        r"_connection_for_bind|SessionTransaction|_async_ping|\(sqlalchemy/pool/"
        r"|^(Async)?Session\.(close|commit|rollback|__aexit__) |^AsyncSession\.__aexit__",
    ),
    ("SQL statements (Session.execute, incl. driver)", r"^(Async)?Session\.execute "),
    ("  of which SQLAlchemy compiles/caches", r"\(sqlalchemy/sql/"),
    ("  of which ORM rows to objects", r"\(sqlalchemy/orm/loading\.py\)"),
    ("asyncpg driver", r"\(asyncpg/"),
    ("JSON encoding of the response", r"\(json/encoder\.py\)|^encode_json "),
    ("logging", r"\(logging/__init__\.py\)|\(server/logging\.py\)"),
    (
        "metrics",
        r"\(prometheus_client/|^RequestObserver\.__call__\.<locals>|\(server/observe\.py\)",
    ),
]

FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*)\)$")


def have_py_spy() -> str | None:
    found = Path(sys.executable).parent / "py-spy"
    return str(found) if found.exists() else shutil.which("py-spy")


def record(
    pid: int, seconds: float, output: Path, *, native: bool = False
) -> subprocess.Popen[bytes]:
    """Start py-spy on `pid` for `seconds`, writing folded stacks to `output`.

    `native` adds C frames (e.g. the garbage collector's), at a higher sampling cost.
    """
    py_spy = have_py_spy()
    if py_spy is None:
        raise RuntimeError(
            "py-spy not found: `.venv/bin/pip install py-spy` (not a project dependency)"
        )
    argv = [py_spy, "record", "--pid", str(pid), "--duration", str(int(seconds))]
    argv += ["--rate", "100", "--format", "raw", "--nolineno", "--output", str(output)]
    if native:
        argv.append("--native")
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def read_folded(path: Path) -> list[tuple[list[str], int]]:
    samples = []
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            samples.append((stack.split(";"), int(count)))
    return samples


def _package(frame: str) -> str:
    match = FRAME.match(frame)
    file = match.group("file") if match else frame
    head = file.split("/", 1)[0] if "/" in file else file.removesuffix(".py")
    if head in ("auth", "models", "resolvers", "schema", "server", "subscriptions"):
        return f"concord {head}/"
    return head or "?"


def summarise(path: Path, title: str, top: int = 30) -> str:
    """The text summary of one folded profile."""
    samples = read_folded(path)
    total = sum(count for _, count in samples)
    if total == 0:
        return f"### {title}\n\nno samples\n"
    shares: Counter[str] = Counter()
    by_package: Counter[str] = Counter()
    self_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    outside = 0
    compiled = [(label, re.compile(pattern)) for label, pattern in SHARES]
    for stack, count in samples:
        for label, pattern in compiled:
            if any(pattern.search(frame) for frame in stack):
                shares[label] += count
        # Code compiled at run time (file "<string>") is charged to its caller's package.
        leaf = next((f for f in reversed(stack) if not f.endswith("(<string>)")), stack[-1])
        by_package[_package(leaf)] += count
        if not any(pattern.search(frame) for _, pattern in compiled for frame in stack):
            outside += count
        self_time[stack[-1]] += count
        for frame in set(stack):
            inclusive[frame] += count

    def pct(n: int) -> str:
        return f"{100 * n / total:5.1f} %"

    out = [f"### {title}", "", f"{total} samples at 100 Hz (idle excluded).", ""]
    out += ["Shares of CPU samples passing through (overlapping):", "```"]
    out += [f"{pct(shares[label])}  {label}" for label, _ in SHARES]
    out.append(f"{pct(outside)}  none of these (event loop, HTTP, middleware, loop callbacks)")
    out += ["```", "", "Self time by package:", "```"]
    out += [f"{pct(n)}  {name}" for name, n in by_package.most_common(15)]
    out += ["```", "", f"Top {top} functions by self time:", "```"]
    out += [f"{pct(n)}  {name}" for name, n in self_time.most_common(top)]
    out += ["```", "", f"Top {top} functions by inclusive time:", "```"]
    out += [f"{pct(n)}  {name}" for name, n in inclusive.most_common(top)]
    out += ["```", ""]
    return "\n".join(out)


if __name__ == "__main__":
    # Summarise a folded profile again: python bench/read_profile.py FILE [TITLE]
    sys.stdout.write(summarise(Path(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else "profile"))
