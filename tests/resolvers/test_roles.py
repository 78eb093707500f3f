"""Roles: who may change what, who may read what, and what anonymous callers get.

Each test builds one small world: an OWNER, an EDITOR, a VIEWER and an outsider (a former
member), each with a comment of their own on one card. Every mutation then runs as one of
them: an allowed one records events by that caller; a refused one leaves the data and the
event log exactly as they were.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from tests.api import Api, Person

ROLES = ("owner", "editor", "viewer", "outsider")
PASSWORD = "correct horse battery"  # what Api.register uses

# Each mutation's success payload, and what to select from it.
PAYLOADS = {
    "createWorkspace": ("WorkspacePayload", "workspace { id }"),
    "renameWorkspace": ("WorkspacePayload", "workspace { id }"),
    "addMember": ("MembershipPayload", "membership { role user { id } }"),
    "changeMemberRole": ("MembershipPayload", "membership { role user { id } }"),
    "removeMember": ("DeletePayload", "id"),
    "createBoard": ("BoardPayload", "board { id }"),
    "renameBoard": ("BoardPayload", "board { id }"),
    "deleteBoard": ("DeletePayload", "id"),
    "createCard": ("CardPayload", "card { id }"),
    "updateCard": ("CardPayload", "card { id }"),
    "moveCard": ("CardPayload", "card { id }"),
    "deleteCard": ("DeletePayload", "id"),
    "addComment": ("CommentPayload", "comment { id }"),
    "editComment": ("CommentPayload", "comment { id }"),
    "deleteComment": ("DeletePayload", "id"),
}

STATE = """query($w: ID!) {
  workspace(id: $w) { id version name members { role user { id } }
    boards(first: 5) { nodes { id version name cards(first: 10) { nodes {
      id version title description status position comments(first: 10) { nodes { id version body } }
    } } } } }
  events(workspaceId: $w) { nodes { seq type actor { id } } } }"""


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
    people: dict[str, Person]
    workspace: str
    board: str
    other_board: str
    card: str
    comments: dict[str, str]  # author -> comment id

    async def state(
        self, api: Api, reader: str = "owner"
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Everything in the workspace, as `reader` sees it, and its event log."""
        data = await api.ok(STATE, {"w": self.workspace}, self.people[reader].token)
        workspace = data["workspace"]
        workspace["members"].sort(key=lambda m: m["user"]["id"])
        return workspace, data["events"]["nodes"]


def versions(state: dict[str, Any]) -> dict[str, str]:
    found = {state["id"]: state["version"]}
    for board in state["boards"]["nodes"]:
        found[board["id"]] = board["version"]
        for card in board["cards"]["nodes"]:
            found[card["id"]] = card["version"]
            found.update((c["id"], c["version"]) for c in card["comments"]["nodes"])
    return found


async def build_world(api: Api, roles: tuple[str, ...] = ROLES) -> World:
    """`roles` registered (argon2 is slow: once per test), all but the owner added as editors.

    Each writes a comment; then the viewer is demoted and the outsider removed, so that
    both have a comment of their own that they may no longer touch.
    """
    people = {role: await api.register(role) for role in roles}
    owner = people["owner"]
    workspace = (await api.workspace(owner))["id"]
    for role in roles[1:]:
        await api.add_member(owner, workspace, people[role], "EDITOR")
    board = (await api.board(owner, workspace, "Doing"))["id"]
    other_board = (await api.board(owner, workspace, "Done"))["id"]
    card = (await api.card(owner, board, "Task"))["id"]
    comments = {}
    for role, person in people.items():
        added = await mutate(api, "addComment", {"cardId": card, "body": f"by {role}"}, person)
        comments[role] = added["comment"]["id"]
    changes = []
    if "viewer" in people:
        change = {"workspaceId": workspace, "userId": people["viewer"].id, "role": "VIEWER"}
        changes.append(await mutate(api, "changeMemberRole", change, owner))
    if "outsider" in people:
        removal = {"workspaceId": workspace, "userId": people["outsider"].id}
        changes.append(await mutate(api, "removeMember", removal, owner))
    assert all(c["__typename"] in ("MembershipPayload", "DeletePayload") for c in changes)
    return World(people, workspace, board, other_board, card, comments)


