"""The processes of the read benchmark: a PostgreSQL of its own, Concord and PostGraphile 4.

Every process is started here with `start_new_session` (so a Ctrl-C in the terminal reaches
only the driver, which then stops them in order) and stopped by its pid. CPU time is read
from /proc for a process and all its descendants, including the children it has reaped
(cutime/cstime), so a worker that exits mid-run is still counted.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

DATABASE = "concord_bench"
POSTGRAPHILE_VERSION = "4.14.1"
BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
NODE_DIR = BENCH_DIR / ".node"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
BENCH_RATE_LIMIT = "1000000000/minute"


class BenchError(Exception):
    """Something the harness needs is missing or misbehaves; the message says what."""


def progress(text: str) -> None:
    sys.stderr.write(f"[{time.strftime('%H:%M:%S')}] {text}\n")
    sys.stderr.flush()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pg_bin_dir() -> Path:
    """PostgreSQL's binaries: $PG_BIN, else Debian's newest /usr/lib/postgresql/N/bin."""
    if os.environ.get("PG_BIN"):
        return Path(os.environ["PG_BIN"])
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/postgres"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if not found:
        raise BenchError("no PostgreSQL binaries in /usr/lib/postgresql/*/bin: set PG_BIN")
    return found[-1].parent


# --- CPU accounting ---------------------------------------------------------------------


def _stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, CPU ticks of the process plus its reaped children), or None if gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parentheses: split after it.
    fields = raw[raw.rindex(")") + 2 :].split()
    ppid = int(fields[1])
    utime, stime, cutime, cstime = (int(v) for v in fields[11:15])
    return ppid, utime + stime + cutime + cstime


def tree_cpu_seconds(root: int) -> float:
    """CPU seconds of `root` and every live descendant, reaped children included."""
    stats: dict[int, tuple[int, int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            found = _stat(int(entry))
            if found is not None:
                stats[int(entry)] = found
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in stats.items():
        children.setdefault(ppid, []).append(pid)
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        if pid in stats:
            total += stats[pid][1]
            todo.extend(children.get(pid, []))
    return total / CLOCK_TICKS


def wait_idle(pid: int, *, window: float = 0.5, busy: float = 0.05, limit: float = 120.0) -> None:
    """Wait until the process tree uses under `busy` of a core over `window` seconds.

    A server keeps working on requests the load generator abandoned when it stopped; the
    next measurement must not pay for them.
    """
    deadline = time.monotonic() + limit
    before = tree_cpu_seconds(pid)
    while time.monotonic() < deadline:
        time.sleep(window)
        now = tree_cpu_seconds(pid)
        if now - before < busy * window:
            return
        before = now
    progress(f"warning: pid {pid} still busy after {limit:.0f} s")


# --- processes --------------------------------------------------------------------------


class Server:
    """A child process with a log file, stopped by its pid."""

    def __init__(self, name: str, pid_process: subprocess.Popen[bytes], log: Path) -> None:
        self.name = name
        self.process = pid_process
        self.log = log

    @property
    def pid(self) -> int:
        return self.process.pid

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            tail = self.log.read_text(errors="replace")[-3000:]
            raise BenchError(f"{self.name} exited ({self.process.returncode}); log:\n{tail}")

    def stop(self, sig: int = signal.SIGTERM, grace: float = 15.0) -> None:
        if self.process.poll() is not None:
            return
        self.process.send_signal(sig)
        try:
            self.process.wait(grace)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def spawn(
    name: str,
    argv: Sequence[str],
    log: Path,
    *,
    env: Mapping[str, str] | None = None,
    as_postgres: bool = False,
    cwd: Path | None = None,
) -> Server:
    with log.open("ab") as out:
        process = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
            **_postgres_user() if as_postgres else {},
        )
    return Server(name, process, log)


def _postgres_user() -> dict[str, Any]:
    """PostgreSQL refuses to run as root: switch to the `postgres` OS user when we are root."""
    if os.geteuid() != 0:
        return {}
    return {"user": "postgres", "group": "postgres", "extra_groups": []}


def run(argv: Sequence[str], *, env: Mapping[str, str] | None = None, **kwargs: Any) -> str:
    done = subprocess.run(
        list(argv), env=dict(env) if env is not None else None, capture_output=True, **kwargs
    )
    if done.returncode != 0:
        raise BenchError(
            f"{' '.join(map(str, argv))} failed ({done.returncode}):\n"
            f"{done.stdout.decode(errors='replace')}{done.stderr.decode(errors='replace')}"
        )
    return str(done.stdout.decode())


def wait_for(check: Any, server: Server, what: str, limit: float = 60.0) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        server.check_alive()
        if check():
            return
        time.sleep(0.2)
    raise BenchError(f"{what} not ready after {limit:.0f} s; log: {server.log}")


class Postgres:
    """A throw-away cluster in `workdir`: pg_stat_statements on, durability off."""

    def __init__(self, workdir: Path, port: int) -> None:
        self.bin = pg_bin_dir()
        self.workdir = workdir
        self.data = workdir / "pgdata"
        self.port = port
        self.server: Server | None = None

    def start(self) -> None:
        if os.geteuid() == 0:
            shutil.chown(self.workdir, "postgres", "postgres")
        extra = _postgres_user()
        progress(f"initdb into {self.data}")
        done = subprocess.run(
            [
                str(self.bin / "initdb"),
                "-D",
                str(self.data),
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-sync",
                "--locale=C.UTF-8",
            ],
            capture_output=True,
            cwd=self.workdir,
            **extra,
        )
        if done.returncode != 0:
            raise BenchError(f"initdb failed:\n{done.stderr.decode(errors='replace')}")
        settings = {
            "listen_addresses": "127.0.0.1",
            "port": str(self.port),
            "unix_socket_directories": str(self.workdir),
            "shared_preload_libraries": "pg_stat_statements",
            "pg_stat_statements.track": "all",
            # BEGIN, COMMIT and ROLLBACK are round trips too: count them.
            "pg_stat_statements.track_utility": "on",
            "pg_stat_statements.max": "10000",
            # A benchmark of reads: durability is not what is measured.
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "shared_buffers": "256MB",
            "max_connections": "200",
        }
        argv = [str(self.bin / "postgres"), "-D", str(self.data)]
        for key, value in settings.items():
            argv += ["-c", f"{key}={value}"]
        self.server = spawn("postgres", argv, self.workdir / "postgres.log", as_postgres=True)
        wait_for(self._ready, self.server, "PostgreSQL")
        self.psql("postgres", f"CREATE DATABASE {DATABASE}")
        self.psql("postgres", "CREATE EXTENSION pg_stat_statements")

    def _ready(self) -> bool:
        probe = subprocess.run(
            [str(self.bin / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port)],
            check=False,
        )
        return probe.returncode == 0

    @property
    def pid(self) -> int:
        assert self.server is not None
        return self.server.pid

    def url(self, driver: str = "postgresql") -> str:
        return f"{driver}://postgres@127.0.0.1:{self.port}/{DATABASE}"

    def psql(self, database: str, sql: str) -> str:
        """Run `sql` (one or more statements, stopping at the first error); tuples only."""
        argv = [str(self.bin / "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"]
        argv += ["-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d", database]
        return run(argv, input=sql.encode())

    def version(self) -> str:
        return run([str(self.bin / "postgres"), "--version"]).strip()

    def stop(self) -> None:
        if self.server is not None:
            # SIGINT is PostgreSQL's "fast" shutdown: sessions are ended, no waiting.
            self.server.stop(signal.SIGINT)


def http_post(url: str, body: dict[str, Any], headers: Mapping[str, str]) -> Any:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", **headers},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return {"errors": [{"message": f"HTTP {exc.code}: {exc.read()[:500]!r}"}]}


def _answers(url: str) -> bool:
    try:
        reply = http_post(url, {"query": "{ __typename }"}, {})
    except (OSError, ValueError):
        return False
    return bool(reply.get("data"))


def start_concord(
    workdir: Path,
    database_url: str,
    jwt_secret: str,
    extra_env: Mapping[str, str],
    started: list[Any],
) -> tuple[Server, str]:
    """`concord serve` (one process, uvicorn) on a free port, with Concord's defaults.

    The process joins `started` as soon as it exists, so that it is stopped even when
    waiting for it to answer fails or is interrupted.
    """
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "JWT_SECRET": jwt_secret,
        "CONCORD_DATA_DIR": str(workdir / "concord-data"),
        # One user at thousands of requests a second: counted (the cost stays measured),
        # never refused.
        "RATE_LIMIT_OPERATIONS": BENCH_RATE_LIMIT,
        **extra_env,
    }
    concord = Path(sys.executable).parent / "concord"
    argv = [str(concord), "serve", "--host", "127.0.0.1", "--port", str(port)]
    server = spawn("concord", argv, workdir / "concord.log", env=env)
    started.append(server)
    url = f"http://127.0.0.1:{port}/graphql"
    wait_for(lambda: _answers(url), server, "Concord")
    return server, url


def install_postgraphile() -> Path:
    """postgraphile@POSTGRAPHILE_VERSION in bench/.node (ignored by git); its CLI script."""
    cli = NODE_DIR / "node_modules" / "postgraphile" / "cli.js"
    manifest = NODE_DIR / "node_modules" / "postgraphile" / "package.json"
    if manifest.exists() and json.loads(manifest.read_text())["version"] == POSTGRAPHILE_VERSION:
        return cli
    if shutil.which("npm") is None:
        raise BenchError("npm not found: install Node.js 18 or 20 with npm (Debian: nodejs npm)")
    progress(f"npm install postgraphile@{POSTGRAPHILE_VERSION} into {NODE_DIR}")
    NODE_DIR.mkdir(exist_ok=True)
    run(
        [
            "npm",
            "install",
            "--prefix",
            str(NODE_DIR),
            "--no-audit",
            "--no-fund",
            "--save-exact",
            f"postgraphile@{POSTGRAPHILE_VERSION}",
        ]
    )
    return cli


def start_postgraphile(
    workdir: Path, connection: str, jwt: tuple[str, str, str] | None, started: list[Any]
) -> tuple[Server, str]:
    """PostGraphile 4 (one Node process) on the same database, production settings.

    Default inflection (no plugins): `workspaceById`, `boardsByWorkspaceId`, …; the bench's
    documents alias them to Concord's field names. `jwt` = (secret, issuer, audience) makes it
    verify the same bearer token Concord gets.
    """
    cli = install_postgraphile()
    port = free_port()
    argv = ["node", str(cli), "--connection", connection, "--schema", "public"]
    argv += ["--host", "127.0.0.1", "--port", str(port), "--disable-query-log"]
    argv += ["--disable-graphiql"]
    if jwt is not None:
        secret, issuer, audience = jwt
        argv += ["--jwt-secret", secret, "--jwt-verify-algorithms", "HS256"]
        argv += ["--jwt-verify-issuer", issuer, "--jwt-verify-audience", audience]
    env = {**os.environ, "NODE_ENV": "production"}
    server = spawn("postgraphile", argv, workdir / "postgraphile.log", env=env, cwd=NODE_DIR)
    started.append(server)  # stopped even if it never answers
    url = f"http://127.0.0.1:{port}/graphql"
    wait_for(lambda: _answers(url), server, "PostGraphile")
    return server, url


def node_version() -> str:
    return run(["node", "--version"]).strip()


def stop_all(servers: Sequence[Server | Postgres | None]) -> None:
    """Stop in reverse order of start (the database last), ignoring what is already gone."""
    for server in reversed(servers):
        if server is None:
            continue
        try:
            server.stop()
        except Exception as exc:  # keep stopping the others
            progress(f"could not stop {server}: {exc}")
