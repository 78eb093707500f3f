"""GraphiQL on a real Concord, in headless Chromium with every other host unreachable: it
loads from Concord alone, runs a query with the Authorization header typed into it, and a
subscription in it shows the event that another client's mutation causes."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from server.admin import seed_demo
from server.settings import Settings
from tests.browser import ARTIFACTS, chromium, concord_server, local_page

PASSWORD = "graphiql in a browser"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    asyncio.run(seed_demo(Settings(CONCORD_DATA_DIR=tmp_path), PASSWORD))
    with concord_server(tmp_path) as running:
        yield running.url


@pytest.fixture
def browser() -> Iterator[Any]:
    with chromium() as running:
        yield running


def login(url: str, email: str) -> str:
    response = httpx.post(
        f"{url}/graphql",
        json={
            "query": "mutation($e: String!, $p: String!) { login(input: {email: $e, password: $p})"
            " { ... on AuthPayload { accessToken } } }",
            "variables": {"e": email, "p": PASSWORD},
        },
        timeout=30,
    )
    token: str = response.json()["data"]["login"]["accessToken"]
    return token


def graphql(url: str, token: str, query: str, variables: dict[str, Any]) -> dict[str, Any]:
    response = httpx.post(
        f"{url}/graphql",
        json={"query": query, "variables": variables},
        headers={"authorization": f"Bearer {token}"},
        timeout=30,
    )
    body: dict[str, Any] = response.json()
    assert "errors" not in body, body
    data: dict[str, Any] = body["data"]
    return data


# The editors are CodeMirror 5 instances: [0] query, [1] variables, [2] headers, result last.
SET_EDITORS = """([query, headers]) => {
  const editors = document.querySelectorAll('.graphiql-container .CodeMirror');
  editors[0].CodeMirror.setValue(query);
  editors[2].CodeMirror.setValue(headers);
}"""
RESULT = "document.querySelector('.graphiql-container .result-window').innerText"


def test_graphiql_runs_a_query_and_shows_another_clients_event_live(
    server: str, browser: Any
) -> None:
    from playwright.sync_api import expect

    ada = login(server, "ada@demo.example.com")
    grace = login(server, "grace@demo.example.com")
    workspace = graphql(
        server,
        ada,
        "{ workspaces(first: 5) { nodes { id boards(first: 5) { nodes { id } } } } }",
        {},
    )
    (space,) = workspace["workspaces"]["nodes"]
    board = space["boards"]["nodes"][0]["id"]

    elsewhere: list[str] = []
    errors: list[str] = []
    page = local_page(browser, elsewhere, errors)
    page.goto(f"{server}/graphql")
    page.wait_for_selector(".graphiql-container .CodeMirror", timeout=60_000)
    headers = json.dumps({"Authorization": f"Bearer {ada}"})

    page.evaluate(SET_EDITORS, ["{ me { displayName } }", headers])
    page.get_by_label("Execute query (Ctrl-Enter)").click()
    expect(page.locator(".result-window")).to_contain_text('"displayName": "Ada Lovelace"')

    subscription = (
        f'subscription {{ workspaceEvents(workspaceId: "{space["id"]}") '
        "{ seq type actor { displayName } changes { field newValue } } }"
    )
    frames: list[str] = []
    page.on("websocket", lambda ws: ws.on("framesent", lambda frame: frames.append(str(frame))))
    page.evaluate(SET_EDITORS, [subscription, headers])
    # GraphiQL parses the editor's text after a short debounce; executing before that would
    # run the previous document's operation type.
    page.wait_for_timeout(1000)
    page.get_by_label("Execute query (Ctrl-Enter)").click()
    deadline = time.monotonic() + 20
    while not any('"type":"subscribe"' in frame for frame in frames):
        assert time.monotonic() < deadline, f"no subscribe frame on a WebSocket: {frames}"
        page.wait_for_timeout(100)
    graphql(
        server,
        grace,
        "mutation($i: CreateCardInput!) { createCard(input: $i) { __typename } }",
        {"i": {"boardId": board, "title": "Seen live in GraphiQL"}},
    )
    expect(page.locator(".result-window")).to_contain_text("Seen live in GraphiQL", timeout=20_000)
    text = page.evaluate(RESULT)
    assert '"type": "card.created"' in text
    assert '"displayName": "Grace Hopper"' in text
    page.screenshot(path=str(ARTIFACTS / "graphiql-subscription.png"), full_page=True)
    assert elsewhere == []
    assert errors == []
