"""Cards: optimistic concurrency, field-level merge, history."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.api import Api, unknown_version

UPDATE = """mutation($i: UpdateCardInput!) { updateCard(input: $i) {
  __typename
  ... on CardPayload { card { id version title description status assignee { id } } }
  ... on VersionConflict { message code currentVersion changedFields
                           current { __typename id version ... on Card { title description } } }
  ... on ValidationError { field message }
  ... on NotFound { message }
  ... on Forbidden { message }
} }"""


async def update(api: Api, token: str, **fields: Any) -> dict[str, Any]:
    data = await api.ok(UPDATE, {"i": fields}, token)
    result: dict[str, Any] = data["updateCard"]
    return result


async def setup(api: Api) -> tuple[Any, Any, dict[str, Any]]:
    alice = await api.register("alice")
    bob = await api.register("bob")
    ws = await api.workspace(alice)
    await api.add_member(alice, ws["id"], bob, "EDITOR")
    board = await api.board(alice, ws["id"])
    card = await api.card(alice, board["id"], "Draft", description="first")
    return alice, bob, card


async def test_concurrent_updates_with_same_version_one_wins_one_conflicts(api: Api) -> None:
    alice, bob, card = await setup(api)
    results = await asyncio.gather(
        update(api, alice.token, id=card["id"], expectedVersion=card["version"], title="Alice's"),
        update(api, bob.token, id=card["id"], expectedVersion=card["version"], title="Bob's"),
    )
    kinds = sorted(r["__typename"] for r in results)
    assert kinds == ["CardPayload", "VersionConflict"]
    winner = next(r for r in results if r["__typename"] == "CardPayload")["card"]
    conflict = next(r for r in results if r["__typename"] == "VersionConflict")
    assert conflict["changedFields"] == ["title"]
    assert conflict["code"] == "VERSION_CONFLICT"
    assert conflict["currentVersion"] == winner["version"]
    assert conflict["current"] == {
        "__typename": "Card",
        "id": card["id"],
        "version": winner["version"],
        "title": winner["title"],
        "description": "first",
    }
    # The loser changed nothing.
    data = await api.ok(
        "query($id: ID!) { card(id: $id) { title version } }", {"id": card["id"]}, alice.token
    )
    assert data["card"] == {"title": winner["title"], "version": winner["version"]}


async def test_merge_applies_disjoint_edit_and_rejects_overlapping_one(api: Api) -> None:
    alice, bob, card = await setup(api)
    first = await update(
        api, alice.token, id=card["id"], expectedVersion=card["version"], title="New title"
    )
    assert first["__typename"] == "CardPayload"

    merged = await update(
        api,
        bob.token,
        id=card["id"],
        expectedVersion=card["version"],
        description="Bob's notes",
        onConflict="MERGE",
    )
    assert merged["__typename"] == "CardPayload"
    assert merged["card"]["title"] == "New title"
    assert merged["card"]["description"] == "Bob's notes"

    overlapping = await update(
        api,
        bob.token,
        id=card["id"],
        expectedVersion=card["version"],
        title="Bob's title",
        onConflict="MERGE",
    )
    assert overlapping["__typename"] == "VersionConflict"
    assert overlapping["changedFields"] == ["title", "description"]
    data = await api.ok(
        "query($id: ID!) { card(id: $id) { title } }", {"id": card["id"]}, alice.token
    )
    assert data["card"]["title"] == "New title"


async def test_stale_version_without_merge_conflicts(api: Api) -> None:
    alice, bob, card = await setup(api)
    await update(api, alice.token, id=card["id"], expectedVersion=card["version"], status="DOING")
    stale = await update(
        api, bob.token, id=card["id"], expectedVersion=card["version"], description="x"
    )
    assert stale["__typename"] == "VersionConflict"
    assert stale["changedFields"] == ["status"]


async def test_update_records_event_with_old_and_new_values(api: Api) -> None:
    alice, bob, card = await setup(api)
    result = await update(
        api,
        bob.token,
        id=card["id"],
        expectedVersion=card["version"],
        title="Final",
        assigneeId=bob.id,
    )
    assert result["__typename"] == "CardPayload"
    assert result["card"]["assignee"] == {"id": bob.id}
    data = await api.ok(
        """query($id: ID!) { cardHistory(cardId: $id) { nodes { seq type version actor { id }
             changes { field oldValue newValue } } } }""",
        {"id": card["id"]},
        alice.token,
    )
    history = data["cardHistory"]["nodes"]
    assert [e["type"] for e in history] == ["card.created", "card.updated"]
    updated = history[1]
    assert updated["actor"] == {"id": bob.id}
    assert updated["version"] == result["card"]["version"]
    assert sorted(updated["changes"], key=lambda c: c["field"]) == [
        {"field": "assignee", "oldValue": None, "newValue": bob.id},
        {"field": "title", "oldValue": "Draft", "newValue": "Final"},
    ]


async def test_unassign_with_explicit_null(api: Api) -> None:
    alice, bob, card = await setup(api)
    assigned = await update(
        api, alice.token, id=card["id"], expectedVersion=card["version"], assigneeId=bob.id
    )
    cleared = await update(
        api,
        alice.token,
        id=card["id"],
        expectedVersion=assigned["card"]["version"],
        assigneeId=None,
    )
    assert cleared["__typename"] == "CardPayload"
    assert cleared["card"]["assignee"] is None


async def test_garbage_version_is_validation_error_and_no_fields_is_validation_error(
    api: Api,
) -> None:
    alice, _, card = await setup(api)
    garbage = await update(
        api, alice.token, id=card["id"], expectedVersion="not-a-version", title="x"
    )
    assert garbage["__typename"] == "ValidationError"
    assert garbage["field"] == "expectedVersion"
    nothing = await update(api, alice.token, id=card["id"], expectedVersion=card["version"])
    assert nothing["__typename"] == "ValidationError"
    unknown = await update(
        api, alice.token, id=card["id"], expectedVersion=unknown_version(card["version"]), title="x"
    )
    assert unknown["__typename"] == "VersionConflict"
    data = await api.ok(
        "query($id: ID!) { card(id: $id) { title version } }", {"id": card["id"]}, alice.token
    )
    assert data["card"] == {"title": "Draft", "version": card["version"]}
