"""The HTTP surface around GraphQL: health, readiness, metrics, GraphiQL, error masking."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.api import Api, running_app, settings_for
from tests.services import free_port


async def test_health_ready_and_metrics(api: Api) -> None:
    health = await api.client.get("/healthz")
    assert health.status_code == 200
    assert health.json() == {"status": "ok"}
    ready = await api.client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {
        "status": "ready",
        "checks": {"database": "ok", "schema": "ok", "broker": "ok"},
    }
    await api("{ __typename }")
    metrics = await api.client.get("/metrics")
    assert metrics.status_code == 200
    assert 'concord_http_requests_total{method="POST",path="/graphql",status="200"}' in metrics.text


async def test_graphiql_is_served_from_concord(api: Api) -> None:
    page = await api.client.get("/graphql", headers={"accept": "text/html"})
    assert page.status_code == 200
    assert "/graphiql-static/" in page.text
    assert "https://" not in page.text


async def test_unreachable_database_is_unavailable_masked_and_not_ready(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Nothing listens on this port: connecting fails inside the driver.
    url = f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/nowhere"
    async with running_app(settings_for(url, tmp_path)) as api:
        person_query = 'mutation { login(input: {email: "a@example.com", password: "whatever12345"}) { __typename } }'
        response = await api.raw(person_query)
        # Not a bug of ours but an outage: 503, so that clients and proxies retry later.
        assert response.status_code == 503
        assert int(response.headers["retry-after"]) >= 1
        error = response.json()["errors"][0]
        assert error["extensions"]["code"] == "SERVICE_UNAVAILABLE"
        assert "try again" in error["message"]
        assert "asyncpg" not in response.text
        assert "Connect call failed" not in response.text
        assert "Traceback" not in response.text
        # Operators still see what happened in the log: one line, the driver's error.
        logged = [r for r in caplog.records if r.getMessage().startswith("database unavailable")]
        assert logged
        assert "Connect call failed" in logged[0].getMessage()
        ready = await api.client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["checks"]["database"] == "unavailable"


async def test_limits_refuse_deep_and_aliased_queries(api: Api) -> None:
    deep = "{ me { id } " + "".join(f"a{n}: me {{ id }} " for n in range(40)) + "}"
    aliased = await api(deep)
    assert aliased["errors"][0]["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
    inner = "id"
    for _ in range(6):
        inner = f"boards {{ nodes {{ workspace {{ {inner} }} }} }}"
    nested = f"query {{ workspaces {{ nodes {{ {inner} }} }} }}"
    too_deep = await api(nested)
    assert too_deep["errors"][0]["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
    assert "depth" in too_deep["errors"][0]["message"]


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"\xa2", id="not-utf-8"),
        pytest.param(b"\xff\xfe\x00", id="utf-16-bom-truncated"),
        pytest.param(b"[" * 10_000, id="nested-too-deep"),
        pytest.param(
            b'{"query": "{ me { id } }", "variables": ' + b'{"a": ' * 5000 + b"1" + b"}" * 5001,
            id="deep-variables",
        ),
    ],
)
async def test_undecodable_json_bodies_are_400_not_500(api: Api, body: bytes) -> None:
    """Found by the fuzz (tests/fuzz): bytes that are not UTF-8, or JSON nested beyond the
    decoder's recursion limit, used to escape as a 500 with a traceback in the log."""
    response = await api.client.post(
        "/graphql", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 400, response.text
    assert response.json() == {
        "errors": [
            {
                "message": "Unable to parse request body as JSON",
                "extensions": {"code": "BAD_REQUEST"},
            }
        ]
    }
    # The server is fine and answers the next request on the same client.
    assert (await api("{ __typename }")) == {"data": {"__typename": "Query"}}


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"query": "{ __typename }", "operationName": {}}, id="name-object"),
        pytest.param({"query": "{ __typename }", "operationName": ["Q"]}, id="name-array"),
        pytest.param({"query": "{ __typename }", "operationName": 1}, id="name-number"),
        pytest.param({"query": "{ __typename }", "variables": ["x"]}, id="variables-array"),
        pytest.param({"query": "{ __typename }", "extensions": "x"}, id="extensions-string"),
        pytest.param({"query": {"q": 1}}, id="query-object"),
    ],
)
@pytest.mark.parametrize("accept", ["application/json", "application/graphql-response+json"])
async def test_request_parameters_of_the_wrong_type_are_400_naming_the_parameter(
    api: Api, body: dict[str, Any], accept: str
) -> None:
    response = await api.client.post("/graphql", json=body, headers={"accept": accept})
    assert response.status_code == 400
    (error,) = response.json()["errors"]
    assert error["extensions"]["code"] == "BAD_REQUEST"
    (parameter,) = [key for key in body if key != "query"] or ["query"]
    assert f"`{parameter}`" in error["message"]
