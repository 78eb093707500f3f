"""A plan's reads as ONE PostgreSQL statement: nested subqueries that build the whole tree.

The compiled path (execute.py) reads one batch per planned field: a board with its cards,
their assignees and comments is four or five statements, each a loopback round trip and a
pass through the driver. On PostgreSQL the same rows can come back in one statement:
every row a `json_build_array` of its columns followed by its relations, a paged list a
`json_agg` over a LIMITed subquery, a related row a scalar subquery, the root fields
(with their membership check) in one `SELECT json_build_array(…)`.

The statement only *fetches*: its rows become plain rows again (the same column values,
types and attribute names `rows=True` reads give, see `_Table`) and `SingleRun` hands them
to the unchanged `Run`, so every value is formatted, ordered, paged and checked exactly as
on the multi-statement path. Rows are placed where `Run` asks for them (pages by list,
size and `after`; related rows by table and id; memberships by workspace); a request for
anything the statement did not fetch raises `Bail`, so nothing is ever answered from a
guess. A plan the statement cannot express (another root field, events, an argument the
general path refuses) is left to the multi-statement path (`build` returns None).

The statement mirrors the repositories' reads: pages ordered by the list's sort key and
id, cut after `size + 1` rows per parent, the keyset condition spelled as `after_key`
spells it; memberships in joining order; a workspace, board or card only when the caller
has a role in its workspace (`resolvers.access.can_read`). Timestamps travel as exact
microseconds since the epoch, ids as their text, floats as PostgreSQL's shortest exact
spelling, so the rows decoded here equal the driver's rows.
"""

from __future__ import annotations

import re
import uuid
from collections import namedtuple
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from graphql.execution.values import VariableValues
from prometheus_client import Counter
from sqlalchemy import Float, Uuid
from sqlalchemy.ext.asyncio import AsyncSession

from models.base import Base, UTCDateTime
from models.paging import table_of
from models.tables import Board, Card, Comment, Membership, User, Workspace
from resolvers import validation
from resolvers.access import ROLE_NAMES
from resolvers.context import Context
from resolvers.lists import BOARDS, CARDS, COMMENTS, ChildList
from schema.compiled.execute import Run
from schema.compiled.plan import PlannedField, Selection
from schema.compiled.sources import Bail, Scalar

SINGLE_STATEMENT = Counter(
    "concord_compiled_single_statement_total",
    "Compiled reads fetched with one statement (`single`) or one per planned field (`multi`).",
    ["outcome"],
)

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class Decline(Exception):
    """The plan needs something the single statement does not express."""


def _timestamp(micros: int) -> datetime:
    # UTCDateTime's result: the naive UTC value, made aware.
    return EPOCH + timedelta(microseconds=micros)


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


