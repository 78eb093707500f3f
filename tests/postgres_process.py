"""A PostgreSQL server of a test's own, to kill, freeze and restart by process id.

Fault tests never touch the shared server (127.0.0.1:5432): they `initdb` a cluster into a
scratch directory and run `postgres` on a free port. PostgreSQL refuses to run as root, so
when the tests run as root (CI, this machine) the server runs as the `postgres` OS user,
in a directory of its own under the system's temporary directory (pytest's `tmp_path`
lives below a root-only directory that user cannot enter).
"""

from __future__ import annotations

import asyncio
import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg
import psutil

from tests.services import free_port, unavailable

STARTUP_TIMEOUT = 30.0


def server_binaries() -> Path | None:
    """The directory with `initdb` and `postgres` (Debian's layout first, then PATH)."""
    for directory in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if os.access(Path(directory, "initdb"), os.X_OK):
            return Path(directory)
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


class PostgresProcess:
    """`initdb` once, then start, kill (a crash), freeze and thaw the server at will."""

    def __init__(self) -> None:
        binaries = server_binaries()
        if binaries is None:
            unavailable("PostgreSQL server binaries (initdb, postgres) are not installed")
            raise AssertionError("unreachable")
        self.binaries = binaries
        self.port = free_port()
        self.url = f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postgres"
        self._as_user: dict[str, Any] = {}
        owner: pwd.struct_passwd | None = None
        if os.geteuid() == 0:
            try:
                owner = pwd.getpwnam("postgres")
            except KeyError:
                unavailable("running as root and there is no `postgres` user to run the server")
            self._as_user = {"user": "postgres", "group": owner.pw_gid, "extra_groups": []}
        self.directory = Path(tempfile.mkdtemp(prefix="concord-pg-"))
        if owner is not None:
            os.chown(self.directory, owner.pw_uid, owner.pw_gid)
        self.data = self.directory / "data"
        self._process: asyncio.subprocess.Process | None = None
        self._frozen: list[psutil.Process] = []
        subprocess.run(
            [
                *(self.binaries / "initdb", "-D", self.data, "-U", "postgres", "-A", "trust"),
                *("--no-sync", "-E", "UTF8", "--locale", "C"),
            ],
            check=True,
            capture_output=True,
            **self._as_user,
        )

    async def start(self) -> None:
        """Start the server on its port and data directory; return once it answers."""
        with (self.directory / "server.log").open("ab") as log:
            self._process = await asyncio.create_subprocess_exec(
                *(self.binaries / "postgres", "-D", self.data, "-p", str(self.port)),
                *("-k", str(self.directory), "-c", "listen_addresses=127.0.0.1"),
                *("-c", "max_connections=40", "-c", "shared_buffers=16MB"),
                stdout=subprocess.DEVNULL,
                stderr=log,
                **self._as_user,
            )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + STARTUP_TIMEOUT
        while True:
            try:
                conn = await asyncpg.connect(
                    host="127.0.0.1", port=self.port, user="postgres", database="postgres"
                )
                await conn.close()
                return
            except (OSError, asyncpg.PostgresError, TimeoutError):
                if self._process.returncode is not None or loop.time() > deadline:
                    log = (self.directory / "server.log").read_text(errors="replace")
                    raise AssertionError(f"postgres did not start:\n{log[-2000:]}") from None
                await asyncio.sleep(0.05)

    def _processes(self) -> list[psutil.Process]:
        if self._process is None:
            return []
        main = psutil.Process(self._process.pid)
        return [main, *main.children(recursive=True)]

    async def kill(self) -> None:
        """Kill the server and each of its backends by process id, as a crash would."""
        main, self._process = self._process, None
        if main is None:
            return
        backends = psutil.Process(main.pid).children(recursive=True)
        main.kill()
        for process in backends:
            try:
                process.send_signal(signal.SIGKILL)
            except psutil.NoSuchProcess:
                pass
        await main.wait()
        await asyncio.to_thread(psutil.wait_procs, backends, 10)

    def freeze(self) -> None:
        """SIGSTOP the server and every backend: connections stay open, nothing answers.

        (Each backend is its own session leader, so stopping the postmaster's process
        group would leave the backends of open connections running.)
        """
        if self._process is None:
            return
        main = psutil.Process(self._process.pid)
        main.send_signal(signal.SIGSTOP)  # first: a stopped postmaster forks no backend
        self._frozen = [main]
        # Looked for a few times: a backend forked just before the postmaster stopped may
        # not be listed yet (a write once went through a "frozen" server that way).
        for _ in range(3):
            for process in main.children(recursive=True):
                if process not in self._frozen:
                    process.send_signal(signal.SIGSTOP)
                    self._frozen.append(process)
            time.sleep(0.05)

    def thaw(self) -> None:
        for process in self._frozen:
            try:
                process.send_signal(signal.SIGCONT)
            except psutil.NoSuchProcess:
                pass
        self._frozen = []

    async def fetch(self, sql: str) -> list[asyncpg.Record]:
        conn = await asyncpg.connect(
            host="127.0.0.1", port=self.port, user="postgres", database="postgres", timeout=10
        )
        try:
            return await conn.fetch(sql)
        finally:
            await conn.close()

    async def remove(self) -> None:
        self.thaw()
        await self.kill()
        shutil.rmtree(self.directory, ignore_errors=True)
