"""No half-started server: a database whose schema is behind the code is refused.

SQLite migrates itself on start; a server database (here PostgreSQL, created but never
migrated) must be migrated with `concord migrate` first, and the server says so.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from alembic import command
from sqlalchemy.engine import Connection

from models.database import make_engine
from models.migrate import SchemaBehind, alembic_config, upgrade
from tests.api import running_app, settings_for
from tests.services import free_port, scratch_postgres_database

CONCORD = Path(sys.executable).with_name("concord")


@pytest.fixture
def never_migrated() -> Iterator[str]:
    with scratch_postgres_database() as url:
        yield url


def test_serve_refuses_a_database_that_was_never_migrated(
    never_migrated: str, tmp_path: Path
) -> None:
    port = free_port()
    env = {**os.environ, "DATABASE_URL": never_migrated, "JWT_SECRET": "x" * 40}
    result = subprocess.run(
        [str(CONCORD), "serve", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1, result.stderr
    assert "never migrated" in result.stderr
    assert "`concord migrate`" in result.stderr
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2)

    # After `concord migrate` the same command would serve: the check passes.
    migrated = subprocess.run(
        [str(CONCORD), "migrate"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert migrated.returncode == 0, migrated.stderr


async def test_the_app_does_not_start_on_a_database_behind_the_code(
    never_migrated: str, tmp_path: Path
) -> None:
    # Any ASGI server running the app (not only `concord serve`) refuses at start-up.
    with pytest.raises(SchemaBehind, match="concord migrate"):
        async with running_app(settings_for(never_migrated, tmp_path)):
            pass


async def test_readyz_checks_the_schema_revision(never_migrated: str, tmp_path: Path) -> None:
    engine = make_engine(never_migrated, pool=False)
    try:
        await upgrade(engine)
    finally:
        await engine.dispose()
    async with running_app(settings_for(never_migrated, tmp_path)) as api:
        ready = await api.client.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"]["schema"] == "ok"

        # The schema falls behind while the process runs (restored from an old backup, say).
        await _downgrade_to_base(never_migrated)

        behind = await api.client.get("/readyz")
        assert behind.status_code == 503
        assert behind.json() == {
            "status": "unavailable",
            "checks": {
                "database": "ok",
                "schema": "behind: run `concord migrate`",
                "broker": "ok",
            },
        }


async def _downgrade_to_base(url: str) -> None:
    def downgrade(connection: Connection) -> None:
        config = alembic_config(url)
        config.attributes["connection"] = connection
        command.downgrade(config, "base")

    engine = make_engine(url, pool=False)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(downgrade)
    finally:
        await engine.dispose()
