"""Access tokens of an external identity provider (OAuth 2.0 / OpenID Connect), by JWKS.

With `JWT_JWKS_URL` set, a bearer token signed RS256 or ES256 is verified with the
provider's published keys, alongside our own HS256 tokens (which keep JWT_ISSUER and
JWT_AUDIENCE): the token's header names the algorithm, and each kind is verified only
with its own keys and algorithms, so an HS256 token can never be checked against a public
key (algorithm confusion) nor a provider's token against our secret. Its `iss` must be
`JWT_JWKS_ISSUER`, its `aud` contain `JWT_JWKS_AUDIENCE`; `exp` is required, `nbf`
honoured. Its `sub` is the person: the first verified token of a (issuer, sub) creates
a Concord user (resolvers.accounts.external_user), later ones find it.

Keys: PyJWKClient fetches the key set and keeps it for JWKS_LIFESPAN_SECONDS. A token
whose `kid` is not in the set makes it fetch again at once (the provider rotated its
keys); a `kid` still unknown after that refresh is refused, and for JWKS_QUIET_SECONDS
unknown kids are refused from the set in hand, so a stream of made-up kids cannot make
every request an HTTP fetch. While the provider cannot be reached the last key set it
served is used, and no fetch is tried for JWKS_QUIET_SECONDS. Fetching is blocking HTTP: it
runs in a worker thread, never on the event loop, one fetch at a time.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import jwt
from jwt import PyJWK, PyJWKClient

from auth.backend import Viewer
from auth.tokens import InvalidToken

log = logging.getLogger(__name__)

ALGORITHMS = ("RS256", "ES256")
JWKS_LIFESPAN_SECONDS = 300
JWKS_QUIET_SECONDS = 10.0
JWKS_TIMEOUT_SECONDS = 5


@dataclass(frozen=True)
class ExternalConfig:
    jwks_url: str
    issuer: str
    audience: str


@dataclass(frozen=True)
class ExternalIdentity:
    """Who a verified external token speaks for, and what it says about them."""

    issuer: str
    subject: str
    email: str | None
    email_verified: bool
    name: str | None


def external_config(settings: Any) -> ExternalConfig | None:
    """The provider's settings; None without JWT_JWKS_URL, an error when half set."""
    if not settings.jwt_jwks_url:
        return None
    missing = [
        name
        for name, value in (
            ("JWT_JWKS_ISSUER", settings.jwt_jwks_issuer),
            ("JWT_JWKS_AUDIENCE", settings.jwt_jwks_audience),
        )
        if not value
    ]
    if missing:
        raise RuntimeError(
            f"JWT_JWKS_URL is set but {' and '.join(missing)} not: without them a token the "
            "provider issued to any other application would be accepted here."
        )
    return ExternalConfig(
        settings.jwt_jwks_url, settings.jwt_jwks_issuer, settings.jwt_jwks_audience
    )


