"""Fixtures shared by the whole suite.

`database_url` runs every test that uses it once per database: SQLite always, PostgreSQL
(`TEST_POSTGRES_URL`, default the local server; a database of its own per run, dropped
afterwards), and SQL Server when `TEST_MSSQL_URL` is set. Each test starts from empty
tables. `api` is the ASGI app with its lifespan running and an httpx client on it.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from models.database import make_engine
from models.migrate import upgrade
from models.tables import Base
from tests.api import Api, empty_tables, running_app, settings_for
from tests.services import scratch_postgres_database

BACKENDS = ["sqlite", "postgres"]
MSSQL_URL = os.environ.get("TEST_MSSQL_URL")
if MSSQL_URL:
    BACKENDS.append("mssql")


def pytest_report_header(config: pytest.Config) -> list[str]:
    if MSSQL_URL:
        return ["SQL Server: TEST_MSSQL_URL is set, the integration suite runs on it too"]
    return ["SQL Server: skipped (set TEST_MSSQL_URL to run the integration suite on one)"]


async def _migrate(url: str) -> None:
    engine = make_engine(url, pool=False)
    try:
        if engine.dialect.name == "mssql":
            # A shared server keeps tables between runs: start from a clean schema.
            async with engine.begin() as conn:
                await conn.run_sync(Base.metadata.drop_all)
                await conn.execute(
                    text("IF OBJECT_ID('alembic_version') IS NOT NULL DROP TABLE alembic_version")
                )
        await upgrade(engine)
    finally:
        await engine.dispose()


@pytest.fixture(scope="session", params=BACKENDS)
def database_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('sqlite') / 'concord.db'}"
        asyncio.run(_migrate(url))
        yield url
    elif request.param == "postgres":
        with scratch_postgres_database() as url:
            asyncio.run(_migrate(url))
            yield url
    else:
        assert MSSQL_URL is not None
        asyncio.run(_migrate(MSSQL_URL))
        yield MSSQL_URL


@pytest.fixture
async def api(database_url: str, tmp_path: Path) -> AsyncIterator[Api]:
    await empty_tables(database_url)
    async with running_app(settings_for(database_url, tmp_path)) as client:
        yield client
