"""The T-SQL Concord sends to SQL Server, pinned by committed golden files.

No server is needed: statements are compiled for `mssql+aioodbc` (pyodbc's `?` parameters)
as a SQL Server 2022 connection would compile them, and the Alembic migrations are rendered
in offline mode. Every change to the DDL or to these statements is then a visible diff in
`tests/models/golden/`, reviewed like code.

Statements come from the repository code itself: the pure builders in models/versioning.py,
models/event.py and models/paging.py, and, for the DataLoader selects of the repository
modules, the statement object those functions actually execute (captured on a real SQLite
session, then compiled for SQL Server).

After an intended change, regenerate the golden files and review the diff:

    UPDATE_GOLDEN=1 .venv/bin/pytest tests/models/test_mssql_sql.py
"""

from __future__ import annotations

import difflib
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import pytest
from sqlalchemy import Insert, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.mssql.aioodbc import MSDialectAsync_aioodbc
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.schema import CallableColumnDefault

from models import archive, board, card, comment, user, workspace
from models import event as event_store
from models.base import Base
from models.event import append_stmt, bump_seq_stmt, read_seq_stmt
from models.idempotency import claim_stmt, expired_stmt
from models.migrate import offline_sql
from models.paging import page_per_parent_stmt
from models.tables import Board, Card, Comment
from models.versioning import (
    delete_versioned_stmt,
    insert_versioned_stmt,
    update_versioned_stmt,
)

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("UPDATE_GOLDEN", "") not in {"", "0"}

MSSQL_URL = (
    "mssql+aioodbc://concord:secret@db.example:1433/concord?driver=ODBC+Driver+18+for+SQL+Server"
)
MIGRATION_URLS = {
    "mssql": MSSQL_URL,
    "postgresql": "postgresql+asyncpg://concord:secret@db.example:5432/concord",
    "sqlite": "sqlite+aiosqlite:///concord.db",
}

# Fixed inputs, so that the parameter values in the golden files are stable.
ID_1 = uuid.UUID("00000000-0000-0000-0000-000000000001")
ID_2 = uuid.UUID("00000000-0000-0000-0000-000000000002")
ID_3 = uuid.UUID("00000000-0000-0000-0000-000000000003")
ROWVERSION = bytes.fromhex("00000000000007d1")
WHEN = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)


def mssql_dialect() -> Dialect:
    """The dialect as a live connection to SQL Server 2022 through pyodbc would set it up.

    qmark: the paramstyle pyodbc reports, which the dialect takes once it loads pyodbc.
    """
    dialect: Any = MSDialectAsync_aioodbc(paramstyle="qmark")  # type: ignore[no-untyped-call]
    dialect.server_version_info = (16, 0, 4135, 4)
    # What `initialize()` derives from the server version once connected.
    dialect._setup_version_attributes()
    return cast(Dialect, dialect)


def render(stmt: ClauseElement, title: str, values: dict[str, Any] | None = None) -> str:
    """The statement's T-SQL and its parameters in order, with the values pyodbc receives.

    `values` are the parameters given at execution (a statement built once and cached
    takes its values there); IN lists expand as they do when the statement runs.
    """
    compiled = cast(SQLCompiler, stmt.compile(dialect=mssql_dialect()))
    expanded = compiled.construct_expanded_state(values or None)
    params = expanded.parameters
    # The type conversions SQLAlchemy applies before the driver sees a value (JSON text,
    # naive UTC datetimes); private, but the only way to show what goes over the wire.
    processors: dict[str, Callable[[Any], Any]] = {
        **compiled._bind_processors,  # type: ignore[dict-item]
        **expanded.processors,  # type: ignore[dict-item]
    }
    defaults = _python_defaults(stmt)
    lines = [f"-- {title}", "-- mssql+aioodbc (pyodbc, qmark parameters), SQL Server 2022", ""]
    lines += [line.rstrip() for line in expanded.statement.splitlines()]
    lines += ["", "-- parameters, in order (as passed to pyodbc):"]
    for position, name in enumerate(expanded.positiontup or (), start=1):
        value = params.get(name)
        if value is None and name in defaults:
            shown = f"<{defaults[name]}, computed at execution>"
        else:
            process = processors.get(name)
            shown = repr(process(value) if process is not None else value)
        lines.append(f"--   {position}. {name} = {shown}")
    return "\n".join(lines) + "\n"


def _python_defaults(stmt: ClauseElement) -> dict[str, str]:
    """Column name -> Python-side default function name, for INSERT statements."""
    if not isinstance(stmt, Insert):
        return {}
    table = stmt.table
    return {
        column.name: getattr(column.default.arg, "__name__", "default") + "()"
        for column in table.c
        if isinstance(column.default, CallableColumnDefault)
    }