@dataclass
class Refs:
    """What a step names, from the caller's point of view, at the current versions."""

    w: World
    role: str
    v: dict[str, str]

    def at(self, entity_id: str) -> dict[str, str]:
        return {"id": entity_id, "expectedVersion": self.v[entity_id]}

    @property
    def ws(self) -> dict[str, str]:
        return {"workspaceId": self.w.workspace}

    @property
    def other(self) -> dict[str, str]:
        """A member other than the caller."""
        other = self.w.people["editor" if self.role == "viewer" else "viewer"]
        return {**self.ws, "userId": other.id}

    @property
    def mine(self) -> str:
        return self.w.comments[self.role]

    @property
    def theirs(self) -> str:
        return self.w.comments["owner" if self.role == "editor" else "editor"]


OWNER = {"owner": "ok", "editor": "Forbidden", "viewer": "Forbidden", "outsider": "NotFound"}
EDITOR = {**OWNER, "editor": "ok"}
AUTHOR = {**OWNER, "owner": "Forbidden"}  # only the author edits a comment, even an OWNER's

# (mutation and case, who may, input). Ordered so that each allowed step leaves what the
# next one needs.
STEPS: list[tuple[str, dict[str, str], Callable[[Refs], dict[str, Any]]]] = [
    ("renameWorkspace", OWNER, lambda x: {**x.at(x.w.workspace), "name": "Renamed"}),
    (
        "addMember",
        OWNER,
        lambda x: {**x.ws, "email": x.w.people["outsider"].email, "role": "VIEWER"},
    ),
    ("changeMemberRole (to OWNER)", OWNER, lambda x: {**x.other, "role": "OWNER"}),
    ("removeMember (someone else)", OWNER, lambda x: x.other),
    ("createBoard", EDITOR, lambda x: {**x.ws, "name": "New"}),
    ("renameBoard", EDITOR, lambda x: {**x.at(x.w.board), "name": "Renamed"}),
    ("createCard", EDITOR, lambda x: {"boardId": x.w.board, "title": "New"}),
    ("updateCard", EDITOR, lambda x: {**x.at(x.w.card), "title": "Changed"}),
    ("moveCard", EDITOR, lambda x: {**x.at(x.w.card), "boardId": x.w.other_board, "position": 0.5}),
    ("addComment", EDITOR, lambda x: {"cardId": x.w.card, "body": "Hello"}),
    ("editComment (own)", EDITOR, lambda x: {**x.at(x.mine), "body": "Mine"}),
    ("editComment (someone else's)", AUTHOR, lambda x: {**x.at(x.theirs), "body": "Theirs"}),
    ("deleteComment (own)", EDITOR, lambda x: x.at(x.mine)),
    ("deleteComment (someone else's)", OWNER, lambda x: x.at(x.theirs)),
    ("deleteCard", EDITOR, lambda x: x.at(x.w.card)),
    ("deleteBoard", EDITOR, lambda x: x.at(x.w.board)),
]
CODES = {"Forbidden": "FORBIDDEN", "NotFound": "NOT_FOUND", "ValidationError": "VALIDATION_FAILED"}


READ = """query($w: ID!, $b: ID!, $c: ID!) {
  workspaces { nodes { id } }
  workspace(id: $w) { id members { role } boards { nodes { id } } }
  board(id: $b) { id cards { nodes { id } } }
  card(id: $c) { id comments { nodes { body } } } }"""
EVENTS = "query($w: ID!) { events(workspaceId: $w) { nodes { seq type } } }"
HISTORY = "query($c: ID!) { cardHistory(cardId: $c) { nodes { seq type } } }"


