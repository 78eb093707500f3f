"""PageInfo and the connection builder shared by every list."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import strawberry

from resolvers.pagination import Page

C = TypeVar("C")


@strawberry.type(description="Where a page ends and whether another follows.")
class PageInfo:
    has_next_page: bool = strawberry.field(description="Whether another page follows.")
    end_cursor: str | None = strawberry.field(
        description="Pass as `after` to get the next page; null on an empty page."
    )


def connection(
    page: Page[Any],
    node: Callable[[Any], Any],
    edge: Callable[..., Any],
    conn: Callable[..., C],
) -> C:
    nodes = [node(item) for item in page.items]
    return conn(
        edges=[edge(cursor=c, node=n) for c, n in zip(page.cursors, nodes, strict=True)],
        nodes=nodes,
        page_info=PageInfo(has_next_page=page.has_next, end_cursor=page.end_cursor),
    )