def check_golden(name: str, text: str) -> None:
    """Compare `text` with golden/`name`; with UPDATE_GOLDEN=1, rewrite the file instead."""
    path = GOLDEN / name
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return
    if not path.exists():
        pytest.fail(f"{path} is missing: run UPDATE_GOLDEN=1 pytest {__file__} and commit it")
    expected = path.read_text(encoding="utf-8")
    if text != expected:
        diff = "".join(
            difflib.unified_diff(
                expected.splitlines(keepends=True),
                text.splitlines(keepends=True),
                fromfile=f"golden/{name}",
                tofile="generated",
            )
        )
        pytest.fail(
            f"golden/{name} differs from what the code generates; if the change is intended, "
            f"run UPDATE_GOLDEN=1 pytest {__file__} and commit the diff:\n{diff}"
        )


# --- migrations ---------------------------------------------------------------------------


@pytest.mark.parametrize("dialect", sorted(MIGRATION_URLS))
def test_migrations_render_to_the_golden_ddl(dialect: str) -> None:
    sql = offline_sql(MIGRATION_URLS[dialect])
    text = "\n".join(line.rstrip() for line in sql.splitlines()).strip() + "\n"
    check_golden(f"migrations/{dialect}.sql", text)


def test_mssql_ddl_uses_rowversion_and_no_deprecated_types() -> None:
    sql = offline_sql(MSSQL_URL)
    for table in ("workspaces", "boards", "cards", "comments"):
        block = sql.split(f"CREATE TABLE {table} (")[1].split(");")[0]
        assert "version ROWVERSION NOT NULL" in block
    for deprecated in (" NTEXT", " TEXT", " IMAGE"):
        assert deprecated not in sql
    assert "DATETIME2(6)" in sql


# --- writes: versioned UPDATE / INSERT / DELETE, the sequence, the event ------------------


WRITES: dict[str, Callable[[], ClauseElement]] = {
    "update_versioned": lambda: update_versioned_stmt(
        Card, ID_1, ROWVERSION, {"title": "Ship it", "status": "DONE"}, "mssql"
    ),
    "insert_versioned": lambda: insert_versioned_stmt(
        Board, {"id": ID_1, "workspace_id": ID_2, "name": "Plan", "created_at": WHEN}, "mssql"
    ),
    "delete_versioned": lambda: delete_versioned_stmt(Comment, ID_1, ROWVERSION),
    "next_seq_update": lambda: bump_seq_stmt(ID_2, "mssql"),
    "next_seq_select": lambda: read_seq_stmt(ID_2),
    "event_insert": lambda: append_stmt(
        workspace_id=ID_2,
        seq=42,
        type="card.updated",
        entity_type="Card",
        entity_id=ID_1,
        entity_version=ROWVERSION.hex(),
        actor_id=ID_3,
        changes=[{"field": "title", "old": "Draft", "new": "Ship it"}],
    ),
    # An Idempotency-Key claimed in the mutation's transaction, and the expired ones deleted.
    "idempotency_claim": lambda: claim_stmt(ID_1, ID_3, "retry-1", "ab" * 32, WHEN, 86400),
    "idempotency_expired": lambda: expired_stmt(WHEN, ID_3),
}


@pytest.mark.parametrize("name", sorted(WRITES))
def test_write_statements_compile_to_the_golden_tsql(name: str) -> None:
    check_golden(f"mssql/{name}.sql", render(WRITES[name](), name))


def test_versioned_update_checks_the_version_and_outputs_the_new_one() -> None:
    stmt = update_versioned_stmt(Card, ID_1, ROWVERSION, {"title": "x"}, "mssql")
    sql = str(stmt.compile(dialect=mssql_dialect()))
    # The server writes the ROWVERSION: it is never SET, only compared and returned.
    assert "SET title=?" in sql
    assert "version=" not in sql.split("OUTPUT")[0]
    assert "OUTPUT inserted.version WHERE cards.id = ? AND cards.version = ?" in sql


def test_sequence_is_read_back_by_select_on_mssql_and_returned_elsewhere() -> None:
    assert "OUTPUT" not in str(bump_seq_stmt(ID_2, "mssql").compile(dialect=mssql_dialect()))
    for dialect in ("postgresql", "sqlite"):
        assert bump_seq_stmt(ID_2, dialect)._returning  # RETURNING last_seq


@pytest.mark.parametrize(
    "dialect",
    [postgresql.dialect(), sqlite.dialect()],  # type: ignore[no-untyped-call]
    ids=lambda dialect: dialect.name,
)
def test_integer_version_is_incremented_in_the_same_statement(dialect: Dialect) -> None:
    stmt = update_versioned_stmt(Card, ID_1, 7, {"title": "x"}, dialect.name)
    compiled = stmt.compile(dialect=dialect)
    sql = str(compiled)
    assert "version=(cards.version + " in sql
    assert "AND cards.version = " in sql
    assert " RETURNING " in sql
    versions = sorted(v for k, v in compiled.params.items() if k.startswith("version"))
    assert versions == [1, 7]  # + 1, and the expected version