@pytest.mark.parametrize("role", ROLES)
async def test_role_matrix(api: Api, role: str) -> None:
    """What `role` reads, then every mutation as `role`."""
    w = await build_world(api)
    await reads(api, w, role)
    await mutations(api, w, role)


async def reads(api: Api, w: World, role: str) -> None:
    token = w.people[role].token
    data = await api.ok(READ, {"w": w.workspace, "b": w.board, "c": w.card}, token)
    events = await api(EVENTS, {"w": w.workspace}, token)
    history = await api(HISTORY, {"c": w.card}, token)
    if role != "outsider":
        assert data["workspaces"]["nodes"] == [{"id": w.workspace}]
        assert len(data["workspace"]["members"]) == 3
        assert len(data["workspace"]["boards"]["nodes"]) == 2
        assert data["board"]["cards"]["nodes"] == [{"id": w.card}]
        assert len(data["card"]["comments"]["nodes"]) == 4
        assert events["data"]["events"]["nodes"][0]["type"] == "workspace.created"
        assert "errors" not in events
        assert [e["type"] for e in history["data"]["cardHistory"]["nodes"]] == ["card.created"]
        return
    assert data == {"workspaces": {"nodes": []}, "workspace": None, "board": None, "card": None}
    # Not a member looks exactly like does not exist.
    unknown = str(uuid.uuid4())
    for answer, nowhere in (
        (events, await api(EVENTS, {"w": unknown}, token)),
        (history, await api(HISTORY, {"c": unknown}, token)),
    ):
        assert answer["data"] is None
        assert [e["extensions"]["code"] for e in answer["errors"]] == ["NOT_FOUND"]
        assert answer["errors"][0]["message"] == nowhere["errors"][0]["message"]


async def mutations(api: Api, w: World, role: str) -> None:
    actor = w.people[role]
    problems = []
    after, events_after = await w.state(api)
    for label, expected, build in STEPS:
        mutation = label.split()[0]
        before, events_before = after, events_after
        result = await mutate(api, mutation, build(Refs(w, role, versions(before))), actor)
        after, events_after = await w.state(api)
        wanted = PAYLOADS[mutation][0] if expected[role] == "ok" else expected[role]
        if result["__typename"] != wanted:
            problems.append(f"{label}: expected {wanted}, got {result}")
        elif wanted in CODES:
            if result["code"] != CODES[wanted]:
                problems.append(f"{label}: code {result['code']}")
            if (after, events_after) != (before, events_before):
                problems.append(f"{label}: refused, yet the data or the event log changed")
        else:
            new = events_after[len(events_before) :]
            if not new or any(e["actor"] != {"id": actor.id} for e in new):
                problems.append(f"{label}: allowed, but recorded {new}")
    assert not problems, "\n".join(problems)


async def test_any_member_may_leave_but_only_once(api: Api) -> None:
    w = await build_world(api, ("owner", "editor", "viewer"))
    for role in ("viewer", "editor"):
        person = w.people[role]
        _, events_before = await w.state(api)
        left = await mutate(
            api, "removeMember", {"workspaceId": w.workspace, "userId": person.id}, person
        )
        assert left["__typename"] == "DeletePayload", left
        after, events_after = await w.state(api)
        assert person.id not in [m["user"]["id"] for m in after["members"]]
        assert events_after[len(events_before) :] == [
            {
                "seq": events_before[-1]["seq"] + 1,
                "type": "member.removed",
                "actor": {"id": person.id},
            }
        ]
        gone = await api.ok(
            "query($w: ID!) { workspace(id: $w) { id } }", {"w": w.workspace}, person.token
        )
        assert gone == {"workspace": None}
        again = await mutate(
            api, "removeMember", {"workspaceId": w.workspace, "userId": person.id}, person
        )
        assert again["__typename"] == "NotFound", again


