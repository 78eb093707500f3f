"""A plan's reads as ONE PostgreSQL statement: one CTE per planned level, one JSON array each.

The compiled path (execute.py) reads one batch per planned field: a workspace with its
boards, their cards, assignees, comments and authors is six statements, each a loopback
round trip and a pass through the driver. On PostgreSQL the same batches fit in one
statement: the root field (with its membership check) is a CTE, and every relation a CTE
that reads its rows for all rows of its parent CTE at once (`… = ANY(ARRAY(SELECT id
FROM parent))`), as the repositories do (`models.paging.page_per_parent` for pages: ranked per
parent, then cut after `size + 1`; memberships in joining order; related rows by id).
So each row is read and sent once, however many comments one author wrote. The statement
returns one `json_agg` per CTE; each becomes plain rows again (`_Table`).

The statement only *fetches*: `SingleRun` hands its rows to the unchanged `Run`, so every
value is formatted, ordered, paged and checked exactly as on the multi-statement path.
Rows are placed where `Run` asks for them (pages by list, size and `after`; related rows
by table and id; memberships by workspace); a request for anything the statement did not
fetch raises `Bail`, and the general path answers. A plan the statement cannot express
(another root field, events, …) is left to the multi-statement path (`build` returns None).

Values: timestamps travel as exact microseconds since the epoch, floats as PostgreSQL's
shortest exact spelling, ids as their text (see `_Table`), so the rows decoded here give
the answers the driver's rows give.
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


# A level's rows, placed into `Fetched` given the rows of its parent level.
Attach = Callable[[list[Any], list[Any], Fetched], None]


@dataclass
class _Level:
    """One CTE of the statement: a batch of rows, like one statement of the other path."""

    parent: int
    decode: Callable[[list[Any]], list[Any]]
    attach: Attach


class _Builder:
    """Writes the statement for one plan and request, and how to place its rows.

    Each planned relation becomes one CTE that reads its rows for *all* rows of its parent
    level at once (`… = ANY(ARRAY(SELECT id FROM parent))`), exactly as the multi-statement path
    reads them, so each row is read and sent once (an author of many comments too).
    The statement returns one JSON array per level.
    """

    def __init__(self, ctx: Context, variables: VariableValues) -> None:
        self.ctx = ctx
        self.variables = variables
        self.params: list[Any] = []
        self.ctes: list[str] = []
        self.outputs: list[str] = []
        self.levels: list[_Level] = []

    def param(self, value: Any, cast: str) -> str:
        self.params.append(value)
        return f"${len(self.params)}::{cast}"

    def statement(self, plan: Selection) -> str:
        for planned in plan.fields:
            if isinstance(planned.source, Scalar):  # __typename
                continue
            if planned.name not in ROOTS or planned.child is None:
                raise Decline(f"root field {planned.name}")
            self.root(planned)
        if not self.ctes:
            return "SELECT '[]'"
        return (
            f"WITH {', '.join(self.ctes)} SELECT json_build_array({', '.join(self.outputs)})::text"
        )

    def level(
        self,
        type_name: str,
        parent: int,
        selections: list[Selection],
        also: tuple[str, ...],
        source: Callable[[str, tuple[str, ...]], str],
        order: Callable[[str], str],
        attach: Attach,
    ) -> None:
        """Add the CTE for rows of `type_name` (`source` writes its SELECT, given an alias
        and the columns), then the levels of the relations its selections follow."""
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
        index = len(self.ctes)
        name = f"c{index}"
        self.ctes.append(f"{name} AS ({source('t', columns)})")
        ordered = order(name)
        self.outputs.append(
            f"(SELECT coalesce(json_agg(json_build_array({', '.join(table.select(name, columns))})"
            f"{' ORDER BY ' + ordered if ordered else ''}), '[]') FROM {name})"
        )
        steps = [(i, table.convert[c]) for i, c in enumerate(columns) if c in table.convert]

        def decode(values: list[Any]) -> list[Any]:
            rows = []
            for value in values:
                for i, convert in steps:
                    if value[i] is not None:
                        value[i] = convert(value[i])
                rows.append(make(*value))
            return rows

        self.levels.append(_Level(parent, decode, attach))
        for key, relation in relations.items():
            getattr(self, key[0])(type_name, index, key, relation)

    def root(self, planned: PlannedField) -> None:
        type_name, workspace_column = ROOTS[planned.name]
        # What the resolvers check first; their errors are the general path's to report.
        viewer = self.ctx.user_id()
        row_id = validation.entity_id(planned.arguments(self.variables)["id"], "id")
        table = TABLES[type_name]
        row = self.param(row_id, "uuid")
        user = self.param(viewer, "uuid")
        roles = self.param(sorted(ROLE_NAMES), "text[]")

        def source(t: str, columns: tuple[str, ...]) -> str:
            return (
                f"SELECT {_columns(t, columns)} FROM {table.name} AS {t} WHERE {t}.id = {row} "
                f"AND EXISTS (SELECT 1 FROM memberships AS m WHERE m.workspace_id = "
                f"{t}.{workspace_column} AND m.user_id = {user} AND m.role = ANY({roles}))"
            )

        key = planned.key

        def attach(rows: list[Any], parents: list[Any], fetched: Fetched) -> None:
            fetched.roots[key] = rows[0] if rows else None

        children = [planned.child] if planned.child is not None else []
        self.level(type_name, -1, children, (), source, lambda name: "", attach)

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

    def load(self, type_name: str, parent: int, key: tuple[Any, ...], relation: _Relation) -> None:
        related, column = LOADS[(type_name, key[1])]
        table = TABLES[related]

        def source(t: str, columns: tuple[str, ...]) -> str:
            return (
                f"SELECT {_columns(t, columns)} FROM {table.name} AS {t} "
                f"WHERE {t}.id = {_among(parent, column)}"
            )

        name, merge = LOAD_TABLE[related], table.merge
        missing = object()

        def attach(rows: list[Any], parents: list[Any], fetched: Fetched) -> None:
            found = {row.id: row for row in rows}
            known = fetched.rows.setdefault(name, {})
            for row in parents:
                target = getattr(row, column)
                if target is not None:
                    old = known.get(target, missing)
                    new = found.get(target)
                    known[target] = new if old is missing else merge(old, new)

        self.level(related, parent, relation.children, (), source, lambda name: "", attach)

    def paged(self, type_name: str, parent: int, key: tuple[Any, ...], relation: _Relation) -> None:
        _, field_name, size, after = key
        spec = PAGED[(type_name, field_name)]
        table = TABLES[spec.child]
        first, tie = spec.order
        fk = spec.parent_key
        condition = ""
        if after is not None:
            # models.paging.after_key, spelled out the same way.
            values = [
                self.param(_bind(after[0]), table.cast(first)),
                self.param(after[1], table.cast(tie)),
            ]
            condition = (
                f" AND (t.{first} > {values[0]} OR (t.{first} = {values[0]} "
                f"AND t.{tie} > {values[1]}))"
            )
        limit = self.param(size + 1, "int8")

        # models.paging.page_per_parent: ranked per parent, then cut.
        def source(t: str, columns: tuple[str, ...]) -> str:
            return (
                f"SELECT {_columns('r', columns)}, r.rank FROM (SELECT "
                f"{_columns(t, tuple(dict.fromkeys([*columns, fk])))}, row_number() OVER "
                f"(PARTITION BY {t}.{fk} ORDER BY {t}.{first}, {t}.{tie}) AS rank "
                f"FROM {table.name} AS {t} WHERE {t}.{fk} = {_among(parent, 'id')}"
                f"{condition}) AS r WHERE r.rank <= {limit}"
            )

        store = (spec.children.cursor, size, after)
        merge = table.merge_lists

        def attach(rows: list[Any], parents: list[Any], fetched: Fetched) -> None:
            grouped: dict[Any, list[Any]] = {row.id: [] for row in parents}
            for row in rows:
                grouped[getattr(row, fk)].append(row)
            pages = fetched.pages.setdefault(store, {})
            for parent_id, found in grouped.items():
                pages[parent_id] = merge(pages.get(parent_id), found)

        # The sort key goes into the rows only when a cursor is asked for.
        also = (fk, *spec.order) if relation.cursors else (fk,)
        self.level(
            spec.child,
            parent,
            relation.children,
            also,
            source,
            lambda name: f"{name}.{fk}, {name}.rank",
            attach,
        )

    def members(
        self, type_name: str, parent: int, key: tuple[Any, ...], relation: _Relation
    ) -> None:
        def source(t: str, columns: tuple[str, ...]) -> str:
            return (
                f"SELECT {_columns(t, tuple(dict.fromkeys([*columns, 'created_at'])))} "
                f"FROM memberships AS {t} WHERE {t}.workspace_id = {_among(parent, 'id')}"
            )

        merge = TABLES["Membership"].merge_lists

        def attach(rows: list[Any], parents: list[Any], fetched: Fetched) -> None:
            grouped: dict[Any, list[Any]] = {row.id: [] for row in parents}
            for row in rows:
                grouped[row.workspace_id].append(row)
            for workspace_id, found in grouped.items():
                fetched.members[workspace_id] = merge(fetched.members.get(workspace_id), found)

        self.level(
            "Membership",
            parent,
            relation.children,
            ("workspace_id",),
            source,
            lambda name: f"{name}.workspace_id, {name}.created_at, {name}.id",
            attach,
        )


def _among(parent: int, column: str) -> str:
    """`column` of the parent CTE's rows, as an array: `x = ANY(ARRAY(…))` lets the planner
    use the index on x as for a list of values (with `x IN (SELECT …)` it guessed the CTE's
    size and scanned every comment: twice the time)."""
    return f"ANY(ARRAY(SELECT {column} FROM c{parent}))"


def _columns(alias: str, columns: tuple[str, ...]) -> str:
    return ", ".join(f"{alias}.{c}" for c in columns)


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
    levels: list[_Level]

    async def fetch(self, session: AsyncSession) -> str:
        """The statement's answer: one JSON array per level."""
        connection = await session.connection()
        result = await connection.exec_driver_sql(self.sql, self.params)
        answer: str = result.scalar_one()
        return answer

    def place(self, answer: str) -> Fetched:
        """The rows of `fetch`'s answer, where `SingleRun` looks for them."""
        values = orjson.loads(answer)
        fetched = Fetched()
        rows: list[list[Any]] = []
        for level, value in zip(self.levels, values, strict=True):
            found = level.decode(value)
            rows.append(found)
            # Parents come first: a level is added before the levels under it.
            level.attach(found, rows[level.parent] if level.parent >= 0 else [], fetched)
        return fetched


def build(plan: Selection, ctx: Context, variables: VariableValues) -> Statement | None:
    """The plan's reads as one statement, or None when the plan needs the other path."""
    builder = _Builder(ctx, variables)
    try:
        sql = builder.statement(plan)
    except Exception:  # Decline, or an error the general path will report itself
        return None
    return Statement(sql, tuple(builder.params), builder.levels)


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
