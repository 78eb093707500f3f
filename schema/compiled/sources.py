"""Where each field's value comes from on the compiled read path, one entry per schema field.

Each source produces a whole column: the field's values for a batch of parent rows at
once, so a relation costs one statement per field of the plan, never one per row. Values
are exactly what the Strawberry resolvers in schema/ return after graphql-core serializes
them (ids as strings, versions encoded, enums by name, datetimes in isoformat), and the
roots call the very resolvers the general path calls. Anything unusual (a row a non-null
field cannot find, a value the general path would refuse) raises `Bail`, and the general
executor answers the request instead.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from models.versioning import encode_version
from resolvers import board, card, event, workspace
from resolvers.access import ROLE_NAMES
from resolvers.card import STATUSES
from resolvers.context import Context
from resolvers.event import event_cursor
from resolvers.lists import BOARDS, CARDS, COMMENTS, ChildList
from resolvers.pagination import Page

if TYPE_CHECKING:
    from schema.compiled.execute import Run
    from schema.compiled.plan import PlannedField

INT_MIN, INT_MAX = -(2**31), 2**31 - 1


class Bail(Exception):
    """This request needs the general executor (an error, a null it must report, …)."""


class Source(Protocol):
    async def column(self, field: PlannedField, rows: list[Any], run: Run) -> list[Any]: ...


@dataclass(frozen=True)
class Scalar:
    """A value computed from the row alone."""

    value: Callable[[Any], Any]

    async def column(self, field: PlannedField, rows: list[Any], run: Run) -> list[Any]:
        value = self.value
        return [value(row) for row in rows]


@dataclass(frozen=True)
class Nested:
    """Objects (or lists of objects, `many`) the row already holds."""

    value: Callable[[Any], Any]
    many: bool = False

    async def column(self, field: PlannedField, rows: list[Any], run: Run) -> list[Any]:
        value = self.value
        return await run.objects(field, [value(row) for row in rows], self.many)


@dataclass(frozen=True)
class Load:
    """One related row by key, loaded for the whole batch in one statement."""

    table: str
    key: Callable[[Any], Any]

    async def column(self, field: PlannedField, rows: list[Any], run: Run) -> list[Any]:
        keys = [self.key(row) for row in rows]
        found = await run.load(self.table, {k for k in keys if k is not None})
        return await run.objects(field, [None if k is None else found.get(k) for k in keys])


@dataclass(frozen=True)
class Members:
    """A workspace's memberships in the order they joined."""

    async def column(self, field: PlannedField, rows: list[Any], run: Run) -> list[Any]:
        grouped = await run.memberships([row.id for row in rows])
        return await run.objects(field, [grouped.get(row.id, []) for row in rows], many=True)


@dataclass(frozen=True)
class Paged:
    """A connection under each parent row, paged as `lists` describes it."""

    children: ChildList

    async def column(self, field: PlannedField, rows: list[Any], run: Run) -> list[Any]:
        arguments = field.arguments(run.variables)
        size, after = self.children.request(arguments.get("first"), arguments.get("after"))
        pages = await run.pages(self.children, [row.id for row in rows], size, after)
        connections = [
            Connection(pages.get(row.id, [])[:size], len(pages.get(row.id, [])) > size, self)
            for row in rows
        ]
        return await run.objects(field, connections)

    def cursor(self, connection: Connection, index: int) -> str:
        return self.children.cursor_of(connection.items[index])


@dataclass(frozen=True)
class Root:
    """A Query field: the general path's own resolver, then the plan for what it returns."""

    resolve: Callable[[Context, dict[str, Any]], Awaitable[Any]]

    async def column(self, field: PlannedField, rows: list[Any], run: Run) -> list[Any]:
        value = await run.root(field, self.resolve)
        if isinstance(value, Page):
            value = Connection(value.items, value.has_next, PageCursors(value.cursors))
        return await run.objects(field, [value])


@dataclass(frozen=True)
class PageCursors:
    """Cursors a resolver already computed for its page."""

    cursors: list[str]

    def cursor(self, connection: Connection, index: int) -> str:
        return self.cursors[index]


class Cursors(Protocol):
    def cursor(self, connection: Connection, index: int) -> str: ...


@dataclass(frozen=True)
class Connection:
    """A page: its items, whether more follow, and how to spell a cursor (only if asked)."""

    items: list[Any]
    has_next: bool
    cursors: Cursors

    def end_cursor(self) -> str | None:
        return self.cursors.cursor(self, len(self.items) - 1) if self.items else None

    def edges(self) -> list[Edge]:
        return [Edge(self, index) for index in range(len(self.items))]


@dataclass(frozen=True)
class Edge:
    connection: Connection
    index: int


def _enum(names: frozenset[str] | tuple[str, ...]) -> Callable[[str], str]:
    def serialize(value: str) -> str:
        if value not in names:
            raise Bail(f"not an enum value: {value!r}")
        return value

    return serialize


