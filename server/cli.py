"""The `concord` command: serve, migrate, prune-events, prune-idempotency-keys,
archive-events, restore-events, export-schema, odbc-setup, create-user, seed-demo."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any


def worker_app() -> Any:
    """The app of one `--workers` process (uvicorn imports it by name in each worker)."""
    from server.app import create_app
    from server.http_protocol import uvicorn_http_options
    from server.logging import configure_logging
    from server.metrics import forget_dead_workers
    from server.settings import load_settings

    settings = load_settings()
    configure_logging(settings.log_level)
    # This process's protocol class gets its header deadline (see `_serve`).
    uvicorn_http_options(settings.request_header_timeout_seconds)
    forget_dead_workers()
    return create_app(settings)


def _schema_behind(url: str) -> str | None:
    """Why the database at `url` must be migrated before serving, or None.

    An unreachable database is not a reason to refuse: the server starts, and `/readyz`
    answers 503 until the database is reachable and migrated.
    """
    from models.database import make_engine
    from models.migrate import SchemaBehind, require_current_schema

    async def check() -> None:
        engine = make_engine(url, pool=False)
        try:
            await require_current_schema(engine)
        finally:
            await engine.dispose()

    try:
        asyncio.run(check())
    except SchemaBehind as exc:
        return str(exc)
    except Exception:
        return None
    return None


def _exit_cleanly(signum: int, frame: object) -> None:
    raise SystemExit(0)


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from server.app import create_app
    from server.http_protocol import uvicorn_http_options
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
    if (args.ssl_certfile is None) != (args.ssl_keyfile is None):
        print(  # noqa: T201
            "concord: --ssl-certfile and --ssl-keyfile go together (the certificate chain "
            "and its private key, PEM)",
            file=sys.stderr,
        )
        return 2
    behind = _schema_behind(settings.write_url) if not settings.embedded else None
    if behind is not None:
        print(f"concord: not serving: {behind}", file=sys.stderr)  # noqa: T201
        return 1
    options: dict[str, Any] = {
        "host": args.host,
        "port": args.port,
        "log_config": None,
        "proxy_headers": True,
        # The WebSocket library refuses a larger message (1009) before buffering it whole;
        # the app checks again for any other ASGI server (server/websocket.py).
        "ws_max_size": settings.max_body_bytes,
        # SIGTERM: in-flight requests get this long, then are cancelled (server/shutdown.py).
        "timeout_graceful_shutdown": settings.shutdown_grace_seconds,
        **uvicorn_ws_options(settings.ws_compression),
        # A request whose line and headers take longer is answered 408 and closed.
        **uvicorn_http_options(settings.request_header_timeout_seconds),
    }
    if args.ssl_certfile is not None:
        # HTTPS and wss:// served by Concord itself (behind a TLS-terminating load balancer
        # this is not needed).
        options.update(ssl_certfile=args.ssl_certfile, ssl_keyfile=args.ssl_keyfile)
    # uvicorn raises a captured SIGTERM again once it has shut down gracefully, which
    # would end the process as killed by it; a clean shutdown exits 0 instead.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    if args.workers == 1:
        from server.metrics import MULTIPROC_DIR, clear_earlier_runs

        if os.environ.get(MULTIPROC_DIR):
            clear_earlier_runs(Path(os.environ[MULTIPROC_DIR]))
        uvicorn.run(create_app(settings), **options)
    else:
        from server.metrics import worker_metrics_dir

        # N processes accept on the one listening socket; each has its own app, database
        # pool and Redis pub/sub connection, and writes its metrics where any of them
        # can read all of them for /metrics.
        with worker_metrics_dir():
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


def _in_one_transaction(work: Callable[[Any], Awaitable[int]]) -> int:
    """`work(session)` in one transaction on DATABASE_URL (the maintenance commands)."""
    from models.database import Database
    from models.transaction import run_in_transaction
    from server.settings import load_settings

    settings = load_settings()

    async def run() -> int:
        db = Database(settings.write_url, lock_timeout=settings.database_lock_timeout_seconds)
        try:
            return await run_in_transaction(db.writer, work)
        finally:
            await db.dispose()

    return asyncio.run(run())


def _prune_events(args: argparse.Namespace) -> int:
    from models.event import prune

    deleted = _in_one_transaction(lambda session: prune(session, args.keep))
    print(f"deleted {deleted} events; each workspace keeps its last {args.keep}")  # noqa: T201
    return 0


def _prune_idempotency_keys(args: argparse.Namespace) -> int:
    from models.idempotency import delete_expired

    deleted = _in_one_transaction(delete_expired)
    print(f"deleted {deleted} expired idempotency keys")  # noqa: T201
    return 0


def _count(n: int, thing: str) -> str:
    return f"{n} {thing}" if n == 1 else f"{n} {thing}s"


def _archive_events(args: argparse.Namespace) -> int:
    from server.archive import archive_events, parse_before
    from server.archive_store import ArchiveError, UsageError, open_store
    from server.settings import load_settings

    try:
        # Every argument is checked before anything is read or written.
        before = parse_before(args.before)
        store = open_store(args.to, "--to", must_exist=False)
        done = asyncio.run(archive_events(load_settings(), store, before, prune=args.prune))
    except UsageError as exc:
        print(f"concord archive-events: {exc}", file=sys.stderr)  # noqa: T201
        return 2
    except ArchiveError as exc:
        print(f"concord archive-events: {exc}", file=sys.stderr)  # noqa: T201
        return 1
    when = before.isoformat().replace("+00:00", "Z")
    if not done.events:
        print(f"no events before {when} to archive")  # noqa: T201
        return 0
    print(  # noqa: T201
        f"archived {_count(done.events, 'event')} of {_count(done.workspaces, 'workspace')} "
        f"before {when} to {store.url}: {_count(done.written, 'object')} written, "
        f"{done.updated} updated, {done.kept} already there; all {done.verified} verified "
        "(read back: count and sha256)"
    )
    if args.prune:
        print(  # noqa: T201
            f"pruned {done.pruned} events from the database; older cursors answer CURSOR_EXPIRED"
        )
    return 0


def _restore_events(args: argparse.Namespace) -> int:
    from server.archive import restore_events
    from server.archive_store import ArchiveError, UsageError, open_store
    from server.settings import load_settings

    try:
        store = open_store(args.source, "--from", must_exist=True)
        done = asyncio.run(restore_events(load_settings(), store))
    except UsageError as exc:
        print(f"concord restore-events: {exc}", file=sys.stderr)  # noqa: T201
        return 2
    except ArchiveError as exc:
        print(f"concord restore-events: {exc}", file=sys.stderr)  # noqa: T201
        return 1
    print(  # noqa: T201
        f"restored {_count(done.events, 'event')} of {_count(done.workspaces, 'workspace')} "
        f"and {done.users} {'person' if done.users == 1 else 'people'} from {store.url}"
    )
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


def _read_password(args: argparse.Namespace) -> str | None:
    """The password from stdin (--password-stdin) or a prompt; None when there is neither."""
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    if sys.stdin.isatty():
        import getpass

        first = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != first:
            print("concord: the two passwords differ; nothing was created", file=sys.stderr)  # noqa: T201
            return None
        return first
    print(  # noqa: T201
        "concord: give the password on standard input with --password-stdin "
        "(never on the command line, where other users can see it)",
        file=sys.stderr,
    )
    return None


def _create_user(args: argparse.Namespace) -> int:
    from resolvers.errors import InvalidInput
    from server.admin import create_user
    from server.settings import load_settings

    password = _read_password(args)
    if password is None:
        return 1
    try:
        user = asyncio.run(create_user(load_settings(), args.email, password, args.display_name))
    except InvalidInput as exc:
        print(f"concord: {exc.field}: {exc.message}", file=sys.stderr)  # noqa: T201
        return 1
    except RuntimeError as exc:  # e.g. JWT_SECRET missing for a server database
        print(f"concord: {exc}", file=sys.stderr)  # noqa: T201
        return 1
    print(f"created user {user.id} <{user.email}>; they sign in with the login mutation")  # noqa: T201
    return 0


def _seed_demo(args: argparse.Namespace) -> int:
    from resolvers.errors import InvalidInput
    from server.admin import DemoExists, demo_password, seed_demo
    from server.settings import load_settings

    password = args.password or demo_password()
    try:
        demo = asyncio.run(seed_demo(load_settings(), password))
    except DemoExists as exc:
        print(f"concord: {exc}", file=sys.stderr)  # noqa: T201
        return 1
    except InvalidInput as exc:
        print(f"concord: {exc.field}: {exc.message}", file=sys.stderr)  # noqa: T201
        return 1
    except RuntimeError as exc:
        print(f"concord: {exc}", file=sys.stderr)  # noqa: T201
        return 1
    width = max(len(p.email) for p in demo.people)
    lines = [
        f'Seeded the workspace "{demo.workspace_name}" (id {demo.workspace_id}): '
        f"{demo.boards} boards, {demo.cards} cards, {demo.comments} comments.",
        "",
        f"Sign in as any of these people, each with the password {demo.password}",
        *(f"  {p.email:<{width}}  {p.display_name:<18} {p.role}" for p in demo.people),
        "",
        "Start the server (concord serve), open http://127.0.0.1:8000/graphql and run:",
        f'  mutation {{ login(input: {{email: "{demo.people[0].email}", '
        f'password: "{demo.password}"}}) {{ ... on AuthPayload {{ accessToken }} }} }}',
        'then put {"Authorization": "Bearer <accessToken>"} in the Headers tab and run',
        "  { workspaces { nodes { id name boards { nodes { name"
        " cards { nodes { title status } } } } } } }",
    ]
    print("\n".join(lines))  # noqa: T201
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
    serve.add_argument("--ssl-certfile", help="serve HTTPS/wss: the certificate chain (PEM)")
    serve.add_argument("--ssl-keyfile", help="the certificate's private key (PEM)")
    serve.set_defaults(run=_serve)
    migrate = commands.add_parser("migrate", help="apply database migrations (DATABASE_URL)")
    migrate.add_argument("--revision", default="head")
    migrate.set_defaults(run=_migrate)
    prune = commands.add_parser(
        "prune-events", help="keep only each workspace's last N events (older cursors expire)"
    )
    prune.add_argument("--keep", type=int, required=True)
    prune.set_defaults(run=_prune_events)
    keys = commands.add_parser(
        "prune-idempotency-keys",
        help="delete expired Idempotency-Keys (each request deletes its own user's anyway)",
    )
    keys.set_defaults(run=_prune_idempotency_keys)
    _add_archive_commands(commands)
    export = commands.add_parser("export-schema", help="print the GraphQL SDL")
    export.set_defaults(run=_export_schema)
    odbc = commands.add_parser(
        "odbc-setup", help="register the SQL Server ODBC driver; prints the ODBCSYSINI to export"
    )
    odbc.add_argument("--dir", help="where to write odbcinst.ini (default: .venv/etc/odbc)")
    odbc.set_defaults(run=_odbc_setup)
    _add_account_commands(commands)
    return root


def _add_archive_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    archive = commands.add_parser(
        "archive-events",
        help="write events older than a date to a directory or S3, verified; --prune deletes them",
        description="Write every workspace's events older than --before as gzip-compressed "
        "JSON Lines (one object per workspace and day, a manifest with counts and sha256) to "
        "a directory or s3://bucket/prefix, read each object back to verify it, and with "
        "--prune delete the verified events from the database. Re-runs verify what is "
        "already there instead of writing it again.",
    )
    archive.add_argument(
        "--before",
        required=True,
        help="a day (2026-11-30: midnight UTC) or a time (2026-11-30T18:00:00Z)",
    )
    archive.add_argument(
        "--to", required=True, help="a directory, or s3://bucket/prefix (AWS_ENDPOINT_URL honoured)"
    )
    archive.add_argument(
        "--prune",
        action="store_true",
        help="delete the archived events once verified (older cursors get CURSOR_EXPIRED)",
    )
    archive.set_defaults(run=_archive_events)
    restore = commands.add_parser(
        "restore-events",
        help="read an event archive into an empty database",
        description="Read an archive written by archive-events (checked against its manifest) "
        "into an empty database: the workspaces, their members and people, and the events, so "
        "that the events and cardHistory queries answer the archived history. Refuses a "
        "database that holds anything.",
    )
    restore.add_argument(
        "--from", dest="source", required=True, help="a directory, or s3://bucket/prefix"
    )
    restore.set_defaults(run=_restore_events)


def _add_account_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    create = commands.add_parser(
        "create-user",
        help="create an account that signs in with the login mutation",
        description="Create an account (the same rules as the register mutation). The password "
        "is read from standard input with --password-stdin, or prompted for on a terminal.",
    )
    create.add_argument("--email", required=True)
    create.add_argument("--display-name", required=True, help="the name others see")
    create.add_argument(
        "--password-stdin", action="store_true", help="read the password from standard input"
    )
    create.set_defaults(run=_create_user)
    seed = commands.add_parser(
        "seed-demo",
        help="create a demo workspace with people, boards and cards; prints how to sign in",
        description="Create four demo people (owner, two editors, a viewer), a workspace with "
        "two boards, cards and comments, through the same use cases as the API. Refuses when "
        "the demo people already exist. The printed password signs in every demo person.",
    )
    seed.add_argument(
        "--password", help="the demo people's password (default: a new random one, printed)"
    )
    seed.set_defaults(run=_seed_demo)


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    metrics_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if metrics_dir:
        # prometheus_client writes there from its first import on (any command imports it).
        Path(metrics_dir).mkdir(parents=True, exist_ok=True)
    result: int = args.run(args)
    return result


if __name__ == "__main__":
    raise SystemExit(main())
