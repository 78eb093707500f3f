"""Bad input: a clear error naming the offending field, and nothing changes.

Mutations answer a `ValidationError` (or `NotFound` for ids that name nothing); queries a
GraphQL error with `extensions.code` and `extensions.field`; the HTTP layer a 4xx with a
GraphQL-shaped body. After every refusal the workspace and its event log are re-read and
must be exactly as before.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from auth.tokens import issue_access_token
from models import user as user_repo
from tests.api import Api, Person

PAYLOADS = {
    "createWorkspace": ("WorkspacePayload", "workspace { id }"),
    "renameWorkspace": ("WorkspacePayload", "workspace { id }"),
    "addMember": ("MembershipPayload", "membership { role }"),
    "changeMemberRole": ("MembershipPayload", "membership { role }"),
    "removeMember": ("DeletePayload", "id"),
    "createBoard": ("BoardPayload", "board { id }"),
    "renameBoard": ("BoardPayload", "board { id }"),
    "deleteBoard": ("DeletePayload", "id"),
    "createCard": ("CardPayload", "card { id description }"),
    "updateCard": ("CardPayload", "card { id description }"),
    "moveCard": ("CardPayload", "card { id }"),
    "deleteCard": ("DeletePayload", "id"),
    "addComment": ("CommentPayload", "comment { id }"),
    "editComment": ("CommentPayload", "comment { id }"),
    "deleteComment": ("DeletePayload", "id"),
}

STATE = """query($w: ID!) {
  workspaces(first: 100) { nodes { id name } }
  workspace(id: $w) { id version name members { role user { id } }
    boards(first: 5) { nodes { id version name cards(first: 10) { nodes {
      id version title description status position dueDate assignee { id }
      comments(first: 10) { nodes { id version body } } } } } } }
  events(workspaceId: $w) { nodes { seq } } }"""


def document(mutation: str) -> str:
    payload, selection = PAYLOADS[mutation]
    return (
        f"mutation($i: {mutation[0].upper()}{mutation[1:]}Input!) {{ {mutation}(input: $i) {{"
        f" __typename ... on {payload} {{ {selection} }}"
        " ... on UserError { code message } ... on ValidationError { field } } }"
    )


async def mutate(api: Api, mutation: str, fields: dict[str, Any], person: Person) -> Any:
    return (await api.ok(document(mutation), {"i": fields}, person.token))[mutation]


@dataclass
class World:
    alice: Person  # OWNER of the workspace
    people: dict[str, Person]  # bob: an EDITOR; carol: registered, not a member
    workspace: str
    board: str
    card: str
    comment: str

    async def state(self, api: Api) -> dict[str, Any]:
        state: dict[str, Any] = await api.ok(STATE, {"w": self.workspace}, self.alice.token)
        return state

    def inputs(self, state: dict[str, Any]) -> dict[str, dict[str, Any]]:
        """An acceptable input for every mutation, at the versions in `state`."""
        workspace = state["workspace"]
        v = {self.workspace: workspace["version"]}
        for board in workspace["boards"]["nodes"]:
            v[board["id"]] = board["version"]
            for card in board["cards"]["nodes"]:
                v[card["id"]] = card["version"]
                v.update((c["id"], c["version"]) for c in card["comments"]["nodes"])
        bob = self.people.get("bob", self.alice)
        carol = self.people.get("carol", self.alice)
        return {
            "createWorkspace": {"name": "Another"},
            "renameWorkspace": {
                "id": self.workspace,
                "expectedVersion": v[self.workspace],
                "name": "R",
            },
            "addMember": {"workspaceId": self.workspace, "email": carol.email, "role": "VIEWER"},
            "changeMemberRole": {"workspaceId": self.workspace, "userId": bob.id, "role": "VIEWER"},
            "removeMember": {"workspaceId": self.workspace, "userId": bob.id},
            "createBoard": {"workspaceId": self.workspace, "name": "B"},
            "renameBoard": {"id": self.board, "expectedVersion": v[self.board], "name": "R"},
            "deleteBoard": {"id": self.board, "expectedVersion": v[self.board]},
            "createCard": {"boardId": self.board, "title": "T"},
            "updateCard": {"id": self.card, "expectedVersion": v[self.card], "title": "U"},
            "moveCard": {
                "id": self.card,
                "expectedVersion": v[self.card],
                "boardId": self.board,
                "position": 9.5,
            },
            "deleteCard": {"id": self.card, "expectedVersion": v[self.card]},
            "addComment": {"cardId": self.card, "body": "C"},
            "editComment": {"id": self.comment, "expectedVersion": v[self.comment], "body": "E"},
            "deleteComment": {"id": self.comment, "expectedVersion": v[self.comment]},
        }


async def build_world(api: Api, *others: str) -> World:
    """Alice's workspace with a board, a card and her comment; `others` (bob, carol) too."""
    alice = await api.register("alice")
    people = {name: await api.register(name) for name in others}
    workspace = (await api.workspace(alice))["id"]
    if "bob" in people:
        await api.add_member(alice, workspace, people["bob"], "EDITOR")
    board = (await api.board(alice, workspace))["id"]
    card = (await api.card(alice, board))["id"]
    comment = await mutate(api, "addComment", {"cardId": card, "body": "Hi"}, alice)
    return World(alice, people, workspace, board, card, comment["comment"]["id"])


