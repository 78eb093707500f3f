"""`concord archive-events` and `concord restore-events`: the event log, out and back.

An archive is a tree of objects in a directory or under an S3 prefix:

    manifest.json                                         every object, its count and sha256
    workspace=<id>/date=<YYYY-MM-DD>/events.jsonl.gz      that day's events, one JSON a line
    workspace=<id>/workspace.json.gz                      the workspace, members, people

Day objects are gzip-compressed JSON Lines, one event per line in seq order, with sorted
keys, so the same events always make the same bytes and a re-run finds the object it
would write already there (verified, not stored again). The workspace object carries what
a fresh database needs to answer `events` for the archived history: the workspace's name,
its memberships, and the people who are members or acted in it (with their password
hashes, so that they sign in to the restored copy as before: the archive is as sensitive as
a database backup, and is kept like one). Boards, cards and comments are state, not
history: they are not archived (a database backup holds them).

Every object written is read back and its sha256 and line count compared before the
manifest (written last) lists it, and only with `--prune`, only after all of that, are the
archived events deleted from the database, oldest first, so that an older cursor answers
CURSOR_EXPIRED exactly as after `concord prune-events`.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
import uuid
import zlib
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from typing import Any

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from models import archive as rows
from models.database import Database
from models.migrate import SchemaBehind, require_current_schema, upgrade
from models.tables import Event, Membership, User, Workspace
from models.transaction import run_in_transaction
from server.archive_store import ArchiveError, Store, UsageError
from server.settings import Settings

FORMAT = "concord-event-archive"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"


# ---- errors -----------------------------------------------------------------------------------


def database_error(exc: Exception) -> ArchiveError:
    """A database failure as one line: the driver's own message, never the statement's
    parameters (which may be password hashes)."""
    original = getattr(exc, "orig", None) or exc
    text = str(original).strip().splitlines()[0] if str(original).strip() else ""
    return ArchiveError(f"cannot use the database: {type(original).__name__}: {text}".rstrip(": "))


# ---- arguments ------------------------------------------------------------------------------


def parse_before(text: str, now: datetime | None = None) -> datetime:
    """`--before`: a day (midnight UTC) or an ISO 8601 time (UTC when no offset is given)."""
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            cutoff = datetime.combine(day, time(), tzinfo=UTC)
        else:
            cutoff = datetime.fromisoformat(text)
            if cutoff.tzinfo is None:
                cutoff = cutoff.replace(tzinfo=UTC)
    except ValueError:
        raise UsageError(
            f"--before: {text!r} is not a date (2026-11-30) or a time (2026-11-30T18:00:00Z)"
        ) from None
    if cutoff > (now or datetime.now(UTC)):
        raise UsageError(
            f"--before: {text} is in the future; events can only be archived once they happened"
        )
    return cutoff.astimezone(UTC)


# ---- the objects ------------------------------------------------------------------------------


def day_key(workspace_id: uuid.UUID | str, day: date | str) -> str:
    return f"workspace={workspace_id}/date={day}/events.jsonl.gz"


def workspace_key(workspace_id: uuid.UUID | str) -> str:
    return f"workspace={workspace_id}/workspace.json.gz"


def canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def pack(text: str) -> bytes:
    # mtime=0 and no file name: the same text always compresses to the same bytes.
    return gzip.compress(text.encode("utf-8"), mtime=0)


def unpack(data: bytes, where: str) -> str:
    try:
        return gzip.decompress(data).decode("utf-8")
    except (OSError, EOFError, zlib.error, UnicodeDecodeError) as exc:
        raise ArchiveError(f"{where}: not a readable gzip object ({exc})") from exc


def user_row(record: dict[str, Any]) -> dict[str, Any]:
    """An archived person, as the users table's row (the inverse of the archive's record)."""
    return {
        "id": uuid.UUID(record["id"]),
        "email": record["email"],
        "display_name": record["display_name"],
        "password_hash": record["password_hash"],
        "created_at": _when(record["created_at"]),
    }


def membership_row(record: dict[str, Any], workspace_id: str) -> dict[str, Any]:
    """An archived membership of `workspace_id`, as the memberships table's row."""
    return {
        "id": uuid.UUID(record["id"]),
        "workspace_id": uuid.UUID(workspace_id),
        "user_id": uuid.UUID(record["user_id"]),
        "role": record["role"],
        "created_at": _when(record["created_at"]),
    }


