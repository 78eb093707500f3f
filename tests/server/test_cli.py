"""The `concord` console script, run as a newcomer would: from another directory."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

from models.migrate import head_revision

ROOT = Path(__file__).resolve().parents[2]
CONCORD = Path(sys.executable).with_name("concord")


def run(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CONCORD), *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_export_schema_prints_the_committed_sdl(tmp_path: Path) -> None:
    result = run("export-schema", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == (ROOT / "schema.graphql").read_text()


def test_migrate_creates_the_schema(tmp_path: Path) -> None:
    database = tmp_path / "fresh.db"
    result = run("migrate", cwd=tmp_path, env={"DATABASE_URL": f"sqlite+aiosqlite:///{database}"})
    assert result.returncode == 0, result.stderr
    with sqlite3.connect(database) as conn:
        tables = {
            row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
        }
        version = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    assert {
        "users",
        "workspaces",
        "cards",
        "events",
        "event_streams",
        "external_identities",
        "idempotency_keys",
    } <= tables
    assert version == (head_revision(),)


def test_unknown_command_is_a_usage_error(tmp_path: Path) -> None:
    result = run("frobnicate", cwd=tmp_path)
    assert result.returncode == 2
    assert "invalid choice" in result.stderr