class JwksKeys:
    """The provider's signing keys by `kid` (blocking: call from a worker thread)."""

    def __init__(self, url: str, quiet_seconds: float = JWKS_QUIET_SECONDS) -> None:
        self.client = PyJWKClient(
            url, cache_keys=False, lifespan=JWKS_LIFESPAN_SECONDS, timeout=JWKS_TIMEOUT_SECONDS
        )
        self.quiet_seconds = quiet_seconds
        self._lock = threading.Lock()
        self._missed_at = float("-inf")  # the last refresh that did not find a kid
        self._failed_at = float("-inf")  # the last fetch that failed
        self._last_good: list[PyJWK] | None = None

    @staticmethod
    def _find(keys: list[PyJWK], kid: str | None) -> PyJWK | None:
        if kid is None:
            # A provider with one key may leave out `kid`; with several it must say which.
            return keys[0] if len(keys) == 1 else None
        return next((key for key in keys if key.key_id == kid), None)

    def _signing_keys(self, refresh: bool) -> list[PyJWK]:
        """The key set: PyJWKClient's (fetched when stale, or to refresh). While the provider
        cannot be reached, the last set it served, and no new attempt for quiet_seconds: an
        outage must not hold every new token for a fetch timeout."""
        if time.monotonic() - self._failed_at < self.quiet_seconds:
            if self._last_good is None:
                raise InvalidToken("the identity provider's keys are unavailable")
            return self._last_good
        try:
            keys = self.client.get_signing_keys(refresh=refresh)
        except jwt.PyJWKClientError as exc:
            self._failed_at = time.monotonic()
            log.warning("JWKS not fetched (%s); using the last key set served", exc)
            if self._last_good is None:
                raise InvalidToken(f"signing keys unavailable: {exc}") from exc
            return self._last_good
        self._last_good = keys
        return keys

    def key(self, kid: str | None) -> PyJWK:
        with self._lock:
            found = self._find(self._signing_keys(refresh=False), kid)
            if found is None and time.monotonic() - self._missed_at >= self.quiet_seconds:
                found = self._find(self._signing_keys(refresh=True), kid)
                if found is None:
                    self._missed_at = time.monotonic()
        if found is None:
            raise InvalidToken(f"no signing key with kid {kid!r}")
        return found


IdentityUser = Callable[[ExternalIdentity], Awaitable[uuid.UUID]]


class ExternalTokens:
    """Verifies the provider's tokens and maps them to Concord users."""

    def __init__(
        self, config: ExternalConfig, user_of: IdentityUser, keys: JwksKeys | None = None
    ) -> None:
        self.config = config
        self.user_of = user_of
        self.keys = keys or JwksKeys(config.jwks_url)
        # (issuer, sub) → user id: identities are never deleted, so this may be remembered.
        self._users: OrderedDict[tuple[str, str], uuid.UUID] = OrderedDict()

    def accepts(self, token: str) -> bool:
        try:
            return jwt.get_unverified_header(token).get("alg") in ALGORITHMS
        except jwt.PyJWTError:
            return False

    async def verify(self, token: str) -> tuple[ExternalIdentity, datetime]:
        """The token's identity and expiry; InvalidToken for anything not to be honoured."""
        try:
            header = jwt.get_unverified_header(token)
            algorithm = header.get("alg")
            if algorithm not in ALGORITHMS:
                raise InvalidToken(f"algorithm {algorithm!r} is not accepted")
            kid = header.get("kid")
            if kid is not None and not isinstance(kid, str):
                raise InvalidToken("kid must be a string")
            key = await asyncio.to_thread(self.keys.key, kid)
            if key.algorithm_name != algorithm:
                raise InvalidToken(f"key {kid!r} does not sign with {algorithm}")
            claims = jwt.decode(
                token,
                key.key,
                algorithms=[algorithm],
                audience=self.config.audience,
                issuer=self.config.issuer,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except (jwt.PyJWTError, ValueError, TypeError) as exc:
            raise InvalidToken(str(exc)) from exc
        subject = claims["sub"]
        if not isinstance(subject, str) or not 0 < len(subject) <= 255 or "\0" in subject:
            raise InvalidToken("sub must be a string of 1 to 255 characters, without NUL")
        email = claims.get("email")
        name = claims.get("name") or claims.get("preferred_username")
        identity = ExternalIdentity(
            issuer=self.config.issuer,
            subject=subject,
            email=email if isinstance(email, str) else None,
            email_verified=claims.get("email_verified") is True,
            name=name if isinstance(name, str) else None,
        )
        return identity, datetime.fromtimestamp(claims["exp"], UTC)

    async def viewer(self, token: str) -> Viewer:
        identity, expires_at = await self.verify(token)
        key = (identity.issuer, identity.subject)
        user_id = self._users.get(key)
        if user_id is None:
            user_id = await self.user_of(identity)
            self._users[key] = user_id
            if len(self._users) > 10_000:
                self._users.popitem(last=False)
        else:
            self._users.move_to_end(key)
        return Viewer(user_id=user_id, expires_at=expires_at)