def event_row(record: dict[str, Any]) -> dict[str, Any]:
    """An archived event (`event_record`'s output), as the events table's row."""
    actor = record["actor_id"]
    return {
        "workspace_id": uuid.UUID(record["workspace_id"]),
        "seq": record["seq"],
        "type": record["type"],
        "entity_type": record["entity_type"],
        "entity_id": uuid.UUID(record["entity_id"]),
        "entity_version": record["entity_version"],
        "actor_id": None if actor is None else uuid.UUID(actor),
        "changes": record["changes"],
        "occurred_at": _when(record["occurred_at"]),
    }


def event_record(event: Event) -> dict[str, Any]:
    """One archived event: every column but the database's own surrogate id."""
    return {
        "workspace_id": str(event.workspace_id),
        "seq": event.seq,
        "type": event.type,
        "entity_type": event.entity_type,
        "entity_id": str(event.entity_id),
        "entity_version": event.entity_version,
        "actor_id": None if event.actor_id is None else str(event.actor_id),
        "changes": event.changes,
        "occurred_at": event.occurred_at.astimezone(UTC).isoformat(),
    }


def parse_lines(text: str, where: str) -> dict[int, dict[str, Any]]:
    records: dict[int, dict[str, Any]] = {}
    for number, line in enumerate(text.splitlines(), 1):
        try:
            record = json.loads(line)
            seq = int(record["seq"])
        except (ValueError, KeyError, TypeError) as exc:
            raise ArchiveError(f"{where}: line {number} is not an archived event ({exc})") from exc
        if seq in records:
            raise ArchiveError(f"{where}: seq {seq} appears twice")
        records[seq] = record
    return records


def user_record(user: User) -> dict[str, Any]:
    return {
        "id": str(user.id),
        "email": user.email,
        "display_name": user.display_name,
        "password_hash": user.password_hash,
        "created_at": user.created_at.astimezone(UTC).isoformat(),
    }


def membership_record(membership: Membership) -> dict[str, Any]:
    return {
        "id": str(membership.id),
        "user_id": str(membership.user_id),
        "role": membership.role,
        "created_at": membership.created_at.astimezone(UTC).isoformat(),
    }


def workspace_record(workspace: Workspace) -> dict[str, Any]:
    return {
        "id": str(workspace.id),
        "name": workspace.name,
        "created_at": workspace.created_at.astimezone(UTC).isoformat(),
    }


# ---- the manifest -------------------------------------------------------------------------------


def read_manifest(store: Store) -> dict[str, Any] | None:
    data = store.get(MANIFEST)
    if data is None:
        return None
    where = f"{store.url}/{MANIFEST}"
    try:
        manifest = json.loads(data)
    except ValueError as exc:
        raise ArchiveError(f"{where}: not JSON ({exc}): not a Concord event archive") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ArchiveError(f"{where}: not a Concord event archive's manifest")
    if manifest.get("version") != FORMAT_VERSION:
        raise ArchiveError(
            f"{where}: archive format version {manifest.get('version')!r}; this Concord "
            f"reads version {FORMAT_VERSION}"
        )
    return manifest


def manifest_bytes(
    objects: dict[str, dict[str, Any]], workspaces: dict[str, dict[str, Any]]
) -> bytes:
    manifest = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "objects": [objects[k] for k in sorted(objects)],
        "workspaces": [workspaces[k] for k in sorted(workspaces)],
    }
    return (json.dumps(manifest, sort_keys=True, indent=1, ensure_ascii=False) + "\n").encode()


# ---- archiving --------------------------------------------------------------------------------


@dataclass
class Archived:
    """What one `archive-events` run did."""

    events: int = 0
    workspaces: int = 0
    written: int = 0
    updated: int = 0
    kept: int = 0
    pruned: int = 0

    @property
    def verified(self) -> int:
        return self.written + self.updated + self.kept


