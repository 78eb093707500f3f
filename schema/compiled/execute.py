"""Runs a plan: one batch per planned field, on one read session, without resolver machinery.

`Run.render` produces the objects of one selection for a batch of rows, field by field:
each field's source returns a column (one value per row, child objects already rendered),
and the columns are zipped into dicts in the plan's field order, which is the order the
general executor writes them.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol, cast

from graphql.execution.values import VariableValues
from sqlalchemy.ext.asyncio import AsyncSession

from models import board as board_repo
from models import card as card_repo
from models import user as user_repo
from models import workspace as workspace_repo
from models.paging import MAX_IDS_PER_STATEMENT
from resolvers.context import Context
from resolvers.lists import ChildList
from schema.compiled.plan import PlannedField, Selection
from schema.compiled.sources import Bail, Load


class ByIds(Protocol):
    def __call__(
        self, session: AsyncSession, ids: Sequence[uuid.UUID], /, *, rows: bool = False
    ) -> Awaitable[Sequence[Any]]: ...


TABLES: dict[str, ByIds] = {
    "users": user_repo.users_by_ids,
    "workspaces": workspace_repo.workspaces_by_ids,
    "boards": board_repo.boards_by_ids,
    "cards": card_repo.cards_by_ids,
}

# The single object the Query type's fields are resolved on.
ROOT = object()


class Run:
    """One execution of a plan for one request."""

    def __init__(self, ctx: Context, session: AsyncSession, variables: VariableValues) -> None:
        self.ctx = ctx
        self.session = session
        self.variables = variables
        # Rows already loaded in this request, per table: a user who is both an assignee
        # and an author is read once.
        self._rows: dict[str, dict[Any, Any]] = defaultdict(dict)
        # Related rows by id (`Load`), put off until the whole tree is known (see finish).
        self._deferred: list[tuple[PlannedField, list[Any], list[dict[str, Any]]]] = []

    async def answer(self, plan: Selection) -> dict[str, Any]:
        """The `data` of the response."""
        (data,) = await self.render(plan, [ROOT])
        await self.finish()
        return data

    async def render(self, selection: Selection, rows: list[Any]) -> list[dict[str, Any]]:
        if not rows:
            return []
        if not selection.fields:  # everything skipped by @skip/@include
            return [{} for _ in rows]
        columns: list[list[Any]] = []
        deferred: list[PlannedField] = []
        for field in selection.fields:
            if isinstance(field.source, Load):
                columns.append([None] * len(rows))  # filled in by finish()
                deferred.append(field)
            else:
                columns.append(await field.source.column(field, rows, self))
        built = list(map(selection.build, *columns))
        self._deferred.extend((field, rows, built) for field in deferred)
        return built

    async def root(
        self, field: PlannedField, resolve: Callable[[Context, dict[str, Any]], Awaitable[Any]]
    ) -> Any:
        """A Query field's value: what the general path's resolver returns."""
        return await resolve(self.ctx, field.arguments(self.variables))

    async def finish(self) -> None:
        """Load the related rows that `render` put off: one statement per table for all.

        A card's assignee and a comment's author are both users; loaded where they are met,
        they cost a statement each, loaded together one. Their objects are filled into the
        dicts already built (the key is there, so the order is the plan's). Rendering them
        may put off more (a comment's card's board…): repeated until nothing is left.
        """
        while self._deferred:
            pending, self._deferred = self._deferred, []
            wanted: dict[str, set[Any]] = defaultdict(set)
            for field, rows, _ in pending:
                source = cast(Load, field.source)
                wanted[source.table].update(k for k in map(source.key, rows) if k is not None)
            for table, ids in wanted.items():
                await self.load(table, ids)
            for field, rows, built in pending:
                values = await field.source.column(field, rows, self)
                for target, value in zip(built, values, strict=True):
                    target[field.key] = value

    async def objects(
        self, field: PlannedField, values: list[Any], many: bool = False
    ) -> list[Any]:
        """`values` (one per parent row) rendered through the field's selection."""
        child = field.child
        if many:
            flat = [item for value in values for item in value]
            rendered = await self.render(child, flat) if child is not None else flat
            out: list[Any] = []
            start = 0
            for value in values:
                out.append(rendered[start : start + len(value)])
                start += len(value)
            return out
        present = [value for value in values if value is not None]
        if field.non_null and len(present) != len(values):
            raise Bail(f"{field.name} is null")
        if child is None:
            return values
        rendered_iter = iter(await self.render(child, present))
        return [None if value is None else next(rendered_iter) for value in values]

    async def load(self, table: str, ids: set[Any]) -> dict[Any, Any]:
        """Rows of `table` by id, each read at most once per request."""
        known = self._rows[table]
        missing = [i for i in ids if i not in known]
        fetch = TABLES[table]
        for start in range(0, len(missing), MAX_IDS_PER_STATEMENT):
            chunk = missing[start : start + MAX_IDS_PER_STATEMENT]
            found = {row.id: row for row in await fetch(self.session, chunk, rows=True)}
            for i in chunk:
                known[i] = found.get(i)
        return known

    async def memberships(self, workspace_ids: list[uuid.UUID]) -> dict[uuid.UUID, list[Any]]:
        grouped: dict[uuid.UUID, list[Any]] = defaultdict(list)
        unique = list(dict.fromkeys(workspace_ids))
        for start in range(0, len(unique), MAX_IDS_PER_STATEMENT):
            chunk = unique[start : start + MAX_IDS_PER_STATEMENT]
            for row in await workspace_repo.memberships_by_workspaces(
                self.session, chunk, rows=True
            ):
                grouped[row.workspace_id].append(row)
        return grouped

    async def pages(
        self, children: ChildList, parents: list[uuid.UUID], size: int, after: Any
    ) -> dict[uuid.UUID, list[Any]]:
        """Up to `size + 1` children of every parent (the extra one says a page follows)."""
        return await children.fetch(self.session, parents, after, size, rows=True)
