"""GraphQL over HTTP as the specification says: media types, status codes, methods.

The audit test runs graphql-http's `serverAudits` (the reference implementation's own
conformance checks) against a served Concord; the others pin each behaviour a client sees.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.api import Api, empty_tables, settings_for
from tests.live import LiveServer, live_server
from tests.npm import node, npm_packages

GRAPHQL_HTTP = {"graphql-http": "1.23.1", "graphql": "16.9.0"}
AUDIT_SCRIPT = Path(__file__).with_name("graphql_http_audit.mjs")
NEW = "application/graphql-response+json"
REGISTER = 'mutation { register(input: {email: "get@example.com", password: "correct horse battery", displayName: "G"}) { __typename } }'


@pytest.fixture
async def server(database_url: str, tmp_path: Path) -> AsyncIterator[LiveServer]:
    await empty_tables(database_url)
    async with live_server(settings_for(database_url, tmp_path)) as live:
        yield live


async def test_graphql_http_server_audits_pass_without_warnings(server: LiveServer) -> None:
    modules = npm_packages(GRAPHQL_HTTP)
    process = await asyncio.create_subprocess_exec(
        node(),
        str(AUDIT_SCRIPT),
        str(modules),
        f"http://127.0.0.1:{server.port}/graphql",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, stderr.decode()
    results = json.loads(stdout)
    assert len(results) > 50  # the whole suite ran
    failed = [
        f"{r['status']} {r['id']} {r['name']}: {r['reason']}"
        for r in results
        if r["status"] != "ok"
    ]
    assert failed == []


async def _post(
    api: Api, body: dict[str, object], accept: str
) -> tuple[int, str, dict[str, object]]:
    response = await api.client.post("/graphql", json=body, headers={"accept": accept})
    return response.status_code, response.headers["content-type"], response.json()


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("{ me { id ", "GRAPHQL_PARSE_FAILED"),
        ("{ nosuchfield }", "GRAPHQL_VALIDATION_FAILED"),
    ],
)
async def test_request_errors_are_4xx_without_data_for_graphql_response_json(
    api: Api, query: str, code: str
) -> None:
    status, media, body = await _post(api, {"query": query}, f"{NEW}, application/json;q=0.9")
    assert (status, media) == (400, NEW)
    assert "data" not in body
    assert [e["extensions"]["code"] for e in body["errors"]] == [code]  # type: ignore[union-attr, index]
    # Clients that only know application/json keep getting 200 and data: null.
    status, media, body = await _post(api, {"query": query}, "application/json")
    assert (status, media) == (200, "application/json")
    assert body["data"] is None


async def test_variable_coercion_failure_is_400_and_field_errors_are_200(api: Api) -> None:
    person = await api.register("ada")
    status, _, body = await _post(
        api,
        {
            "query": "query($f: Int) { workspaces(first: $f) { nodes { id } } }",
            "variables": {"f": "many"},
        },
        NEW,
    )
    assert status == 400
    assert "data" not in body
    # An executed operation keeps 200, also when a field error nulled all of `data`.
    response = await api.client.post(
        "/graphql",
        json={"query": '{ events(workspaceId: "nope") { nodes { seq } } }'},
        headers={"accept": NEW, "authorization": f"Bearer {person.token}"},
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == NEW
    assert response.json()["data"] is None
    assert response.json()["errors"][0]["path"] == ["events"]


async def test_a_mutation_over_get_is_405_with_allow_post_and_changes_nothing(api: Api) -> None:
    response = await api.client.get("/graphql", params={"query": REGISTER}, headers={"accept": NEW})
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    assert response.json()["errors"][0]["extensions"]["code"] == "METHOD_NOT_ALLOWED"
    login = await api(
        'mutation { login(input: {email: "get@example.com", password: "correct horse battery"}) { __typename } }'
    )
    assert login["data"]["login"]["__typename"] == "InvalidCredentials"
    # A query over GET is fine.
    query = await api.client.get(
        "/graphql", params={"query": "{ __typename }"}, headers={"accept": NEW}
    )
    assert query.status_code == 200
    assert query.json() == {"data": {"__typename": "Query"}}


async def test_several_operations_need_an_operation_name(api: Api) -> None:
    document = (
        'query First { __typename } mutation Second { logout(refreshToken: "x") { __typename } }'
    )
    status, _, body = await _post(api, {"query": document}, NEW)
    assert status == 400
    assert "data" not in body
    assert "operation name" in body["errors"][0]["message"]  # type: ignore[index]
    status, _, body = await _post(api, {"query": document, "operationName": "First"}, NEW)
    assert (status, body) == (200, {"data": {"__typename": "Query"}})
