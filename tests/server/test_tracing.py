"""OpenTelemetry spans: one mutation's trace, from the HTTP request to the delivery to a
subscriber; and no tracing at all (no SDK, no provider) when the endpoint is unset."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from resolvers.live_feed import group_hub
from telemetry import tracing
from tests.api import empty_tables, settings_for
from tests.live import EVENTS, LiveServer, live_server, socket

ADD_CARD = """mutation AddCard($i: CreateCardInput!) { createCard(input: $i) {
  __typename ... on CardPayload { card { id } } } }"""
# The caller's own trace: the request span continues it.
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.install(provider)
    try:
        yield exporter
    finally:
        tracing.uninstall()
        provider.shutdown()


@pytest.fixture
async def server(tmp_path: Path, spans: InMemorySpanExporter) -> AsyncIterator[LiveServer]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'concord.db'}"
    async with live_server(settings_for(url, tmp_path)) as live:
        await empty_tables(url)
        yield live


async def eventually(condition: Callable[[], bool], timeout: float = 10) -> None:
    async with asyncio.timeout(timeout):
        while True:
            if condition():
                return
            await asyncio.sleep(0.02)


def children(spans: list[ReadableSpan], parent: ReadableSpan) -> list[ReadableSpan]:
    return [s for s in spans if s.parent is not None and s.parent.span_id == parent.context.span_id]


async def test_a_mutation_is_one_trace_from_request_to_delivery(
    server: LiveServer, spans: InMemorySpanExporter
) -> None:
    api = server.api
    alice = await api.register("alice")
    ws = await api.workspace(alice)
    board = await api.board(alice, ws["id"])
    async with socket(server.ws_url) as s:
        await s.init(alice.token)
        await s.subscribe("1", EVENTS, {"w": ws["id"]})
        hub = group_hub(api.app.state.services)
        await eventually(lambda: hub.member_count() == 1)
        spans.clear()
        response = await api.client.post(
            "/graphql",
            json={"query": ADD_CARD, "variables": {"i": {"boardId": board["id"], "title": "t"}}},
            headers={
                "authorization": f"Bearer {alice.token}",
                "x-request-id": "trace-me",
                "traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01",
            },
        )
        assert response.json()["data"]["createCard"]["__typename"] == "CardPayload"
        assert (await s.next_data("1"))["workspaceEvents"]["type"] == "card.created"
        await eventually(
            lambda: any(s.kind is SpanKind.CONSUMER for s in spans.get_finished_spans())
        )
    finished = list(spans.get_finished_spans())

    [request] = [
        s for s in finished if (s.attributes or {}).get("concord.request_id") == "trace-me"
    ]
    assert request.kind is SpanKind.SERVER
    assert request.name == "POST /graphql"
    assert format(request.context.trace_id, "032x") == TRACE_ID  # the caller's trace
    assert request.parent is not None
    assert format(request.parent.span_id, "016x") == PARENT_ID
    assert (request.attributes or {})["http.response.status_code"] == 200

    [operation] = children(finished, request)
    assert operation.name == "mutation AddCard"
    assert (operation.attributes or {})["graphql.operation.name"] == "AddCard"

    below = children(finished, operation)
    sql = [s for s in below if s.kind is SpanKind.CLIENT]
    statements = [str((s.attributes or {})["db.statement"]) for s in sql]
    assert any(st.startswith("INSERT INTO cards") for st in statements), statements
    assert any("event_streams" in st for st in statements), statements
    assert all((s.attributes or {})["db.system"] == "sqlite" for s in sql)
    [publish] = [s for s in below if s.kind is SpanKind.PRODUCER]
    assert publish.name == "publish card.created"
    assert (publish.attributes or {})["messaging.destination.name"] == f"workspace:{ws['id']}"

    [deliver] = [s for s in finished if s.kind is SpanKind.CONSUMER]
    assert deliver.parent is not None
    assert deliver.parent.span_id == publish.context.span_id
    assert deliver.context.trace_id == request.context.trace_id
    assert (deliver.attributes or {})["concord.subscribers"] == 1
    assert {s.context.trace_id for s in [request, operation, *sql, publish, deliver]} == {
        request.context.trace_id
    }


async def test_reads_on_the_compiled_path_are_traced_with_their_sql(
    server: LiveServer, spans: InMemorySpanExporter
) -> None:
    api = server.api
    alice = await api.register("alice")
    ws = await api.workspace(alice)
    query = "query Ws($w: ID!) { workspace(id: $w) { id name } }"
    for _ in range(2):  # the second is answered on the compiled path
        spans.clear()
        await api.ok(query, {"w": ws["id"]}, alice.token)
    finished = list(spans.get_finished_spans())
    [request] = [s for s in finished if s.kind is SpanKind.SERVER]
    [operation] = children(finished, request)
    assert operation.name == "query Ws"
    assert (operation.attributes or {}).get("concord.compiled") is True
    assert any(s.kind is SpanKind.CLIENT for s in children(finished, operation))


PROBE = """
import sys
from opentelemetry import trace
from server.app import create_app
from server.settings import Settings
from telemetry import tracing

create_app(Settings(database_url=sys.argv[1], jwt_secret="x" * 40, CONCORD_DATA_DIR=sys.argv[2]))
exporter = "opentelemetry.exporter.otlp.proto.http.trace_exporter" in sys.modules
print(type(trace.get_tracer_provider()).__name__, exporter, tracing.tracer is not None)
"""


def probe(tmp_path: Path, endpoint: str | None) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    if endpoint is not None:
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = endpoint
    url = f"sqlite+aiosqlite:///{tmp_path / 'concord.db'}"
    result = subprocess.run(
        [sys.executable, "-c", PROBE, url, str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return result.stdout.strip()


def test_without_an_endpoint_no_tracer_provider_is_installed(tmp_path: Path) -> None:
    # OpenTelemetry's default proxy, no exporter set up, and our tracer off (every
    # instrumented place checks it first: no span objects at all).
    assert probe(tmp_path, None) == "ProxyTracerProvider False False"


def test_with_an_endpoint_the_sdk_provider_is_installed(tmp_path: Path) -> None:
    # Nothing listens there: no span is made, so nothing is sent.
    assert probe(tmp_path, "http://127.0.0.1:9") == "TracerProvider True True"
