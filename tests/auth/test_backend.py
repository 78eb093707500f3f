"""Verified access tokens are remembered only while they are valid."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jwt
import pytest

from auth.backend import VerifiedTokens
from auth.tokens import InvalidToken, TokenConfig, issue_access_token
from tests.api import Api, settings_for

CONFIG = TokenConfig(
    secret="a-test-secret-that-is-long-enough-for-hs256-0123",
    issuer="concord",
    audience="concord",
    access_ttl=timedelta(seconds=10),
    refresh_ttl=timedelta(days=1),
)
# The secret the `api` fixture's server signs with.
SECRET = settings_for("sqlite://", Path()).jwt_secret


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


@pytest.mark.parametrize("exp", [2**70, 1e300], ids=["int", "float"])
async def test_a_signed_token_expiring_beyond_any_date_is_401_not_500(api: Api, exp: float) -> None:
    """Found by fuzzing the Authorization header (see tests/fuzz): `exp` past what a
    datetime holds raised OverflowError out of the auth middleware, a 500 with no body."""
    person = await api.register()
    now = int(datetime.now(UTC).timestamp())
    claims = {"sub": person.id, "iss": "concord", "aud": "concord", "iat": now, "exp": exp}
    token = jwt.encode({**claims, "typ": "access"}, SECRET, algorithm="HS256")
    response = await api.raw("{ me { id } }", token=token)
    assert response.status_code == 401, response.text
    assert response.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    # The same person with a token the server issued is fine.
    assert (await api.ok("{ me { id } }", token=person.token)) == {"me": {"id": person.id}}
