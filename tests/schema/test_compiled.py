"""The compiled read path answers exactly what the general path answers, byte for byte.

Two apps share one database: one with the compiled path off (the general path, Strawberry
resolving every field), one with it on and the response cache off. For generated data and
generated documents, each caller (owner, viewer, outsider, anonymous) sends the same
request to both; the compiled app answers the second time from its plan. Status, content
type and body must be equal (for errors from several failing root fields, whose order is
a matter of timing on the general path too: both must be errors), and whenever the general path answered without errors, the
compiled path must have answered it itself (not fallen back). On PostgreSQL, a document
whose root fields the single statement reads (workspace, board, card) must moreover have
been answered from one statement (schema/compiled/single.py), not from one per field.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from graphql import FieldNode, OperationDefinitionNode, parse
from hypothesis import HealthCheck, Phase, given, note, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from auth.tokens import issue_access_token
from tests.api import Api, empty_tables, running_app, settings_for
from tests.schema.worlds import documents, store, worlds


@dataclass
class Pair:
    url: str
    general: Api
    compiled: Api


@pytest.fixture
async def pair(database_url: str, tmp_path: Path) -> AsyncIterator[Pair]:
    await empty_tables(database_url)
    general = settings_for(database_url, tmp_path / "general", compiled_reads=False)
    compiled = settings_for(database_url, tmp_path / "compiled", response_cache=False)
    async with running_app(general) as a, running_app(compiled) as b:
        yield Pair(database_url, a, b)


def root_names(query: str) -> list[str]:
    operation = parse(query).definitions[0]
    assert isinstance(operation, OperationDefinitionNode)
    return [s.name.value for s in operation.selection_set.selections if isinstance(s, FieldNode)]


def roots(query: str) -> int:
    return len(root_names(query))


def answered() -> float:
    value = REGISTRY.get_sample_value("concord_compiled_reads_total", {"outcome": "answered"})
    return value or 0.0


def single_statements() -> float:
    value = REGISTRY.get_sample_value(
        "concord_compiled_single_statement_total", {"outcome": "single"}
    )
    return value or 0.0


# Root fields the single statement reads (schema/compiled/single.py ROOTS).
SINGLE_ROOTS = {"workspace", "board", "card"}


async def send(api: Api, body: dict[str, object], token: str | None) -> httpx.Response:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    return await api.client.post("/graphql", json=body, headers=headers)


@given(data=st.data())
@settings(
    max_examples=40,
    deadline=None,
    # Shrinking a failure re-runs hundreds of requests; the report already names the query.
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
async def test_compiled_reads_answer_like_the_general_path(pair: Pair, data: st.DataObject) -> None:
    world = data.draw(worlds())
    await store(pair.url, world)
    tokens = pair.general.app.state.services.tokens
    callers = [*(issue_access_token(tokens, user) for user in world.users), None]
    for _ in range(3):
        query, variables = data.draw(documents(world))
        body = {"query": query, "variables": variables}
        token = data.draw(st.sampled_from(callers))
        note(f"caller {callers.index(token)}: {query} {variables}")
        expected = await send(pair.general, body, token)
        await send(pair.compiled, body, token)  # the general path accepts it first
        before, before_single = answered(), single_statements()
        actual = await send(pair.compiled, body, token)
        assert actual.status_code == expected.status_code
        assert actual.headers["content-type"] == expected.headers["content-type"]
        if "errors" in expected.json() and roots(query) > 1:
            # Root fields run concurrently; when several fail, which error graphql-core
            # reports first depends on timing, between two general-path runs as well.
            # The compiled path answers no request with errors (it leaves them all to the
            # general path), so the answer must still be an error.
            assert "errors" in actual.json(), query
        else:
            assert actual.content == expected.content, query
        # A plan covers the whole document; an explicit null for @skip/@include is an
        # error the general path only meets where it reaches that field, so the compiled
        # path leaves such requests to it.
        planned = None not in variables.values()
        if planned and expected.status_code == 200 and "errors" not in expected.json():
            assert answered() == before + 1, f"the compiled path did not answer: {query}"
            if pair.url.startswith("postgresql") and set(root_names(query)) <= SINGLE_ROOTS:
                assert single_statements() == before_single + 1, f"not one statement: {query}"


# One user as a member, an assignee and an author, each time with other fields; the same
# page of cards under two paths with other fields; cursors on one path only.
OVERLAPPING = """query($id: ID!) { workspace(id: $id) {
  members { role user { email } }
  boards(first: 5) { nodes { id
    cards(first: 5) { nodes { title assignee { displayName }
      comments(first: 2) { edges { cursor node { body author { id email displayName } } } } } }
    again: cards(first: 5) { pageInfo { endCursor } nodes { position dueDate board { name } } }
  } } } }"""


async def test_rows_read_on_several_paths_with_other_fields(pair: Pair) -> None:
    owner = await pair.general.register()
    workspace = await pair.general.workspace(owner)
    for b in range(2):
        board = await pair.general.board(owner, workspace["id"], f"board {b}")
        for c in range(3):
            card = await pair.general.card(owner, board["id"], f"card {c}", assigneeId=owner.id)
            await pair.general.ok(
                "mutation($i: AddCommentInput!) { addComment(input: $i) { __typename } }",
                {"i": {"cardId": card["id"], "body": f"comment on {c}"}},
                owner.token,
            )
    body = {"query": OVERLAPPING, "variables": {"id": workspace["id"]}}
    expected = await send(pair.general, body, owner.token)
    assert "errors" not in expected.json()
    await send(pair.compiled, body, owner.token)
    before, before_single = answered(), single_statements()
    actual = await send(pair.compiled, body, owner.token)
    assert actual.content == expected.content
    assert answered() == before + 1
    if pair.url.startswith("postgresql"):
        assert single_statements() == before_single + 1