async def test_a_workspace_keeps_at_least_one_owner(api: Api) -> None:
    w = await build_world(api, ("owner", "editor"))
    owner, editor = w.people["owner"], w.people["editor"]

    async def refused(mutation: str, fields: dict[str, Any], person: Person, field: str) -> None:
        before = await w.state(api)
        result = await mutate(api, mutation, {"workspaceId": w.workspace, **fields}, person)
        assert result["__typename"] == "ValidationError", result
        assert (result["code"], result["field"]) == ("VALIDATION_FAILED", field)
        assert await w.state(api) == before

    async def allowed(mutation: str, fields: dict[str, Any], person: Person) -> None:
        result = await mutate(api, mutation, {"workspaceId": w.workspace, **fields}, person)
        assert result["__typename"] == PAYLOADS[mutation][0], result

    await refused("changeMemberRole", {"userId": owner.id, "role": "EDITOR"}, owner, "role")
    await refused("changeMemberRole", {"userId": owner.id, "role": "VIEWER"}, owner, "role")
    await refused("removeMember", {"userId": owner.id}, owner, "userId")
    # With a second OWNER the first may step down; then the second is the last one.
    await allowed("changeMemberRole", {"userId": editor.id, "role": "OWNER"}, owner)
    await allowed("changeMemberRole", {"userId": owner.id, "role": "VIEWER"}, owner)
    await refused("changeMemberRole", {"userId": editor.id, "role": "EDITOR"}, editor, "role")
    await refused("removeMember", {"userId": editor.id}, editor, "userId")
    await allowed("changeMemberRole", {"userId": owner.id, "role": "OWNER"}, editor)
    await allowed("removeMember", {"userId": owner.id}, owner)
    state, _ = await w.state(api, "editor")
    assert state["members"] == [{"role": "OWNER", "user": {"id": editor.id}}]


ANONYMOUS_READS = {
    "me": ("{ me { id } }", {}),
    "workspaces": ("{ workspaces { nodes { id } } }", {}),
    "workspace": ("query($w: ID!) { workspace(id: $w) { id } }", {"w": "workspace"}),
    "board": ("query($b: ID!) { board(id: $b) { id } }", {"b": "board"}),
    "card": ("query($c: ID!) { card(id: $c) { id } }", {"c": "card"}),
    "events": (EVENTS, {"w": "workspace"}),
    "cardHistory": (HISTORY, {"c": "card"}),
}


async def test_without_a_token_only_register_login_and_refresh_work(api: Api) -> None:
    w = await build_world(api)
    owner = w.people["owner"]
    before = await w.state(api)
    calls: list[tuple[str, str, dict[str, Any]]] = [
        (name, query, {k: getattr(w, v) for k, v in variables.items()})
        for name, (query, variables) in ANONYMOUS_READS.items()
    ]
    calls.append(("createWorkspace", document("createWorkspace"), {"i": {"name": "Mine"}}))
    calls.append(
        (
            "logout",
            "mutation($t: String!) { logout(refreshToken: $t) { __typename } }",
            {"t": owner.refresh_token},
        )
    )
    refs = Refs(w, "owner", versions(before[0]))
    for label, _, build in STEPS:
        calls.append((label, document(label.split()[0]), {"i": build(refs)}))
    problems = []
    for name, query, variables in calls:
        response = await api.raw(query, variables)
        body = response.json()
        codes = [e.get("extensions", {}).get("code") for e in body.get("errors", [])]
        if response.status_code != 200 or codes != ["UNAUTHENTICATED"]:
            problems.append(f"{name}: {response.status_code} {body}")
        elif body["data"] not in (None, {name: None}):
            problems.append(f"{name}: answered {body['data']}")
    assert not problems, "\n".join(problems)
    assert await w.state(api) == before

    login = await api.ok(
        "mutation($i: LoginInput!) { login(input: $i) { __typename } }",
        {"i": {"email": owner.email, "password": PASSWORD}},
    )
    refresh = await api.ok(
        "mutation($t: String!) { refreshToken(token: $t) { __typename } }",
        {"t": owner.refresh_token},
    )
    assert (login["login"]["__typename"], refresh["refreshToken"]["__typename"]) == (
        "AuthPayload",
        "AuthPayload",
    )
