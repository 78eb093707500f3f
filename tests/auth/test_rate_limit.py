"""Login and register: rate limits per IP and per account, argon2 off the event loop."""

from __future__ import annotations

import asyncio
import threading
import uuid
from pathlib import Path
from typing import Any, Literal

import httpx
import pytest
from argon2 import PasswordHasher

from auth import passwords
from tests.api import Api, running_app, settings_for
from tests.services import reachable_redis_url

LOGIN = """mutation($i: LoginInput!) { login(input: $i) { __typename } }"""


def login_body(email: str, password: str) -> dict[str, Any]:
    return {"query": LOGIN, "variables": {"i": {"email": email, "password": password}}}


async def login(api: Api, email: str, password: str, ip: str = "10.0.0.1") -> httpx.Response:
    # The ASGI transport reports the client as 127.0.0.1: a header-free stand-in for
    # distinct callers is a distinct client address, set on the transport per call.
    transport: Any = api.client._transport
    transport.client = (ip, 1234)
    return await api.client.post("/graphql", json=login_body(email, password))


async def test_failed_logins_per_account_are_limited_with_429(
    database_url: str, tmp_path: Path
) -> None:
    settings = settings_for(database_url, tmp_path, rate_limit_login_failures="3/minute")
    async with running_app(settings) as api:
        ada = await api.register()
        for n in range(3):  # from three addresses: the account is what is counted
            wrong = await login(api, ada.email, "wrong password", f"10.0.0.{n}")
            assert wrong.json()["data"]["login"]["__typename"] == "InvalidCredentials"
        refused = await login(api, ada.email, "correct horse battery", "10.0.0.9")
        assert refused.status_code == 429
        assert 1 <= int(refused.headers["retry-after"]) <= 60
        error = refused.json()["errors"][0]
        assert error["extensions"]["code"] == "RATE_LIMITED"
        assert error["extensions"]["limit"] == "RATE_LIMIT_LOGIN_FAILURES"
        # Another account is not affected.
        bob = await api.register()
        ok = await login(api, bob.email, "correct horse battery", "10.0.0.9")
        assert ok.json()["data"]["login"]["__typename"] == "AuthPayload"


async def test_attempts_per_ip_are_limited(database_url: str, tmp_path: Path) -> None:
    settings = settings_for(database_url, tmp_path, rate_limit_auth_per_ip="4/minute")
    async with running_app(settings) as api:
        answers = [
            (await login(api, f"nobody{n}@example.com", "whatever pass", "10.1.1.1")).status_code
            for n in range(6)
        ]
        assert answers == [200, 200, 200, 200, 429, 429]
        # A different address still gets through.
        assert (await login(api, "x@example.com", "whatever pass", "10.1.1.2")).status_code == 200


@pytest.mark.redis
async def test_limits_are_shared_through_redis(database_url: str, tmp_path: Path) -> None:
    url = reachable_redis_url()
    prefix = f"concord-test-{uuid.uuid4().hex}"  # a run of its own in a shared Redis
    one = settings_for(
        database_url,
        tmp_path / "one",
        redis_url=url,
        rate_limit_login_failures="2/minute",
        rate_limit_key_prefix=prefix,
    )
    other = one.model_copy(update={"data_dir": tmp_path / "other"})
    async with running_app(one) as first, running_app(other) as second:
        ada = await first.register()
        await login(first, ada.email, "wrong password 1")
        await login(second, ada.email, "wrong password 2")
        # The third attempt, on either process, is over the shared limit.
        assert (await login(first, ada.email, "correct horse battery")).status_code == 429
        assert (await login(second, ada.email, "correct horse battery")).status_code == 429


