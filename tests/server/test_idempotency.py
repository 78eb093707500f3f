"""Idempotency-Key: a retried mutation answers its first result instead of applying twice.

On SQLite and PostgreSQL (the `api` fixture), through the whole app: the compiled read path
and the response cache are on (the defaults), so a keyed mutation that took either would
show here as a second card.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text, update

from models.database import make_engine
from models.tables import IdempotencyKey
from tests.api import Api, Person, running_app, settings_for
from tests.live import live_server, socket

CREATE = """mutation($i: CreateCardInput!) { createCard(input: $i) {
  __typename ... on CardPayload { card { id version title } }
  ... on ValidationError { field message } } }"""
UPDATE = """mutation($i: UpdateCardInput!) { updateCard(input: $i) {
  __typename ... on CardPayload { card { id version title } }
  ... on VersionConflict { currentVersion changedFields } } }"""
CARDS = """query($b: ID!) { board(id: $b) { cards(first: 100) { nodes { id title } } } }"""
TWO = """mutation($a: CreateCardInput!, $b: CreateCardInput!) {
  a: createCard(input: $a) { __typename ... on CardPayload { card { id } } }
  b: createCard(input: $b) { __typename ... on CardPayload { card { id } } } }"""
REPLAYED = "idempotent-replayed"


async def post(
    client: httpx.AsyncClient,
    query: str,
    variables: dict[str, Any],
    person: Person | None,
    key: str | None,
    **headers: str,
) -> httpx.Response:
    sent = dict(headers)
    if person is not None:
        sent["authorization"] = f"Bearer {person.token}"
    if key is not None:
        sent["idempotency-key"] = key
    body = {"query": query, "variables": variables}
    return await client.post("/graphql", json=body, headers=sent)


async def board_of(api: Api) -> tuple[Person, dict[str, Any], dict[str, Any]]:
    alice = await api.register()
    workspace = await api.workspace(alice)
    board = await api.board(alice, workspace["id"])
    return alice, workspace, board


async def cards(api: Api, person: Person, board_id: str) -> list[dict[str, Any]]:
    data = await api.ok(CARDS, {"b": board_id}, person.token)
    nodes: list[dict[str, Any]] = data["board"]["cards"]["nodes"]
    return nodes


async def card_events(api: Api, person: Person, workspace_id: str) -> list[dict[str, Any]]:
    return [e for e in await api.events(person, workspace_id) if e["entityType"] == "Card"]


async def test_a_sequential_retry_answers_the_first_result_and_applies_once(api: Api) -> None:
    alice, workspace, board = await board_of(api)
    variables = {"i": {"boardId": board["id"], "title": "Once"}}
    first = await post(api.client, CREATE, variables, alice, "retry-1")
    assert first.status_code == 200
    assert first.json()["data"]["createCard"]["__typename"] == "CardPayload"
    assert REPLAYED not in first.headers
    for _ in range(2):
        again = await post(api.client, CREATE, variables, alice, "retry-1")
        assert again.status_code == 200
        assert again.content == first.content
        assert again.headers[REPLAYED] == "true"
        assert again.headers["content-type"] == first.headers["content-type"]
        assert again.headers.get("x-concord-seen") == first.headers.get("x-concord-seen")
    assert [c["title"] for c in await cards(api, alice, board["id"])] == ["Once"]
    assert len(await card_events(api, alice, workspace["id"])) == 1


async def test_without_a_key_or_with_another_key_the_mutation_applies_again(api: Api) -> None:
    alice, _, board = await board_of(api)
    variables = {"i": {"boardId": board["id"], "title": "Twice"}}
    await post(api.client, CREATE, variables, alice, "k-1")
    other = await post(api.client, CREATE, variables, alice, "k-2")
    await post(api.client, CREATE, variables, alice, None)
    assert REPLAYED not in other.headers
    assert len(await cards(api, alice, board["id"])) == 3


async def test_keys_are_per_user(api: Api) -> None:
    alice, workspace, board = await board_of(api)
    bob = await api.register()
    await api.add_member(alice, workspace["id"], bob, "EDITOR")
    variables = {"i": {"boardId": board["id"], "title": "Shared key"}}
    a = await post(api.client, CREATE, variables, alice, "same-key")
    b = await post(api.client, CREATE, variables, bob, "same-key")
    assert REPLAYED not in b.headers
    assert a.json() != b.json()
    assert len(await cards(api, alice, board["id"])) == 2


async def test_a_key_covers_every_mutation_of_the_request(api: Api) -> None:
    alice, workspace, board = await board_of(api)
    variables = {
        "a": {"boardId": board["id"], "title": "A"},
        "b": {"boardId": board["id"], "title": "B"},
    }
    first = await post(api.client, TWO, variables, alice, "both")
    again = await post(api.client, TWO, variables, alice, "both")
    assert again.content == first.content
    assert sorted(c["title"] for c in await cards(api, alice, board["id"])) == ["A", "B"]
    assert len(await card_events(api, alice, workspace["id"])) == 2


async def test_the_same_key_on_a_different_request_is_refused_and_applies_nothing(
    api: Api,
) -> None:
    alice, _, board = await board_of(api)
    await post(api.client, CREATE, {"i": {"boardId": board["id"], "title": "A"}}, alice, "k")
    for variables, operation in (
        ({"i": {"boardId": board["id"], "title": "B"}}, None),  # other variables
        ({"i": {"boardId": board["id"], "title": "A"}}, "Named"),  # other operation name
    ):
        query = CREATE if operation is None else CREATE.replace("mutation(", "mutation Named(")
        body: dict[str, Any] = {"query": query, "variables": variables}
        if operation is not None:
            body["operationName"] = operation
        response = await api.client.post(
            "/graphql",
            json=body,
            headers={"authorization": f"Bearer {alice.token}", "idempotency-key": "k"},
        )
        assert response.status_code == 422
        error = response.json()["errors"][0]
        assert error["extensions"]["code"] == "IDEMPOTENCY_KEY_REUSED"
        assert "different request" in error["message"]
    assert [c["title"] for c in await cards(api, alice, board["id"])] == ["A"]


@pytest.mark.parametrize(
    ("key", "problem"),
    [
        ("", "empty"),
        ("k" * 256, "longer than 255"),
        ("has space", "visible ASCII"),
        ("tab\there", "visible ASCII"),
        ("caf\u00e9", "visible ASCII"),
    ],
)
async def test_a_malformed_key_is_a_400_and_applies_nothing(
    api: Api, key: str, problem: str
) -> None:
    alice, _, board = await board_of(api)
    headers = {"authorization": f"Bearer {alice.token}", "content-type": "application/json"}
    body = json.dumps({"query": CREATE, "variables": {"i": {"boardId": board["id"], "title": "X"}}})
    raw = [(k.encode(), v.encode()) for k, v in headers.items()]
    raw.append((b"idempotency-key", key.encode("utf-8")))
    response = await api.client.post("/graphql", content=body, headers=raw)
    assert response.status_code == 400
    error = response.json()["errors"][0]
    assert error["extensions"]["code"] == "BAD_REQUEST"
    assert "Idempotency-Key" in error["message"]
    assert problem in error["message"]
    assert await cards(api, alice, board["id"]) == []


async def test_two_keys_on_one_request_are_a_400(api: Api) -> None:
    alice, _, board = await board_of(api)
    body = json.dumps({"query": CREATE, "variables": {"i": {"boardId": board["id"], "title": "X"}}})
    headers = [
        (b"authorization", f"Bearer {alice.token}".encode()),
        (b"content-type", b"application/json"),
        (b"idempotency-key", b"one"),
        (b"idempotency-key", b"two"),
    ]
    response = await api.client.post("/graphql", content=body, headers=headers)
    assert response.status_code == 400
    assert await cards(api, alice, board["id"]) == []


async def test_a_validation_failure_is_stored_and_replayed(api: Api) -> None:
    alice, _, board = await board_of(api)
    variables = {"i": {"boardId": board["id"], "title": ""}}
    first = await post(api.client, CREATE, variables, alice, "invalid")
    assert first.json()["data"]["createCard"]["__typename"] == "ValidationError"
    again = await post(api.client, CREATE, variables, alice, "invalid")
    assert again.content == first.content
    assert again.headers[REPLAYED] == "true"
    assert await cards(api, alice, board["id"]) == []


async def test_a_version_conflict_is_stored_so_the_retry_sees_the_same_answer(api: Api) -> None:
    alice, _, board = await board_of(api)
    card = await api.card(alice, board["id"], "Start")
    stale = card["version"]
    changed = await api.ok(
        UPDATE, {"i": {"id": card["id"], "expectedVersion": stale, "title": "B"}}, alice.token
    )
    variables = {"i": {"id": card["id"], "expectedVersion": stale, "description": "mine"}}
    variables["i"]["title"] = "C"
    conflict = await post(api.client, UPDATE, variables, alice, "conflict")
    assert conflict.json()["data"]["updateCard"]["__typename"] == "VersionConflict"
    # The card changes again: run anew, the conflict would name another current version.
    now = changed["updateCard"]["card"]["version"]
    await api.ok(
        UPDATE, {"i": {"id": card["id"], "expectedVersion": now, "title": "D"}}, alice.token
    )
    again = await post(api.client, UPDATE, variables, alice, "conflict")
    assert again.content == conflict.content
    assert again.headers[REPLAYED] == "true"
    assert [c["title"] for c in await cards(api, alice, board["id"])] == ["D"]


async def test_a_key_on_a_query_is_ignored_and_not_used_up(api: Api) -> None:
    alice, _, board = await board_of(api)
    for _ in range(2):
        read = await post(api.client, CARDS, {"b": board["id"]}, alice, "q-key")
        assert read.status_code == 200
        assert REPLAYED not in read.headers
    variables = {"i": {"boardId": board["id"], "title": "After the query"}}
    created = await post(api.client, CREATE, variables, alice, "q-key")
    assert created.json()["data"]["createCard"]["__typename"] == "CardPayload"
    # The query with the key still reads current data: the card it did not see before.
    read = await post(api.client, CARDS, {"b": board["id"]}, alice, "q-key")
    assert [c["title"] for c in read.json()["data"]["board"]["cards"]["nodes"]] == [
        "After the query"
    ]


async def test_an_anonymous_mutation_ignores_the_key(api: Api) -> None:
    register = """mutation($i: RegisterInput!) { register(input: $i) { __typename } }"""
    variables = {
        "i": {
            "email": "anon@example.com",
            "password": "correct horse battery",
            "displayName": "Anon",
        }
    }
    first = await post(api.client, register, variables, None, "anon-key")
    again = await post(api.client, register, variables, None, "anon-key")
    assert first.json()["data"]["register"]["__typename"] == "AuthPayload"
    # Run again (the email is taken now), never a replay of someone's tokens.
    assert again.json()["data"]["register"]["__typename"] == "ValidationError"
    assert REPLAYED not in again.headers


async def test_an_expired_key_is_forgotten_and_the_mutation_applies_again(
    api: Api, database_url: str
) -> None:
    alice, _, board = await board_of(api)
    variables = {"i": {"boardId": board["id"], "title": "Old"}}
    await post(api.client, CREATE, variables, alice, "old-key")
    engine = make_engine(database_url, pool=False)
    try:
        async with engine.begin() as conn:
            past = datetime.now(UTC) - timedelta(seconds=1)
            await conn.execute(update(IdempotencyKey).values(expires_at=past))
        again = await post(api.client, CREATE, variables, alice, "old-key")
        assert REPLAYED not in again.headers
        assert len(await cards(api, alice, board["id"])) == 2
        # The expired row was replaced by the new one: one row for the key.
        async with engine.connect() as conn:
            count = (await conn.execute(text("SELECT COUNT(*) FROM idempotency_keys"))).scalar()
        assert count == 1
    finally:
        await engine.dispose()


async def test_the_ttl_setting_sets_how_long_a_key_is_kept(
    api: Api, database_url: str, tmp_path: Path
) -> None:
    settings = settings_for(database_url, tmp_path, idempotency_key_ttl_seconds=3600)
    async with running_app(settings) as other:
        alice, _, board = await board_of(other)
        before = datetime.now(UTC)
        await post(
            other.client, CREATE, {"i": {"boardId": board["id"], "title": "T"}}, alice, "ttl"
        )
        engine = make_engine(database_url, pool=False)
        try:
            async with engine.connect() as conn:
                row = (
                    await conn.execute(text("SELECT created_at, expires_at FROM idempotency_keys"))
                ).one()
        finally:
            await engine.dispose()
    created, expires = (v if isinstance(v, datetime) else datetime.fromisoformat(v) for v in row)
    assert (expires - created) == timedelta(seconds=3600)
    assert created.replace(tzinfo=UTC) >= before - timedelta(seconds=5)


async def test_concurrent_retries_through_two_app_instances_apply_once(
    api: Api, database_url: str, tmp_path: Path
) -> None:
    alice, workspace, board = await board_of(api)
    variables = {"i": {"boardId": board["id"], "title": "Raced"}}
    async with running_app(settings_for(database_url, tmp_path / "second")) as second:
        for round_ in range(3):
            key = f"race-{round_}"
            answers = await asyncio.gather(
                *(
                    post(client, CREATE, variables, alice, key)
                    for client in [api.client, second.client] * 3
                )
            )
            assert {a.status_code for a in answers} == {200}
            assert len({a.content for a in answers}) == 1, [a.text for a in answers]
            assert sum(REPLAYED not in a.headers for a in answers) == 1
    assert len(await cards(api, alice, board["id"])) == 3
    assert len(await card_events(api, alice, workspace["id"])) == 3


async def test_a_mutation_over_a_websocket_ignores_the_key(
    database_url: str, tmp_path: Path
) -> None:
    async with live_server(settings_for(database_url, tmp_path)) as server:
        api = server.api
        alice, _, board = await board_of(api)
        variables = {"i": {"boardId": board["id"], "title": "Socket"}}
        async with socket(server.ws_url, {"idempotency-key": "ws-key"}) as ws:
            assert (await ws.init(alice.token))["type"] == "connection_ack"
            for op_id in ("1", "2"):
                await ws.subscribe(op_id, CREATE, variables)
                data = await ws.next_data(op_id)
                assert data["createCard"]["__typename"] == "CardPayload"
                assert await ws.receive() == {"id": op_id, "type": "complete"}
        assert len(await cards(api, alice, board["id"])) == 2
