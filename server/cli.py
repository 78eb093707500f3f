"""The `concord` command: serve, migrate, prune-events, export-schema, odbc-setup."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def worker_app() -> Any:
    """The app of one `--workers` process (uvicorn imports it by name in each worker)."""
    from server.app import create_app
    from server.logging import configure_logging
    from server.settings import load_settings

    settings = load_settings()
    configure_logging(settings.log_level)
    return create_app(settings)


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from server.app import create_app
    from server.logging import configure_logging
    from server.settings import load_settings
    from server.ws_protocol import uvicorn_ws_options

    settings = load_settings()
    configure_logging(settings.log_level)
    if args.workers < 1:
        print("concord: --workers must be at least 1", file=sys.stderr)  # noqa: T201
        return 2
    if args.workers > 1 and not settings.redis_url:
        print(  # noqa: T201
            "concord: --workers needs REDIS_URL: without it each process has its own "
            "in-process broker, and a mutation would reach only its own process's subscribers",
            file=sys.stderr,
        )
        return 2
    options: dict[str, Any] = {
        "host": args.host,
        "port": args.port,
        "log_config": None,
        "proxy_headers": True,
        **uvicorn_ws_options(settings.ws_compression),
    }
    if args.workers == 1:
        uvicorn.run(create_app(settings), **options)
    else:
        # N processes accept on the one listening socket; each has its own app, database
        # pool and Redis pub/sub connection.
        uvicorn.run("server.cli:worker_app", factory=True, workers=args.workers, **options)
    return 0


def _migrate(args: argparse.Namespace) -> int:
    from models.database import make_engine
    from models.migrate import upgrade
    from server.settings import load_settings

    settings = load_settings()

    async def run() -> None:
        engine = make_engine(settings.write_url, pool=False)
        try:
            await upgrade(engine, args.revision)
        finally:
            await engine.dispose()

    asyncio.run(run())
    print(f"migrated {settings.write_url.split('@')[-1]} to {args.revision}")  # noqa: T201
    return 0


def _prune_events(args: argparse.Namespace) -> int:
    from models.database import Database
    from models.event import prune
    from models.transaction import run_in_transaction
    from server.settings import load_settings

    settings = load_settings()

    async def run() -> int:
        db = Database(settings.write_url)
        try:
            return await run_in_transaction(db.writer, lambda session: prune(session, args.keep))
        finally:
            await db.dispose()

    deleted = asyncio.run(run())
    print(f"deleted {deleted} events; each workspace keeps its last {args.keep}")  # noqa: T201
    return 0


def _export_schema(args: argparse.Namespace) -> int:
    from schema import build_schema

    sys.stdout.write(build_schema().as_str() + "\n")
    return 0


def _odbc_setup(args: argparse.Namespace) -> int:
    from models.odbc import DriverNotFound, default_directory, register_driver

    try:
        target = register_driver(Path(args.dir) if args.dir else default_directory())
    except DriverNotFound as exc:
        print(f"concord: {exc}", file=sys.stderr)  # noqa: T201
        return 1
    print(f"export ODBCSYSINI={target}")  # noqa: T201
    return 0


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="concord", description="Concord GraphQL collaboration API")
    commands = root.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve the API (GraphiQL at /graphql)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument(
        "--workers",
        type=int,
        default=1,
        help="processes sharing the port (more than 1 needs REDIS_URL)",
    )
    serve.set_defaults(run=_serve)
    migrate = commands.add_parser("migrate", help="apply database migrations (DATABASE_URL)")
    migrate.add_argument("--revision", default="head")
    migrate.set_defaults(run=_migrate)
    prune = commands.add_parser(
        "prune-events", help="keep only each workspace's last N events (older cursors expire)"
    )
    prune.add_argument("--keep", type=int, required=True)
    prune.set_defaults(run=_prune_events)
    export = commands.add_parser("export-schema", help="print the GraphQL SDL")
    export.set_defaults(run=_export_schema)
    odbc = commands.add_parser(
        "odbc-setup", help="register the SQL Server ODBC driver; prints the ODBCSYSINI to export"
    )
    odbc.add_argument("--dir", help="where to write odbcinst.ini (default: .venv/etc/odbc)")
    odbc.set_defaults(run=_odbc_setup)
    return root


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    result: int = args.run(args)
    return result


if __name__ == "__main__":
    raise SystemExit(main())
