"""Where a request's reads go: the replica, unless it has not caught up with the caller.

Mutations answer with `X-Concord-Seen: <workspace id>:<seq>`, the sequence number of the
last event they wrote. A client that sends it back on later requests reads its own writes:
when the replica's log for that workspace is behind that seq, the request reads from the
primary instead. Without a replica configured, every read goes to the primary anyway.
"""

from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from models import event as event_store
from models.database import Database

SEEN_HEADER = "x-concord-seen"
MAX_ENTRIES = 20


def format_seen(seen: dict[uuid.UUID, int]) -> str:
    return ",".join(f"{workspace}:{seq}" for workspace, seq in seen.items())


def parse_seen(header: str | None) -> dict[uuid.UUID, int]:
    """The (workspace, seq) pairs of the header; malformed entries are ignored (a hint only)."""
    seen: dict[uuid.UUID, int] = {}
    for entry in (header or "").split(",")[:MAX_ENTRIES]:
        workspace, _, seq = entry.strip().partition(":")
        try:
            seen[uuid.UUID(workspace)] = max(int(seq), seen.get(uuid.UUID(workspace), 0))
        except ValueError:
            continue
    return seen


async def reader_for(db: Database, seen: dict[uuid.UUID, int]) -> async_sessionmaker[AsyncSession]:
    """The replica if it has every event the caller has seen, else the primary."""
    if not db.has_replica or not seen:
        return db.reader
    async with db.reader() as session:
        for workspace, seq in seen.items():
            if await event_store.last_seq(session, workspace) < seq:
                return db.primary_reader
    return db.reader
