"""PageInfo, the generic Edge and Connection, and the builder every list uses.

Strawberry names a generic type after its argument: `Connection[Board]` is the
contract's `BoardConnection`, `Edge[Board]` its `BoardEdge`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

import strawberry

from resolvers.pagination import Page

T = TypeVar("T")


@strawberry.type(description="Where a page ends and whether another follows.")
class PageInfo:
    has_next_page: bool = strawberry.field(description="Whether another page follows.")
    end_cursor: str | None = strawberry.field(
        description="Pass as `after` to get the next page; null on an empty page."
    )


@strawberry.type(description="An item in a list, with its cursor.")
class Edge(Generic[T]):
    cursor: str = strawberry.field(description="Pass as `after` to continue after this one.")
    node: T = strawberry.field(description="The item.")


@strawberry.type(description="A page of a list.")
class Connection(Generic[T]):
    edges: list[Edge[T]] = strawberry.field(description="Items with cursors.")
    nodes: list[T] = strawberry.field(description="Just the items.")
    page_info: PageInfo = strawberry.field(description="Whether more follow.")


def connection(page: Page[Any], node: Callable[[Any], T]) -> Connection[T]:
    nodes = [node(item) for item in page.items]
    return Connection(
        edges=[Edge(cursor=c, node=n) for c, n in zip(page.cursors, nodes, strict=True)],
        nodes=nodes,
        page_info=PageInfo(has_next_page=page.has_next, end_cursor=page.end_cursor),
    )