async def refused(
    api: Api,
    w: World,
    mutation: str,
    changes: dict[str, Any],
    field: str | None,
    kind: str = "ValidationError",
) -> tuple[str | None, dict[str, Any]]:
    """Run `mutation` as alice, an acceptable input but for `changes`.

    What is wrong (None if it answered `kind` naming `field` and changed nothing), and the
    answer.
    """
    before = await w.state(api)
    fields = {**w.inputs(before)[mutation], **changes}
    result = await mutate(api, mutation, fields, w.alice)
    shown = {k: v if len(str(v)) < 40 else f"<{len(v)} chars>" for k, v in changes.items()}
    if result["__typename"] != kind:
        return f"{mutation} {shown}: expected {kind}, got {result}", result
    if not result["message"] or (kind == "ValidationError" and result["field"] != field):
        return f"{mutation} {shown}: {result}", result
    if await w.state(api) != before:
        return f"{mutation} {shown}: refused, yet the data or the event log changed", result
    return None, result


async def accepted(api: Api, w: World, mutation: str, changes: dict[str, Any]) -> Any:
    """Run `mutation` as alice with an acceptable input changed by `changes`."""
    return await mutate(
        api, mutation, {**w.inputs(await w.state(api))[mutation], **changes}, w.alice
    )


# What each text field allows: its mutations, its maximum length, whether empty is fine.
TEXTS = {
    "name": (["createWorkspace", "renameWorkspace", "createBoard", "renameBoard"], 200, False),
    "title": (["createCard", "updateCard"], 500, False),
    "description": (["createCard", "updateCard"], 20_000, True),
    "body": (["addComment", "editComment"], 10_000, False),
}


@pytest.mark.parametrize("field", TEXTS)
async def test_text_outside_its_limits_is_refused(api: Api, field: str) -> None:
    mutations, maximum, may_be_empty = TEXTS[field]
    w = await build_world(api)
    bad = ["x" * (maximum + 1)] + ([] if may_be_empty else ["", " \t\n "])
    problems = []
    for mutation in mutations:
        problems += [(await refused(api, w, mutation, {field: v}, field))[0] for v in bad]
        # The limit counts what is kept: surrounding whitespace is trimmed.
        at_limit = await accepted(api, w, mutation, {field: " " + "z" * maximum + " "})
        if at_limit["__typename"] != PAYLOADS[mutation][0]:
            problems.append(f"{mutation} refused {maximum} characters: {at_limit}")
    assert not any(problems), "\n".join(p for p in problems if p)


async def test_null_for_a_card_field_is_refused_or_clears_it(api: Api) -> None:
    w = await build_world(api)
    problems = []
    for field in ("title", "status", "description"):
        before = await w.state(api)
        fields = {**w.inputs(before)["updateCard"], field: None}
        if field != "title":
            del fields["title"]
        answer = await api(document("updateCard"), {"i": fields}, w.alice.token)
        result = (answer.get("data") or {}).get("updateCard") or answer
        # description: null may clear it, as createCard reads it; title and status may not be.
        if field == "description" and result.get("__typename") == "CardPayload":
            if result["card"]["description"] != "":
                problems.append(f"description: null kept {result}")
        elif result.get("__typename") != "ValidationError" or result["field"] != field:
            problems.append(f"{field}: null answered {result}")
        elif await w.state(api) != before:
            problems.append(f"{field}: null was refused, yet the data or the event log changed")
    assert not problems, "\n".join(problems)