def _int(value: Any) -> int:
    number = int(value)
    if not INT_MIN <= number <= INT_MAX:
        raise Bail("Int out of range")
    return number


def _id(row: Any) -> str:
    return str(row.id)


def _version(row: Any) -> str:
    return encode_version(row.version)


def _when(value: Any) -> str | None:
    return None if value is None else value.isoformat()


_role = _enum(ROLE_NAMES)
_status = _enum(STATUSES)


async def _me(ctx: Context, arguments: dict[str, Any]) -> Any:
    return await ctx.loaders.user_by_id.load(ctx.user_id())


ROOTS: dict[str, Source] = {
    "me": Root(_me),
    "workspaces": Root(lambda c, a: workspace.my_workspaces(c, a["first"], a["after"])),
    "workspace": Root(lambda c, a: workspace.workspace(c, a["id"])),
    "board": Root(lambda c, a: board.board(c, a["id"])),
    "card": Root(lambda c, a: card.card(c, a["id"])),
    "events": Root(lambda c, a: event.events(c, a["workspaceId"], a["after"], a["first"])),
    "cardHistory": Root(lambda c, a: event.card_history(c, a["cardId"], a["first"], a["after"])),
}

VERSIONED: dict[str, Source] = {"id": Scalar(_id), "version": Scalar(_version)}

CONNECTION: dict[str, Source] = {
    "nodes": Nested(lambda c: c.items, many=True),
    "edges": Nested(lambda c: c.edges(), many=True),
    "pageInfo": Nested(lambda c: c),
}
EDGE: dict[str, Source] = {
    "cursor": Scalar(lambda e: e.connection.cursors.cursor(e.connection, e.index)),
    "node": Nested(lambda e: e.connection.items[e.index]),
}

FIELDS: dict[str, dict[str, Source]] = {
    "Query": ROOTS,
    "User": {
        "id": Scalar(_id),
        "email": Scalar(lambda u: u.email),
        "displayName": Scalar(lambda u: u.display_name),
    },
    "Workspace": {
        **VERSIONED,
        "name": Scalar(lambda w: w.name),
        "members": Members(),
        "boards": Paged(BOARDS),
    },
    "Membership": {
        "user": Load("users", lambda m: m.user_id),
        "role": Scalar(lambda m: _role(m.role)),
    },
    "Board": {
        **VERSIONED,
        "name": Scalar(lambda b: b.name),
        "workspace": Load("workspaces", lambda b: b.workspace_id),
        "cards": Paged(CARDS),
    },
    "Card": {
        **VERSIONED,
        "title": Scalar(lambda c: c.title),
        "description": Scalar(lambda c: c.description),
        "status": Scalar(lambda c: _status(c.status)),
        "position": Scalar(lambda c: float(c.position)),
        "dueDate": Scalar(lambda c: _when(c.due_date)),
        "assignee": Load("users", lambda c: c.assignee_id),
        "board": Load("boards", lambda c: c.board_id),
        "comments": Paged(COMMENTS),
    },
    "Comment": {
        **VERSIONED,
        "body": Scalar(lambda c: c.body),
        "author": Load("users", lambda c: c.author_id),
        "card": Load("cards", lambda c: c.card_id),
        "createdAt": Scalar(lambda c: _when(c.created_at)),
    },
    "Event": {
        "seq": Scalar(lambda e: _int(e.seq)),
        "cursor": Scalar(lambda e: event_cursor(e.seq)),
        "type": Scalar(lambda e: str(e.type)),
        "workspaceId": Scalar(lambda e: str(e.workspace_id)),
        "entityType": Scalar(lambda e: str(e.entity_type)),
        "entityId": Scalar(lambda e: str(e.entity_id)),
        "version": Scalar(lambda e: None if e.entity_version is None else str(e.entity_version)),
        "actor": Load("users", lambda e: e.actor_id),
        "changes": Nested(lambda e: e.changes, many=True),
        "occurredAt": Scalar(lambda e: _when(e.occurred_at)),
    },
    "FieldChange": {
        "field": Scalar(lambda c: c["field"]),
        "oldValue": Scalar(lambda c: c.get("old")),
        "newValue": Scalar(lambda c: c.get("new")),
    },
    "PageInfo": {
        "hasNextPage": Scalar(lambda c: c.has_next),
        "endCursor": Scalar(lambda c: c.end_cursor()),
    },
}
for _node in ("Workspace", "Board", "Card", "Comment", "Event"):
    FIELDS[f"{_node}Connection"] = CONNECTION
    FIELDS[f"{_node}Edge"] = EDGE


def source_for(type_name: str, field_name: str) -> Source:
    """How the compiled path produces `type_name.field_name`; NotCompilable if it cannot."""
    from schema.compiled.plan import NotCompilable

    if field_name == "__typename":
        return Scalar(lambda _row: type_name)
    try:
        return FIELDS[type_name][field_name]
    except KeyError:
        raise NotCompilable(f"{type_name}.{field_name}") from None
