"""The paged lists under a parent: boards of a workspace, cards of a board, comments of a card.

Each list is described once: its cursor kind, how `after` decodes, the sort key a cursor
holds, and the repository function that pages many parents in one statement. The resolvers
(through DataLoaders) and the compiled read path (schema/compiled) both page through these
descriptions, so their pages and cursors are the same by construction.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from models import board as board_repo
from models import card as card_repo
from models import comment as comment_repo
from resolvers import validation
from resolvers.pagination import (
    Page,
    decode_cursor,
    encode_cursor,
    page_of,
    parse_datetime,
    parse_float,
)


class Fetch(Protocol):
    """A repository function paging many parents at once (`rows=True`: plain rows)."""

    def __call__(
        self,
        session: AsyncSession,
        parent_ids: Sequence[uuid.UUID],
        after: Any,
        limit: int,
        /,
        *,
        rows: bool = False,
    ) -> Awaitable[dict[uuid.UUID, list[Any]]]: ...


@dataclass(frozen=True)
class ChildList:
    """One kind of paged list under a parent row."""

    cursor: str
    after_types: tuple[Callable[[Any], Any], ...]
    sort_key: Callable[[Any], tuple[Any, ...]]
    fetch: Fetch

    def request(self, first: int | None, after: str | None) -> tuple[int, tuple[Any, ...] | None]:
        """The validated page size and the decoded `after` key (InvalidInput when bad)."""
        size = validation.page_size(first)
        key = None if after is None else decode_cursor(self.cursor, after, self.after_types)
        return size, key

    def page(self, rows: Sequence[Any], first: int) -> Page[Any]:
        return page_of(rows, first, self.cursor, self.sort_key)

    def cursor_of(self, row: Any) -> str:
        return encode_cursor(self.cursor, self.sort_key(row))


BOARDS = ChildList(
    cursor="board",
    after_types=(parse_datetime, uuid.UUID),
    sort_key=lambda b: (b.created_at, b.id),
    fetch=board_repo.boards_by_workspaces,
)
CARDS = ChildList(
    cursor="card",
    after_types=(parse_float, uuid.UUID),
    sort_key=lambda c: (c.position, c.id),
    fetch=card_repo.cards_by_boards,
)
COMMENTS = ChildList(
    cursor="comment",
    after_types=(parse_datetime, uuid.UUID),
    sort_key=lambda c: (c.created_at, c.id),
    fetch=comment_repo.comments_by_cards,
)
