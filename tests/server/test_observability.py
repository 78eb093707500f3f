"""What operators see: one JSON log line per operation with a request id, the metrics on
/metrics, and nothing secret in the logs, on HTTP (general and compiled paths) and
WebSocket."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY
from sqlalchemy import text as sql

from server.logging import JsonFormatter
from tests.api import Api, empty_tables, migrate, running_app, settings_for
from tests.live import EVENTS, LiveServer, live_server, socket
from tests.server.test_sse import stream

ME = "query Me { me { id email } }"
WORKSPACE = "query Ws($w: ID!) { workspace(id: $w) { id name } }"
UPDATE_CARD = """mutation Rename($i: UpdateCardInput!) { updateCard(input: $i) {
  __typename ... on VersionConflict { currentVersion } } }"""
LOGIN = """mutation LogIn($i: LoginInput!) { login(input: $i) {
  __typename ... on AuthPayload { accessToken refreshToken } } }"""


def operations(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "concord.operations"]


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def eventually(condition: Callable[[], bool], timeout: float = 10) -> None:
    async with asyncio.timeout(timeout):
        while True:
            if condition():
                return
            await asyncio.sleep(0.02)


async def test_each_http_operation_is_one_line_with_the_request_id_echoed(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    alice = await api.register("alice")
    caplog.set_level(logging.INFO, logger="concord.operations")
    caplog.clear()
    response = await api.client.post(
        "/graphql",
        json={"query": ME},
        headers={"authorization": f"Bearer {alice.token}", "x-request-id": "req-42.a"},
    )
    assert response.status_code == 200
    assert response.headers["x-request-id"] == "req-42.a"
    [line] = operations(caplog)
    fields = vars(line)
    assert fields["request_id"] == "req-42.a"
    assert fields["user_id"] == alice.id
    assert fields["operation"] == "Me"
    assert fields["operation_type"] == "query"
    assert fields["transport"] == "http"
    assert fields["outcome"] == "ok"
    assert fields["duration_ms"] >= 0

    # A request id that is not a plain token is replaced by one of ours, and echoed.
    caplog.clear()
    response = await api.client.post(
        "/graphql",
        json={"query": ME},
        headers={"authorization": f"Bearer {alice.token}", "x-request-id": "x" * 300},
    )
    generated = response.headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", generated)
    assert vars(operations(caplog)[0])["request_id"] == generated
    # Without one, every response still carries the id its log lines name.
    assert re.fullmatch(r"[0-9a-f]{32}", (await api.client.get("/healthz")).headers["x-request-id"])


async def test_errors_are_logged_and_counted_by_code(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    alice = await api.register("alice")
    caplog.set_level(logging.INFO, logger="concord.operations")
    before = sample("concord_graphql_errors_total", code="GRAPHQL_VALIDATION_FAILED")
    invalid = sample(
        "concord_graphql_operations_total",
        operation="invalid",
        type="query",
        outcome="GRAPHQL_VALIDATION_FAILED",
    )
    caplog.clear()
    payload = await api("query Nope { nothingHere }", token=alice.token)
    assert payload["errors"][0]["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
    assert vars(operations(caplog)[0])["outcome"] == "GRAPHQL_VALIDATION_FAILED"
    assert sample("concord_graphql_errors_total", code="GRAPHQL_VALIDATION_FAILED") == before + 1
    # The name of an operation that does not validate is not a label of its own.
    after = sample(
        "concord_graphql_operations_total",
        operation="invalid",
        type="query",
        outcome="GRAPHQL_VALIDATION_FAILED",
    )
    assert after == invalid + 1

    caplog.clear()
    payload = await api(ME)  # anonymous
    assert payload["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    line = vars(operations(caplog)[0])
    assert line["outcome"] == "UNAUTHENTICATED"
    assert line["user_id"] is None


async def test_the_compiled_read_path_logs_and_counts_too(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    alice = await api.register("alice")
    ws = await api.workspace(alice)
    caplog.set_level(logging.INFO, logger="concord.operations")
    compiled = sample("concord_compiled_reads_total", outcome="answered")
    count = sample("concord_graphql_operations_total", operation="Ws", type="query", outcome="ok")
    caplog.clear()
    for n in range(3):
        response = await api.client.post(
            "/graphql",
            json={"query": WORKSPACE, "variables": {"w": ws["id"]}},
            headers={"authorization": f"Bearer {alice.token}", "x-request-id": f"read-{n}"},
        )
        assert response.json()["data"]["workspace"]["id"] == ws["id"]
        assert response.headers["x-request-id"] == f"read-{n}"
    # The first answer came from the general path; the later ones from the compiled one.
    assert sample("concord_compiled_reads_total", outcome="answered") > compiled
    lines = [vars(r) for r in operations(caplog)]
    assert [line["request_id"] for line in lines] == ["read-0", "read-1", "read-2"]
    assert {line["operation"] for line in lines} == {"Ws"}
    assert {line["user_id"] for line in lines} == {alice.id}
    assert {line["outcome"] for line in lines} == {"ok"}
    after = sample("concord_graphql_operations_total", operation="Ws", type="query", outcome="ok")
    assert after == count + 3


async def test_a_login_leaves_neither_password_nor_tokens_in_the_logs(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    password = "correct horse battery"
    alice = await api.register("alice")
    # Everything every logger says, at every level, as the JSON lines operators read.
    caplog.set_level(logging.DEBUG)
    caplog.clear()
    data = await api.ok(LOGIN, {"i": {"email": alice.email, "password": password}})
    fresh = data["login"]
    assert fresh["__typename"] == "AuthPayload"
    wrong = await api.ok(LOGIN, {"i": {"email": alice.email, "password": "not it, but secret"}})
    assert wrong["login"]["__typename"] == "InvalidCredentials"
    await api.ok(ME, token=fresh["accessToken"])
    await api("query Bad($t: String) { me { id } }", {"t": "secret variable value"}, alice.token)

    formatter = JsonFormatter()
    text = "\n".join(formatter.format(r) for r in caplog.records)
    assert '"operation":"LogIn"' in text  # the login itself was logged
    for secret in (
        password,
        "not it, but secret",
        "secret variable value",
        alice.token,
        alice.refresh_token,
        fresh["accessToken"],
        fresh["refreshToken"],
    ):
        assert secret not in text
    # JWTs are three base64url parts: none of them either.
    for token in (alice.token, fresh["accessToken"]):
        for part in token.split("."):
            assert part not in text


async def test_metrics_list_what_operators_watch(api: Api) -> None:
    alice = await api.register("alice")
    ws = await api.workspace(alice)
    board = await api.board(alice, ws["id"])
    card = await api.card(alice, board["id"], "Write")
    conflicts = sample("concord_version_conflicts_total", entity="Card")
    published = sample("concord_events_published_total", outcome="ok")
    for title in ("first", "second"):  # the second is based on a stale version
        await api.ok(
            UPDATE_CARD,
            {"i": {"id": card["id"], "expectedVersion": card["version"], "title": title}},
            alice.token,
        )
    assert sample("concord_version_conflicts_total", entity="Card") == conflicts + 1
    assert sample("concord_events_published_total", outcome="ok") == published + 1

    # The pool gauge follows connections out and back.
    in_use = sample("concord_db_pool_connections_in_use", engine="primary")
    async with api.app.state.services.db.writer() as session:
        await session.execute(sql("SELECT 1"))
        assert sample("concord_db_pool_connections_in_use", engine="primary") == in_use + 1
    assert sample("concord_db_pool_connections_in_use", engine="primary") == in_use

    scraped = (await api.client.get("/metrics")).text
    for name in (
        "concord_http_requests_total",
        "concord_http_request_seconds_bucket",
        "concord_graphql_operations_total",
        "concord_graphql_operation_seconds_bucket",
        "concord_graphql_errors_total",
        "concord_version_conflicts_total",
        "concord_db_pool_connections_in_use",
        "concord_websocket_connections",
        "concord_subscriptions",
        "concord_events_published_total",
        "concord_events_delivered_total",
        "concord_event_delivery_lag_seconds_bucket",
        "concord_broker_reconnects_total",
        "concord_response_cache_total",
        "concord_compiled_reads_total",
    ):
        assert name in scraped, name
    assert 'concord_graphql_operations_total{operation="Rename",outcome="ok",type="mutation"}' in (
        scraped
    )


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[LiveServer]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'concord.db'}"
    async with live_server(settings_for(url, tmp_path)) as live:
        await empty_tables(url)
        yield live


CARD = """mutation($i: CreateCardInput!) { createCard(input: $i) { __typename } }"""


async def test_websocket_operations_are_logged_and_sockets_and_subscriptions_counted(
    server: LiveServer, caplog: pytest.LogCaptureFixture
) -> None:
    api = server.api
    alice = await api.register("alice")
    ws = await api.workspace(alice)
    board = await api.board(alice, ws["id"])
    caplog.set_level(logging.INFO, logger="concord.operations")
    sockets = sample("concord_websocket_connections")
    fanout = sample("concord_subscriptions", path="fanout")
    delivered = sample("concord_events_delivered_total")
    lags = sample("concord_event_delivery_lag_seconds_count")
    lag_sum = sample("concord_event_delivery_lag_seconds_sum")
    caplog.clear()
    async with socket(server.ws_url, {"x-request-id": "socket-1"}) as s:
        assert s.connection.response is not None
        assert s.connection.response.headers["x-request-id"] == "socket-1"
        assert (await s.init(alice.token))["type"] == "connection_ack"
        assert sample("concord_websocket_connections") == sockets + 1
        await s.send(
            {"id": "q", "type": "subscribe", "payload": {"query": ME, "operationName": "Me"}}
        )
        assert (await s.next_data("q"))["me"]["id"] == alice.id
        assert await s.receive() == {"id": "q", "type": "complete"}
        await s.send(
            {
                "id": "live",
                "type": "subscribe",
                "payload": {"query": EVENTS, "variables": {"w": ws["id"]}, "operationName": None},
            }
        )
        await eventually(lambda: sample("concord_subscriptions", path="fanout") == fanout + 1)
        await api.ok(CARD, {"i": {"boardId": board["id"], "title": "live"}}, alice.token)
        assert (await s.next_data("live"))["workspaceEvents"]["type"] == "card.created"
        assert sample("concord_events_delivered_total") == delivered + 1
        assert sample("concord_event_delivery_lag_seconds_count") == lags + 1
        # Generous: the event was committed moments ago on this machine.
        assert 0 <= sample("concord_event_delivery_lag_seconds_sum") - lag_sum < 60
        await s.send({"id": "live", "type": "complete"})
        await eventually(lambda: sample("concord_subscriptions", path="fanout") == fanout)
    await eventually(lambda: sample("concord_websocket_connections") == sockets)

    lines = [vars(r) for r in operations(caplog) if r.transport == "ws"]
    query, subscription = lines
    assert query["operation"] == "Me"
    assert query["operation_type"] == "query"
    assert query["request_id"] == "socket-1"
    assert query["user_id"] == alice.id
    assert query["outcome"] == "ok"
    assert subscription["operation_type"] == "subscription"
    assert subscription["request_id"] == "socket-1"
    assert subscription["outcome"] == "ok"


async def test_a_subscription_that_fails_is_logged_with_its_code(
    server: LiveServer, caplog: pytest.LogCaptureFixture
) -> None:
    api = server.api
    alice = await api.register("alice")
    caplog.set_level(logging.INFO, logger="concord.operations")
    caplog.clear()
    missing = "00000000-0000-0000-0000-000000000000"
    async with socket(server.ws_url) as s:
        await s.init(alice.token)
        await s.subscribe("1", EVENTS, {"w": missing})
        message: dict[str, Any] = await s.receive()
        assert message["type"] in ("next", "error"), message
    await eventually(lambda: any(vars(r).get("outcome") == "NOT_FOUND" for r in operations(caplog)))


async def test_request_lines_do_not_log_query_strings(
    server: LiveServer, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A GET carries the document and its variables in the URL: uvicorn's request line
    names the path only."""
    # Another test's uvicorn.Config (its default log config, or a log level) may have
    # stopped uvicorn's access logger from reaching the capture; uvicorn decides
    # per connection whether to log, so the request goes over a connection of its own.
    for name in ("uvicorn", "uvicorn.access"):
        logger = logging.getLogger(name)
        monkeypatch.setattr(logger, "propagate", True)
        monkeypatch.setattr(logger, "disabled", False)
        monkeypatch.setattr(logger, "level", logging.NOTSET)  # log_level="warning" there
        logger.manager._clear_cache()
    api = server.api
    alice = await api.register("alice")
    caplog.set_level(logging.DEBUG)
    caplog.clear()
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as client:
        response = await client.get(
            "/graphql",
            params={
                "query": "query Q($s: String) { me { id } }",
                "variables": '{"s": "hush-hush"}',
            },
            headers={"authorization": f"Bearer {alice.token}", "accept": "application/json"},
        )
    assert response.status_code == 200
    server_side = [r for r in caplog.records if not r.name.startswith(("httpx", "httpcore"))]
    text = "\n".join(JsonFormatter().format(r) for r in server_side)
    assert "GET /graphql" in text
    assert "hush-hush" not in text
    assert "variables" not in text