@dataclass
class _Table:
    """A table's columns in the statement, and its rows decoded like the driver's.

    A row carries only the columns the plan reads (a field's own column, foreign keys of
    the relations it follows, the sort key where a cursor is asked for) and always `id`.
    Reading any other attribute raises AttributeError, which abandons the attempt: the
    general path answers, never a row with a value it does not have. Ids stay the text
    PostgreSQL spells them in, which is `str()` of the driver's UUID: ids only ever reach
    the answer (and cursors) through `str()`, and serve as keys among themselves.
    """

    name: str
    columns: tuple[str, ...]
    convert: dict[str, Callable[[Any], Any]]
    casts: dict[str, str]
    rows: dict[frozenset[str], tuple[tuple[str, ...], Callable[..., Any]]] = field(
        default_factory=dict
    )

    @classmethod
    def of(cls, model: type[Base]) -> _Table:
        table = table_of(model)
        convert: dict[str, Callable[[Any], Any]] = {}
        casts: dict[str, str] = {}
        for column in table.c:
            if isinstance(column.type, Uuid):
                casts[column.key] = "uuid"
            elif isinstance(column.type, UTCDateTime):
                convert[column.key] = _timestamp
                casts[column.key] = "timestamp"
            elif isinstance(column.type, Float):
                convert[column.key] = float
                casts[column.key] = "float8"
            # text and integers: JSON gives them as the driver does
        return cls(table.name, tuple(column.key for column in table.c), convert, casts)

    def column_of(self, field_name: str) -> str:
        column = _snake(field_name)
        if column not in self.columns:
            raise Decline(f"{self.name} has no column for {field_name}")
        return column

    def shape(self, needed: set[str]) -> tuple[tuple[str, ...], Callable[..., Any]]:
        """The columns (in table order) and the row class for a set of needed columns."""
        key = frozenset(needed)
        if key not in self.rows:
            columns = tuple(c for c in self.columns if c in key)
            row = namedtuple(f"{self.name}_row", columns)  # type: ignore[misc]
            self.rows[key] = (columns, row)
        return self.rows[key]

    def merge(self, old: Any, new: Any) -> Any:
        """One row read twice with different columns (a user as author and as member):
        the row with both sets of columns. Both come from one statement's snapshot."""
        if old is None or new is None or type(old) is type(new):
            return new
        values = {**old._asdict(), **new._asdict()}
        _, make = self.shape(set(values))
        return make(**values)

    def merge_lists(self, old: list[Any] | None, new: list[Any]) -> list[Any]:
        if old is None or len(old) != len(new):
            return new
        return [self.merge(a, b) for a, b in zip(old, new, strict=True)]

    def select(self, alias: str, columns: tuple[str, ...]) -> list[str]:
        out = []
        for name in columns:
            if self.convert.get(name) is _timestamp:
                out.append(f"(extract(epoch from {alias}.{name}) * 1000000)::bigint")
            else:
                out.append(f"{alias}.{name}")
        return out

    def cast(self, name: str) -> str:
        if name not in self.casts:
            raise Decline(f"no cast for {self.name}.{name}")
        return self.casts[name]


TABLES = {
    type_name: _Table.of(model)
    for type_name, model in {
        "Workspace": Workspace,
        "Membership": Membership,
        "Board": Board,
        "Card": Card,
        "Comment": Comment,
        "User": User,
    }.items()
}

# To-one relations: (type, field) -> (the related type, the foreign key column).
LOADS: dict[tuple[str, str], tuple[str, str]] = {
    ("Membership", "user"): ("User", "user_id"),
    ("Board", "workspace"): ("Workspace", "workspace_id"),
    ("Card", "assignee"): ("User", "assignee_id"),
    ("Card", "board"): ("Board", "board_id"),
    ("Comment", "author"): ("User", "author_id"),
    ("Comment", "card"): ("Card", "card_id"),
}
# `Run.load` names tables as execute.TABLES does.
LOAD_TABLE = {"User": "users", "Workspace": "workspaces", "Board": "boards", "Card": "cards"}


@dataclass(frozen=True)
class _Paged:
    child: str
    parent_key: str
    order: tuple[str, str]
    children: ChildList


# Paged lists: (type, field) -> how the repository pages them (resolvers.lists).
PAGED: dict[tuple[str, str], _Paged] = {
    ("Workspace", "boards"): _Paged("Board", "workspace_id", ("created_at", "id"), BOARDS),
    ("Board", "cards"): _Paged("Card", "board_id", ("position", "id"), CARDS),
    ("Card", "comments"): _Paged("Comment", "card_id", ("created_at", "id"), COMMENTS),
}

# Root fields that read one row the caller may see only with a role in its workspace.
ROOTS: dict[str, tuple[str, str]] = {
    "workspace": ("Workspace", "id"),
    "board": ("Board", "workspace_id"),
    "card": ("Card", "workspace_id"),
}


@dataclass
class Fetched:
    """What the statement read, keyed as `Run` asks for it."""

    roots: dict[str, Any] = field(default_factory=dict)
    rows: dict[str, dict[Any, Any]] = field(default_factory=dict)
    pages: dict[tuple[Any, ...], dict[Any, list[Any]]] = field(default_factory=dict)
    members: dict[Any, list[Any]] = field(default_factory=dict)


# Decoders: each takes the parent row (or None at the root), the JSON value, and the store.
Decoder = Callable[[Any, Any, Fetched], None]


