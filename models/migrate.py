"""Apply the Alembic migrations, from code or from `concord migrate`."""

from __future__ import annotations

import io
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

MIGRATIONS = Path(__file__).parent / "migrations"


class SchemaBehind(RuntimeError):
    """The database's schema is older than the code: `concord migrate` has not been run."""


def alembic_config(url: str, *, output: io.StringIO | None = None) -> Config:
    config = Config(output_buffer=output) if output is not None else Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    # Alembic reads this through ConfigParser, which treats % as interpolation.
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


async def upgrade(engine: AsyncEngine, revision: str = "head") -> None:
    """Bring the database behind `engine` up to `revision`, on one of its connections."""

    def _upgrade(connection: object) -> None:
        config = alembic_config(engine.url.render_as_string(hide_password=False))
        config.attributes["connection"] = connection
        command.upgrade(config, revision)

    async with engine.begin() as connection:
        await connection.run_sync(_upgrade)


def offline_sql(url: str, revision: str = "head") -> str:
    """The migrations as SQL text for the dialect of `url`, without a server."""
    buffer = io.StringIO()
    command.upgrade(alembic_config(url, output=buffer), revision, sql=True)
    return buffer.getvalue()


def head_revision() -> str:
    """The revision this code's migrations end at."""
    head = ScriptDirectory(str(MIGRATIONS)).get_current_head()
    assert head is not None  # there is at least one migration
    return head


async def current_revision(engine: AsyncEngine) -> str | None:
    """The revision the database behind `engine` is at; None when it was never migrated."""

    def _read(connection: Connection) -> str | None:
        return MigrationContext.configure(connection).get_current_revision()

    async with engine.connect() as connection:
        return await connection.run_sync(_read)


async def require_current_schema(engine: AsyncEngine) -> None:
    """Raise SchemaBehind unless the database is at (or beyond) this code's head revision.

    A revision this code does not know is newer than the code (the database was migrated
    for the next release while this one still runs, as in a rolling deploy): accepted.
    """
    current = await current_revision(engine)
    head = head_revision()
    if current == head:
        return
    known = {script.revision for script in ScriptDirectory(str(MIGRATIONS)).walk_revisions()}
    if current is None or current in known:
        where = "never migrated" if current is None else f"at revision {current}"
        raise SchemaBehind(
            f"the database schema is {where}, this code needs revision {head}: run "
            "`concord migrate` (with the same DATABASE_URL) before starting the server"
        )