async def test_password_hashing_does_not_block_the_event_loop(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """argon2 runs in the hashing pool's threads, never on the event loop's.

    (Which thread did the work is what matters; how long the loop stalled depends on how
    busy the machine is.)
    """
    threads: list[str] = []

    class Recording(PasswordHasher):
        def hash(self, password: str | bytes, *, salt: bytes | None = None) -> str:
            threads.append(threading.current_thread().name)
            return super().hash(password, salt=salt)

        def verify(self, hash: str | bytes, password: str | bytes) -> Literal[True]:
            threads.append(threading.current_thread().name)
            return super().verify(hash, password)

    monkeypatch.setattr(passwords, "_hasher", Recording())
    person = await api.register()
    await asyncio.gather(*(login(api, person.email, f"wrong {n}", f"10.2.0.{n}") for n in range(4)))
    assert len(threads) == 5  # one registration, four logins
    assert all(name.startswith("argon2") for name in threads), threads
    assert threading.current_thread().name not in threads


async def test_probing_emails_through_add_member_is_limited(
    database_url: str, tmp_path: Path
) -> None:
    settings = settings_for(database_url, tmp_path, rate_limit_unknown_emails="2/minute")
    add = """mutation($i: AddMemberInput!) { addMember(input: $i) {
        __typename ... on ValidationError { field } } }"""
    async with running_app(settings) as api:
        owner = await api.register()
        colleague = await api.register()
        ws = await api.workspace(owner)

        async def add_member(email: str) -> httpx.Response:
            variables = {"i": {"workspaceId": ws["id"], "email": email, "role": "VIEWER"}}
            return await api.raw(add, variables, owner.token)

        known = await add_member(colleague.email)  # known emails never count
        assert known.json()["data"]["addMember"]["__typename"] == "MembershipPayload"
        for n in range(2):
            unknown = await add_member(f"probe{n}@example.com")
            assert unknown.json()["data"]["addMember"] == {
                "__typename": "ValidationError",
                "field": "email",
            }
        refused = await add_member("probe2@example.com")
        assert refused.status_code == 429
        assert refused.json()["errors"][0]["extensions"]["limit"] == "RATE_LIMIT_UNKNOWN_EMAILS"
        # Another owner is not affected.
        other = await api.register()
        other_ws = await api.workspace(other)
        variables = {
            "i": {"workspaceId": other_ws["id"], "email": "x@example.com", "role": "VIEWER"}
        }
        answer = await api(add, variables, other.token)
        assert answer["data"]["addMember"]["__typename"] == "ValidationError"


async def test_probing_emails_through_register_is_limited_per_address(
    database_url: str, tmp_path: Path
) -> None:
    """ "This email is already registered" tells that an email has an account: counted per
    client address (RATE_LIMIT_REGISTERED_EMAILS); once over, every registration from that
    address is refused, so the refusal itself tells nothing about the email."""
    settings = settings_for(database_url, tmp_path, rate_limit_registered_emails="2/minute")
    mutation = """mutation($i: RegisterInput!) { register(input: $i) {
        __typename ... on ValidationError { field } } }"""

    async def register(email: str, ip: str) -> httpx.Response:
        transport: Any = api.client._transport
        transport.client = (ip, 1234)
        variables = {"i": {"email": email, "password": "correct horse battery", "displayName": "P"}}
        return await api.raw(mutation, variables)

    async with running_app(settings) as api:
        ada = await api.register()
        for n in range(3):  # new emails never count
            fresh = await register(f"fresh{n}@example.com", "10.7.0.1")
            assert fresh.json()["data"]["register"]["__typename"] == "AuthPayload"
        for _ in range(2):
            taken = await register(ada.email, "10.7.0.1")
            assert taken.json()["data"]["register"] == {
                "__typename": "ValidationError",
                "field": "email",
            }
        for email in (ada.email, "fresh-again@example.com"):
            refused = await register(email, "10.7.0.1")
            assert refused.status_code == 429
            error = refused.json()["errors"][0]
            assert error["extensions"]["code"] == "RATE_LIMITED"
            assert error["extensions"]["limit"] == "RATE_LIMIT_REGISTERED_EMAILS"
        # Another address is not affected.
        other = await register("someone@example.com", "10.7.0.2")
        assert other.json()["data"]["register"]["__typename"] == "AuthPayload"


async def test_limits_ride_through_redis_going_down_and_coming_back(tmp_path: Path) -> None:
    """A Redis outage weakens the limits to this process's memory; it never fails a call."""
    from auth.rate_limit import AuthRateLimiter
    from tests.services import free_port
    from tests.subscriptions.helpers import RedisProcess

    own = RedisProcess(free_port(), tmp_path)
    await own.start()
    limiter = AuthRateLimiter(
        own.url, per_ip="3/minute", login_failures="2/minute", operations="3/minute"
    )
    try:
        for _ in range(3):
            assert await limiter.operation("user:ada") is None
        assert await limiter.operation("user:ada") is not None  # over, in Redis

        await own.stop()
        # Down: counted afresh in memory, limits still enforced, no exception.
        for _ in range(3):
            assert await limiter.operation("user:ada") is None
        refused = await limiter.operation("user:ada")
        assert refused is not None
        assert refused.limit == "RATE_LIMIT_OPERATIONS"
        assert await limiter.attempt("10.0.0.1") is None
        await limiter.failed_login("ada@example.com")
        assert await limiter.account_locked("ada@example.com") is None

        # Frozen rather than gone: answers within the Redis timeout, from memory.
        await own.start()
        own.pause()
        limiter.fallback.down_until = 0.0  # retry Redis now rather than in a few seconds
        async with asyncio.timeout(5):
            assert await limiter.operation("user:bob") is None
        own.resume()

        # Back: the shared counters are used again once the retry delay has passed.
        limiter.fallback.down_until = 0.0
        for _ in range(3):
            assert await limiter.operation("user:cy") is None
        assert await limiter.operation("user:cy") is not None
        from redis.asyncio import Redis

        client = Redis.from_url(own.url)
        try:
            assert await client.keys("*operations*"), "the counters are in Redis again"
        finally:
            await client.aclose()
    finally:
        await limiter.aclose()
        own.resume()
        await own.stop()
