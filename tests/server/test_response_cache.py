"""The response cache never serves an answer older than the last commit, in any process.

Two app instances share the database and, through Redis, the cache: a write through one
is visible at once through the other, because the key carries the workspace's sequence
number read before the data. Memberships count too: a removed member's cached answer
is not theirs any more.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from models.event import prune
from models.transaction import run_in_transaction
from server.response_cache import MemoryStore
from tests.api import Api, empty_tables, running_app, settings_for
from tests.services import reachable_redis_url

pytestmark = [pytest.mark.redis]

BOARD = (
    """query($id: ID!) { board(id: $id) { name cards(first: 10) { nodes { title version } } } }"""
)
RENAME = """mutation($i: UpdateCardInput!) { updateCard(input: $i) {
  __typename ... on CardPayload { card { version } } } }"""
REMOVE = """mutation($i: RemoveMemberInput!) { removeMember(input: $i) { __typename } }"""


def lookups(result: str) -> float:
    value = REGISTRY.get_sample_value("concord_response_cache_total", {"result": result})
    return value or 0.0


@pytest.fixture
async def two(database_url: str, tmp_path: Path) -> AsyncIterator[tuple[Api, Api]]:
    url = reachable_redis_url()
    await empty_tables(database_url)
    one = settings_for(database_url, tmp_path / "one", redis_url=url)
    other = settings_for(database_url, tmp_path / "other", redis_url=url)
    async with running_app(one) as writer, running_app(other) as reader:
        yield writer, reader


async def test_a_write_through_one_process_is_read_at_once_through_another(
    two: tuple[Api, Api],
) -> None:
    writer, reader = two
    owner = await writer.register()
    ws = await writer.workspace(owner)
    board = await writer.board(owner, ws["id"], "Plan")
    card = await writer.card(owner, board["id"], "t0")
    version = card["version"]
    await reader.ok(BOARD, {"id": board["id"]}, owner.token)  # the general path learns it

    for i in range(1, 16):
        hits, misses = lookups("hit"), lookups("miss")
        first = await reader.ok(BOARD, {"id": board["id"]}, owner.token)
        again = await reader.ok(BOARD, {"id": board["id"]}, owner.token)
        assert first == again
        assert first["board"]["cards"]["nodes"] == [{"title": f"t{i - 1}", "version": version}]
        # The first read after a write cannot reuse anything; the second one does.
        assert (lookups("miss") - misses, lookups("hit") - hits) == (1, 1)

        data = await writer.ok(
            RENAME,
            {"i": {"id": card["id"], "expectedVersion": version, "title": f"t{i}"}},
            owner.token,
        )
        version = data["updateCard"]["card"]["version"]

    final = await reader.ok(BOARD, {"id": board["id"]}, owner.token)
    assert final["board"]["cards"]["nodes"] == [{"title": "t15", "version": version}]


async def test_a_removed_member_no_longer_gets_the_cached_answer(two: tuple[Api, Api]) -> None:
    writer, reader = two
    owner = await writer.register()
    member = await writer.register()
    ws = await writer.workspace(owner)
    await writer.add_member(owner, ws["id"], member, "VIEWER")
    board = await writer.board(owner, ws["id"], "Plan")
    for _ in range(3):  # learned, then cached for the member
        seen = await reader.ok(BOARD, {"id": board["id"]}, member.token)
        assert seen["board"]["name"] == "Plan"

    removed = await writer.ok(
        REMOVE, {"i": {"workspaceId": ws["id"], "userId": member.id}}, owner.token
    )
    assert removed["removeMember"]["__typename"] == "DeletePayload", removed
    assert await reader.ok(BOARD, {"id": board["id"]}, member.token) == {"board": None}
    assert (await reader.ok(BOARD, {"id": board["id"]}, owner.token))["board"]["name"] == "Plan"


EVENTS_AFTER = """query($w: ID!, $a: String) { events(workspaceId: $w, after: $a, first: 100) {
  edges { cursor node { seq type } } } }"""


async def test_a_pruned_log_is_not_answered_from_the_cache(two: tuple[Api, Api]) -> None:
    """Pruning appends no event, so the last seq alone would not change the key: an answer
    cached before `prune-events` (or `archive-events --prune`) would still be served, with
    the pruned events, instead of CURSOR_EXPIRED."""
    writer, reader = two
    owner = await writer.register()
    ws = await writer.workspace(owner)
    for name in ("a", "b", "c"):
        await writer.board(owner, ws["id"], name)
    start = await reader.ok(EVENTS_AFTER, {"w": ws["id"], "a": None}, owner.token)
    early = start["events"]["edges"][0]["cursor"]
    for _ in range(2):  # learned, then cached
        after = await reader.ok(EVENTS_AFTER, {"w": ws["id"], "a": early}, owner.token)
        assert len(after["events"]["edges"]) == len(start["events"]["edges"]) - 1

    db = writer.app.state.services.db
    await run_in_transaction(db.writer, lambda session: prune(session, 1))

    answer = await reader(EVENTS_AFTER, {"w": ws["id"], "a": early}, owner.token)
    assert [e["extensions"]["code"] for e in answer.get("errors", [])] == ["CURSOR_EXPIRED"]
    kept = await reader.ok(EVENTS_AFTER, {"w": ws["id"], "a": None}, owner.token)
    assert kept["events"]["edges"] == start["events"]["edges"][-1:]


async def test_the_in_process_store_stays_within_its_bytes_and_ttl() -> None:
    store = MemoryStore(max_bytes=100, ttl=60.0)
    for i in range(10):
        await store.set(f"k{i}", bytes(30))
    kept = [i for i in range(10) if await store.get(f"k{i}") is not None]
    assert kept == [7, 8, 9]  # the three most recent fit in 100 bytes
    await store.set("huge", bytes(101))
    assert await store.get("huge") is None

    expired = MemoryStore(max_bytes=100, ttl=60.0)
    await expired.set("k", b"v")
    expired._now = lambda: float("inf")
    assert await expired.get("k") is None