def test_update_without_values_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one column"):
        update_versioned_stmt(Card, ID_1, ROWVERSION, {}, "mssql")


# --- reads: the DataLoader selects ----------------------------------------------------------


@pytest.fixture
async def captured(tmp_path: Path) -> AsyncIterator[tuple[AsyncSession, list[Any]]]:
    """A real SQLite session that records every statement the repository code executes."""
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'capture.db'}")
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
    statements: list[Any] = []
    async with AsyncSession(engine) as session:

        @event.listens_for(engine.sync_engine, "before_execute")
        def _record(_conn: Any, statement: Any, _multi: Any, params: Any, _options: Any) -> None:
            # Every statement that reaches a connection, through the ORM or past it (plain
            # rows), with the values given at execution (a cached statement's parameters).
            statements.append((statement, dict(params or {})))

        yield session, statements
    await engine.dispose()


READS: dict[str, Callable[[AsyncSession], Awaitable[Any]]] = {
    "users_by_ids": lambda s: user.users_by_ids(s, [ID_1, ID_2, ID_3]),
    "workspaces_by_ids": lambda s: workspace.workspaces_by_ids(s, [ID_1, ID_2, ID_3]),
    "boards_by_ids": lambda s: board.boards_by_ids(s, [ID_1, ID_2, ID_3]),
    "cards_by_ids": lambda s: card.cards_by_ids(s, [ID_1, ID_2, ID_3]),
    "comments_by_ids": lambda s: comment.comments_by_ids(s, [ID_1, ID_2, ID_3]),
    "boards_by_workspaces": lambda s: board.boards_by_workspaces(s, [ID_1, ID_2], None, 20),
    "boards_by_workspaces_after": lambda s: board.boards_by_workspaces(
        s, [ID_1, ID_2], (WHEN, ID_3), 20
    ),
    "cards_by_boards_after": lambda s: card.cards_by_boards(s, [ID_1, ID_2], (1.5, ID_3), 50),
    "comments_by_cards": lambda s: comment.comments_by_cards(s, [ID_1, ID_2], None, 10),
    "memberships_by_workspaces": lambda s: workspace.memberships_by_workspaces(s, [ID_1, ID_2]),
    # The compiled read path: the same selects as plain rows, and what a cached read
    # depends on.
    "users_by_ids_rows": lambda s: user.users_by_ids(s, [ID_1, ID_2], rows=True),
    "cards_by_boards_rows": lambda s: card.cards_by_boards(s, [ID_1], (1.5, ID_3), 50, rows=True),
    "comments_by_cards_rows": lambda s: comment.comments_by_cards(s, [ID_1], None, 10, rows=True),
    "memberships_by_workspaces_rows": lambda s: workspace.memberships_by_workspaces(
        s, [ID_1], rows=True
    ),
    "read_scope": lambda s: event_store.read_scope(s, ID_1, ID_2),
    "workspace_of_card": lambda s: card.workspace_of_card(s, ID_1),
    # `concord archive-events`: the gapless prefix before a time, read a page at a time.
    "archive_workspaces": lambda s: archive.workspaces_with_events_before(s, WHEN),
    "archive_through": lambda s: archive.archivable_through(s, ID_1, WHEN),
    "archive_events_page": lambda s: archive.events_page(s, ID_1, 2000, 5000),
}


@pytest.mark.parametrize("name", sorted(READS))
async def test_loader_selects_compile_to_the_golden_tsql(
    name: str, captured: tuple[AsyncSession, list[Any]]
) -> None:
    session, statements = captured
    await READS[name](session)
    assert len(statements) == 1, "a DataLoader batch must cost one statement"
    statement, values = statements[0]
    check_golden(f"mssql/{name}.sql", render(statement, name, values))


def test_page_per_parent_cuts_each_parent_at_limit_plus_one() -> None:
    stmt = page_per_parent_stmt(Card, Card.board_id, [ID_1], [Card.position, Card.id], None, 5)
    sql = str(stmt.compile(dialect=mssql_dialect()))
    assert (
        "row_number() OVER (PARTITION BY cards.board_id ORDER BY cards.position, cards.id)" in sql
    )
    assert stmt.compile(dialect=mssql_dialect()).params["limit"] == 6


@pytest.mark.parametrize("dialect", sorted(MIGRATION_URLS))
def test_idempotency_keys_are_unique_per_user_on_every_database(dialect: str) -> None:
    sql = offline_sql(MIGRATION_URLS[dialect])
    block = sql.split("CREATE TABLE idempotency_keys (")[1].split(");")[0]
    assert "UNIQUE (user_id, idempotency_key)" in block
    assert "FOREIGN KEY(user_id) REFERENCES users (id)" in block
    assert "CREATE INDEX ix_idempotency_keys_expires_at" in sql
