"""Reads batch: a nested query's statement count does not grow with rows, on either path.

The general path batches through DataLoaders; the compiled path (schema/compiled) through
one statement per planned field. Both are held to the same bound.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import event

from tests.api import Api, Person, empty_tables, running_app, settings_for

NESTED = """query($id: ID!) { workspace(id: $id) {
  name members { role user { displayName } }
  boards(first: 10) { nodes { name
    cards(first: 10) { nodes { title assignee { email }
      comments(first: 10) { nodes { body author { displayName } } } } } } } } }"""


async def populate(
    api: Api, owner: Person, helper: Person, boards: int, cards: int, comments: int
) -> str:
    ws = await api.workspace(owner)
    await api.add_member(owner, ws["id"], helper, "EDITOR")
    for b in range(boards):
        board = await api.board(owner, ws["id"], f"board {b}")
        for c in range(cards):
            card = await api.card(
                owner, board["id"], f"card {c}", assigneeId=helper.id if c % 2 else owner.id
            )
            for n in range(comments):
                author = helper if n % 2 else owner
                await api.ok(
                    "mutation($i: AddCommentInput!) { addComment(input: $i) { __typename } }",
                    {"i": {"cardId": card["id"], "body": f"comment {n}"}},
                    author.token,
                )
    return str(ws["id"])


async def count_statements(
    api: Api, person: Person, workspace_id: str, query: str = NESTED
) -> tuple[int, dict[str, Any]]:
    engine = api.app.state.services.db.read_engine.sync_engine
    statements: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        # SQLite's explicit BEGIN is transaction control, not a query.
        if not statement.startswith("BEGIN"):
            statements.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        data = await api.ok(query, {"id": workspace_id}, person.token)
    finally:
        event.remove(engine, "before_cursor_execute", record)
    return len(statements), data


def compiled_answers() -> float:
    value = REGISTRY.get_sample_value("concord_compiled_reads_total", {"outcome": "answered"})
    return value or 0.0


@pytest.mark.parametrize("compiled", [False, True], ids=["general", "compiled"])
async def test_nested_query_statement_count_does_not_grow_with_rows(
    database_url: str, tmp_path: Path, compiled: bool
) -> None:
    await empty_tables(database_url)
    settings = settings_for(database_url, tmp_path, compiled_reads=compiled, response_cache=False)
    async with running_app(settings) as api:
        owner = await api.register("owner")
        helper = await api.register("helper")
        small = await populate(api, owner, helper, boards=1, cards=2, comments=1)
        large = await populate(api, owner, helper, boards=4, cards=5, comments=3)
        if compiled:
            # The compiled path takes a document over once the general path has accepted it.
            await api.ok(NESTED, {"id": small}, owner.token)

        answered = compiled_answers()
        small_count, small_data = await count_statements(api, owner, small)
        large_count, large_data = await count_statements(api, owner, large)
        assert compiled_answers() - answered == (2 if compiled else 0)

    boards = large_data["workspace"]["boards"]["nodes"]
    assert len(boards) == 4
    assert all(len(b["cards"]["nodes"]) == 5 for b in boards)
    assert all(len(c["comments"]["nodes"]) == 3 for b in boards for c in b["cards"]["nodes"])
    assert {c["assignee"]["email"] for b in boards for c in b["cards"]["nodes"]} == {
        owner.email,
        helper.email,
    }
    assert len(small_data["workspace"]["boards"]["nodes"]) == 1
    # role, workspace, members, boards, cards, comments, users (assignees + authors + members)
    assert small_count == large_count
    assert large_count <= 9


MID = """query($id: ID!) { board(id: $id) { id name
  cards(first: 50) { nodes { id title status position assignee { id displayName } } } } }"""


async def test_postgresql_answers_nested_and_mid_reads_with_one_statement(
    database_url: str, tmp_path: Path
) -> None:
    """On PostgreSQL the compiled path reads the whole tree, membership check included,
    with one statement; switched off, it reads one statement per planned field."""
    if not database_url.startswith("postgresql"):
        pytest.skip("one statement per read is PostgreSQL's")
    await empty_tables(database_url)
    counts: dict[bool, tuple[int, int]] = {}
    for single in (True, False):
        settings = settings_for(
            database_url,
            tmp_path / str(single),
            response_cache=False,
            compiled_single_statement=single,
        )
        async with running_app(settings) as api:
            owner = await api.register(f"owner{single}")
            helper = await api.register(f"helper{single}")
            ws = await populate(api, owner, helper, boards=2, cards=3, comments=2)
            boards = await api.ok(
                "query($id: ID!) { workspace(id: $id) { boards(first: 1) { nodes { id } } } }",
                {"id": ws},
                owner.token,
            )
            board = boards["workspace"]["boards"]["nodes"][0]["id"]
            await api.ok(NESTED, {"id": ws}, owner.token)  # the general path accepts them
            await api.ok(MID, {"id": board}, owner.token)
            answered = compiled_answers()
            nested, nested_data = await count_statements(api, owner, ws)
            mid, mid_data = await count_statements(api, owner, board, MID)
            assert compiled_answers() - answered == 2
            counts[single] = (nested, mid)
            assert len(nested_data["workspace"]["boards"]["nodes"]) == 2
            assert len(mid_data["board"]["cards"]["nodes"]) == 3
            # A caller without a role reads nothing, in one statement too.
            outsider = await api.register(f"outsider{single}")
            assert await api.ok(MID, {"id": board}, outsider.token) == {"board": None}
    assert counts[True] == (1, 1)
    assert counts[False][0] > 1
    assert counts[False][1] > 1


async def test_a_failing_field_does_not_cancel_siblings_waiting_for_the_same_row(api: Api) -> None:
    """graphql-core cancels the siblings of a failing field; a loader future they share
    with another field must survive that (it used to escape as CancelledError)."""
    owner = await api.register()
    ws = await api.workspace(owner)
    board = await api.board(owner, ws["id"])
    card = await api.card(owner, board["id"])
    query = """query($id: ID!) {
      a: card(id: $id) { board { id } comments(first: 0) { nodes { id } } }
      b: card(id: $id) { board { id } } }"""
    for _ in range(3):
        payload = await api(query, {"id": card["id"]}, owner.token)
        assert payload["data"] == {"a": None, "b": {"board": {"id": board["id"]}}}
        assert [e["extensions"]["code"] for e in payload["errors"]] == ["VALIDATION_FAILED"]