async def _put_verified(store: Store, key: str, data: bytes) -> None:
    """Put the object, read it back, and compare; ArchiveError when it does not match."""
    await asyncio.to_thread(store.put, key, data)
    back = await asyncio.to_thread(store.get, key)
    if back is None:
        raise ArchiveError(f"{store.url}/{key}: written, but not there when read back")
    if sha256(back) != sha256(data):
        raise ArchiveError(
            f"{store.url}/{key}: read back with sha256 {sha256(back)}, written with "
            f"{sha256(data)}; nothing was pruned"
        )


async def _store_day(
    store: Store,
    workspace_id: uuid.UUID,
    day: date,
    records: dict[int, dict[str, Any]],
    result: Archived,
) -> dict[str, Any]:
    """Store one workspace-day (merged with what the store already holds), verified.

    An object already holding every one of these events (and maybe more, pruned since) is
    read and checked, not stored again. One holding some of them (an earlier run cut the
    day at a time, or a clock a little behind dated an event earlier) is stored again with
    both. One holding a *different* event under the same seq is another database's archive
    and stops the run.
    """
    key = day_key(workspace_id, day)
    where = f"{store.url}/{key}"
    existing = await asyncio.to_thread(store.get, key)
    merged = dict(records)
    held: dict[int, dict[str, Any]] = {}
    if existing is not None:
        held = parse_lines(unpack(existing, where), where)
        for seq, record in records.items():
            if seq in held and held[seq] != record:
                raise ArchiveError(
                    f"{where}: holds a different event with seq {seq} than this database; "
                    "is this another database's archive? Nothing was pruned."
                )
        merged = {**held, **records}
    if existing is not None and len(merged) == len(held):
        data = existing
        result.kept += 1
    else:
        text = "".join(canonical(merged[seq]) + "\n" for seq in sorted(merged))
        data = pack(text)
        await _put_verified(store, key, data)
        result.written += existing is None
        result.updated += existing is not None
    back = parse_lines(unpack(data, where), where)
    if not set(records) <= set(back) or len(back) != len(merged):
        raise ArchiveError(f"{where}: read back with {len(back)} events, expected {len(merged)}")
    return {
        "key": key,
        "workspace_id": str(workspace_id),
        "date": day.isoformat(),
        "count": len(back),
        "first_seq": min(back),
        "last_seq": max(back),
        "sha256": sha256(data),
        "bytes": len(data),
    }


async def _store_workspace(
    store: Store, workspace_id: uuid.UUID, snapshot: dict[str, Any], result: Archived
) -> dict[str, Any]:
    """Store the workspace object, keeping people an earlier run recorded (former actors)."""
    key = workspace_key(workspace_id)
    where = f"{store.url}/{key}"
    existing = await asyncio.to_thread(store.get, key)
    if existing is not None:
        try:
            held = json.loads(unpack(existing, where))
            people = {u["id"]: u for u in held["users"]}
        except (ValueError, KeyError, TypeError) as exc:
            raise ArchiveError(f"{where}: not a workspace object ({exc})") from exc
        people.update({u["id"]: u for u in snapshot["users"]})
        snapshot = {**snapshot, "users": [people[k] for k in sorted(people)]}
    data = pack(canonical(snapshot) + "\n")
    if existing is not None and held == snapshot:
        data = existing
        result.kept += 1
    else:
        await _put_verified(store, key, data)
        result.written += existing is None
        result.updated += existing is not None
    return {
        "key": key,
        "workspace_id": str(workspace_id),
        "sha256": sha256(data),
        "bytes": len(data),
    }


async def archive_events(
    settings: Settings, store: Store, before: datetime, *, prune: bool
) -> Archived:
    """Archive every workspace's events before `before` to `store`; with `prune`, delete them."""
    try:
        return await _archive_events(settings, store, before, prune=prune)
    except (SQLAlchemyError, OSError) as exc:
        raise database_error(exc) from exc


