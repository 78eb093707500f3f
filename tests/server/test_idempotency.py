"""Idempotency-Key: a retried mutation answers its first result instead of applying twice.

On SQLite and PostgreSQL (the `api` fixture), through the whole app: the compiled read path
and the response cache are on (the defaults), so a keyed mutation that took either would
show here as a second card.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text, update

from models.database import make_engine
from models.tables import IdempotencyKey
from server.idempotency import request_hash
from tests.api import Api, Person, running_app, settings_for
from tests.live import live_server, socket
from tests.services import free_port

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


def _stored_row(user_id: str, key: str, digest: str, *, answered: bool) -> Any:
    """The INSERT of a key's row as another request would have made it."""
    from models.idempotency import claim_stmt

    stmt = claim_stmt(uuid.uuid4(), uuid.UUID(user_id), key, digest, datetime.now(UTC), 3600)
    if answered:
        stmt = stmt.values(
            status_code=200,
            response_body=THEIRS,
            response_headers={"content-type": "application/json"},
        )
    return stmt


THEIRS = '{"data":{"createCard":{"__typename":"CardPayload","card":null}}}'


async def test_a_request_blocked_by_an_uncommitted_claim_replays_the_winner_not_a_500(
    api: Api, database_url: str
) -> None:
    """The loser of the race on the unique index: it waited on the winner's row lock, hit
    the unique violation, rolled back its own card, and answers the winner's result."""
    if not database_url.startswith("postgresql"):
        pytest.skip("PostgreSQL: a second transaction waits on the first one's row lock")
    alice, workspace, board = await board_of(api)
    variables = {"i": {"boardId": board["id"], "title": "Loser"}}
    digest = request_hash(CREATE, variables, None)
    engine = make_engine(database_url, pool=False)
    try:
        async with engine.connect() as held:
            transaction = await held.begin()
            await held.execute(_stored_row(alice.id, "held", digest, answered=True))
            request = asyncio.create_task(post(api.client, CREATE, variables, alice, "held"))
            waiting = text(
                "SELECT COUNT(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND datname = current_database()"
            )
            async with engine.connect() as watch, asyncio.timeout(30):
                while not (await watch.execute(waiting)).scalar():
                    assert not request.done(), request.result().text
                    await asyncio.sleep(0.05)
            await transaction.commit()
        response = await request
    finally:
        await engine.dispose()
    assert response.status_code == 200
    assert response.text == THEIRS
    assert response.headers[REPLAYED] == "true"
    assert await cards(api, alice, board["id"]) == []
    assert await card_events(api, alice, workspace["id"]) == []


async def test_a_retry_waits_for_the_answer_of_the_request_holding_the_key(
    api: Api, database_url: str
) -> None:
    alice, _, board = await board_of(api)
    variables = {"i": {"boardId": board["id"], "title": "Pending"}}
    digest = request_hash(CREATE, variables, None)
    engine = make_engine(database_url, pool=False)
    try:
        async with engine.begin() as conn:
            await conn.execute(_stored_row(alice.id, "pending", digest, answered=False))
        request = asyncio.create_task(post(api.client, CREATE, variables, alice, "pending"))
        await asyncio.sleep(0.3)
        async with engine.begin() as conn:
            await conn.execute(
                update(IdempotencyKey).values(
                    status_code=200,
                    response_body=THEIRS,
                    response_headers={"content-type": "application/json"},
                )
            )
        response = await request
    finally:
        await engine.dispose()
    assert response.status_code == 200
    assert response.text == THEIRS
    assert await cards(api, alice, board["id"]) == []


async def test_a_key_whose_answer_never_comes_is_a_409_in_progress(
    api: Api, database_url: str, tmp_path: Path
) -> None:
    settings = settings_for(database_url, tmp_path, request_timeout_seconds=1)
    async with running_app(settings) as short:
        alice, _, board = await board_of(short)
        variables = {"i": {"boardId": board["id"], "title": "Never"}}
        engine = make_engine(database_url, pool=False)
        try:
            async with engine.begin() as conn:
                digest = request_hash(CREATE, variables, None)
                await conn.execute(_stored_row(alice.id, "stuck", digest, answered=False))
        finally:
            await engine.dispose()
        response = await post(short.client, CREATE, variables, alice, "stuck")
        assert response.status_code == 409
        assert response.headers["retry-after"] == "1"
        error = response.json()["errors"][0]
        assert error["extensions"]["code"] == "IDEMPOTENCY_KEY_IN_PROGRESS"
        assert await cards(short, alice, board["id"]) == []


CONCORD = Path(sys.executable).with_name("concord")


