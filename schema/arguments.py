"""Arguments that many fields share, with their descriptions.

Used as annotations (`first: First = 50`), so every list and every lookup describes its
arguments the same way in the schema and in GraphiQL's documentation explorer.
"""

from __future__ import annotations

from typing import Annotated

import strawberry

First = Annotated[
    int | None,
    strawberry.argument(description="How many to return, 1 to 100."),
]
After = Annotated[
    str | None,
    strawberry.argument(
        description="Start after this cursor (an edge's `cursor` or `pageInfo.endCursor` of "
        "the previous page); from the beginning when null."
    ),
]
EventsAfter = Annotated[
    str | None,
    strawberry.argument(
        description="Start after this event's `cursor`; from the oldest event kept when null. "
        "A cursor older than the events kept is a CURSOR_EXPIRED error."
    ),
]
LookupId = Annotated[
    strawberry.ID,
    strawberry.argument(description="Its id."),
]
WorkspaceId = Annotated[
    strawberry.ID,
    strawberry.argument(description="The workspace's id."),
]