async def _archive_events(
    settings: Settings, store: Store, before: datetime, *, prune: bool
) -> Archived:
    result = Archived()
    await asyncio.to_thread(read_manifest, store)  # a foreign one stops us here
    # This run's entries; merged into the manifest as it is when this run writes it.
    objects: dict[str, dict[str, Any]] = {}
    directories: dict[str, dict[str, Any]] = {}
    db = Database(settings.write_url, lock_timeout=settings.database_lock_timeout_seconds)
    through: dict[uuid.UUID, int] = {}
    try:
        await _require_schema(db)
        async with db.primary_reader() as session:
            candidates = await rows.workspaces_with_events_before(session, before)
        for workspace_id in candidates:
            async with db.primary_reader() as session:
                last = await rows.archivable_through(session, workspace_id, before)
            if last is None:
                continue
            actors = await _archive_log(db, store, workspace_id, last, objects, result)
            async with db.primary_reader() as session:
                workspace, memberships, users = await rows.directory(session, workspace_id, actors)
            if workspace is None:  # pragma: no cover - events keep their workspace (FK)
                raise ArchiveError(f"workspace {workspace_id} has events but no row")
            snapshot = {
                "workspace": workspace_record(workspace),
                "memberships": [membership_record(m) for m in memberships],
                "users": [user_record(u) for u in users],
            }
            entry = await _store_workspace(store, workspace_id, snapshot, result)
            directories[entry["key"]] = entry
            through[workspace_id] = last
            result.workspaces += 1
        if result.events:
            await _write_manifest(store, objects, directories)
        if prune:
            for workspace_id, last in through.items():
                result.pruned += await _prune(db, workspace_id, last)
    finally:
        await db.dispose()
    return result


async def _write_manifest(
    store: Store, objects: dict[str, dict[str, Any]], directories: dict[str, dict[str, Any]]
) -> None:
    """Add this run's entries to the manifest, written last and read back.

    An archive lists only objects that were read back and matched. The manifest is read
    again here, just before it is written, so that the window in which another run's entries
    could be lost is as short as it can be without a lock.
    """
    current = await asyncio.to_thread(read_manifest, store) or {}
    listed = {o["key"]: o for o in current.get("objects", [])} | objects
    workspaces = {w["key"]: w for w in current.get("workspaces", [])} | directories
    data = manifest_bytes(listed, workspaces)
    if await asyncio.to_thread(store.get, MANIFEST) != data:
        await _put_verified(store, MANIFEST, data)


async def _archive_log(
    db: Database,
    store: Store,
    workspace_id: uuid.UUID,
    through: int,
    objects: dict[str, dict[str, Any]],
    result: Archived,
) -> set[uuid.UUID]:
    """Store the workspace's events up to `through`, a day at a time; the actors seen.

    A page per short read transaction, and one day's events in memory at a time. A day
    met again further on (an event dated a little earlier than the one before it) is
    merged into the object already stored.
    """
    actors: set[uuid.UUID] = set()
    day: date | None = None
    records: dict[int, dict[str, Any]] = {}

    async def flush() -> None:
        if day is None or not records:
            return
        entry = await _store_day(store, workspace_id, day, records, result)
        objects[entry["key"]] = entry
        result.events += len(records)

    after = 0
    while True:
        async with db.primary_reader() as session:
            page = await rows.events_page(session, workspace_id, after, through)
        if not page:
            break
        for event in page:
            when = event.occurred_at.astimezone(UTC).date()
            if when != day:
                await flush()
                day, records = when, {}
            records[event.seq] = event_record(event)
            if event.actor_id is not None:
                actors.add(event.actor_id)
        after = page[-1].seq
    await flush()
    return actors


async def _prune(db: Database, workspace_id: uuid.UUID, through: int) -> int:
    """Delete the workspace's archived prefix, a batch per transaction, oldest first."""

    async def batch(session: AsyncSession) -> int:
        return await rows.prune_through(session, workspace_id, through)

    deleted = 0
    while n := await run_in_transaction(db.writer, batch):
        deleted += n
    return deleted


async def _require_schema(db: Database) -> None:
    """Migrate the embedded database (as every command does); a server's must be current."""
    if db.dialect == "sqlite":
        await upgrade(db.write_engine)
        return
    try:
        await require_current_schema(db.write_engine)
    except SchemaBehind as exc:
        raise ArchiveError(str(exc).replace("before starting the server", "first")) from exc


# ---- restoring ---------------------------------------------------------------------------------


@dataclass
class Restored:
    events: int
    workspaces: int
    users: int