GOOD = {"email": "dana@example.com", "password": "long enough pw", "displayName": "Dana"}
BAD_EMAILS = ["", "   ", "dana", "dana@example", "@example.com", "da na@example.com"]
BAD_EMAILS += ["dana@@example.com", "d" * 320 + "@example.com"]
BAD_REGISTRATIONS = [("email", bad) for bad in BAD_EMAILS]
BAD_REGISTRATIONS += [("password", bad) for bad in ("", "short", "123456789", "p" * 1025)]
BAD_REGISTRATIONS += [("displayName", bad) for bad in ("", "  ", "n" * 201)]
REGISTER = """mutation($i: RegisterInput!) { register(input: $i) {
  __typename ... on ValidationError { code message field } } }"""
LOGIN = """mutation($i: LoginInput!) { login(input: $i) {
  __typename ... on ValidationError { code message field } } }"""


async def test_bad_registrations_are_refused_and_create_no_one(api: Api) -> None:
    problems = []
    for field, value in BAD_REGISTRATIONS:
        fields = {**GOOD, field: value}
        result = (await api.ok(REGISTER, {"i": fields}))["register"]
        if (result["__typename"], result.get("field")) != ("ValidationError", field):
            problems.append(f"{field}={value[:30]!r}: {result}")
        async with api.app.state.services.db.reader() as session:
            if await user_repo.user_by_email(session, fields["email"].strip().lower()):
                problems.append(f"{field}={value[:30]!r}: created a user")
    for field in ("email", "password"):
        result = (await api.ok(LOGIN, {"i": {"email": GOOD["email"], "password": "x", field: ""}}))[
            "login"
        ]
        if result.get("field") != field:
            problems.append(f"login with empty {field}: {result}")
    assert not problems, "\n".join(problems)
    # Nothing half-made blocks the good registration; a second one of the email is refused.
    first = (await api.ok(REGISTER, {"i": GOOD}))["register"]
    again = (await api.ok(REGISTER, {"i": {**GOOD, "email": "DANA@example.com"}}))["register"]
    assert first == {"__typename": "AuthPayload"}
    assert (again["__typename"], again["field"]) == ("ValidationError", "email")


# Every list, queried with variables w (workspace), b (board), c (card), f (first), a (after).
LISTS = {
    "workspaces": "query($f: Int, $a: String) { workspaces(first: $f, after: $a) { nodes { id } } }",
    "boards": """query($w: ID!, $f: Int, $a: String) {
        workspace(id: $w) { boards(first: $f, after: $a) { nodes { id } } } }""",
    "cards": """query($b: ID!, $f: Int, $a: String) {
        board(id: $b) { cards(first: $f, after: $a) { nodes { id } } } }""",
    "comments": """query($c: ID!, $f: Int, $a: String) {
        card(id: $c) { comments(first: $f, after: $a) { nodes { id } } } }""",
    "events": """query($w: ID!, $f: Int, $a: String) {
        events(workspaceId: $w, first: $f, after: $a) { nodes { seq } } }""",
    "cardHistory": """query($c: ID!, $f: Int, $a: String) {
        cardHistory(cardId: $c, first: $f, after: $a) { nodes { seq } } }""",
}


