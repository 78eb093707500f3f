"""A GraphQL client on the ASGI app, and the few steps most tests start with."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from models.database import make_engine
from models.migrate import upgrade
from models.tables import Base
from server.app import create_app
from server.settings import Settings

_counter = itertools.count()


@dataclass
class Person:
    id: str
    email: str
    token: str
    refresh_token: str


class Api:
    """Sends GraphQL over HTTP to the app and returns the decoded JSON body."""

    def __init__(self, client: httpx.AsyncClient, app: Any) -> None:
        self.client = client
        self.app = app

    async def raw(
        self, query: str, variables: dict[str, Any] | None = None, token: str | None = None
    ) -> httpx.Response:
        headers = {"authorization": f"Bearer {token}"} if token else {}
        body: dict[str, Any] = {"query": query}
        if variables is not None:
            body["variables"] = variables
        return await self.client.post("/graphql", json=body, headers=headers)

    async def __call__(
        self, query: str, variables: dict[str, Any] | None = None, token: str | None = None
    ) -> dict[str, Any]:
        response = await self.raw(query, variables, token)
        payload: dict[str, Any] = response.json()
        return payload

    async def ok(
        self, query: str, variables: dict[str, Any] | None = None, token: str | None = None
    ) -> dict[str, Any]:
        """The `data` of a response that must have no errors."""
        payload = await self(query, variables, token)
        assert "errors" not in payload, payload
        data: dict[str, Any] = payload["data"]
        return data

    async def register(self, name: str | None = None) -> Person:
        name = name or f"user{next(_counter)}"
        data = await self.ok(
            """mutation($i: RegisterInput!) { register(input: $i) {
                 __typename ... on AuthPayload { accessToken refreshToken user { id email } }
                 ... on ValidationError { field message } } }""",
            {
                "i": {
                    "email": f"{name}@example.com",
                    "password": "correct horse battery",
                    "displayName": name,
                }
            },
        )
        result = data["register"]
        assert result["__typename"] == "AuthPayload", result
        return Person(
            result["user"]["id"],
            result["user"]["email"],
            result["accessToken"],
            result["refreshToken"],
        )

    async def workspace(self, owner: Person, name: str = "Team") -> dict[str, Any]:
        data = await self.ok(
            """mutation($i: CreateWorkspaceInput!) { createWorkspace(input: $i) {
                 __typename ... on WorkspacePayload { workspace { id version name } } } }""",
            {"i": {"name": name}},
            owner.token,
        )
        workspace: dict[str, Any] = data["createWorkspace"]["workspace"]
        return workspace

    async def add_member(self, owner: Person, workspace_id: str, person: Person, role: str) -> None:
        data = await self.ok(
            """mutation($i: AddMemberInput!) { addMember(input: $i) { __typename } }""",
            {"i": {"workspaceId": workspace_id, "email": person.email, "role": role}},
            owner.token,
        )
        assert data["addMember"]["__typename"] == "MembershipPayload", data

    async def board(self, person: Person, workspace_id: str, name: str = "Board") -> dict[str, Any]:
        data = await self.ok(
            """mutation($i: CreateBoardInput!) { createBoard(input: $i) {
                 __typename ... on BoardPayload { board { id version name } } } }""",
            {"i": {"workspaceId": workspace_id, "name": name}},
            person.token,
        )
        board: dict[str, Any] = data["createBoard"]["board"]
        return board

    async def card(
        self, person: Person, board_id: str, title: str = "Card", **fields: Any
    ) -> dict[str, Any]:
        data = await self.ok(
            """mutation($i: CreateCardInput!) { createCard(input: $i) {
                 __typename ... on CardPayload { card { id version title description status position } } } }""",
            {"i": {"boardId": board_id, "title": title, **fields}},
            person.token,
        )
        card: dict[str, Any] = data["createCard"]["card"]
        return card

    async def events(
        self, person: Person, workspace_id: str, first: int = 100
    ) -> list[dict[str, Any]]:
        data = await self.ok(
            """query($w: ID!, $f: Int) { events(workspaceId: $w, first: $f) {
                 nodes { seq type entityType entityId version actor { id }
                         changes { field oldValue newValue } } } }""",
            {"w": workspace_id, "f": first},
            person.token,
        )
        events: list[dict[str, Any]] = data["events"]["nodes"]
        return events


def unknown_version(current: str) -> str:
    """A well-formed expectedVersion that no row has, in the shape of `current`.

    Versions are decimal integers on PostgreSQL and SQLite and 16 hex digits (a ROWVERSION)
    on SQL Server; a literal such as "999999" is malformed on the latter.
    """
    if len(current) == 16:
        return f"{(int(current, 16) + 999_999) % 2**64:016x}"
    return str(int(current) + 999_999)


async def migrate(url: str) -> None:
    """Bring the database at `url` to the current schema revision."""
    engine = make_engine(url, pool=False)
    try:
        await upgrade(engine)
    finally:
        await engine.dispose()


async def empty_tables(url: str) -> None:
    engine = make_engine(url, pool=False)
    try:
        async with engine.begin() as conn:
            for table in reversed(Base.metadata.sorted_tables):
                await conn.execute(table.delete())
    finally:
        await engine.dispose()


def settings_for(database_url: str, data_dir: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "database_url": database_url,
        "jwt_secret": "test-secret-that-is-long-enough-for-hs256-0123456789",
        "CONCORD_DATA_DIR": data_dir,
        # Hundreds of apps start in one test process: freezing each one's heap would keep
        # every earlier test's cyclic garbage for good.
        "gc_freeze": False,
        # Load tests run thousands of operations as one user within a minute; the tests of
        # RATE_LIMIT_OPERATIONS set the limit they test.
        "rate_limit_operations": "1000000/minute",
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@asynccontextmanager
async def running_app(settings: Settings) -> AsyncIterator[Api]:
    """The app with its lifespan entered, and a client that talks to it in-process."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://concord.test") as client:
            yield Api(client, app)
