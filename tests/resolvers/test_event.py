"""The event log: gapless per-workspace sequence numbers, paging, what each change records."""

from __future__ import annotations

import asyncio

from models.event import prune
from models.transaction import run_in_transaction
from tests.api import Api

CREATE_CARD = """mutation($i: CreateCardInput!) { createCard(input: $i) { __typename } }"""


async def test_concurrent_creates_get_seq_exactly_one_to_n(api: Api) -> None:
    alice = await api.register("alice")
    ws = await api.workspace(alice)
    board = await api.board(alice, ws["id"])
    before = len(await api.events(alice, ws["id"]))

    results = await asyncio.gather(
        *(
            api.ok(CREATE_CARD, {"i": {"boardId": board["id"], "title": f"card {n}"}}, alice.token)
            for n in range(20)
        )
    )
    assert all(r["createCard"]["__typename"] == "CardPayload" for r in results)

    events = await api.events(alice, ws["id"])
    assert [e["seq"] for e in events] == list(range(1, before + 21))
    created = [e for e in events if e["type"] == "card.created"]
    assert len(created) == 20
    assert len({e["entityId"] for e in created}) == 20


async def test_every_change_is_recorded_with_actor_and_fields(api: Api) -> None:
    alice = await api.register("alice")
    bob = await api.register("bob")
    ws = await api.workspace(alice, "Launch")
    await api.add_member(alice, ws["id"], bob, "EDITOR")
    board = await api.board(bob, ws["id"], "Plan")
    card = await api.card(bob, board["id"], "Write docs")

    events = await api.events(alice, ws["id"])
    assert [(e["seq"], e["type"], e["entityType"]) for e in events] == [
        (1, "workspace.created", "Workspace"),
        (2, "member.added", "Membership"),
        (3, "member.added", "Membership"),
        (4, "board.created", "Board"),
        (5, "card.created", "Card"),
    ]
    assert events[0]["changes"] == [{"field": "name", "oldValue": None, "newValue": "Launch"}]
    assert events[0]["actor"] == {"id": alice.id}
    assert {"field": "role", "oldValue": None, "newValue": "EDITOR"} in events[2]["changes"]
    assert {"field": "user", "oldValue": None, "newValue": bob.id} in events[2]["changes"]
    assert events[3]["actor"] == {"id": bob.id}
    assert events[4]["entityId"] == card["id"]
    assert events[4]["version"] == card["version"]
    fields = {c["field"]: c["newValue"] for c in events[4]["changes"]}
    assert fields["title"] == "Write docs"
    assert fields["board"] == board["id"]
    assert fields["status"] == "TODO"


async def test_events_page_with_cursors(api: Api) -> None:
    alice = await api.register("alice")
    ws = await api.workspace(alice)
    board = await api.board(alice, ws["id"])
    for n in range(5):
        await api.card(alice, board["id"], f"c{n}")
    query = """query($w: ID!, $a: String) { events(workspaceId: $w, first: 3, after: $a) {
        edges { cursor node { seq } } pageInfo { hasNextPage endCursor } } }"""
    seen: list[int] = []
    after = None
    pages = 0
    while True:
        data = await api.ok(query, {"w": ws["id"], "a": after}, alice.token)
        page = data["events"]
        seen += [edge["node"]["seq"] for edge in page["edges"]]
        pages += 1
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
        assert after == page["edges"][-1]["cursor"]
    assert seen == list(range(1, 9))
    assert pages == 3


async def test_deleting_a_board_records_one_event_and_removes_its_cards(api: Api) -> None:
    alice = await api.register("alice")
    ws = await api.workspace(alice)
    board = await api.board(alice, ws["id"])
    card = await api.card(alice, board["id"])
    data = await api.ok(
        """mutation($i: DeleteBoardInput!) { deleteBoard(input: $i) { __typename ... on DeletePayload { id } } }""",
        {"i": {"id": board["id"], "expectedVersion": board["version"]}},
        alice.token,
    )
    assert data["deleteBoard"] == {"__typename": "DeletePayload", "id": board["id"]}
    assert (
        await api.ok("query($id: ID!) { card(id: $id) { id } }", {"id": card["id"]}, alice.token)
    )["card"] is None
    events = await api.events(alice, ws["id"])
    assert events[-1]["type"] == "board.deleted"
    # The card's history outlives the card.
    history = await api.ok(
        "query($id: ID!) { cardHistory(cardId: $id) { nodes { type } } }",
        {"id": card["id"]},
        alice.token,
    )
    assert [e["type"] for e in history["cardHistory"]["nodes"]] == ["card.created"]


EVENTS_AFTER = """query($w: ID!, $a: String) { events(workspaceId: $w, after: $a, first: 100) {
    edges { cursor node { seq } } } }"""
HISTORY_AFTER = """query($c: ID!, $a: String) { cardHistory(cardId: $c, after: $a, first: 100) {
    edges { cursor node { seq type } } } }"""


async def _prune(api: Api, keep: int) -> None:
    # What `concord prune-events --keep N` runs (the command itself: tests/server/test_websocket.py).
    db = api.app.state.services.db
    await run_in_transaction(db.writer, lambda session: prune(session, keep))


