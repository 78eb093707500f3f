"""Signing out reaches the login's access tokens: HTTP refuses them, open sockets close.

Over HTTP on SQLite and PostgreSQL (in process, without Redis), with live servers for
WebSocket and SSE, and across two app instances that share one PostgreSQL and one Redis
(the denylist and the close signal both cross instances).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import jwt
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from auth.revocation import CHANNEL as REVOCATIONS
from auth.revocation import RedisRevocations
from tests.api import Api, Person, empty_tables, migrate, settings_for
from tests.live import EVENTS, LiveServer, live_server, socket
from tests.services import reachable_redis_url, redis_url, scratch_postgres_database

LOGOUT = """mutation($t: String!) { logout(refreshToken: $t) { __typename } }"""
REFRESH = """mutation($t: String!) { refreshToken(token: $t) {
  __typename ... on AuthPayload { accessToken refreshToken } } }"""
LOGIN = """mutation($i: LoginInput!) { login(input: $i) {
  __typename ... on AuthPayload { accessToken refreshToken } } }"""
ME = "{ me { id } }"
WORKSPACES = "{ workspaces(first: 5) { nodes { id name } } }"
SSE = {"accept": "text/event-stream"}


async def login_again(api: Api, person: Person) -> Person:
    """A second login of the same person (another device)."""
    data = await api.ok(LOGIN, {"i": {"email": person.email, "password": "correct horse battery"}})
    payload = data["login"]
    assert payload["__typename"] == "AuthPayload", payload
    return Person(person.id, person.email, payload["accessToken"], payload["refreshToken"])


async def logout(api: Api, person: Person) -> None:
    data = await api.ok(LOGOUT, {"t": person.refresh_token}, person.token)
    assert data["logout"]["__typename"] == "LogoutPayload", data


async def assert_unauthenticated(api: Api, query: str, token: str) -> None:
    response = await api.raw(query, token=token)
    assert response.status_code == 401, response.text
    assert response.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"


async def test_logout_makes_the_logins_access_tokens_unusable(api: Api) -> None:
    alice = await api.register("alice")
    phone = await login_again(api, alice)
    await api.workspace(alice, "Team")
    # The same read three times: remembered token, compiled read path, response cache.
    for _ in range(3):
        assert (await api.ok(WORKSPACES, token=alice.token))["workspaces"]["nodes"]
    assert (await api.ok(ME, token=alice.token))["me"] == {"id": alice.id}

    await logout(api, alice)

    for query in (WORKSPACES, ME):
        await assert_unauthenticated(api, query, alice.token)
    # The other login (the phone) is not signed out.
    assert (await api.ok(WORKSPACES, token=phone.token))["workspaces"]["nodes"]


async def test_a_rotated_token_keeps_working_until_the_family_is_revoked(api: Api) -> None:
    alice = await api.register("alice")
    first = await api.ok(REFRESH, {"t": alice.refresh_token})
    rotated = first["refreshToken"]
    assert rotated["__typename"] == "AuthPayload"
    # Rotation alone revokes nothing: both access tokens of the login still work.
    assert (await api.ok(ME, token=alice.token))["me"] == {"id": alice.id}
    assert (await api.ok(ME, token=rotated["accessToken"]))["me"] == {"id": alice.id}

    # The old refresh token used again: the family is revoked, its access tokens with it.
    reused = await api.ok(REFRESH, {"t": alice.refresh_token})
    assert reused["refreshToken"]["__typename"] == "InvalidCredentials"
    await assert_unauthenticated(api, ME, alice.token)
    await assert_unauthenticated(api, ME, rotated["accessToken"])


@pytest.fixture
async def server(database_url: str, tmp_path: Path) -> AsyncIterator[LiveServer]:
    await empty_tables(database_url)
    async with live_server(settings_for(database_url, tmp_path)) as live:
        yield live


async def test_logout_closes_the_logins_websocket_with_4403(server: LiveServer) -> None:
    api = server.api
    alice = await api.register("alice")
    phone = await login_again(api, alice)
    ws = await api.workspace(alice)
    async with socket(server.ws_url) as signed_out, socket(server.ws_url) as other:
        assert (await signed_out.init(alice.token))["type"] == "connection_ack"
        assert (await other.init(phone.token))["type"] == "connection_ack"
        await signed_out.subscribe("1", EVENTS, {"w": ws["id"], "a": None})
        await other.subscribe("1", EVENTS, {"w": ws["id"], "a": None})
        await asyncio.sleep(0.2)

        started = time.monotonic()
        await logout(api, alice)
        assert await signed_out.closed_with(timeout=5) == 4403
        assert time.monotonic() - started <= 3.0
        assert signed_out.connection.close_reason == "Signed out"
        # The phone's socket stays open and keeps receiving.
        await api.board(phone, ws["id"])
        assert (await other.next_data("1"))["workspaceEvents"]["type"] == "board.created"

    # A new socket with the signed-out token is refused.
    async with socket(server.ws_url) as again:
        await again.send_init(alice.token)
        assert await again.closed_with() == 4403


async def test_logout_closes_a_legacy_graphql_ws_socket_too(server: LiveServer) -> None:
    api = server.api
    alice = await api.register("alice")
    async with connect(server.ws_url, subprotocols=["graphql-ws"]) as connection:  # type: ignore[list-item]
        init = {"type": "connection_init", "payload": {"authorization": f"Bearer {alice.token}"}}
        await connection.send(json.dumps(init))
        assert json.loads(await connection.recv())["type"] == "connection_ack"
        await logout(api, alice)
        with contextlib.suppress(ConnectionClosed):
            async with asyncio.timeout(5):
                async for _ in connection:
                    pass
        assert connection.close_code == 4403


async def test_logout_ends_the_logins_event_stream(server: LiveServer) -> None:
    api = server.api
    alice = await api.register("alice")
    ws = await api.workspace(alice)
    headers = {**SSE, "authorization": f"Bearer {alice.token}"}
    request = api.client.stream(
        "POST", "/graphql", json={"query": EVENTS, "variables": {"w": ws["id"]}}, headers=headers
    )
    async with request as response:
        assert response.status_code == 200
        lines = response.aiter_lines()
        await asyncio.sleep(0.2)
        started = time.monotonic()
        await logout(api, alice)
        events: list[str] = []
        while "event: complete" not in events:
            events.append(await asyncio.wait_for(anext(lines), 5))
        assert time.monotonic() - started <= 3.0
    data = next(line for line in events if line.startswith("data: {"))
    error = json.loads(data.removeprefix("data: "))["errors"][0]
    assert error["extensions"]["code"] == "UNAUTHENTICATED"
    assert "signed out" in error["message"]


@pytest.fixture
def scratch_postgres() -> Iterator[str]:
    """A migrated scratch PostgreSQL database (and the Redis check) for two instances."""
    reachable_redis_url()
    with scratch_postgres_database() as url:
        asyncio.run(migrate(url))
        yield url


@asynccontextmanager
async def two_instances(url: str, tmp_path: Path) -> AsyncIterator[tuple[LiveServer, LiveServer]]:
    """Two app instances on one PostgreSQL database and the shared Redis."""
    async with AsyncExitStack() as stack:
        servers = [
            await stack.enter_async_context(
                live_server(settings_for(url, tmp_path / name, redis_url=redis_url()))
            )
            for name in ("a", "b")
        ]
        yield servers[0], servers[1]


@pytest.mark.postgres
@pytest.mark.redis
async def test_logout_on_one_instance_reaches_the_other(
    scratch_postgres: str, tmp_path: Path
) -> None:
    async with two_instances(scratch_postgres, tmp_path) as (a, b):
        alice = await a.api.register("alice")
        phone = await login_again(a.api, alice)
        ws = await a.api.workspace(alice)
        for _ in range(3):  # remembered by B, on its compiled path and response cache
            assert (await b.api.ok(WORKSPACES, token=alice.token))["workspaces"]["nodes"]
        async with socket(b.ws_url) as on_b:
            assert (await on_b.init(alice.token))["type"] == "connection_ack"
            await on_b.subscribe("1", EVENTS, {"w": ws["id"], "a": None})
            await asyncio.sleep(0.2)

            started = time.monotonic()
            await logout(a.api, alice)
            # The very next request to B refuses the token: the denylist is in Redis.
            await assert_unauthenticated(b.api, WORKSPACES, alice.token)
            await assert_unauthenticated(b.api, ME, alice.token)
            assert await on_b.closed_with(timeout=5) == 4403
            assert time.monotonic() - started <= 3.0
        assert (await b.api.ok(ME, token=phone.token))["me"] == {"id": alice.id}


@pytest.mark.redis
async def test_a_lost_announcement_is_made_up_for_by_the_denylist(
    database_url: str, tmp_path: Path
) -> None:
    """A revocation whose pub/sub message never arrived (Redis reconnected meanwhile) still
    closes the socket: after a possible gap the process checks its open sessions."""
    reachable_redis_url()
    await empty_tables(database_url)
    settings = settings_for(database_url, tmp_path, redis_url=redis_url())
    async with live_server(settings) as server:
        alice = await server.api.register("alice")
        services = server.api.app.state.services
        session_id = uuid.UUID(jwt.decode(alice.token, options={"verify_signature": False})["sid"])
        async with socket(server.ws_url) as s:
            assert (await s.init(alice.token))["type"] == "connection_ack"
            # Denied in Redis by "another process", whose announcement is lost.
            other_process = RedisRevocations(redis_url())
            try:
                await other_process.revoke(session_id, 60)
            finally:
                await other_process.aclose()
            with pytest.raises(TimeoutError):
                await s.receive(timeout=0.5)  # nothing announced: the socket is still open
            services.broker.signal_gap(REVOCATIONS)
            assert await s.closed_with(timeout=5) == 4403
        await assert_unauthenticated(server.api, ME, alice.token)