class _Builder:
    """Writes the statement for one plan and request, and the decoders of its result."""

    def __init__(self, ctx: Context, variables: VariableValues) -> None:
        self.ctx = ctx
        self.variables = variables
        self.params: list[Any] = []
        self.aliases = 0

    def param(self, value: Any, cast: str) -> str:
        self.params.append(value)
        return f"${len(self.params)}::{cast}"

    def alias(self) -> str:
        self.aliases += 1
        return f"t{self.aliases}"

    def statement(self, plan: Selection) -> tuple[str, list[Decoder]]:
        parts: list[str] = []
        decoders: list[Decoder] = []
        for planned in plan.fields:
            if isinstance(planned.source, Scalar):  # __typename
                continue
            if planned.name not in ROOTS or planned.child is None:
                raise Decline(f"root field {planned.name}")
            sql, decode = self.root(planned)
            parts.append(sql)
            decoders.append(decode)
        return f"SELECT json_build_array({', '.join(parts)})::text", decoders

    def root(self, planned: PlannedField) -> tuple[str, Decoder]:
        type_name, workspace_column = ROOTS[planned.name]
        # What the resolvers check first; their errors are the general path's to report.
        viewer = self.ctx.user_id()
        row_id = validation.entity_id(planned.arguments(self.variables)["id"], "id")
        table = TABLES[type_name]
        t = self.alias()
        row_sql, decode_row, _ = self.row(type_name, t, [planned.child] if planned.child else [])
        readable = (
            f"EXISTS (SELECT 1 FROM memberships AS m{t} WHERE m{t}.workspace_id = "
            f"{t}.{workspace_column} AND m{t}.user_id = {self.param(viewer, 'uuid')} "
            f"AND m{t}.role = ANY({self.param(sorted(ROLE_NAMES), 'text[]')}))"
        )
        sql = (
            f"(SELECT {row_sql} FROM {table.name} AS {t} "
            f"WHERE {t}.id = {self.param(row_id, 'uuid')} AND {readable})"
        )
        key = planned.key

        def decode(parent: Any, value: Any, fetched: Fetched) -> None:
            fetched.roots[key] = None if value is None else decode_row(value, fetched)

        return sql, decode

    def row(
        self,
        type_name: str,
        alias: str,
        selections: list[Selection],
        also: tuple[str, ...] = (),
    ) -> tuple[str, Callable[[Any, Fetched], Any], tuple[str, ...]]:
        """`json_build_array(columns…, relations…)` of the row `alias`, its decoder, and the
        columns it reads (of `alias`, relations aside)."""
        table = TABLES[type_name]
        needed = {"id", *also}
        relations: dict[tuple[Any, ...], _Relation] = {}
        for selection in selections:
            for planned in selection.fields:
                if planned.name == "__typename":
                    continue
                if isinstance(planned.source, Scalar):
                    needed.add(table.column_of(planned.name))
                else:
                    self.relation(type_name, planned, relations)
        for key in relations:
            if key[0] == "load":
                needed.add(LOADS[(type_name, key[1])][1])
        columns, make = table.shape(needed)
        parts = table.select(alias, columns)
        decoders: list[Decoder] = []
        for key, relation in relations.items():
            sql, decode = getattr(self, key[0])(type_name, alias, key, relation)
            parts.append(sql)
            decoders.append(decode)
        width = len(columns)
        steps = [(i, table.convert[c]) for i, c in enumerate(columns) if c in table.convert]

        def decode_row(value: Any, fetched: Fetched) -> Any:
            for i, convert in steps:
                if value[i] is not None:
                    value[i] = convert(value[i])
            row = make(*value[:width])
            for decode, related in zip(decoders, value[width:], strict=True):
                decode(row, related, fetched)
            return row

        return f"json_build_array({', '.join(parts)})", decode_row, columns

    def relation(
        self,
        type_name: str,
        planned: PlannedField,
        relations: dict[tuple[Any, ...], _Relation],
    ) -> None:
        """Note the relation `planned` needs under rows of `type_name` (merged by key)."""
        where = (type_name, planned.name)
        if where in LOADS:
            relation = relations.setdefault(("load", planned.name), _Relation())
            if planned.child is not None:
                relation.children.append(planned.child)
        elif where in PAGED:
            arguments = planned.arguments(self.variables)
            try:
                size, after = PAGED[where].children.request(
                    arguments.get("first"), arguments.get("after")
                )
            except Exception:
                # A bad page size or cursor: an error only if some row needs the list, and
                # then `Run` asks for a page that was not fetched and bails.
                return
            relation = relations.setdefault(("paged", planned.name, size, after), _Relation())
            relation.children.extend(_nodes(planned.child))
            relation.cursors = relation.cursors or _cursors(planned.child)
        elif where == ("Workspace", "members"):
            relation = relations.setdefault(("members",), _Relation())
            if planned.child is not None:
                relation.children.append(planned.child)
        else:
            raise Decline(f"{type_name}.{planned.name}")

    def load(
        self, type_name: str, parent: str, key: tuple[Any, ...], relation: _Relation
    ) -> tuple[str, Decoder]:
        related, column = LOADS[(type_name, key[1])]
        t = self.alias()
        row_sql, decode_row, _ = self.row(related, t, relation.children)
        sql = (
            f"(SELECT {row_sql} FROM {TABLES[related].name} AS {t} "
            f"WHERE {t}.id = {parent}.{column})"
        )
        table, merge = LOAD_TABLE[related], TABLES[related].merge
        missing = object()

        def decode(row: Any, value: Any, fetched: Fetched) -> None:
            target = getattr(row, column)
            if target is not None:
                found = None if value is None else decode_row(value, fetched)
                known = fetched.rows.setdefault(table, {})
                old = known.get(target, missing)
                known[target] = found if old is missing else merge(old, found)

        return sql, decode

    def paged(
        self, type_name: str, parent: str, key: tuple[Any, ...], relation: _Relation
    ) -> tuple[str, Decoder]:
        _, name, size, after = key
        spec = PAGED[(type_name, name)]
        table = TABLES[spec.child]
        t = self.alias()
        first, tie = spec.order
        conditions = [f"{t}i.{spec.parent_key} = {parent}.id"]
        if after is not None:
            # models.paging.after_key, spelled out the same way.
            values = [
                self.param(_bind(after[0]), table.cast(first)),
                self.param(after[1], table.cast(tie)),
            ]
            conditions.append(
                f"({t}i.{first} > {values[0]} OR ({t}i.{first} = {values[0]} "
                f"AND {t}i.{tie} > {values[1]}))"
            )
        # The sort key goes into the rows only when a cursor is asked for.
        also = spec.order if relation.cursors else ()
        row_sql, decode_row, columns = self.row(spec.child, t, relation.children, also)
        selected = ", ".join(f"{t}i.{c}" for c in dict.fromkeys([*columns, first, tie]))
        inner = (
            f"SELECT {selected} FROM {table.name} AS {t}i WHERE {' AND '.join(conditions)} "
            f"ORDER BY {t}i.{first}, {t}i.{tie} LIMIT {self.param(size + 1, 'int8')}"
        )
        sql = (
            f"(SELECT coalesce(json_agg({row_sql} ORDER BY {t}.{first}, {t}.{tie}), '[]') "
            f"FROM ({inner}) AS {t})"
        )
        store = (spec.children.cursor, size, after)

        merge = table.merge_lists

        def decode(row: Any, value: Any, fetched: Fetched) -> None:
            pages = fetched.pages.setdefault(store, {})
            found = [decode_row(item, fetched) for item in value]
            pages[row.id] = merge(pages.get(row.id), found)

        return sql, decode

    def members(
        self, type_name: str, parent: str, key: tuple[Any, ...], relation: _Relation
    ) -> tuple[str, Decoder]:
        t = self.alias()
        row_sql, decode_row, _ = self.row("Membership", t, relation.children)
        sql = (
            f"(SELECT coalesce(json_agg({row_sql} ORDER BY {t}.created_at, {t}.id), '[]') "
            f"FROM memberships AS {t} WHERE {t}.workspace_id = {parent}.id)"
        )

        merge = TABLES["Membership"].merge_lists

        def decode(row: Any, value: Any, fetched: Fetched) -> None:
            found = [decode_row(item, fetched) for item in value]
            fetched.members[row.id] = merge(fetched.members.get(row.id), found)

        return sql, decode


