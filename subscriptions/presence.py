"""Who is looking at a board now, across processes.

Each open `presence(boardId)` subscription is a *connection* of a user: it joins, sends a
heartbeat every `heartbeat_interval` (TTL/3) and leaves when it ends. A connection whose
heartbeats stop (its process crashed) expires after the TTL and is pruned by the next
operation on the board, which every live viewer's heartbeat provides. A user is present
while any of their connections is, since the earliest of them.

Whenever a user arrives or leaves a board, a JSON notification
`{"boardId": …, "userId": …, "change": "joined" | "left"}` is published on the broker
channel `presence:<boardId>`; subscribers re-read `present()`. Publishing is best
effort: a `BrokerUnavailable` is logged, the store itself is already up to date.

`MemoryPresence` keeps one process's viewers; `RedisPresence` shares them through Redis,
per board a ZSET of connection → expiry time and hashes of connection → user and since,
all updated by one Lua script so that concurrent processes agree on who arrived or left.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import NamedTuple, Protocol

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from subscriptions.backends import is_redis_url
from subscriptions.broker import Broker, BrokerUnavailable
from subscriptions.redis import redact

logger = logging.getLogger(__name__)

DEFAULT_TTL = 30.0


class Viewer(NamedTuple):
    """A user present on a board, since their earliest live connection joined."""

    user_id: str
    since: datetime


def presence_channel(board_id: str) -> str:
    """The broker channel of a board's arrivals and departures."""
    return f"presence:{board_id}"


class PresenceStore(Protocol):
    """Viewers per board, with connection-level expiry and change notifications."""

    @property
    def ttl(self) -> float:
        """Seconds after its last heartbeat that a connection is dropped."""
        ...

    @property
    def heartbeat_interval(self) -> float:
        """How often each connection should call `heartbeat` (TTL/3)."""
        ...

    async def join(self, board_id: str, user_id: str, connection_id: str) -> None:
        """Register a connection of `user_id` on the board (idempotent)."""
        ...

    async def heartbeat(self, board_id: str, user_id: str, connection_id: str) -> None:
        """Keep the connection alive; re-registers it if it expired meanwhile."""
        ...

    async def leave(self, board_id: str, connection_id: str) -> None:
        """Drop the connection (idempotent)."""
        ...

    async def present(self, board_id: str) -> list[Viewer]:
        """One entry per present user, ordered by `since` (then user id)."""
        ...

    async def aclose(self) -> None:
        """Release the store's connections (not the broker's)."""
        ...


def _viewers(entries: Iterable[tuple[str, datetime]]) -> list[Viewer]:
    earliest: dict[str, datetime] = {}
    for user_id, since in entries:
        if user_id not in earliest or since < earliest[user_id]:
            earliest[user_id] = since
    return sorted(
        (Viewer(user_id, since) for user_id, since in earliest.items()),
        key=lambda viewer: (viewer.since, viewer.user_id),
    )


class _Notifier:
    def __init__(self, broker: Broker, ttl: float) -> None:
        if ttl <= 0:
            raise ValueError(f"ttl must be positive, got {ttl}")
        self.broker = broker
        self.ttl = ttl

    @property
    def heartbeat_interval(self) -> float:
        return self.ttl / 3

    async def _notify(self, board_id: str, joined: Iterable[str], left: Iterable[str]) -> None:
        changes = [(user, "joined") for user in sorted(joined)]
        changes += [(user, "left") for user in sorted(left)]
        for user_id, change in changes:
            message = json.dumps({"boardId": board_id, "userId": user_id, "change": change})
            try:
                await self.broker.publish(presence_channel(board_id), message)
            except BrokerUnavailable as exc:
                logger.warning("presence change on board %s not published: %s", board_id, exc)


@dataclass
class _Connection:
    user_id: str
    since: datetime
    expires_at: float  # time.monotonic()


class MemoryPresence(_Notifier):
    """A `PresenceStore` for one process."""

    def __init__(self, broker: Broker, *, ttl: float = DEFAULT_TTL) -> None:
        super().__init__(broker, ttl)
        self._boards: dict[str, dict[str, _Connection]] = {}

    async def join(self, board_id: str, user_id: str, connection_id: str) -> None:
        await self._update(board_id, connection_id, user_id)

    async def heartbeat(self, board_id: str, user_id: str, connection_id: str) -> None:
        await self._update(board_id, connection_id, user_id)

    async def leave(self, board_id: str, connection_id: str) -> None:
        await self._update(board_id, connection_id, None)

    async def present(self, board_id: str) -> list[Viewer]:
        connections = await self._update(board_id, None, None)
        return _viewers((c.user_id, c.since) for c in connections.values())

    async def aclose(self) -> None:
        """Nothing to release."""

    async def _update(
        self, board_id: str, connection_id: str | None, user_id: str | None
    ) -> dict[str, _Connection]:
        """Prune expired connections, then join (user given) or leave (user None)."""
        connections = self._boards.get(board_id, {})
        before = {c.user_id for c in connections.values()}
        now = time.monotonic()
        connections = {key: c for key, c in connections.items() if c.expires_at > now}
        if connection_id is not None:
            if user_id is None:
                connections.pop(connection_id, None)
            else:
                existing = connections.get(connection_id)
                since = existing.since if existing else datetime.now(UTC)
                connections[connection_id] = _Connection(user_id, since, now + self.ttl)
        if connections:
            self._boards[board_id] = connections
        else:
            self._boards.pop(board_id, None)
        after = {c.user_id for c in connections.values()}
        await self._notify(board_id, after - before, before - after)
        return connections