def _checked(store: Store, entry: dict[str, Any]) -> bytes:
    key = entry["key"]
    where = f"{store.url}/{key}"
    data = store.get(key)
    if data is None:
        raise ArchiveError(f"{where}: listed in the manifest but missing; nothing restored")
    if sha256(data) != entry["sha256"]:
        raise ArchiveError(
            f"{where}: sha256 {sha256(data)} does not match the manifest's {entry['sha256']}: "
            "the object was changed or damaged; nothing restored"
        )
    return data


Records = list[dict[str, Any]]


def _load_archive(store: Store) -> tuple[dict[str, dict[str, Any]], dict[str, Records]]:
    """Every workspace object and every workspace's events, each checked against the manifest."""
    manifest = read_manifest(store)
    if manifest is None:
        raise ArchiveError(
            f"{store.url}: no {MANIFEST}: not a Concord event archive (or one whose first "
            "run did not finish)"
        )
    try:
        snapshots: dict[str, dict[str, Any]] = {}
        for entry in manifest["workspaces"]:
            where = f"{store.url}/{entry['key']}"
            snapshot = json.loads(unpack(_checked(store, entry), where))
            snapshots[snapshot["workspace"]["id"]] = snapshot
        events: dict[str, dict[int, dict[str, Any]]] = defaultdict(dict)
        for entry in manifest["objects"]:
            where = f"{store.url}/{entry['key']}"
            records = parse_lines(unpack(_checked(store, entry), where), where)
            if len(records) != entry["count"]:
                raise ArchiveError(
                    f"{where}: {len(records)} events, the manifest says {entry['count']}"
                )
            for seq, record in records.items():
                if record["workspace_id"] != entry["workspace_id"]:
                    raise ArchiveError(f"{where}: seq {seq} belongs to another workspace")
                held = events[entry["workspace_id"]].get(seq)
                if held is not None and held != record:
                    raise ArchiveError(f"{where}: seq {seq} differs from another object's")
                events[entry["workspace_id"]][seq] = record
    except (KeyError, TypeError, ValueError) as exc:
        raise ArchiveError(
            f"{store.url}: the manifest or an object is malformed ({exc!r})"
        ) from exc
    missing = sorted(set(events) - set(snapshots))
    if missing:
        raise ArchiveError(f"{store.url}: no workspace object for {', '.join(missing)}")
    ordered = {w: [records[s] for s in sorted(records)] for w, records in events.items()}
    return snapshots, ordered


def _when(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


async def restore_events(settings: Settings, store: Store) -> Restored:
    """Read the archive in `store` into the (empty) database; all of it, or nothing."""
    snapshots, events = await asyncio.to_thread(_load_archive, store)
    try:
        return await _restore(settings, snapshots, events)
    except (SQLAlchemyError, OSError) as exc:
        raise database_error(exc) from exc


async def _restore(
    settings: Settings, snapshots: dict[str, dict[str, Any]], events: dict[str, Records]
) -> Restored:
    people: dict[str, dict[str, Any]] = {}
    for snapshot in snapshots.values():
        people.update({u["id"]: u for u in snapshot["users"]})
    db = Database(settings.write_url, lock_timeout=settings.database_lock_timeout_seconds)
    try:
        await _require_schema(db)
        async with db.primary_reader() as session:
            counts = await rows.row_counts(session)
        filled = {table: n for table, n in counts.items() if n}
        if filled:
            listed = ", ".join(f"{n} {table}" for table, n in sorted(filled.items()))
            raise ArchiveError(
                f"refusing to restore: the database is not empty ({listed}); restore into a "
                "fresh database (migrated with `concord migrate` when it is a server)"
            )

        async def work(session: AsyncSession) -> None:
            await rows.restore_users(session, [user_row(u) for u in people.values()])
            for workspace_id, snapshot in sorted(snapshots.items()):
                kept = events.get(workspace_id, [])
                await rows.restore_workspace(
                    session,
                    {
                        "id": uuid.UUID(workspace_id),
                        "name": snapshot["workspace"]["name"],
                        "created_at": _when(snapshot["workspace"]["created_at"]),
                    },
                    [membership_row(m, workspace_id) for m in snapshot["memberships"]],
                    kept[-1]["seq"] if kept else 0,
                )
                await rows.restore_events(session, [event_row(e) for e in kept])

        await run_in_transaction(db.writer, work)
    finally:
        await db.dispose()
    return Restored(sum(len(e) for e in events.values()), len(snapshots), len(people))
