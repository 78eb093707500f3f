"""DATABASE_READ_URL: queries go to the replica, except where it has not caught up.

The "replica" here is a second PostgreSQL database with the same schema that never
receives the primary's writes: a replica lagging forever, which makes routing visible.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.api import migrate, running_app, settings_for
from tests.services import scratch_postgres_database


@pytest.fixture(scope="module")
def primary_and_replica() -> Iterator[tuple[str, str]]:
    with scratch_postgres_database() as primary, scratch_postgres_database() as replica:
        asyncio.run(migrate(primary))
        asyncio.run(migrate(replica))
        yield primary, replica


async def test_reads_use_the_replica_unless_the_caller_has_seen_newer_writes(
    primary_and_replica: tuple[str, str], tmp_path: Path
) -> None:
    primary, replica = primary_and_replica
    settings = settings_for(primary, tmp_path, database_read_url=replica)
    async with running_app(settings) as api:
        alice = await api.register("alice")
        created = await api.raw(
            'mutation { createWorkspace(input: {name: "Replicated"}) { ... on WorkspacePayload { workspace { id name } } } }',
            token=alice.token,
        )
        workspace = created.json()["data"]["createWorkspace"]["workspace"]
        # The mutation's own payload was read after the write, from the primary.
        assert workspace["name"] == "Replicated"
        seen = created.headers["x-concord-seen"]
        assert seen == f"{workspace['id']}:2"

        query = "query($id: ID!) { workspace(id: $id) { name } }"
        body = {"query": query, "variables": {"id": workspace["id"]}}
        auth = {"authorization": f"Bearer {alice.token}"}
        # Without the header the query reads the replica, which has not got the workspace.
        plain = await api.client.post("/graphql", json=body, headers=auth)
        assert plain.json()["data"]["workspace"] is None
        # With it, the replica is found behind seq 2, so the primary answers.
        fresh = await api.client.post(
            "/graphql", json=body, headers={**auth, "x-concord-seen": seen}
        )
        assert fresh.json()["data"]["workspace"] == {"name": "Replicated"}
        # A malformed header is only a hint: ignored, never an error.
        junk = await api.client.post(
            "/graphql", json=body, headers={**auth, "x-concord-seen": "junk"}
        )
        assert junk.status_code == 200
        assert junk.json()["data"]["workspace"] is None
