"""HTTP requests to /graphql answered by `GraphQLLane` exactly as by the middleware stack.

Two apps share one database: the app as `create_app` builds it (the lane in front), and the
same app with the lane taken out of its middleware (every request through the stack:
request id and metrics, body timeout and size limit, authentication, the router). For
generated data, documents and request framing (method, bearer token good, bad, of no user
or missing, content type, Accept, malformed and oversized bodies, a request id or none),
each request goes to both; status, headers and body must be equal, and each app must
count it under the same metric labels.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from graphql import OperationDefinitionNode, parse
from hypothesis import HealthCheck, Phase, given, note, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from auth.tokens import issue_access_token
from server.graphql_lane import GraphQLLane
from tests.api import Api, empty_tables, running_app, settings_for
from tests.schema.worlds import documents, store, worlds

MAX_BODY = 4096


@dataclass
class Pair:
    url: str
    lane: Api
    stack: Api


@pytest.fixture
async def pair(database_url: str, tmp_path: Path) -> AsyncIterator[Pair]:
    await empty_tables(database_url)
    values: dict[str, Any] = {"response_cache": False, "max_body_bytes": MAX_BODY}
    async with (
        running_app(settings_for(database_url, tmp_path / "lane", **values)) as lane,
        running_app(settings_for(database_url, tmp_path / "stack", **values)) as stack,
    ):
        assert any(m.cls is GraphQLLane for m in lane.app.user_middleware)
        # Built on the first request: from then on everything goes through the stack.
        stack.app.user_middleware = [
            m for m in stack.app.user_middleware if m.cls is not GraphQLLane
        ]
        yield Pair(database_url, lane, stack)


def roots(query: str) -> int:
    operation = parse(query).definitions[0]
    assert isinstance(operation, OperationDefinitionNode)
    return len(operation.selection_set.selections)


def counted(method: str, path: str, status: int) -> float:
    labels = {"method": method, "path": path, "status": str(status)}
    return REGISTRY.get_sample_value("concord_http_requests_total", labels) or 0.0


@st.composite
def framings(draw: st.DrawFn, good_tokens: list[str], bad_tokens: list[str]) -> dict[str, Any]:
    """How a request is sent, apart from its document."""
    return {
        "method": draw(st.sampled_from(["POST", "POST", "POST", "GET", "PUT"])),
        "authorization": draw(
            st.sampled_from(
                [
                    *(f"Bearer {t}" for t in good_tokens),
                    *(f"Bearer {t}" for t in bad_tokens),
                    None,
                    None,
                    "Basic dXNlcjpwdw==",
                    "Bearer",
                ]
            )
        ),
        "content_type": draw(
            st.sampled_from(
                ["application/json", "application/json; charset=utf-8", "text/plain", None]
            )
        ),
        "accept": draw(
            st.sampled_from([None, "application/graphql-response+json", "application/json", "*/*"])
        ),
        "body": draw(st.sampled_from(["document", "document", "malformed", "array", "huge"])),
        "request_id": draw(st.sampled_from(["req-1", None])),
    }


def request_of(query: str, variables: dict[str, Any], framing: dict[str, Any]) -> dict[str, Any]:
    headers: dict[str, str] = {}
    for key, name in (
        ("authorization", "authorization"),
        ("content_type", "content-type"),
        ("accept", "accept"),
        ("request_id", "x-request-id"),
    ):
        if framing[key] is not None:
            headers[name] = framing[key]
    document = {"query": query, "variables": variables}
    if framing["method"] == "GET":
        params = {"query": query, "variables": json.dumps(variables)}
        return {"method": "GET", "url": "/graphql", "params": params, "headers": headers}
    content = {
        "document": json.dumps(document).encode(),
        "malformed": b'{"query": ',
        "array": b"[1, 2]",
        "huge": json.dumps({**document, "pad": "x" * MAX_BODY}).encode(),
    }[framing["body"]]
    return {"method": framing["method"], "url": "/graphql", "content": content, "headers": headers}


def comparable_headers(response: httpx.Response, request_id: str | None) -> list[tuple[str, str]]:
    headers = [(k.lower(), v) for k, v in response.headers.multi_items()]
    if request_id is None:
        # A fresh id per request: present on both, a different value.
        ids = [v for k, v in headers if k == "x-request-id"]
        assert len(ids) == 1
        assert len(ids[0]) == 32
        headers = [(k, v) for k, v in headers if k != "x-request-id"]
    return sorted(headers)


@given(data=st.data())
@settings(
    max_examples=30,
    deadline=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
async def test_the_lane_answers_like_the_middleware_stack(pair: Pair, data: st.DataObject) -> None:
    world = data.draw(worlds())
    await store(pair.url, world)
    tokens = pair.lane.app.state.services.tokens
    good = [issue_access_token(tokens, user) for user in world.users]
    bad = ["not-a-token", issue_access_token(tokens, uuid.uuid4())]  # the second: no user
    for _ in range(4):
        query, variables = data.draw(documents(world))
        framing = data.draw(framings(good, bad))
        request = request_of(query, variables, framing)
        note(f"{framing} {query} {variables}")
        answers = []
        for api in (pair.stack, pair.lane, pair.stack, pair.lane):
            answers.append(await api.client.request(**request))
        # The second of each pair: the compiled path answers what the general path accepted.
        expected, actual = answers[2], answers[3]
        assert actual.status_code == expected.status_code
        assert comparable_headers(actual, framing["request_id"]) == comparable_headers(
            expected, framing["request_id"]
        )
        if expected.status_code == 200 and "errors" in expected.json() and roots(query) > 1:
            # Root fields run concurrently: which failing one is reported first is a
            # matter of timing (see tests/schema/test_compiled.py).
            assert "errors" in actual.json(), query
        else:
            assert actual.content == expected.content, query
        before = counted(request["method"], "/graphql", actual.status_code)
        for api in (pair.stack, pair.lane):
            await api.client.request(**request)
        assert counted(request["method"], "/graphql", actual.status_code) == before + 2


async def test_other_paths_and_sockets_still_pass_through_the_stack(api: Api) -> None:
    response = await api.client.get("/healthz", headers={"x-request-id": "probe-7"})
    assert response.status_code == 200
    assert response.headers["x-request-id"] == "probe-7"
    # A trailing slash is not the endpoint: the router's redirect, as before.
    response = await api.client.post("/graphql/", json={"query": "{ me { id } }"})
    assert response.status_code == 307
    assert response.headers["location"].endswith("/graphql")
    assert "x-request-id" in response.headers
