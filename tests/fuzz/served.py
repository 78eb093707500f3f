"""A real `concord serve` process for the fuzz, and the seeded workspace it is aimed at.

The server runs as its own process on a free port (the console script, as operators run
it), so every fuzzed request crosses a real socket and the whole middleware stack, and the
server's work runs on the other core while this process generates the next document. Its
log is kept in a file: an error the server logged is a finding even when the response
looked fine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.services import free_port

CONCORD = Path(sys.executable).with_name("concord")
JWT_SECRET = "fuzz-secret-that-is-long-enough-for-hs256-0123456789"
# Rate limits high enough that the fuzz reaches the resolvers instead of a stream of 429s
# (a 429 is still an acceptable answer when a document hits one).
FUZZ_ENV = {
    "RATE_LIMIT_AUTH_PER_IP": "100000/minute",
    "RATE_LIMIT_LOGIN_FAILURES": "100000/minute",
    "RATE_LIMIT_UNKNOWN_EMAILS": "100000/minute",
    "RATE_LIMIT_REGISTERED_EMAILS": "100000/minute",
    "RATE_LIMIT_OPERATIONS": "1000000/minute",
    "JWT_SECRET": JWT_SECRET,
    "LOG_LEVEL": "WARNING",
    # A long campaign (FUZZ_EXAMPLES) outlasts the default 15 minutes of an access token.
    "ACCESS_TOKEN_TTL_SECONDS": "86400",
}


@dataclass
class Caller:
    name: str
    token: str | None
    user_id: str | None = None
    email: str | None = None


@dataclass
class World:
    """What the seed created: callers and the ids, versions and cursors worth sampling."""

    url: str
    callers: dict[str, Caller] = field(default_factory=dict)
    ids: list[str] = field(default_factory=list)
    cursors: list[str] = field(default_factory=list)
    emails: list[str] = field(default_factory=list)
    workspace_id: str = ""


@contextmanager
def concord_serve(database_url: str, data_dir: Path) -> Iterator[tuple[str, Path]]:
    """`concord serve` on a free port; yields its base URL and the path of its log."""
    port = free_port()
    log_path = data_dir / "server.log"
    env = {
        **os.environ,
        **FUZZ_ENV,
        "DATABASE_URL": database_url,
        "CONCORD_DATA_DIR": str(data_dir),
    }
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [str(CONCORD), "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, f"concord serve exited: {log_path.read_text()}"
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "concord serve did not start in 60 s"
            time.sleep(0.1)
        yield url, log_path
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _ok(client: httpx.Client, query: str, variables: dict[str, Any], token: str | None) -> Any:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    response = client.post(
        "/graphql", json={"query": query, "variables": variables}, headers=headers
    )
    body = response.json()
    assert response.status_code == 200, body
    assert "errors" not in body, body
    (value,) = body["data"].values()
    return value


def _register(client: httpx.Client, name: str) -> Caller:
    email = f"{name}@example.com"
    value = _ok(
        client,
        """mutation($i: RegisterInput!) { register(input: $i) {
             ... on AuthPayload { accessToken user { id } } } }""",
        {"i": {"email": email, "password": "correct horse battery", "displayName": name}},
        None,
    )
    return Caller(name, value["accessToken"], value["user"]["id"], email)


def seed(url: str) -> World:
    """Members of each role, two workspaces with boards, cards and comments, and their ids.

    A second workspace belongs to someone else, so sampled ids also name things the
    caller may not see.
    """
    world = World(url)
    with httpx.Client(base_url=url, timeout=30) as client:
        for name in ("owner", "editor", "viewer", "outsider"):
            world.callers[name] = _register(client, name)
        world.callers["anonymous"] = Caller("anonymous", None)
        owner, outsider = world.callers["owner"], world.callers["outsider"]
        for person in world.callers.values():
            if person.user_id:
                world.ids.append(person.user_id)
                world.emails.append(person.email or "")
        for who, name in ((owner, "Fuzz"), (outsider, "Elsewhere")):
            workspace = _ok(
                client,
                """mutation($i: CreateWorkspaceInput!) { createWorkspace(input: $i) {
                     ... on WorkspacePayload { workspace { id } } } }""",
                {"i": {"name": name}},
                who.token,
            )["workspace"]
            world.ids.append(workspace["id"])
            if who is owner:
                world.workspace_id = workspace["id"]
                for role in ("EDITOR", "VIEWER"):
                    member = world.callers[role.lower()]
                    _ok(
                        client,
                        """mutation($i: AddMemberInput!) { addMember(input: $i) { __typename } }""",
                        {
                            "i": {
                                "workspaceId": workspace["id"],
                                "email": member.email,
                                "role": role,
                            }
                        },
                        owner.token,
                    )
            for b in range(2):
                board = _ok(
                    client,
                    """mutation($i: CreateBoardInput!) { createBoard(input: $i) {
                         ... on BoardPayload { board { id } } } }""",
                    {"i": {"workspaceId": workspace["id"], "name": f"Board {b}"}},
                    who.token,
                )["board"]
                world.ids.append(board["id"])
                for c in range(3):
                    card = _ok(
                        client,
                        """mutation($i: CreateCardInput!) { createCard(input: $i) {
                             ... on CardPayload { card { id } } } }""",
                        {
                            "i": {
                                "boardId": board["id"],
                                "title": f"Card {c}",
                                "description": "Ünïcødé ✓",
                                "dueDate": "2030-01-02T03:04:05+00:00",
                            }
                        },
                        who.token,
                    )["card"]
                    world.ids.append(card["id"])
                    comment = _ok(
                        client,
                        """mutation($i: AddCommentInput!) { addComment(input: $i) {
                             ... on CommentPayload { comment { id } } } }""",
                        {"i": {"cardId": card["id"], "body": f"Comment on {c}"}},
                        who.token,
                    )["comment"]
                    world.ids.append(comment["id"])
        events = _ok(
            client,
            """query($w: ID!) { events(workspaceId: $w, first: 100) {
                 edges { cursor } pageInfo { endCursor } } }""",
            {"w": world.workspace_id},
            owner.token,
        )
        world.cursors = [edge["cursor"] for edge in events["edges"]]
        pages = _ok(
            client,
            """query { workspaces(first: 5) { edges { cursor node { boards(first: 5) {
                 edges { cursor node { cards(first: 5) { edges { cursor } } } } } } } } }""",
            {},
            owner.token,
        )
        for workspace in pages["edges"]:
            world.cursors.append(workspace["cursor"])
            for board in workspace["node"]["boards"]["edges"]:
                world.cursors.append(board["cursor"])
                world.cursors.extend(card["cursor"] for card in board["node"]["cards"]["edges"])
    return world


def introspected_schema(url: str) -> dict[str, Any]:
    """The served schema, by introspection (what a client of the running app sees)."""
    from graphql import get_introspection_query

    response = httpx.post(f"{url}/graphql", json={"query": get_introspection_query()}, timeout=30)
    body: dict[str, Any] = response.json()
    assert "errors" not in body, body
    data: dict[str, Any] = body["data"]
    return data


def logged_errors(log_path: Path) -> list[str]:
    """Lines the server logged at ERROR or above, or that are not its JSON log lines."""
    problems = []
    for line in log_path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            problems.append(line)
            continue
        if not isinstance(entry, dict) or entry.get("level") in {"ERROR", "CRITICAL"}:
            problems.append(line)
    return problems