@dataclass
class _Relation:
    """What rows under a relation need: the selections on them, and cursors or not."""

    children: list[Selection] = field(default_factory=list)
    cursors: bool = False


def _cursors(connection: Selection | None) -> bool:
    """Whether a connection's selection spells a cursor (`edges { cursor }`, `endCursor`)."""
    for planned in connection.fields if connection is not None else ():
        if planned.child is None:
            continue
        if planned.name == "edges" and any(f.name == "cursor" for f in planned.child.fields):
            return True
        if planned.name == "pageInfo" and any(f.name == "endCursor" for f in planned.child.fields):
            return True
    return False


def _bind(value: Any) -> Any:
    """A cursor's sort value as the column's type binds it (UTCDateTime: naive UTC)."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise Decline("naive datetime in a cursor")
        return value.astimezone(UTC).replace(tzinfo=None)
    return value


def _nodes(connection: Selection | None) -> list[Selection]:
    """The node selections of a connection's selection (`nodes`, `edges { node }`)."""
    found: list[Selection] = []
    for planned in connection.fields if connection is not None else ():
        if planned.name == "nodes" and planned.child is not None:
            found.append(planned.child)
        elif planned.name == "edges" and planned.child is not None:
            found.extend(
                edge.child
                for edge in planned.child.fields
                if edge.name == "node" and edge.child is not None
            )
    return found


