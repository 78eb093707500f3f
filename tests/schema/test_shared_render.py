"""A live event rendered once for every subscriber with the same selection stays rendered
for the others when one of them goes away mid-rendering."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncGenerator
from datetime import UTC, datetime
from typing import Any

import strawberry

from resolvers.live import SharedEvent
from schema.subscription import SharedRenderExecutor

gate = asyncio.Event()


@strawberry.type
class Thing:
    row: strawberry.Private[Any]

    @strawberry.field
    async def seq(self) -> int:
        await gate.wait()  # the rendering is in progress until the test opens the gate
        return int(self.row.seq)


EVENT = SharedEvent(
    workspace_id=uuid.uuid4(),
    seq=7,
    type="card.created",
    entity_type="Card",
    entity_id=uuid.uuid4(),
    entity_version=None,
    actor_id=None,
    changes=[],
    occurred_at=datetime.now(UTC),
)


@strawberry.type
class Query:
    ok: bool = True


@strawberry.type
class Subscription:
    @strawberry.subscription
    async def things(self) -> AsyncGenerator[Thing, None]:
        yield Thing(row=EVENT)


async def test_a_subscriber_leaving_mid_render_does_not_cancel_it_for_the_others() -> None:
    schema = strawberry.Schema(
        query=Query, subscription=Subscription, execution_context_class=SharedRenderExecutor
    )
    gate.clear()
    first = await schema.subscribe("subscription { things { seq } }")
    second = await schema.subscribe("subscription { things { seq } }")
    assert isinstance(first, AsyncGenerator)
    assert isinstance(second, AsyncGenerator)
    leaving = asyncio.ensure_future(anext(first))
    staying = asyncio.ensure_future(anext(second))
    for _ in range(20):  # both are now waiting for the one shared rendering
        await asyncio.sleep(0)
    assert len(EVENT.rendered) == 1
    leaving.cancel()
    for _ in range(5):
        await asyncio.sleep(0)
    gate.set()
    result = await asyncio.wait_for(staying, 5)
    assert result.errors is None
    assert result.data == {"things": {"seq": 7}}
    await second.aclose()
