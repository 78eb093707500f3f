"""Generated data and queries for comparing the compiled read path with the general one.

A world is a small but awkward data set written straight into the tables: ties in sort
keys, floats that print differently in every language, timestamps with and without
microseconds, unicode, assignees who left, events with every kind of JSON value, a
workspace the caller cannot see. A query is a random document over the contract's reads
with aliases, repeated keys, fragments, `@include`/`@skip` on variables, valid and invalid
arguments and cursors.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import strategies as st
from sqlalchemy import insert

from models import tables
from models.database import make_engine
from resolvers.event import event_cursor
from resolvers.lists import BOARDS, CARDS, COMMENTS

BASE = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
POSITIONS = [0.0, 1.0, -2.5, 0.1 + 0.2, 1e16, 1e-7, 3.0, 1234.5678]
TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=12)
JSON_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-(10**6), 10**6), st.sampled_from(POSITIONS), TEXT
)


@dataclass
class World:
    users: list[uuid.UUID] = field(default_factory=list)
    workspaces: list[uuid.UUID] = field(default_factory=list)
    boards: list[Any] = field(default_factory=list)
    cards: list[Any] = field(default_factory=list)
    comments: list[Any] = field(default_factory=list)
    rows: dict[Any, list[dict[str, Any]]] = field(default_factory=dict)

    def ids(self) -> list[str]:
        every = [*self.workspaces, *(b["id"] for b in self.boards), *(c["id"] for c in self.cards)]
        return [str(i) for i in every]


@st.composite
def worlds(draw: st.DrawFn) -> World:
    world = World()
    moments = [BASE + timedelta(seconds=s, microseconds=m) for s in (0, 1) for m in (0, 250000)]
    world.users = [uuid.uuid4() for _ in range(4)]
    users = [
        {
            "id": u,
            "email": f"{u.hex[:12]}@example.com",
            "display_name": draw(TEXT),
            "password_hash": "x",
            "created_at": BASE,
        }
        for u in world.users
    ]
    workspaces, memberships, streams, events = [], [], [], []
    for w in range(draw(st.integers(1, 2))):
        workspace_id = uuid.uuid4()
        world.workspaces.append(workspace_id)
        workspaces.append(
            {"id": workspace_id, "name": draw(TEXT), "created_at": moments[w], "version": w + 1}
        )
        # users[0] owns every workspace, users[1] views the first, users[3] is in none.
        members = [(world.users[0], "OWNER")] + ([(world.users[1], "VIEWER")] if w == 0 else [])
        for i, (user, role) in enumerate(members):
            memberships.append(
                {
                    "id": uuid.uuid4(),
                    "workspace_id": workspace_id,
                    "user_id": user,
                    "role": role,
                    "created_at": moments[i],
                }
            )
        seq = 0
        for _ in range(draw(st.integers(0, 3))):
            board = {
                "id": uuid.uuid4(),
                "workspace_id": workspace_id,
                "name": draw(TEXT),
                "created_at": draw(st.sampled_from(moments)),
                "version": draw(st.integers(1, 5)),
            }
            world.boards.append(board)
            for _ in range(draw(st.integers(0, 4))):
                card = {
                    "id": uuid.uuid4(),
                    "workspace_id": workspace_id,
                    "board_id": board["id"],
                    "title": draw(TEXT),
                    "description": draw(st.sampled_from(["", "text", "ünïcode ✓"])),
                    "status": draw(st.sampled_from(["TODO", "DOING", "DONE"])),
                    "position": draw(st.sampled_from(POSITIONS)),
                    "assignee_id": draw(st.sampled_from([None, *world.users])),
                    "due_date": draw(st.sampled_from([None, *moments])),
                    "created_at": BASE,
                    "version": 1,
                }
                world.cards.append(card)
                for _ in range(draw(st.integers(0, 3))):
                    world.comments.append(
                        {
                            "id": uuid.uuid4(),
                            "workspace_id": workspace_id,
                            "card_id": card["id"],
                            "author_id": draw(st.sampled_from(world.users)),
                            "body": draw(TEXT),
                            "created_at": draw(st.sampled_from(moments)),
                            "version": 1,
                        }
                    )
                for _ in range(draw(st.integers(0, 2))):
                    seq += 1
                    events.append(
                        {
                            "workspace_id": workspace_id,
                            "seq": seq,
                            "type": "card.updated",
                            "entity_type": "Card",
                            "entity_id": card["id"],
                            "entity_version": draw(st.sampled_from([None, "7"])),
                            "actor_id": draw(st.sampled_from([None, *world.users])),
                            "changes": [
                                {
                                    "field": "title",
                                    "old": draw(JSON_VALUES),
                                    "new": draw(JSON_VALUES),
                                }
                            ],
                            "occurred_at": draw(st.sampled_from(moments)),
                        }
                    )
        streams.append({"workspace_id": workspace_id, "last_seq": seq})
    world.rows = {
        tables.User: users,
        tables.Workspace: workspaces,
        tables.EventStream: streams,
        tables.Membership: memberships,
        tables.Board: world.boards,
        tables.Card: world.cards,
        tables.Comment: world.comments,
        tables.Event: events,
    }
    return world


async def store(url: str, world: World) -> None:
    engine = make_engine(url, pool=False)
    try:
        async with engine.begin() as conn:
            for table in reversed(tables.Base.metadata.sorted_tables):
                await conn.execute(table.delete())
            for model, rows in world.rows.items():
                if rows:
                    await conn.execute(insert(model.__table__), rows)  # type: ignore[arg-type]
    finally:
        await engine.dispose()


class Documents:
    """Draws query documents (and their variables) over the contract's reads."""

    def __init__(self, draw: st.DrawFn, world: World) -> None:
        self.draw = draw
        self.world = world
        self.variables: dict[str, Any] = {}
        self.definitions: list[str] = []
        self.fragments: list[str] = []
        self.aliases = 0

    def document(self) -> tuple[str, dict[str, Any]]:
        roots = [self.root() for _ in range(self.draw(st.integers(1, 2)))]
        head = f"({', '.join(self.definitions)})" if self.definitions else ""
        body = f"query Q{head} {{ {' '.join(roots)} }}"
        return " ".join([body, *self.fragments]), self.variables

    def _id(self, of: list[str]) -> str:
        return self.draw(st.sampled_from([*of, "not-an-id", str(uuid.uuid4())]))

    def _cursor(self, kind: str) -> str | None:
        world = self.world
        choices: list[str | None] = [None, None, None, None, "bm90LWEtY3Vyc29y"]
        if kind == "board" and world.boards:
            choices.append(BOARDS.cursor_of(_Row(self.draw(st.sampled_from(world.boards)))))
        if kind == "card" and world.cards:
            choices.append(CARDS.cursor_of(_Row(self.draw(st.sampled_from(world.cards)))))
        if kind == "comment" and world.comments:
            choices.append(COMMENTS.cursor_of(_Row(self.draw(st.sampled_from(world.comments)))))
        if kind == "event":
            choices.append(event_cursor(self.draw(st.integers(0, 3))))
        return self.draw(st.sampled_from(choices))

    def _args(self, kind: str, **fixed: str) -> str:
        parts = [f"{name}: {value}" for name, value in fixed.items()]
        first = self.draw(st.sampled_from([None, None, None, 1, 2, 3, 100, 0]))
        if first is not None:
            parts.append(f"first: {first}")
        after = self._cursor(kind)
        if after is not None:
            parts.append(f'after: "{after}"')
        return f"({', '.join(parts)})" if parts else ""

    def _switch(self) -> str:
        if not self.draw(st.integers(0, 5)) == 0:
            return ""
        name = f"v{len(self.definitions)}"
        if self.draw(st.booleans()):
            self.definitions.append(f"${name}: Boolean!")
            self.variables[name] = self.draw(st.booleans())
        else:  # nullable with a default: an explicit null is an error, an absent value not
            self.definitions.append(f"${name}: Boolean = false")
            value = self.draw(st.sampled_from([True, False, None, "absent"]))
            if value != "absent":
                self.variables[name] = value
        return f" @{self.draw(st.sampled_from(['include', 'skip']))}(if: ${name})"

    def root(self) -> str:
        world = self.world
        kind = self.draw(
            st.sampled_from(["me", "workspaces", "workspace", "board", "card", "events", "history"])
        )
        if kind == "me":
            return f"me {self.user()}"
        if kind == "workspaces":
            return f"workspaces{self._args('workspace')} {self.connection('Workspace')}"
        if kind == "workspace":
            name = f"w{len(self.definitions)}"
            self.definitions.append(f"${name}: ID!")
            self.variables[name] = self._id([str(w) for w in world.workspaces])
            return f"workspace(id: ${name}){self._switch()} {self.obj('Workspace')}"
        if kind == "board":
            board = self._id([str(b["id"]) for b in world.boards])
            return f'board(id: "{board}") {self.obj("Board")}'
        if kind == "card":
            card = self._id([str(c["id"]) for c in world.cards])
            return f'card(id: "{card}") {self.obj("Card")}'
        if kind == "events":
            ws = '"' + self._id([str(w) for w in world.workspaces]) + '"'
            return f"events{self._args('event', workspaceId=ws)} {self.connection('Event')}"
        card = '"' + self._id([str(c["id"]) for c in world.cards]) + '"'
        args = self._args("event", cardId=card)
        return f"cardHistory{args} {self.connection('Event')}"

    def pick(self, fields: list[str], depth: int) -> str:
        chosen = self.draw(st.lists(st.sampled_from(fields), min_size=1, max_size=3))
        parts = []
        for name in chosen:
            self.aliases += 1
            alias = self.draw(st.sampled_from(["", "", f"a{self.aliases}: "]))
            parts.append(f"{alias}{self.expand(name, depth, self._switch())}")
        if self.draw(st.integers(0, 4)) == 0:
            parts.append("__typename")
        return "{ " + " ".join(parts) + " }"

    def expand(self, name: str, depth: int, directive: str) -> str:
        """The field `name` ("field" or "field:Type") with its directive and selection."""
        kind, _, rest = name.partition(":")
        if not rest:
            return f"{name}{directive}"
        if depth >= 2:
            leaf = "pageInfo { hasNextPage }" if rest in LISTS else "__typename"
            return f"{kind}{directive} {{ {leaf} }}"
        if rest in LISTS:
            child, cursor = LISTS[rest]
            return f"{kind}{self._args(cursor)}{directive} {self.connection(child, depth + 1)}"
        if rest == "[Membership]":
            return f"{kind}{directive} {self.obj('Membership', depth + 1)}"
        return f"{kind}{directive} {self.obj(rest, depth + 1)}"

    def obj(self, type_name: str, depth: int = 0) -> str:
        selection = self.pick(FIELDS[type_name], depth)
        roll = self.draw(st.integers(0, 5))
        if roll == 0:
            name = f"F{len(self.fragments)}"
            self.fragments.append(f"fragment {name} on {type_name} {selection}")
            spreads = " ".join([f"...{name}"] * self.draw(st.integers(1, 2)))
            return "{ " + spreads + " }"
        if roll == 1:
            return "{ ... on " + type_name + " " + selection + " }"
        return selection

    def user(self) -> str:
        return self.obj("User")

    def connection(self, node: str, depth: int = 0) -> str:
        parts = []
        for part in self.draw(
            st.lists(st.sampled_from(["nodes", "edges", "pageInfo"]), min_size=1)
        ):
            if part == "nodes":
                parts.append(f"nodes {self.obj(node, depth)}")
            elif part == "edges":
                parts.append("edges { cursor node " + self.obj(node, depth) + " }")
            else:
                parts.append("pageInfo { hasNextPage endCursor }")
        return "{ " + " ".join(parts) + " }"


class _Row:
    def __init__(self, values: dict[str, Any]) -> None:
        self.__dict__.update(values)


LISTS = {
    "Boards": ("Board", "board"),
    "Cards": ("Card", "card"),
    "Comments": ("Comment", "comment"),
}
FIELDS: dict[str, list[str]] = {
    "User": ["id", "email", "displayName"],
    "Workspace": ["id", "version", "name", "members:[Membership]", "boards:Boards"],
    "Membership": ["role", "user:User"],
    "Board": ["id", "version", "name", "workspace:Workspace", "cards:Cards"],
    "Card": [
        "id",
        "version",
        "title",
        "description",
        "status",
        "position",
        "dueDate",
        "assignee:User",
        "board:Board",
        "comments:Comments",
    ],
    "Comment": ["id", "version", "body", "createdAt", "author:User", "card:Card"],
    "Event": [
        "seq",
        "cursor",
        "type",
        "workspaceId",
        "entityType",
        "entityId",
        "version",
        "occurredAt",
        "actor:User",
        "changes:FieldChange",
    ],
    "FieldChange": ["field", "oldValue", "newValue"],
}


@st.composite
def documents(draw: st.DrawFn, world: World) -> tuple[str, dict[str, Any]]:
    return Documents(draw, world).document()
