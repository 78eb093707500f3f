"""Verified access tokens are remembered only while they are valid."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from auth.backend import VerifiedTokens
from auth.tokens import InvalidToken, TokenConfig, issue_access_token

CONFIG = TokenConfig(
    secret="a-test-secret-that-is-long-enough-for-hs256-0123",
    issuer="concord",
    audience="concord",
    access_ttl=timedelta(seconds=10),
    refresh_ttl=timedelta(days=1),
)


async def test_a_remembered_token_stops_working_when_it_expires() -> None:
    tokens = VerifiedTokens(CONFIG)
    user = uuid.uuid4()
    # Issued 8.5 s ago with a 10 s lifetime: it expires within two seconds.
    token = issue_access_token(CONFIG, user, now=datetime.now(UTC) - timedelta(seconds=8.5))
    viewer = tokens.viewer(f"Bearer {token}")
    assert viewer is not None
    assert viewer.user_id == user
    assert tokens.viewer(f"Bearer {token}") == viewer  # the remembered answer

    await asyncio.sleep((viewer.expires_at - datetime.now(UTC)).total_seconds() + 0.1)
    with pytest.raises(InvalidToken):
        tokens.viewer(f"Bearer {token}")


def test_only_verified_tokens_are_remembered() -> None:
    tokens = VerifiedTokens(CONFIG, remember=2)
    good = issue_access_token(CONFIG, uuid.uuid4())
    forged = good[:-4] + ("AAAA" if not good.endswith("AAAA") else "BBBB")
    for _ in range(2):
        with pytest.raises(InvalidToken):
            tokens.viewer(f"Bearer {forged}")
    assert tokens.viewer(f"Bearer {good}") is not None
    assert tokens.viewer(None) is None
    others = [issue_access_token(CONFIG, uuid.uuid4()) for _ in range(3)]
    for other in others:
        tokens.viewer(f"Bearer {other}")
    assert len(tokens._known) == 2  # bounded
