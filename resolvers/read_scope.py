"""What a read depends on, so that its answer can be reused until that changes.

Every change in a workspace (memberships included) appends an event and advances the
workspace's sequence number in the same transaction. A read confined to one workspace
therefore answers the same as long as that number and the caller's role there are the
same, and as long as no event was pruned from its log: `(workspace, last seq, role, oldest
kept seq)` is the read's scope, and a response cache keyed by it can never serve an answer
older than the last commit it has seen.

The scope is read *before* the data: the data is then at least as new as the scope, so an
answer is never filed under a sequence number newer than the state it shows.
"""

from __future__ import annotations

import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from models import board as board_repo
from models import card as card_repo
from models import event as event_store
from resolvers import validation
from resolvers.context import Context
from resolvers.errors import DomainError

# Boards and cards never change workspace, so where they live can be remembered.
MAX_REMEMBERED = 100_000


@dataclass(frozen=True)
class Scope:
    workspace_id: uuid.UUID
    last_seq: int | None
    role: str | None
    # The oldest event kept: pruning changes answers without advancing last_seq.
    first_seq: int | None = None


class ReadScopes:
    """Scopes of the Query fields confined to one workspace (None: not cacheable)."""

    def __init__(self) -> None:
        self._homes: OrderedDict[uuid.UUID, uuid.UUID] = OrderedDict()

    async def scope(self, ctx: Context, field: str, arguments: dict[str, Any]) -> Scope | None:
        if ctx.viewer is None:
            return None
        try:
            async with ctx.reads() as session:
                workspace_id = await self._workspace_of(session, field, arguments)
                if workspace_id is None:
                    return None
                seq, role, oldest = await event_store.read_scope(
                    session, workspace_id, ctx.viewer.user_id
                )
        except DomainError:
            return None
        return Scope(workspace_id, seq, role, oldest)

    async def _workspace_of(
        self, session: AsyncSession, field: str, arguments: dict[str, Any]
    ) -> uuid.UUID | None:
        if field == "workspace":
            return validation.entity_id(arguments["id"], "id")
        if field == "events":
            return validation.entity_id(arguments["workspaceId"], "workspaceId")
        if field == "board":
            return await self._home(session, arguments["id"], board_repo.workspace_of_board)
        if field == "card":
            return await self._home(session, arguments["id"], card_repo.workspace_of_card)
        if field == "cardHistory":
            return await self._home(session, arguments["cardId"], card_repo.workspace_of_card)
        return None

    async def _home(
        self,
        session: AsyncSession,
        raw_id: Any,
        lookup: Callable[[AsyncSession, uuid.UUID], Awaitable[uuid.UUID | None]],
    ) -> uuid.UUID | None:
        entity = validation.entity_id(raw_id, "id")
        home = self._homes.get(entity)
        if home is None:
            home = await lookup(session, entity)
            if home is None:
                return None
            self._homes[entity] = home
            if len(self._homes) > MAX_REMEMBERED:
                self._homes.popitem(last=False)
        return home
