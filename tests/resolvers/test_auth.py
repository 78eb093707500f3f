"""Registration, login, refresh-token rotation, logout, and what tokens unlock."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from auth.tokens import issue_access_token
from tests.api import Api

LOGIN = """mutation($i: LoginInput!) { login(input: $i) { __typename
  ... on AuthPayload { accessToken refreshToken expiresIn user { email } }
  ... on InvalidCredentials { message code } ... on ValidationError { field } } }"""
REFRESH = """mutation($t: String!) { refreshToken(token: $t) { __typename
  ... on AuthPayload { accessToken refreshToken } ... on InvalidCredentials { code } } }"""
LOGOUT = """mutation($t: String!) { logout(refreshToken: $t) { __typename
  ... on LogoutPayload { ok } ... on InvalidCredentials { code } } }"""


async def test_login_is_case_insensitive_and_wrong_password_is_invalid_credentials(
    api: Api,
) -> None:
    alice = await api.register("Alice")
    ok = await api.ok(
        LOGIN, {"i": {"email": "ALICE@example.com", "password": "correct horse battery"}}
    )
    assert ok["login"]["__typename"] == "AuthPayload"
    assert ok["login"]["user"]["email"] == alice.email == "alice@example.com"
    assert ok["login"]["expiresIn"] == 900
    wrong = await api.ok(LOGIN, {"i": {"email": alice.email, "password": "wrong password!"}})
    assert wrong["login"]["__typename"] == "InvalidCredentials"
    unknown = await api.ok(
        LOGIN, {"i": {"email": "nobody@example.com", "password": "whatever12345"}}
    )
    assert unknown["login"] == wrong["login"]


async def test_email_is_unique_regardless_of_case(api: Api) -> None:
    await api.register("bob")
    again = await api.ok(
        """mutation { register(input: {email: "BOB@example.com", password: "0123456789ab", displayName: "B"}) {
             __typename ... on ValidationError { field } } }"""
    )
    assert again["register"] == {"__typename": "ValidationError", "field": "email"}


async def test_refresh_rotates_and_reuse_revokes_the_family(api: Api) -> None:
    alice = await api.register()
    first = (await api.ok(REFRESH, {"t": alice.refresh_token}))["refreshToken"]
    assert first["__typename"] == "AuthPayload"
    assert first["refreshToken"] != alice.refresh_token
    me = await api.ok("{ me { id } }", token=first["accessToken"])
    assert me["me"]["id"] == alice.id

    # The old token is dead; presenting it again also kills the token it was rotated into.
    reused = await api.ok(REFRESH, {"t": alice.refresh_token})
    assert reused["refreshToken"] == {
        "__typename": "InvalidCredentials",
        "code": "INVALID_CREDENTIALS",
    }
    after_reuse = await api.ok(REFRESH, {"t": first["refreshToken"]})
    assert after_reuse["refreshToken"]["__typename"] == "InvalidCredentials"
    garbage = await api.ok(REFRESH, {"t": "not-a-token"})
    assert garbage["refreshToken"]["__typename"] == "InvalidCredentials"


async def test_logout_revokes_the_refresh_token(api: Api) -> None:
    alice = await api.register()
    bob = await api.register()
    foreign = await api.ok(LOGOUT, {"t": alice.refresh_token}, bob.token)
    assert foreign["logout"]["__typename"] == "InvalidCredentials"
    out = await api.ok(LOGOUT, {"t": alice.refresh_token}, alice.token)
    assert out["logout"] == {"__typename": "LogoutPayload", "ok": True}
    refreshed = await api.ok(REFRESH, {"t": alice.refresh_token})
    assert refreshed["refreshToken"]["__typename"] == "InvalidCredentials"


async def test_anonymous_callers_get_unauthenticated(api: Api) -> None:
    payload = await api("{ me { id } workspaces { nodes { id } } }")
    codes = {e["extensions"]["code"] for e in payload["errors"]}
    assert codes == {"UNAUTHENTICATED"}
    create = await api('mutation { createWorkspace(input: {name: "x"}) { __typename } }')
    assert create["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"


async def test_expired_or_forged_token_is_http_401(api: Api) -> None:
    alice = await api.register()
    services = api.app.state.services
    an_hour_ago = datetime.now(UTC) - timedelta(hours=1)
    expired = issue_access_token(services.tokens, uuid.UUID(alice.id), an_hour_ago)
    for token in (expired, alice.token[:-4] + "AAAA", "garbage"):
        response = await api.raw("{ me { id } }", token=token)
        assert response.status_code == 401
        assert response.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