async def test_pages_on_allowed_origins_may_send_and_read_the_request_id(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'concord.db'}"
    await migrate(url)
    settings = settings_for(url, tmp_path, cors_origins="https://app.example.com")
    origin = {"origin": "https://app.example.com"}
    async with running_app(settings) as api:
        preflight = await api.client.options(
            "/graphql",
            headers={
                **origin,
                "access-control-request-method": "POST",
                "access-control-request-headers": "content-type, x-request-id, traceparent",
            },
        )
        assert preflight.status_code == 200
        allowed = preflight.headers["access-control-allow-headers"].lower()
        assert "x-request-id" in allowed
        assert "traceparent" in allowed
        answer = await api.client.post(
            "/graphql", json={"query": "{ __typename }"}, headers={**origin, "x-request-id": "p-1"}
        )
        assert answer.headers["x-request-id"] == "p-1"
        assert "x-request-id" in answer.headers["access-control-expose-headers"].lower()


async def test_a_subscription_over_sse_is_counted_while_it_runs_and_logged_when_it_ends(
    server: LiveServer, caplog: pytest.LogCaptureFixture
) -> None:
    api = server.api
    alice = await api.register("alice")
    ws = await api.workspace(alice)
    board = await api.board(alice, ws["id"])
    caplog.set_level(logging.INFO, logger="concord.operations")
    running = sample("concord_subscriptions", path="strawberry")
    caplog.clear()
    query = "subscription Follow($w: ID!) { workspaceEvents(workspaceId: $w) { type } }"
    async with stream(api, query, {"w": ws["id"]}, alice.token) as s:
        await eventually(lambda: sample("concord_subscriptions", path="strawberry") == running + 1)
        await api.ok(CARD, {"i": {"boardId": board["id"], "title": "sse"}}, alice.token)
        message = await s.message()
        assert '"card.created"' in message["data"]
    await eventually(lambda: sample("concord_subscriptions", path="strawberry") == running)
    await eventually(lambda: any(vars(r)["transport"] == "sse" for r in operations(caplog)))
    [line] = [vars(r) for r in operations(caplog) if vars(r)["transport"] == "sse"]
    assert line["operation"] == "Follow"
    assert line["operation_type"] == "subscription"
    assert line["user_id"] == alice.id
    assert line["outcome"] == "ok"