# KEYS: expiry ZSET (connection → expiry time), hash connection → user, hash
# connection → since (microseconds since the epoch). ARGV: op ("join", "leave" or
# "read"), ttl in seconds, connection, user. Times come from the Redis server's clock,
# so that processes with skewed clocks agree. Returns {changes, entries}: changes are
# "+user" / "-user", entries alternate user and since.
_PRESENCE_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local op, ttl, conn, user = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4]

local function users()
  local present = {}
  for _, u in ipairs(redis.call('HVALS', KEYS[2])) do present[u] = true end
  return present
end

local before = users()
for _, expired in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)) do
  redis.call('ZREM', KEYS[1], expired)
  redis.call('HDEL', KEYS[2], expired)
  redis.call('HDEL', KEYS[3], expired)
end
if op == 'join' then
  redis.call('ZADD', KEYS[1], now + ttl, conn)
  redis.call('HSET', KEYS[2], conn, user)
  redis.call('HSETNX', KEYS[3], conn, t[1] .. string.format('%06d', tonumber(t[2])))
elseif op == 'leave' then
  redis.call('ZREM', KEYS[1], conn)
  redis.call('HDEL', KEYS[2], conn)
  redis.call('HDEL', KEYS[3], conn)
end
local after = users()

local changes = {}
for u in pairs(after) do if not before[u] then table.insert(changes, '+' .. u) end end
for u in pairs(before) do if not after[u] then table.insert(changes, '-' .. u) end end

local entries = {}
local all = redis.call('HGETALL', KEYS[2])
for i = 1, #all, 2 do
  table.insert(entries, all[i + 1])
  table.insert(entries, redis.call('HGET', KEYS[3], all[i]) or '0')
end
if #all == 0 then
  redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
else
  -- An abandoned board (every process gone) vanishes on its own.
  local keep = math.ceil(ttl * 2000)
  for i = 1, 3 do redis.call('PEXPIRE', KEYS[i], keep) end
end
return {changes, entries}
"""


def _from_micros(value: str) -> datetime:
    seconds, micros = divmod(int(value), 1_000_000)
    return datetime.fromtimestamp(seconds, UTC) + timedelta(microseconds=micros)


class RedisPresence(_Notifier):
    """A `PresenceStore` shared by every process through Redis."""

    def __init__(
        self,
        url: str,
        broker: Broker,
        *,
        ttl: float = DEFAULT_TTL,
        key_prefix: str = "concord:presence",
        timeout: float = 5.0,
    ) -> None:
        super().__init__(broker, ttl)
        self.url = url
        self._prefix = key_prefix
        self._client = Redis.from_url(
            url,
            decode_responses=True,
            client_name="concord-presence",
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 1),
        )
        self._script = self._client.register_script(_PRESENCE_SCRIPT)

    async def join(self, board_id: str, user_id: str, connection_id: str) -> None:
        await self._run(board_id, "join", connection_id, user_id)

    async def heartbeat(self, board_id: str, user_id: str, connection_id: str) -> None:
        await self._run(board_id, "join", connection_id, user_id)

    async def leave(self, board_id: str, connection_id: str) -> None:
        await self._run(board_id, "leave", connection_id, "")

    async def present(self, board_id: str) -> list[Viewer]:
        return await self._run(board_id, "read", "", "")

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _run(self, board_id: str, op: str, connection_id: str, user_id: str) -> list[Viewer]:
        # The hash tag keeps a board's keys in one slot of a Redis Cluster.
        keys = [f"{self._prefix}:{{{board_id}}}:{suffix}" for suffix in ("exp", "user", "since")]
        try:
            changes, entries = await self._script(
                keys=keys, args=[op, repr(self.ttl), connection_id, user_id]
            )
        except (RedisError, OSError) as exc:
            raise BrokerUnavailable(
                f"presence store at {redact(self.url)} is unreachable: {exc}"
            ) from exc
        joined = [change[1:] for change in changes if change.startswith("+")]
        left = [change[1:] for change in changes if change.startswith("-")]
        await self._notify(board_id, joined, left)
        _raise_if_cancelled()
        pairs = zip(entries[::2], entries[1::2], strict=True)
        return _viewers((user, _from_micros(since)) for user, since in pairs)


def _raise_if_cancelled() -> None:
    """Re-raise a cancellation that redis-py swallowed.

    redis-py's asyncio client (8.1) often completes a command whose task was cancelled
    meanwhile and returns normally, dropping the CancelledError: a presence subscription
    whose WebSocket closed then lived on (and kept its viewer present) until its next
    send failed. The command's effect stands; the cancellation goes on from here.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def presence_from_url(
    url: str | None, broker: Broker, *, ttl: float = DEFAULT_TTL
) -> PresenceStore:
    """The same rule as `broker_from_url`: None → memory, redis(s):// → Redis."""
    if url is None:
        return MemoryPresence(broker, ttl=ttl)
    if is_redis_url(url):
        return RedisPresence(url, broker, ttl=ttl)
    raise ValueError(
        f"unsupported presence URL {redact(url)!r}: expected redis://… or rediss://…, "
        "or no URL for the in-process store"
    )