async def test_a_pruned_cursor_is_cursor_expired_not_a_silent_gap(api: Api) -> None:
    alice = await api.register("alice")
    ws = await api.workspace(alice)
    board = await api.board(alice, ws["id"])
    card = await api.card(alice, board["id"], "first")
    for n in range(6):
        await api.ok(CREATE_CARD, {"i": {"boardId": board["id"], "title": f"c{n}"}}, alice.token)
    await api.ok(
        """mutation($i: UpdateCardInput!) { updateCard(input: $i) { __typename } }""",
        {"i": {"id": card["id"], "expectedVersion": card["version"], "title": "renamed"}},
        alice.token,
    )
    edges = (await api.ok(EVENTS_AFTER, {"w": ws["id"], "a": None}, alice.token))["events"]["edges"]
    history = (await api.ok(HISTORY_AFTER, {"c": card["id"], "a": None}, alice.token))[
        "cardHistory"
    ]["edges"]
    assert [e["node"]["type"] for e in history] == ["card.created", "card.updated"]
    early, last = edges[0]["cursor"], edges[-1]["cursor"]

    await _prune(api, keep=3)

    for query, variables, field in (
        (EVENTS_AFTER, {"w": ws["id"], "a": early}, "events"),
        (HISTORY_AFTER, {"c": card["id"], "a": early}, "cardHistory"),
        # The card's own cursor: its later events may sit in the pruned stretch of the log.
        (HISTORY_AFTER, {"c": card["id"], "a": history[0]["cursor"]}, "cardHistory"),
    ):
        answer = await api(query, variables, alice.token)
        assert answer["data"] is None, answer
        assert [e["extensions"]["code"] for e in answer["errors"]] == ["CURSOR_EXPIRED"]
        assert answer["errors"][0]["path"] == [field]

    # A cursor inside what is kept still reads on exactly, and so does no cursor at all.
    kept = (await api.ok(EVENTS_AFTER, {"w": ws["id"], "a": None}, alice.token))["events"]
    assert len(kept["edges"]) == 3
    after_first_kept = await api.ok(
        EVENTS_AFTER, {"w": ws["id"], "a": kept["edges"][0]["cursor"]}, alice.token
    )
    assert [e["node"]["seq"] for e in after_first_kept["events"]["edges"]] == [
        e["node"]["seq"] for e in kept["edges"][1:]
    ]
    at_end = await api.ok(EVENTS_AFTER, {"w": ws["id"], "a": last}, alice.token)
    assert at_end["events"]["edges"] == []
    still = await api.ok(HISTORY_AFTER, {"c": card["id"], "a": history[1]["cursor"]}, alice.token)
    assert still["cardHistory"]["edges"] == []


async def test_card_history_after_a_cursor_is_not_readable_by_outsiders(api: Api) -> None:
    alice = await api.register("alice")
    mallory = await api.register("mallory")
    ws = await api.workspace(alice)
    board = await api.board(alice, ws["id"])
    card = await api.card(alice, board["id"])
    history = (await api.ok(HISTORY_AFTER, {"c": card["id"], "a": None}, alice.token))[
        "cardHistory"
    ]["edges"]
    answer = await api(HISTORY_AFTER, {"c": card["id"], "a": history[-1]["cursor"]}, mallory.token)
    assert [e["extensions"]["code"] for e in answer["errors"]] == ["NOT_FOUND"]


async def test_merge_from_a_pruned_version_is_a_conflict_not_an_overwrite(api: Api) -> None:
    alice = await api.register("alice")
    ws = await api.workspace(alice)
    board = await api.board(alice, ws["id"])
    card = await api.card(alice, board["id"], "Draft")
    update = """mutation($i: UpdateCardInput!) { updateCard(input: $i) {
        __typename ... on CardPayload { card { version title } }
        ... on VersionConflict { changedFields } } }"""
    # Someone renames the card: the log records the title change at the next version.
    renamed = await api.ok(
        update,
        {"i": {"id": card["id"], "expectedVersion": card["version"], "title": "Renamed"}},
        alice.token,
    )
    version = renamed["updateCard"]["card"]["version"]
    for n in range(3):
        moved = await api.ok(
            update,
            {"i": {"id": card["id"], "expectedVersion": version, "description": f"d{n}"}},
            alice.token,
        )
        version = moved["updateCard"]["card"]["version"]
    await _prune(api, keep=2)  # the creation and the rename are gone from the log

    # An editor still holding the first version edits the title with MERGE: the rename
    # since then is no longer in the log, so the edit cannot be shown to be disjoint.
    stale = await api.ok(
        update,
        {
            "i": {
                "id": card["id"],
                "expectedVersion": card["version"],
                "title": "Mine",
                "onConflict": "MERGE",
            }
        },
        alice.token,
    )
    assert stale["updateCard"]["__typename"] == "VersionConflict", stale
    current = await api.ok(
        "query($id: ID!) { card(id: $id) { title } }", {"id": card["id"]}, alice.token
    )
    assert current["card"]["title"] == "Renamed"
