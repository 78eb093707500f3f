"""Input that used to answer INTERNAL_SERVER_ERROR: each is a ValidationError with its field."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.api import Api

NUL = "a\x00b"


async def result(api: Api, query: str, variables: dict[str, Any], token: str | None = None) -> Any:
    body = await api(query, variables, token)
    assert "errors" not in body, body
    (value,) = body["data"].values()
    return value


async def test_nul_bytes_are_validation_errors(api: Api) -> None:
    owner = await api.register()
    ws = await api.workspace(owner)
    board = await api.board(owner, ws["id"])
    card = await api.card(owner, board["id"])
    register = """mutation($i: RegisterInput!) { register(input: $i) {
        __typename ... on ValidationError { field message } } }"""
    cases: list[tuple[str, dict[str, Any], str | None, str]] = [
        (
            register,
            {
                "i": {
                    "email": f"x{NUL}@example.com",
                    "password": "long enough pass",
                    "displayName": "X",
                }
            },
            None,
            "email",
        ),
        (
            register,
            {"i": {"email": "nul@example.com", "password": "long enough pass", "displayName": NUL}},
            None,
            "displayName",
        ),
        (
            """mutation($i: LoginInput!) { login(input: $i) {
                __typename ... on ValidationError { field message } } }""",
            {"i": {"email": f"x{NUL}@example.com", "password": "long enough pass"}},
            None,
            "email",
        ),
        (
            """mutation($i: CreateWorkspaceInput!) { createWorkspace(input: $i) {
                __typename ... on ValidationError { field message } } }""",
            {"i": {"name": NUL}},
            owner.token,
            "name",
        ),
        (
            """mutation($i: AddCommentInput!) { addComment(input: $i) {
                __typename ... on ValidationError { field message } } }""",
            {"i": {"cardId": card["id"], "body": NUL}},
            owner.token,
            "body",
        ),
    ]
    for query, variables, token, field in cases:
        answer = await result(api, query, variables, token)
        assert answer["__typename"] == "ValidationError", (field, answer)
        assert answer["field"] == field
        assert "NUL" in answer["message"]
    # Nothing was written.
    data = await api.ok("{ workspaces { nodes { name } } }", token=owner.token)
    assert [w["name"] for w in data["workspaces"]["nodes"]] == ["Team"]


@pytest.mark.parametrize("due", ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-12:00"])
async def test_due_dates_out_of_range_in_utc_are_validation_errors(api: Api, due: str) -> None:
    owner = await api.register()
    ws = await api.workspace(owner)
    board = await api.board(owner, ws["id"])
    answer = await result(
        api,
        """mutation($i: CreateCardInput!) { createCard(input: $i) {
            __typename ... on ValidationError { field message } } }""",
        {"i": {"boardId": board["id"], "title": "t", "dueDate": due}},
        owner.token,
    )
    assert answer == {
        "__typename": "ValidationError",
        "field": "dueDate",
        "message": "dueDate is out of range once converted to UTC.",
    }


async def test_concurrent_add_member_losers_get_the_duplicate_error(api: Api) -> None:
    owner = await api.register()
    guest = await api.register()
    ws = await api.workspace(owner)
    query = """mutation($i: AddMemberInput!) { addMember(input: $i) {
        __typename ... on ValidationError { field message } } }"""
    variables = {"i": {"workspaceId": ws["id"], "email": guest.email, "role": "VIEWER"}}
    answers = await asyncio.gather(*(api(query, variables, owner.token) for _ in range(10)))
    assert all("errors" not in a for a in answers), answers
    kinds = [a["data"]["addMember"] for a in answers]
    assert sum(k["__typename"] == "MembershipPayload" for k in kinds) == 1, kinds
    sequential = await result(api, query, variables, owner.token)
    losers = [k for k in kinds if k["__typename"] != "MembershipPayload"]
    assert losers == [sequential] * 9
    assert sequential["field"] == "email"