def cursor(*parts: Any) -> str:
    """A cursor as the server builds them, but with content the server never issued."""
    raw = json.dumps(list(parts), separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


async def page_errors(api: Api, w: World, name: str, first: Any, after: Any) -> list[Any]:
    variables = {"w": w.workspace, "b": w.board, "c": w.card, "f": first, "a": after}
    answer = await api(LISTS[name], variables, w.alice.token)
    return [e.get("extensions") for e in answer.get("errors", [])]


async def test_first_outside_1_to_100_is_a_validation_error_on_every_list(api: Api) -> None:
    w = await build_world(api)
    problems = []
    for name in LISTS:
        for first in (0, -1, 101, 1000):
            errors = await page_errors(api, w, name, first, None)
            if errors != [{"code": "VALIDATION_FAILED", "field": "first"}]:
                problems.append(f"{name}(first: {first}): {errors}")
        for first in (1, 100):
            if errors := await page_errors(api, w, name, first, None):
                problems.append(f"{name}(first: {first}) refused: {errors}")
    assert not problems, "\n".join(problems)


async def test_a_cursor_the_server_did_not_issue_is_a_validation_error(api: Api) -> None:
    w = await build_world(api)
    data = await api.ok("{ workspaces { pageInfo { endCursor } } }", token=w.alice.token)
    foreign = data["workspaces"]["pageInfo"]["endCursor"]  # valid, but for another list
    junk = [
        "garbage",
        "",
        "!!!!",
        base64.urlsafe_b64encode(b"\xff\xfe").decode(),
        cursor(),
        cursor("board"),
        cursor("event", "1"),
        cursor("event", 2**70),
        cursor("card", "1.0", str(uuid.uuid4())),
        cursor("board", "0001-01-01T00:00:00+05:00", str(uuid.uuid4())),
        cursor("comment", "yesterday", str(uuid.uuid4())),
        cursor("workspace", datetime.now(UTC).isoformat(), "not-a-uuid"),
    ]
    problems = []
    for name in LISTS:
        for after in [*junk, foreign if name != "workspaces" else cursor("event", 1)]:
            errors = await page_errors(api, w, name, None, after)
            if errors != [{"code": "VALIDATION_FAILED", "field": "after"}]:
                problems.append(f"{name}(after: {after!r}): {errors}")
    assert not problems, "\n".join(problems)


ID_FIELDS = {
    "renameWorkspace": ["id"],
    "addMember": ["workspaceId"],
    "changeMemberRole": ["workspaceId", "userId"],
    "removeMember": ["workspaceId", "userId"],
    "createBoard": ["workspaceId"],
    "renameBoard": ["id"],
    "deleteBoard": ["id"],
    "createCard": ["boardId", "assigneeId"],
    "updateCard": ["id", "assigneeId"],
    "moveCard": ["id", "boardId"],
    "deleteCard": ["id"],
    "addComment": ["cardId"],
    "editComment": ["id"],
    "deleteComment": ["id"],
}
# Ids that must name something in the caller's workspace: unknown is bad input, not NotFound.
UNKNOWN_IS_INVALID = {
    ("createCard", "assigneeId"),
    ("updateCard", "assigneeId"),
    ("moveCard", "boardId"),
}
VERSIONED = [m for m, fields in ID_FIELDS.items() if "id" in fields]
MALFORMED_VERSIONS = ["", "-1", "1.5", "0x1", " 1", "\u0661", "9" * 40]


async def test_malformed_ids_and_versions_are_refused_naming_the_field(api: Api) -> None:
    w = await build_world(api)  # the format is checked before anything is looked up
    cases = [(m, f, "not-an-id") for m, fields in ID_FIELDS.items() for f in fields]
    cases += [("renameBoard", "id", bad) for bad in ("", "1", "' OR 1=1 --")]
    cases += [(m, "expectedVersion", "not-a-version") for m in VERSIONED]
    cases += [("updateCard", "expectedVersion", bad) for bad in MALFORMED_VERSIONS]
    problems = [(await refused(api, w, m, {f: bad}, f))[0] for m, f, bad in cases]
    assert not any(problems), "\n".join(p for p in problems if p)


async def test_unknown_ids_are_not_found(api: Api) -> None:
    w = await build_world(api, "bob", "carol")
    problems = []
    for mutation, fields in ID_FIELDS.items():
        for field in fields:
            invalid = (mutation, field) in UNKNOWN_IS_INVALID
            kind, named = ("ValidationError", field) if invalid else ("NotFound", None)
            changes = {field: str(uuid.uuid4())}
            problems.append((await refused(api, w, mutation, changes, named, kind))[0])
    assert not any(problems), "\n".join(p for p in problems if p)


async def test_move_card_to_a_board_of_another_workspace_is_refused(api: Api) -> None:
    w = await build_world(api, "carol")
    mine = (await api.board(w.alice, (await api.workspace(w.alice, "Other"))["id"]))["id"]
    theirs = (await api.board(w.people["carol"], (await api.workspace(w.people["carol"]))["id"]))[
        "id"
    ]
    problems, answers = [], []
    for board in (mine, theirs, str(uuid.uuid4())):
        problem, answer = await refused(api, w, "moveCard", {"boardId": board}, "boardId")
        problems.append(problem)
        answers.append(answer)
    assert not any(problems), "\n".join(p for p in problems if p)
    # Someone else's board is indistinguishable from no board at all.
    assert answers[1] == answers[2]


async def test_assignee_must_be_a_member(api: Api) -> None:
    w = await build_world(api, "bob", "carol")
    problems = []
    for mutation in ("createCard", "updateCard"):
        answers = []
        for assignee in (w.people["carol"].id, str(uuid.uuid4())):
            changes = {"assigneeId": assignee}
            problem, answer = await refused(api, w, mutation, changes, "assigneeId")
            problems.append(problem)
            answers.append(answer)
        if answers[0] != answers[1]:
            problems.append(f"{mutation}: a non-member and no one differ: {answers}")
        member = await accepted(api, w, mutation, {"assigneeId": w.people["bob"].id})
        if member["__typename"] != "CardPayload":
            problems.append(f"{mutation} assigning a member: {member}")
    assert not any(problems), "\n".join(p for p in problems if p)


# ---- HTTP ----


async def send(api: Api, method: str, **options: Any) -> tuple[int, Any, Any]:
    """Status, JSON body (or text) and headers of a request to /graphql.

    An exception escaping the app counts as the 500 a server would answer with it.
    """
    try:
        response = await api.client.request(method, "/graphql", **options)
    except Exception as exc:  # the ASGI transport re-raises what a server turns into a 500
        return 500, repr(exc), {}
    try:
        body = response.json()
    except ValueError:
        body = response.text
    return response.status_code, body, response.headers


def not_graphql_error(status: int, body: Any, expected: int, code: str | None = None) -> str | None:
    """What is wrong with an answer that should be `expected` with one GraphQL error."""
    errors = body.get("errors") if isinstance(body, dict) else None
    if status != expected or not isinstance(errors, list) or len(errors) != 1:
        return f"{status} {str(body)[:300]}"
    message, extensions = errors[0].get("message"), errors[0].get("extensions") or {}
    if not isinstance(message, str) or not message or not isinstance(extensions.get("code"), str):
        return f"{status} {body}"
    if code is not None and extensions["code"] != code:
        return f"{status} {body}"
    return None


BAD_BODIES = [
    # not JSON
    b'{"query": ',
    b"not json",
    b"",
    b"\xff\xfe{}",
    b'{"query": "{ me { id } }"',
    # JSON, but not a GraphQL request
    b'{"foo": 1}',
    b'{"query": 1}',
    b'{"query": null}',
    b'{"query": "{ me { id } }", "variables": "x"}',
    b'{"query": "{ me { id } }", "extensions": 5}',
    b"7",
    b'"q"',
    b"null",
    b"true",
]


async def test_a_body_that_is_not_a_graphql_request_is_a_400_with_a_graphql_error(
    api: Api,
) -> None:
    problems = []
    for body in BAD_BODIES:
        answer = await send(api, "POST", content=body, headers={"content-type": "application/json"})
        if problem := not_graphql_error(*answer[:2], 400):
            problems.append(f"{body!r}: {problem}")
    assert not problems, "\n".join(problems)


async def test_a_body_over_the_size_limit_is_a_413(api: Api) -> None:
    limit = api.app.state.settings.max_body_bytes
    body = json.dumps({"query": "{ me { id } }", "variables": {"pad": "x" * limit}}).encode()

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it arrives
        for start in range(0, len(body), 65_536):
            yield body[start : start + 65_536]

    json_type = {"content-type": "application/json"}
    for content in (body, chunks()):
        status, answer, _ = await send(api, "POST", content=content, headers=json_type)
        assert not_graphql_error(status, answer, 413, "PAYLOAD_TOO_LARGE") is None, answer


async def test_an_invalid_token_is_a_401_unauthenticated(api: Api) -> None:
    person = await api.register("erin")
    config = api.app.state.services.tokens
    user = uuid.UUID(person.id)
    yesterday = datetime.now(UTC) - timedelta(days=1)
    headers = {
        "garbage": "Bearer garbage",
        "no token": "Bearer ",
        "wrong scheme": f"Basic {person.token}",
        "expired": f"Bearer {issue_access_token(config, user, yesterday)}",
        "forged": f"Bearer {issue_access_token(dataclasses.replace(config, secret='s' * 64), user)}",
        "refresh token": f"Bearer {person.refresh_token}",
    }
    problems = []
    for name, header in headers.items():
        for query in ("{ me { id } }", REGISTER):  # even what anonymous callers may do
            status, body, sent = await send(
                api,
                "POST",
                json={"query": query, "variables": {"i": GOOD}},
                headers={"authorization": header},
            )
            if problem := not_graphql_error(status, body, 401, "UNAUTHENTICATED"):
                problems.append(f"{name}: {problem}")
            elif sent.get("www-authenticate") != "Bearer":
                problems.append(f"{name}: no WWW-Authenticate: Bearer")
    assert not problems, "\n".join(problems)
    assert (await api.ok("{ me { id } }", token=person.token))["me"] == {"id": person.id}


async def test_a_well_signed_token_of_no_user_is_no_500(api: Api) -> None:
    token = issue_access_token(api.app.state.services.tokens, uuid.uuid4())
    create = {"query": document("createWorkspace"), "variables": {"i": {"name": "Ghost"}}}
    status, body, _ = await send(
        api, "POST", json=create, headers={"authorization": f"Bearer {token}"}
    )
    codes = [e["extensions"]["code"] for e in body.get("errors", [])] if status < 500 else []
    assert status < 500, body
    assert "INTERNAL_SERVER_ERROR" not in codes, body


UNKNOWN_NAMES = [
    "{ workspacez { nodes { id } } }",
    "{ me { emial } }",
    "{ workspaces(frist: 1) { nodes { id } } }",
    'mutation { createWorkspace(input: {nam: "x"}) { __typename } }',
    'mutation { addMember(input: {workspaceId: "1", email: "a@b.c", role: OWNR}) { __typename } }',
    "query($i: CreateWorkspaceInpt!) { me { id } }",
    "{ me { ... on Usr { id } } }",
]


async def test_unknown_names_get_no_suggestions(api: Api) -> None:
    problems = []
    for query in UNKNOWN_NAMES:
        status, body, _ = await send(api, "POST", json={"query": query})
        errors = body.get("errors") if status < 500 and isinstance(body, dict) else None
        if not errors:
            problems.append(f"{query}: {status} {body}")
        for error in errors or []:
            if "did you mean" in error["message"].lower():
                problems.append(f"{query}: suggests in {error['message']!r}")
            if error["extensions"]["code"] != "GRAPHQL_VALIDATION_FAILED":
                problems.append(f"{query}: {error}")
    assert not problems, "\n".join(problems)


ODD_REQUESTS: list[tuple[str, dict[str, Any]]] = [
    ("PUT", {"json": {"query": "{ me { id } }"}}),
    ("DELETE", {}),
    ("POST", {"content": b"{ me { id } }", "headers": {"content-type": "text/plain"}}),
    ("POST", {"data": {"query": "{ me { id } }"}}),
    ("POST", {"json": {"query": "{"}}),
    ("POST", {"json": {"query": "{ me { id } }", "operationName": "Nope"}}),
    ("POST", {"json": [{"query": "{ me { id } }"}]}),
    ("GET", {"params": {"query": 'mutation { logout(refreshToken: "x") { __typename } }'}}),
    ("GET", {"params": {"query": "{"}, "headers": {"accept": "application/json"}}),
]


async def test_odd_requests_are_refused_with_a_4xx_never_a_500(api: Api) -> None:
    problems = []
    for method, options in ODD_REQUESTS:
        status, body, _ = await send(api, method, **options)
        refused = status >= 400 or (isinstance(body, dict) and body.get("errors"))
        if status >= 500 or not refused:
            problems.append(f"{method} {options}: {status} {str(body)[:200]}")
        elif isinstance(body, dict) and not body.get("errors"):
            problems.append(f"{method} {options}: no GraphQL error in {body}")
    assert not problems, "\n".join(problems)
