"""RATE_LIMIT_OPERATIONS: every GraphQL operation counted per user (per address when
anonymous), on every HTTP path (compiled reads and cached answers included), SSE and both
WebSocket protocols, and shared between processes through Redis."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError
from sqlalchemy import func, select
from websockets.asyncio.client import ClientConnection, connect

from models.database import make_engine
from models.tables import Workspace
from tests.api import Api, Person, empty_tables, running_app, settings_for
from tests.live import live_server
from tests.services import reachable_redis_url

WORKSPACE = """query($id: ID!) { workspace(id: $id) { id name } }"""
CREATE = """mutation($i: CreateWorkspaceInput!) { createWorkspace(input: $i) { __typename } }"""
ME = "{ me { id } }"


def from_address(api: Api, ip: str) -> None:
    """Later calls come from `ip` (the ASGI transport's client address)."""
    transport: Any = api.client._transport
    transport.client = (ip, 1234)


def assert_refused(response: httpx.Response) -> None:
    assert response.status_code == 429, response.text
    assert 1 <= int(response.headers["retry-after"]) <= 60
    (error,) = response.json()["errors"]
    assert error["extensions"]["code"] == "RATE_LIMITED"
    assert error["extensions"]["limit"] == "RATE_LIMIT_OPERATIONS"
    assert "data" not in response.json()


async def workspace_count(database_url: str) -> int:
    engine = make_engine(database_url, pool=False)
    try:
        async with engine.connect() as conn:
            return int((await conn.execute(select(func.count()).select_from(Workspace))).scalar())
    finally:
        await engine.dispose()


def test_a_malformed_rate_is_refused_at_start() -> None:
    with pytest.raises(ValidationError, match="rate_limit_operations"):
        settings_for("sqlite+aiosqlite://", Path("."), rate_limit_operations="lots")


async def test_operations_per_user_are_limited_on_every_http_path(
    database_url: str, tmp_path: Path
) -> None:
    await empty_tables(database_url)
    settings = settings_for(database_url, tmp_path, rate_limit_operations="5/minute")
    async with running_app(settings) as api:
        from_address(api, "10.3.0.1")
        ada = await api.register()  # anonymous: counted for 10.3.0.1
        from_address(api, "10.3.0.2")
        bob = await api.register()
        ws = await api.workspace(ada)  # ada: 1
        # The general path, then the compiled path, then cached answers: ada 2..5.
        for _ in range(4):
            answer = await api.raw(WORKSPACE, {"id": ws["id"]}, ada.token)
            assert answer.status_code == 200
            assert answer.json()["data"]["workspace"]["id"] == ws["id"]
        before = await workspace_count(database_url)
        assert_refused(await api.raw(WORKSPACE, {"id": ws["id"]}, ada.token))
        # Nothing executed: the mutation created no workspace.
        assert_refused(await api.raw(CREATE, {"i": {"name": "Refused"}}, ada.token))
        assert await workspace_count(database_url) == before
        auth = {"authorization": f"Bearer {ada.token}"}
        get = await api.client.get("/graphql", params={"query": ME}, headers=auth)
        assert_refused(get)
        strict = await api.client.post(
            "/graphql",
            json={"query": ME},
            headers={**auth, "accept": "application/graphql-response+json"},
        )
        assert_refused(strict)
        assert strict.headers["content-type"] == "application/graphql-response+json"
        sse = await api.client.post(
            "/graphql", json={"query": ME}, headers={**auth, "accept": "text/event-stream"}
        )
        assert_refused(sse)
        # Another user, from the same address, is not affected.
        from_address(api, "10.3.0.1")
        assert (await api.ok(ME, token=bob.token))["me"]["id"] == bob.id


async def test_anonymous_operations_are_limited_per_address(
    database_url: str, tmp_path: Path
) -> None:
    settings = settings_for(database_url, tmp_path, rate_limit_operations="3/minute")
    async with running_app(settings) as api:
        from_address(api, "10.4.0.1")
        answers = [(await api.raw("{ __typename }")).status_code for _ in range(4)]
        assert answers == [200, 200, 200, 429]
        assert_refused(await api.raw("{ __typename }"))
        from_address(api, "10.4.0.2")
        assert (await api.raw("{ __typename }")).json() == {"data": {"__typename": "Query"}}


@pytest.mark.redis
async def test_the_limit_is_shared_through_redis(database_url: str, tmp_path: Path) -> None:
    url = reachable_redis_url()
    await empty_tables(database_url)
    one = settings_for(
        database_url,
        tmp_path / "one",
        redis_url=url,
        rate_limit_operations="3/minute",
        rate_limit_key_prefix=f"concord-test-{uuid.uuid4().hex}",  # a run of its own
    )
    other = one.model_copy(update={"data_dir": tmp_path / "other"})
    async with running_app(one) as first, running_app(other) as second:
        from_address(first, "10.5.0.1")
        ada = await first.register()
        assert (await first.raw(ME, token=ada.token)).status_code == 200
        assert (await second.raw(ME, token=ada.token)).status_code == 200
        assert (await first.raw(ME, token=ada.token)).status_code == 200
        # The fourth operation, on either process, is over the shared limit.
        assert_refused(await second.raw(ME, token=ada.token))
        assert_refused(await first.raw(ME, token=ada.token))


# --- WebSocket ---------------------------------------------------------------------------


@asynccontextmanager
async def opened(url: str, protocol: str, person: Person) -> AsyncIterator[ClientConnection]:
    async with connect(url, subprotocols=[protocol]) as socket:  # type: ignore[list-item]
        init = {"type": "connection_init", "payload": {"authorization": f"Bearer {person.token}"}}
        await socket.send(json.dumps(init))
        assert json.loads(await socket.recv())["type"] == "connection_ack"
        yield socket


async def operate(
    socket: ClientConnection, protocol: str, op_id: str, query: str, variables: Any = None
) -> dict[str, Any]:
    """Send one operation; its first answer (`next`/`data` or `error`) for `op_id`."""
    kind = "subscribe" if protocol == "graphql-transport-ws" else "start"
    payload = {"query": query, "variables": variables or {}}
    await socket.send(json.dumps({"id": op_id, "type": kind, "payload": payload}))
    async with asyncio.timeout(10):
        while True:
            message: dict[str, Any] = json.loads(await socket.recv())
            if message.get("id") == op_id and message["type"] in {"next", "data", "error"}:
                return message


def refusal(message: dict[str, Any]) -> dict[str, Any]:
    assert message["type"] == "error", message
    payload = message["payload"]
    error: dict[str, Any] = payload[0] if isinstance(payload, list) else payload
    return error


@pytest.mark.parametrize("ws_fanout", [True, False])
@pytest.mark.parametrize("protocol", ["graphql-transport-ws", "graphql-ws"])
async def test_websocket_operations_are_counted_per_user(
    database_url: str, tmp_path: Path, protocol: str, ws_fanout: bool
) -> None:
    await empty_tables(database_url)
    settings = settings_for(
        database_url, tmp_path, rate_limit_operations="4/minute", ws_fanout=ws_fanout
    )
    events = """subscription($w: ID!) { workspaceEvents(workspaceId: $w) { seq } }"""
    async with live_server(settings) as server:
        ada, bob = await server.api.register(), await server.api.register()
        ws = await server.api.workspace(ada)  # ada: 1
        async with opened(server.ws_url, protocol, ada) as socket:
            for n in range(2, 5):  # ada: 2..4
                answer = await operate(socket, protocol, str(n), ME)
                assert answer["payload"]["data"]["me"]["id"] == ada.id, answer
            error = refusal(await operate(socket, protocol, "5", ME))
            assert error["extensions"]["code"] == "RATE_LIMITED"
            assert error["extensions"]["limit"] == "RATE_LIMIT_OPERATIONS"
            assert 1 <= error["extensions"]["retryAfter"] <= 60
            # A subscription (the fan-out's own path when WS_FANOUT is on) is refused too.
            error = refusal(await operate(socket, protocol, "6", events, {"w": ws["id"]}))
            assert error["extensions"]["code"] == "RATE_LIMITED"
            # The socket stays open, and a second socket of the same user is refused too.
            async with opened(server.ws_url, protocol, ada) as again:
                assert refusal(await operate(again, protocol, "1", ME))["extensions"]["code"] == (
                    "RATE_LIMITED"
                )
            assert refusal(await operate(socket, protocol, "7", ME))["extensions"]["code"] == (
                "RATE_LIMITED"
            )
        # Another user is not affected.
        async with opened(server.ws_url, protocol, bob) as socket:
            answer = await operate(socket, protocol, "1", ME)
            assert answer["payload"]["data"]["me"]["id"] == bob.id