@dataclass(frozen=True)
class Statement:
    """The one statement of a request, and how its answer becomes `Fetched`."""

    sql: str
    params: tuple[Any, ...]
    decoders: list[Decoder]

    async def fetch(self, session: AsyncSession) -> Fetched:
        connection = await session.connection()
        result = await connection.exec_driver_sql(self.sql, self.params)
        values = orjson.loads(result.scalar_one())
        fetched = Fetched()
        for decode, value in zip(self.decoders, values, strict=True):
            decode(None, value, fetched)
        return fetched


def build(plan: Selection, ctx: Context, variables: VariableValues) -> Statement | None:
    """The plan's reads as one statement, or None when the plan needs the other path."""
    builder = _Builder(ctx, variables)
    try:
        sql, decoders = builder.statement(plan)
    except Exception:  # Decline, or an error the general path will report itself
        return None
    return Statement(sql, tuple(builder.params), decoders)


class SingleRun(Run):
    """`Run` over rows one statement already read: every read is a look-up, or `Bail`."""

    def __init__(
        self, ctx: Context, session: AsyncSession, variables: VariableValues, fetched: Fetched
    ) -> None:
        super().__init__(ctx, session, variables)
        self.fetched = fetched
        for table, rows in fetched.rows.items():
            self._rows[table].update(rows)

    async def root(self, field: PlannedField, resolve: Callable[..., Any]) -> Any:
        try:
            return self.fetched.roots[field.key]
        except KeyError:
            raise Bail(f"root {field.key} not fetched") from None

    async def load(self, table: str, ids: set[Any]) -> dict[Any, Any]:
        known = self._rows[table]
        if any(i not in known for i in ids):
            raise Bail(f"{table} row not fetched")
        return known

    async def memberships(self, workspace_ids: list[uuid.UUID]) -> dict[uuid.UUID, list[Any]]:
        members = self.fetched.members
        if any(i not in members for i in workspace_ids):
            raise Bail("memberships not fetched")
        return members

    async def pages(
        self, children: ChildList, parents: list[uuid.UUID], size: int, after: Any
    ) -> dict[uuid.UUID, list[Any]]:
        pages = self.fetched.pages.get((children.cursor, size, after))
        if pages is None or any(i not in pages for i in parents):
            raise Bail("page not fetched")
        return pages
