"""Fuzzing the served GraphQL API over HTTP: thousands of generated documents, no 5xx.

Documents are generated from the schema the running server serves (introspected), valid
ones (hypothesis-graphql) and invalid ones (its negative mode and the mutations in
tests/fuzz/documents.py), and sent over a real socket to `concord serve` with a seeded
workspace, as members of each role, an outsider and anonymous. Each answer must be a
well-formed GraphQL JSON response, not a 5xx, with no unexpected (masked) error and no
internals in any message; the server must log no error and still answer afterwards.

`FUZZ_EXAMPLES` sets the number of valid and of invalid documents per database (CI: 2000
on PostgreSQL, an eighth of that on SQLite, about a minute on two cores). Generation is
derandomized and the requests go one at a time in generation order, so a run is
reproducible; each finding is reported with its exact request and answer.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import graphql
import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.engine import make_url

from tests.api import migrate
from tests.fuzz.checks import EVENT_STREAM, error_codes, problems
from tests.fuzz.documents import Request, invalid_requests, valid_requests
from tests.fuzz.served import World, concord_serve, introspected_schema, logged_errors, seed
from tests.services import _admin, scratch_postgres_database

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "2000"))
# SQLite shares the CI minute with PostgreSQL, where NUL bytes and types bite hardest.
SQLITE_SHARE = 8


@dataclass
class Target:
    world: World
    schema: graphql.GraphQLSchema
    client: httpx.Client
    log: Path
    examples: int
    statuses: Counter[int] = field(default_factory=Counter)
    codes: Counter[str] = field(default_factory=Counter)

    def send(self, request: Request) -> httpx.Response:
        caller = self.world.callers[request.caller]
        headers = {"accept": request.accept, **request.headers}
        if caller.token and "authorization" not in headers:
            headers["authorization"] = f"Bearer {caller.token}"
        if request.method == "GET":
            return self.client.get("/graphql", params=request.body, headers=headers)
        if request.raw is not None:
            headers["content-type"] = request.content_type
            return self.client.post("/graphql", content=request.raw, headers=headers)
        # ASCII JSON: a lone surrogate travels as a `\ud800` escape, for the server to judge.
        headers["content-type"] = "application/json"
        return self.client.post("/graphql", content=json.dumps(request.body), headers=headers)

    def check(self, request: Request) -> httpx.Response:
        response = self.send(request)
        self.statuses[response.status_code] += 1
        found = problems(response)
        if not found:
            self.codes.update(error_codes(response))
        assert not found, f"{found}\nrequest: {request.describe()}\nresponse: {response.text:.2000}"
        return response


@pytest.fixture(scope="module", params=["postgres", "sqlite"])
def target(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Target]:
    data_dir = tmp_path_factory.mktemp(f"fuzz-{request.param}")
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{data_dir / 'concord.db'}"
        yield from _serve(url, data_dir, max(1, EXAMPLES // SQLITE_SHARE))
        return
    with scratch_postgres_database() as url:
        asyncio.run(migrate(url))
        # Commits need not wait for the disk in a throwaway database: more documents per
        # minute, and the same answers.
        name = make_url(url).database
        asyncio.run(_admin(url, f'ALTER DATABASE "{name}" SET synchronous_commit = off'))
        yield from _serve(url, data_dir, EXAMPLES)


def _serve(url: str, data_dir: Path, examples: int) -> Iterator[Target]:
    with (
        concord_serve(url, data_dir) as (base_url, log),
        httpx.Client(base_url=base_url, timeout=60) as client,
    ):
        world = seed(base_url)
        schema = graphql.build_client_schema(introspected_schema(base_url))  # type: ignore[arg-type]
        yield Target(world, schema, client, log, examples)


def _fuzz(
    target: Target,
    strategy: st.SearchStrategy[Request],
    then: Callable[[Request, httpx.Response], None] | None = None,
) -> int:
    """Send `target.examples` generated requests; the number sent.

    Hypothesis generates the next document while one sender thread waits for the server's
    answer to the previous one (in order, so a run is reproducible): generation and the
    server each get a core. A finding is reported with its exact request.
    """
    found: list[str] = []
    target.statuses.clear()
    target.codes.clear()

    def send(request: Request) -> None:
        try:
            response = target.check(request)
            if then is not None:
                then(request, response)
        except AssertionError as exc:
            found.append(str(exc))

    started = time.monotonic()
    interval = sys.getswitchinterval()
    # The sender wakes up for each answer: a short GIL switch interval lets it take over
    # from the generator at once rather than 5 ms later.
    sys.setswitchinterval(0.0002)
    try:
        pending = _generate_and_send(target, strategy, send)
    finally:
        sys.setswitchinterval(interval)
    summary = (
        f"{len(pending)} documents in {time.monotonic() - started:.1f} s, "
        f"answers by status: {dict(sorted(target.statuses.items()))}, "
        f"error codes: {dict(target.codes.most_common())}"
    )
    print(f"\n{summary}")  # noqa: T201  (the count and time, for the CI log)
    assert not found, f"{len(found)} findings; the first ones:\n" + "\n\n".join(found[:5])
    return len(pending)


def _generate_and_send(
    target: Target, strategy: st.SearchStrategy[Request], send: Callable[[Request], None]
) -> list[Future[None]]:
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="fuzz-sender") as sender:
        pending: list[Future[None]] = []

        @settings(
            max_examples=target.examples,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(strategy)
        def generate(request: Request) -> None:
            pending.append(sender.submit(send, request))

        generate()
        for future in pending:
            future.result()  # a transport error (the server gone) fails the test here
    return pending


def test_valid_documents_never_fail_the_server(target: Target) -> None:
    def again(request: Request, first: httpx.Response) -> None:
        # A query answered with data is known to the compiled read path from now on: the
        # same document again is answered there (or from the response cache), and must
        # be answered the same (nothing was written in between).
        if (
            first.status_code != 200
            or request.accept == EVENT_STREAM
            or request.body["query"].startswith("mutation")
        ):
            return
        second = target.check(request)
        if "errors" not in first.json():
            assert second.json() == first.json(), (
                f"compiled path differs\nrequest: {request.describe()}\n"
                f"general: {first.text:.2000}\ncompiled: {second.text:.2000}"
            )

    count = _fuzz(target, valid_requests(target.schema, target.world), again)
    assert count >= target.examples
    # Rate limits are raised for the fuzz: the answers are the resolvers', not 429s.
    assert target.statuses[429] < count / 10


def test_invalid_documents_are_refused_cleanly(target: Target) -> None:
    count = _fuzz(target, invalid_requests(target.schema, target.world))
    assert count >= target.examples


def test_the_server_is_healthy_afterwards(target: Target) -> None:
    """After the fuzz: alive, answering a normal query, and nothing logged as an error."""
    assert target.client.get("/healthz").json() == {"status": "ok"}
    owner = target.world.callers["owner"]
    response = target.client.post(
        "/graphql",
        json={
            "query": "query($w: ID!) { me { email } workspace(id: $w) { name } }",
            "variables": {"w": target.world.workspace_id},
        },
        headers={"authorization": f"Bearer {owner.token}"},
    )
    body = response.json()
    assert response.status_code == 200, body
    assert "errors" not in body, body
    assert body["data"]["me"] == {"email": owner.email}
    assert isinstance(body["data"]["workspace"]["name"], str)  # renamed by the fuzz, maybe
    assert logged_errors(target.log) == []
