"""Depth, alias and cost limits: linear in the document, checked before anything runs."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

from tests.api import Api, running_app, settings_for


def doubling_fragments(n: int) -> str:
    """Fragment Fi spreads F(i+1) twice: 2^n spreads from a document of O(n) bytes."""
    fragments = " ".join(f"fragment F{i} on Query{{...F{i + 1} ...F{i + 1}}}" for i in range(n))
    return f"query{{...F0}} {fragments} fragment F{n} on Query{{__typename}}"


async def test_doubling_fragment_spreads_are_measured_in_linear_time(api: Api) -> None:
    # n=22 is the 832-byte document (27.6 s of a blocked loop before); n=40 never
    # finished. Both are valid and shallow: they are answered, and fast.
    for n in (22, 40):
        started = time.perf_counter()
        body = await api(doubling_fragments(n))
        elapsed = time.perf_counter() - started
        assert elapsed < 2.0, (n, elapsed)
        assert body == {"data": {"__typename": "Query"}}, body


async def test_doubling_fragments_deep_or_aliased_are_refused_quickly(api: Api) -> None:
    # The same shape with a field per level: depth 40 and 2^40 aliases, refused by name.
    n = 40
    fragments = " ".join(
        f"fragment F{i} on User{{a{i}: id ...F{i + 1} ...F{i + 1}}}" for i in range(n)
    )
    document = f"query{{me{{...F0}}}} {fragments} fragment F{n} on User{{id}}"
    started = time.perf_counter()
    body = await api(document)
    assert time.perf_counter() - started < 2.0
    limits = {e["extensions"].get("limit") for e in body["errors"]}
    assert "MAX_ALIASES" in limits, body
    assert all(e["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED" for e in body["errors"])


async def test_many_small_fields_are_cheap_to_check(api: Api) -> None:
    person = await api.register()
    # 495 copies of one field merge into one: valid, and 3.5 KB.
    document = "{" + "me{id} " * 495 + "}"
    assert len(document) > 3400
    started = time.perf_counter()
    data = await api.ok(document, token=person.token)
    assert time.perf_counter() - started < 1.0
    assert data == {"me": {"id": person.id}}


async def test_cost_limit_counts_pages_and_names_the_setting(api: Api) -> None:
    person = await api.register()
    # card → board → cards(first:100) → … : 1,000,000 nodes in 154 bytes.
    inner = "id"
    for _ in range(3):
        inner = f"board {{ cards(first: 100) {{ nodes {{ {inner} }} }} }}"
    document = f'{{ card(id: "00000000-0000-0000-0000-000000000000") {{ {inner} }} }}'
    body = await api(document, token=person.token)
    error = body["errors"][0]
    assert error["extensions"]["limit"] == "MAX_QUERY_COST", body
    assert "5000" in error["message"]
    assert body.get("data") is None
    # The same with small pages passes the limit (and answers: no such card).
    small = document.replace("first: 100", "first: 5")
    assert "errors" not in await api(small, token=person.token)


async def test_cost_limit_uses_variables_and_defaults(api: Api) -> None:
    person = await api.register()
    document = """query($n: Int) { workspaces(first: $n) { nodes {
        boards { nodes { cards { nodes { id title } } } } } } }"""
    # Default pages of 50: 50 x 50 x 50 cards, far above the limit.
    refused = await api(document, token=person.token)
    assert refused["errors"][0]["extensions"]["limit"] == "MAX_QUERY_COST"
    document = document.replace("boards {", "boards(first: 2) {").replace(
        "cards {", "cards(first: 2) {"
    )
    assert "errors" not in await api(document, {"n": 100}, token=person.token)
    refused = await api(document, {"n": 1000}, token=person.token)
    assert refused["errors"][0]["extensions"]["limit"] == "MAX_QUERY_COST"


async def test_conflicting_fields_are_still_refused(api: Api) -> None:
    person = await api.register()
    body = await api("{" + "me{id} " * 100 + "me{id: email} }", token=person.token)
    assert "conflict" in body["errors"][0]["message"], body


async def test_request_time_limit_stops_the_work(
    api: Api, database_url: str, tmp_path: Path
) -> None:
    alice = await api.register("alice")
    hurried = settings_for(database_url, tmp_path, request_timeout_seconds=0.001)
    async with running_app(hurried) as impatient:
        body = await impatient(
            'mutation { createWorkspace(input: {name: "Never"}) { __typename } }',
            token=alice.token,
        )
    error = body["errors"][0]
    assert error["extensions"] == {"code": "TIMEOUT", "limit": "REQUEST_TIMEOUT_SECONDS"}
    assert "0.001 s" in error["message"]
    # Stopped, not just abandoned: nothing was committed.
    data = await api.ok("{ workspaces { nodes { name } } }", token=alice.token)
    assert data["workspaces"]["nodes"] == []


async def test_a_known_document_is_measured_again_for_other_variables(api: Api) -> None:
    """The compiled path remembers verdicts per document *and* variables: the same
    accepted document with larger pages is refused, and allowed again with small ones."""
    person = await api.register()
    pages = "board { cards(first: $n) { nodes { id } } }"
    pages = f"board {{ cards(first: $n) {{ nodes {{ {pages} }} }} }}"
    document = f'query($n: Int) {{ card(id: "{uuid.UUID(int=0)}") {{ {pages} }} }}'
    for _ in range(3):  # learned by the compiled path, then answered (and remembered) by it
        assert await api(document, {"n": 5}, token=person.token) == {"data": {"card": None}}
    for _ in range(2):
        # 100 x 100 cards: over MAX_QUERY_COST, though each page is allowed.
        refused = await api(document, {"n": 100}, token=person.token)
        assert refused["errors"][0]["extensions"]["limit"] == "MAX_QUERY_COST", refused
        assert "errors" not in await api(document, {"n": 5}, token=person.token)
