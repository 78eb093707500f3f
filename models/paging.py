"""Keyset pagination, one parent or many at once, as ORM objects or as plain rows.

`page_per_parent` fetches the first `limit + 1` rows after a cursor for every parent in a
single statement (ROW_NUMBER() OVER (PARTITION BY parent …)), which is what lets a
DataLoader answer "the cards of these 50 boards" with one query. The extra row tells the
caller whether there is a next page.

Every read here can return plain rows (`rows=True`) instead of ORM objects: the same
statement, the same columns and values (type processors included) under the same
attribute names, without the ORM's per-object bookkeeping, which the compiled read path
(schema/compiled) does not need.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Sequence
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, Integer, Select, Table, and_, bindparam, func, or_, select
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute, aliased

from models.base import Base

M = TypeVar("M", bound=Base)

# SQL Server accepts at most 2100 parameters per request; an IN list of ids is chunked well
# below that, leaving room for the statement's other parameters.
MAX_IDS_PER_STATEMENT = 1000


def table_of(model: type[Base]) -> Table:
    table = model.__table__
    if not isinstance(table, Table):  # pragma: no cover - every model maps one table
        raise TypeError(f"{model.__name__} is not mapped to a single table")
    return table


def select_all(model: type[M], rows: bool = False) -> Select[Any]:
    """SELECT of every column of `model`: ORM objects, or plain rows with `rows=True`."""
    return select(table_of(model)) if rows else select(model)


async def fetch_all(
    session: AsyncSession, stmt: Select[Any], rows: bool = False, values: Any = None
) -> Sequence[Any]:
    """The statement's results: ORM objects, or plain `Row`s with `rows=True`.

    Plain rows are read on the session's connection, past the ORM: through
    `Session.execute` even a table select is loaded row by row by the ORM's machinery
    (a tenth of a nested read's CPU in the profile).
    """
    if rows:
        connection = await session.connection()
        found: Sequence[Row[Any]] = (await connection.execute(stmt, values)).all()
        return found
    objects: Sequence[Any] = (await session.execute(stmt, values)).scalars().all()
    return objects


BY_IDS = "id_1"


@functools.lru_cache(maxsize=32)
def _by_ids_shape(model: type[Base], rows: bool) -> Select[Any]:
    """SELECT of `model` WHERE id IN (…ids), the ids a parameter: built once per model.

    Building `select(Model).where(Model.id.in_(ids))` for each batch (the IN coercion of
    every value, a fresh statement to hash for SQLAlchemy's compiled cache) was a tenth
    of a one-row read's CPU; the SQL is the same (an expanding IN parameter either way).
    """
    key = table_of(model).c.id
    # Named as SQLAlchemy names the parameter of `in_([…])`: the same SQL, to the letter.
    return select_all(model, rows).where(key.in_(bindparam(BY_IDS, expanding=True, type_=key.type)))


async def fetch_by_ids(
    session: AsyncSession, model: type[Base], ids: Sequence[Any], rows: bool = False
) -> Sequence[Any]:
    """The rows of `model` whose id is in `ids`: ORM objects, or plain rows with `rows=True`."""
    return await fetch_all(session, _by_ids_shape(model, rows), rows, {BY_IDS: list(ids)})


def after_key(columns: Sequence[Any], values: Sequence[Any]) -> ColumnElement[bool]:
    """(c1, c2, …) > (v1, v2, …), spelled out: SQL Server has no row-value comparison."""
    clauses = []
    for i, column in enumerate(columns):
        equal = [columns[j] == values[j] for j in range(i)]
        clauses.append(and_(*equal, column > values[i]))
    return or_(*clauses)


@functools.lru_cache(maxsize=64)
def _page_shape(
    model: type[Base], parent_key: str, order_keys: tuple[str, ...], after: bool, rows: bool
) -> Select[Any]:
    """The paging statement with its values left as parameters, built once per shape.

    Building it costs about half a millisecond of CPU (a subquery, a window function,
    the keyset condition); a nested read runs several per request, the same few shapes.
    Values go in at execution: `parent_ids` (expanding), `after_0`…, `limit`.
    """
    parent = getattr(model, parent_key)
    order = [getattr(model, key) for key in order_keys]
    conditions = [parent.in_(bindparam("parent_ids", expanding=True))]
    if after:
        values = [bindparam(f"after_{i}", type_=column.type) for i, column in enumerate(order)]
        conditions.append(after_key(order, values))
    rank = func.row_number().over(partition_by=parent, order_by=list(order)).label("rank")
    if rows:
        columns = table_of(model).c
        ranked = select(*columns, rank).where(*conditions).subquery()
        picked: Select[Any] = select(*(ranked.c[column.key] for column in columns))
    else:
        ranked = select(model, rank).where(*conditions).subquery()
        picked = select(aliased(model, ranked))
    limit = bindparam("limit", type_=Integer())
    return picked.where(ranked.c.rank <= limit).order_by(ranked.c[parent.key], ranked.c.rank)


def _page_values(
    parent_ids: Sequence[Any], after: Sequence[Any] | None, limit: int
) -> dict[str, Any]:
    if limit < 0:
        raise ValueError("limit must not be negative")
    values: dict[str, Any] = {"parent_ids": list(parent_ids), "limit": limit + 1}
    for i, value in enumerate(after or ()):
        values[f"after_{i}"] = value
    return values


def page_per_parent_stmt(
    model: type[M],
    parent: InstrumentedAttribute[Any],
    parent_ids: Sequence[Any],
    order: Sequence[InstrumentedAttribute[Any]],
    after: Sequence[Any] | None,
    limit: int,
    rows: bool = False,
) -> Select[Any]:
    """The statement behind `page_per_parent`, values bound: ranked per parent, then cut."""
    shape = _page_shape(model, parent.key, tuple(c.key for c in order), after is not None, rows)
    return shape.params(_page_values(parent_ids, after, limit))


async def page_per_parent(
    session: AsyncSession,
    model: type[M],
    parent: InstrumentedAttribute[Any],
    parent_ids: Sequence[Any],
    order: Sequence[InstrumentedAttribute[Any]],
    after: Sequence[Any] | None,
    limit: int,
    rows: bool = False,
) -> dict[Any, list[Any]]:
    """Up to `limit + 1` rows of `model` per parent id, ordered by `order`, after `after`.

    One statement per `MAX_IDS_PER_STATEMENT` parents (one statement for any DataLoader
    batch of ordinary size): SQL Server refuses more than 2100 parameters in a request.
    """
    shape = _page_shape(model, parent.key, tuple(c.key for c in order), after is not None, rows)
    pages: dict[Any, list[Any]] = defaultdict(list)
    unique = list(dict.fromkeys(parent_ids))
    for start in range(0, len(unique), MAX_IDS_PER_STATEMENT):
        chunk = unique[start : start + MAX_IDS_PER_STATEMENT]
        for item in await fetch_all(session, shape, rows, _page_values(chunk, after, limit)):
            pages[getattr(item, parent.key)].append(item)
    return pages
