"""Request-scoped DataLoaders: every relation is read in batches, never per row.

One loader per (entity, key, visibility), named `<Entity>By<Key>Loader`, all built together
in `Loaders` for one request (or one subscription event). Each batch runs in its own short
read session, so a nested query costs a number of statements that does not grow with the
number of rows it returns.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession
from strawberry.dataloader import DataLoader

from models import board as board_repo
from models import card as card_repo
from models import comment as comment_repo
from models import user as user_repo
from models import workspace as workspace_repo
from models.paging import MAX_IDS_PER_STATEMENT
from models.tables import Board, Card, Comment, Membership, User, Workspace

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

# (parent id, first, sort key after which to start or None)
PageKey = tuple[uuid.UUID, int, tuple[Any, ...] | None]
PageRows = list[Any]
# Where a batch reads: a session factory (`async_sessionmaker`), or a borrowed session.
Sessions = Callable[[], AbstractAsyncContextManager[AsyncSession]]
# SQL Server takes at most 2,100 parameters per statement; one id is one parameter.
MAX_BATCH = MAX_IDS_PER_STATEMENT


class SharedLoader(DataLoader[K, V]):
    """A DataLoader whose futures survive the cancellation of one of their waiters.

    A loader hands every caller of `load(key)` the same future. graphql-core cancels the
    sibling fields of a field that fails, and cancelling a task that awaits a future
    cancels the future itself: every *other* field waiting for that key then got
    CancelledError, which escaped the request instead of being a field error. Each caller
    now awaits the future through its own shield.
    """

    def load(self, key: K) -> Awaitable[V]:
        return asyncio.shield(super().load(key))


def borrowed(session: AsyncSession) -> Sessions:
    """Batches that all read through `session`, which stays open (its owner closes it).

    Only for a caller that runs its reads one after another, as the compiled read path
    does: a session runs one statement at a time.
    """

    @asynccontextmanager
    async def lend() -> AsyncIterator[AsyncSession]:
        yield session

    return lend


def _by_id(
    sessions: Sessions,
    fetch: Callable[..., Awaitable[Sequence[Any]]],
    plain_rows: bool = False,
) -> DataLoader[uuid.UUID, Any]:
    async def load(ids: list[uuid.UUID]) -> list[Any]:
        async with sessions() as session:
            found = await (fetch(session, ids, rows=True) if plain_rows else fetch(session, ids))
            rows = {row.id: row for row in found}
        return [rows.get(i) for i in ids]

    return SharedLoader(load_fn=load, max_batch_size=MAX_BATCH)


def _paged(
    sessions: Sessions,
    fetch: Callable[
        [AsyncSession, Sequence[uuid.UUID], Any, int], Awaitable[dict[uuid.UUID, list[Any]]]
    ],
) -> DataLoader[PageKey, PageRows]:
    """Pages for many parents: one statement per distinct (first, after) in the batch."""

    async def load(keys: list[PageKey]) -> list[PageRows]:
        groups: dict[tuple[int, Any], list[uuid.UUID]] = defaultdict(list)
        for parent, first, after in keys:
            groups[(first, after)].append(parent)
        found: dict[PageKey, PageRows] = {}
        async with sessions() as session:
            for (first, after), parents in groups.items():
                pages = await fetch(session, parents, after, first)
                for parent in parents:
                    found[(parent, first, after)] = pages.get(parent, [])
        return [found[key] for key in keys]

    return SharedLoader(load_fn=load, max_batch_size=MAX_BATCH)


class Loaders:
    """All loaders of one request, reading through `sessions`; `viewer_id` scopes roles.

    `plain_rows`: the by-id loaders give plain rows (models.paging.fetch_all), not ORM
    objects: the same attributes and values, without the ORM's work per statement and
    object (a quarter of a one-row read's CPU). For the compiled read path
    (`Context.sharing`), which reads attributes only; Strawberry's resolvers get objects.
    """

    def __init__(
        self, sessions: Sessions, viewer_id: uuid.UUID | None, *, plain_rows: bool = False
    ) -> None:
        self.user_by_id: DataLoader[uuid.UUID, User | None] = _by_id(
            sessions, user_repo.users_by_ids, plain_rows
        )
        self.workspace_by_id: DataLoader[uuid.UUID, Workspace | None] = _by_id(
            sessions, workspace_repo.workspaces_by_ids, plain_rows
        )
        self.board_by_id: DataLoader[uuid.UUID, Board | None] = _by_id(
            sessions, board_repo.boards_by_ids, plain_rows
        )
        self.card_by_id: DataLoader[uuid.UUID, Card | None] = _by_id(
            sessions, card_repo.cards_by_ids, plain_rows
        )
        self.comment_by_id: DataLoader[uuid.UUID, Comment | None] = _by_id(
            sessions, comment_repo.comments_by_ids, plain_rows
        )
        self.boards_by_workspace = _paged(sessions, board_repo.boards_by_workspaces)
        self.cards_by_board = _paged(sessions, card_repo.cards_by_boards)
        self.comments_by_card = _paged(sessions, comment_repo.comments_by_cards)

        async def members(ids: list[uuid.UUID]) -> list[list[Membership]]:
            grouped: dict[uuid.UUID, list[Membership]] = defaultdict(list)
            async with sessions() as session:
                for row in await workspace_repo.memberships_by_workspaces(session, ids):
                    grouped[row.workspace_id].append(row)
            return [grouped[i] for i in ids]

        self.memberships_by_workspace: DataLoader[uuid.UUID, list[Membership]] = SharedLoader(
            load_fn=members, max_batch_size=MAX_BATCH
        )

        async def roles(ids: list[uuid.UUID]) -> list[str | None]:
            if viewer_id is None:
                return [None for _ in ids]
            async with sessions() as session:
                rows = await workspace_repo.memberships_of_user(session, viewer_id, ids)
            by_workspace = {row.workspace_id: row.role for row in rows}
            return [by_workspace.get(i) for i in ids]

        self.viewer_role_by_workspace: DataLoader[uuid.UUID, str | None] = SharedLoader(
            load_fn=roles, max_batch_size=MAX_BATCH
        )
