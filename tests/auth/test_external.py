"""Bearer tokens of an external identity provider, verified with its JWKS (JWT_JWKS_URL).

The provider is played by a local HTTP server on a free port serving a key set of RSA and
EC keys generated here; tokens are signed with them the way an OIDC provider signs its
access tokens. On SQLite and PostgreSQL, over HTTP and WebSocket.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from sqlalchemy import func, select

from models.tables import ExternalIdentity, User
from server.app import create_app
from tests.api import Api, empty_tables, running_app, settings_for
from tests.live import live_server, socket
from tests.services import free_port

ISSUER = "https://idp.example.test/"
AUDIENCE = "concord-api"
ME = "{ me { id email displayName } }"
BAD_TOKEN = "Invalid or expired access token."

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


@dataclass
class Provider:
    """The identity provider: its keys, the JWKS it publishes, and how often it was asked."""

    url: str = ""
    keys: dict[str, PrivateKey] = field(default_factory=dict)
    published: list[str] = field(default_factory=list)
    fetches: int = 0
    down: bool = False  # answers 503, as during an outage

    def add_key(self, kid: str, kind: str = "RSA", publish: bool = True) -> None:
        if kind == "RSA":
            self.keys[kid] = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        else:
            self.keys[kid] = ec.generate_private_key(ec.SECP256R1())
        if publish:
            self.published.append(kid)

    def jwks(self) -> dict[str, Any]:
        keys = []
        for kid in self.published:
            key = self.keys[kid]
            if isinstance(key, rsa.RSAPrivateKey):
                jwk = RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
                jwk["alg"] = "RS256"
            else:
                jwk = ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
                jwk["alg"] = "ES256"
            keys.append({**jwk, "kid": kid, "use": "sig"})
        return {"keys": keys}

    def token(
        self,
        sub: str | None,
        kid: str = "rsa-1",
        *,
        signing_key: PrivateKey | None = None,
        lifetime: timedelta = timedelta(minutes=5),
        **claims: Any,
    ) -> str:
        now = datetime.now(UTC)
        key = self.keys[kid] if signing_key is None else signing_key
        algorithm = "RS256" if isinstance(key, rsa.RSAPrivateKey) else "ES256"
        body: dict[str, Any] = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": sub,
            "iat": int(now.timestamp()),
            "exp": int((now + lifetime).timestamp()),
            **claims,
        }
        body = {k: v for k, v in body.items() if v is not None}
        return jwt.encode(body, key, algorithm=algorithm, headers={"kid": kid})


def hs256(claims: dict[str, Any], secret: bytes) -> str:
    """An HS256 JWT signed by hand (PyJWT refuses public keys as HMAC secrets)."""

    def part(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    header = part(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "rsa-1"}).encode())
    body = part(json.dumps(claims).encode())
    mac = hmac.new(secret, f"{header}.{body}".encode(), hashlib.sha256).digest()
    return f"{header}.{body}.{part(mac)}"


@pytest.fixture
def provider() -> Iterator[Provider]:
    state = Provider()
    state.add_key("rsa-1", "RSA")
    state.add_key("ec-1", "EC")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.fetches += 1
            if state.down:
                self.send_error(503)
                return
            body = json.dumps(state.jwks()).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    port = free_port()
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{port}/.well-known/jwks.json"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def external_settings(database_url: str, tmp_path: Path, provider: Provider, **extra: Any) -> Any:
    return settings_for(
        database_url,
        tmp_path,
        jwt_jwks_url=provider.url,
        jwt_jwks_issuer=ISSUER,
        jwt_jwks_audience=AUDIENCE,
        **extra,
    )


@pytest.fixture
async def api(database_url: str, tmp_path: Path, provider: Provider) -> AsyncIterator[Api]:
    await empty_tables(database_url)
    async with running_app(external_settings(database_url, tmp_path, provider)) as client:
        yield client


async def counts(api: Api) -> tuple[int, int]:
    """How many users and external identities the database holds."""
    async with api.app.state.services.db.writer() as session:
        users = (await session.execute(select(func.count()).select_from(User))).scalar_one()
        identities = (
            await session.execute(select(func.count()).select_from(ExternalIdentity))
        ).scalar_one()
    return users, identities


async def me(api: Api, token: str) -> dict[str, Any]:
    user: dict[str, Any] = (await api.ok(ME, token=token))["me"]
    return user


async def test_rs256_and_es256_tokens_sign_in_a_user_created_on_first_sight(
    api: Api, provider: Provider
) -> None:
    alice_token = provider.token(
        "alice-sub", email="Alice@Example.com", email_verified=True, name="Alice Liddell"
    )
    alice = await me(api, alice_token)
    assert alice["email"] == "alice@example.com"
    assert alice["displayName"] == "Alice Liddell"
    # Another token of the same person (any algorithm) is the same user.
    assert await me(api, provider.token("alice-sub", "ec-1")) == alice
    assert await me(api, alice_token) == alice

    # An EC key; an email the provider does not vouch for is not adopted.
    bob = await me(api, provider.token("bob-sub", "ec-1", email="bob@example.com", name="Bob"))
    assert bob["email"].endswith("@external.invalid")
    assert bob["displayName"] == "Bob"
    assert bob["id"] != alice["id"]
    assert await counts(api) == (2, 2)

    # An external user works like any other: it creates a workspace and reads it back.
    created = await api.ok(
        'mutation { createWorkspace(input: {name: "IdP team"}) { __typename } }',
        token=alice_token,
    )
    assert created["createWorkspace"]["__typename"] == "WorkspacePayload"
    listed = await api.ok("{ workspaces { nodes { name } } }", token=alice_token)
    assert listed["workspaces"]["nodes"] == [{"name": "IdP team"}]


async def test_our_own_tokens_still_work_beside_the_provider(api: Api) -> None:
    carol = await api.register("carol")
    assert (await me(api, carol.token))["id"] == carol.id


async def test_bad_external_tokens_are_refused_and_create_nothing(
    api: Api, provider: Provider
) -> None:
    provider.add_key("never-published", "RSA", publish=False)
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = datetime.now(UTC)
    bad = {
        "wrong issuer": provider.token("x", iss="https://evil.example.test/"),
        "wrong audience": provider.token("x", aud="another-api"),
        "expired": provider.token("x", lifetime=timedelta(minutes=-1)),
        "not yet valid": provider.token("x", nbf=int((now + timedelta(minutes=5)).timestamp())),
        "no expiry": provider.token("x", exp=None),
        "no subject": provider.token(None),
        "subject with NUL": provider.token("x\0y"),
        "subject too long": provider.token("x" * 256),
        "bad signature": provider.token("x", "rsa-1", signing_key=stranger),
        "EC key claimed for an RSA signature": provider.token("x", "ec-1", signing_key=stranger),
        "unknown kid (after refresh)": provider.token("x", "never-published"),
        "alg none": jwt.encode({"iss": ISSUER, "aud": AUDIENCE, "sub": "x"}, None, "none"),
        # Algorithm confusion: HMAC keyed with the published public key.
        "HS256 keyed with the public key": hs256(
            {"iss": ISSUER, "aud": AUDIENCE, "sub": "x", "exp": int(now.timestamp()) + 300},
            json.dumps(provider.jwks()["keys"][0]).encode(),
        ),
    }
    for reason, token in bad.items():
        response = await api.raw(ME, token=token)
        assert response.status_code == 401, (reason, response.text)
        error = response.json()["errors"][0]
        assert error == {"message": BAD_TOKEN, "extensions": {"code": "UNAUTHENTICATED"}}, reason
    assert await counts(api) == (0, 0)


async def test_a_rotated_key_is_accepted_after_a_refresh(api: Api, provider: Provider) -> None:
    assert await me(api, provider.token("alice-sub"))
    fetched = provider.fetches
    assert fetched == 1  # the key set is kept, not fetched per token

    # The provider rotates: a new key appears and the old one is retired.
    provider.add_key("rsa-2", "RSA")
    provider.published.remove("rsa-1")
    rotated = await me(api, provider.token("alice-sub", "rsa-2"))
    assert provider.fetches == fetched + 1
    assert rotated == await me(api, provider.token("alice-sub", "rsa-2"))
    assert provider.fetches == fetched + 1


async def test_unknown_kids_cannot_make_every_request_a_fetch(api: Api, provider: Provider) -> None:
    assert await me(api, provider.token("alice-sub"))
    provider.add_key("unpublished", "RSA", publish=False)
    for _ in range(5):
        response = await api.raw(ME, token=provider.token("mallory", "unpublished"))
        assert response.status_code == 401
    # One refresh for the first unknown kid, none for the next ones.
    assert provider.fetches == 2
    assert await counts(api) == (1, 1)


async def test_an_outage_of_the_provider_keeps_known_keys_working(
    api: Api, provider: Provider
) -> None:
    assert await me(api, provider.token("alice-sub"))
    provider.down = True
    provider.add_key("rsa-2", "RSA")
    # A new kid cannot be fetched: refused, quickly, with one attempt.
    response = await api.raw(ME, token=provider.token("bob-sub", "rsa-2"))
    assert response.status_code == 401
    assert provider.fetches == 2
    # Tokens signed with the keys already known keep working, without further attempts.
    assert await me(api, provider.token("alice-sub", "ec-1"))
    response = await api.raw(ME, token=provider.token("carol-sub", "rsa-2"))
    assert response.status_code == 401
    assert provider.fetches == 2


async def test_a_verified_email_of_an_existing_account_is_not_taken_over(
    api: Api, provider: Provider
) -> None:
    local = await api.register("dana")
    external = await me(
        api, provider.token("dana-at-idp", email=local.email, email_verified=True, name="Dana")
    )
    assert external["id"] != local.id
    assert external["email"].endswith("@external.invalid")
    assert (await me(api, local.token))["email"] == local.email


async def test_websocket_connection_init_accepts_provider_tokens(
    database_url: str, tmp_path: Path, provider: Provider
) -> None:
    await empty_tables(database_url)
    async with live_server(external_settings(database_url, tmp_path, provider)) as server:
        async with socket(server.ws_url) as s:
            assert (await s.init(provider.token("erin-sub")))["type"] == "connection_ack"
            await s.send(
                {"id": "1", "type": "subscribe", "payload": {"query": "{ me { displayName } }"}}
            )
            message = await s.receive()
            assert message["payload"] == {"data": {"me": {"displayName": "External user"}}}
        async with socket(server.ws_url) as s:
            await s.send_init(provider.token("erin-sub", aud="another-api"))
            assert await s.closed_with() == 4403


def test_a_half_configured_provider_is_refused_at_start(tmp_path: Path, provider: Provider) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'concord.db'}"
    with pytest.raises(RuntimeError, match="JWT_JWKS_AUDIENCE"):
        create_app(settings_for(url, tmp_path, jwt_jwks_url=provider.url, jwt_jwks_issuer=ISSUER))
    with pytest.raises(RuntimeError, match="JWT_JWKS_URL must be https"):
        create_app(external_settings(url, tmp_path, provider, concord_env="production"))