@asynccontextmanager
async def served(env: dict[str, str]) -> AsyncIterator[httpx.AsyncClient]:
    """`concord serve` on a free port (stopped by its process id), and a client on it."""
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        str(CONCORD), "serve", "--port", str(port), env=env
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as http:
            async with asyncio.timeout(60):
                while True:
                    assert process.returncode is None, "concord serve exited"
                    with contextlib.suppress(httpx.HTTPError):
                        if (await http.get("/readyz")).status_code == 200:
                            break
                    await asyncio.sleep(0.1)
            yield http
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(process.wait(), 20)
            except TimeoutError:
                process.kill()
                await process.wait()


async def test_concurrent_retries_through_two_server_processes_apply_once(
    api: Api, database_url: str, tmp_path: Path
) -> None:
    """Two `concord serve` processes on one database, the same key sent to both at once."""
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env.update(
        CONCORD_DATA_DIR=str(tmp_path),
        DATABASE_URL=database_url,
        JWT_SECRET=str(api.app.state.settings.jwt_secret),
        GC_FREEZE="false",
    )
    async with served(env) as one, served(env) as two:
        first = Api(one, None)
        alice, workspace, board = await board_of(first)
        variables = {"i": {"boardId": board["id"], "title": "Across processes"}}
        for round_ in range(3):
            key = f"processes-{round_}"
            answers = await asyncio.gather(
                *(post(c, CREATE, variables, alice, key) for c in [one, two, one, two])
            )
            assert {a.status_code for a in answers} == {200}, [a.text for a in answers]
            assert len({a.content for a in answers}) == 1, [a.text for a in answers]
            assert answers[0].json()["data"]["createCard"]["__typename"] == "CardPayload"
        assert len(await cards(first, alice, board["id"])) == 3
        assert len(await card_events(first, alice, workspace["id"])) == 3


async def test_the_prune_command_deletes_expired_keys_only(api: Api, database_url: str) -> None:
    alice, _, board = await board_of(api)
    for key in ("a", "b", "c"):
        variables = {"i": {"boardId": board["id"], "title": key}}
        await post(api.client, CREATE, variables, alice, key)
    engine = make_engine(database_url, pool=False)
    try:
        async with engine.begin() as conn:
            past = datetime.now(UTC) - timedelta(seconds=1)
            expire = update(IdempotencyKey).where(IdempotencyKey.idempotency_key != "c")
            await conn.execute(expire.values(expires_at=past))
        concord = Path(sys.executable).with_name("concord")
        env = {**os.environ, "DATABASE_URL": database_url, "JWT_SECRET": "unused-here"}
        result = await asyncio.create_subprocess_exec(
            str(concord), "prune-idempotency-keys", env=env, stdout=asyncio.subprocess.PIPE
        )
        out, _ = await asyncio.wait_for(result.communicate(), 60)
        assert result.returncode == 0
        assert out.decode().strip() == "deleted 2 expired idempotency keys"
        async with engine.connect() as conn:
            keys = (await conn.execute(text("SELECT idempotency_key FROM idempotency_keys"))).all()
        assert [k[0] for k in keys] == ["c"]
    finally:
        await engine.dispose()
    # The key kept still answers its retry.
    again = await post(
        api.client, CREATE, {"i": {"boardId": board["id"], "title": "c"}}, alice, "c"
    )
    assert again.headers[REPLAYED] == "true"


async def test_a_page_on_an_allowed_origin_may_send_a_key_and_see_the_replay(
    api: Api, database_url: str, tmp_path: Path
) -> None:
    origin = "https://app.example.com"
    settings = settings_for(database_url, tmp_path, cors_origins=origin)
    async with running_app(settings) as browser:
        preflight = await browser.client.options(
            "/graphql",
            headers={
                "origin": origin,
                "access-control-request-method": "POST",
                "access-control-request-headers": "authorization, content-type, idempotency-key",
            },
        )
        assert preflight.status_code == 200
        assert "idempotency-key" in preflight.headers["access-control-allow-headers"].lower()
        alice, _, board = await board_of(browser)
        variables = {"i": {"boardId": board["id"], "title": "From the page"}}
        await post(browser.client, CREATE, variables, alice, "page", origin=origin)
        again = await post(browser.client, CREATE, variables, alice, "page", origin=origin)
        assert again.headers[REPLAYED] == "true"
        exposed = again.headers["access-control-expose-headers"].lower()
        assert REPLAYED in exposed


def test_the_compiled_read_path_never_plans_a_mutation() -> None:
    """It answers a known document before the view runs: a mutation there would bypass the
    key. Keyed requests are also handled before it (server/graphql_app.py)."""
    from schema import build_schema
    from schema.compiled import CompiledReads

    compiled = CompiledReads(build_schema()._schema)
    compiled.learn(CREATE, None, answered_with_data=True)
    assert not compiled.knows(CREATE, None)
    assert compiled.prepare(CREATE, None, {"i": {"boardId": "b", "title": "t"}}) is None
