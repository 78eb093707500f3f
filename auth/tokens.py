"""Access tokens (JWT, HS256) and refresh tokens (random, stored hashed)."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jwt

ALGORITHM = "HS256"
SECRET_FILE = "jwt-secret"


class InvalidToken(Exception):
    """The token is malformed, forged, expired or not an access token."""


@dataclass(frozen=True)
class TokenConfig:
    secret: str
    issuer: str
    audience: str
    access_ttl: timedelta
    refresh_ttl: timedelta


@dataclass(frozen=True)
class AccessClaims:
    user_id: uuid.UUID
    expires_at: datetime
    # The login (refresh-token family) the token belongs to: signing out revokes it.
    session_id: uuid.UUID | None = None


def development_secret(data_dir: Path) -> str:
    """The secret kept in the data directory, created at random on first use.

    Never a constant: a constant secret in the source would let anyone mint tokens for
    any embedded install.
    """
    path = data_dir / SECRET_FILE
    if path.exists():
        return path.read_text().strip()
    data_dir.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(64)
    # Created with 0600 from the start; another process racing us keeps its own file.
    try:
        fd = path.open("x", encoding="ascii")
    except FileExistsError:
        return path.read_text().strip()
    path.chmod(0o600)
    with fd:
        fd.write(secret)
    return secret


def issue_access_token(
    config: TokenConfig,
    user_id: uuid.UUID,
    now: datetime | None = None,
    session_id: uuid.UUID | None = None,
) -> str:
    """A signed access token; `session_id` (the login's refresh-token family, `sid`) is what
    signing out denies, so every access token of that login stops working at once."""
    now = now or datetime.now(UTC)
    claims = {
        "sub": str(user_id),
        "jti": str(uuid.uuid4()),
        "sid": str(session_id or uuid.uuid4()),
        "iss": config.issuer,
        "aud": config.audience,
        "iat": int(now.timestamp()),
        "exp": int((now + config.access_ttl).timestamp()),
        "typ": "access",
    }
    return jwt.encode(claims, config.secret, algorithm=ALGORITHM)


def decode_access_token(config: TokenConfig, token: str) -> AccessClaims:
    try:
        claims = jwt.decode(
            token,
            config.secret,
            algorithms=[ALGORITHM],
            audience=config.audience,
            issuer=config.issuer,
            options={"require": ["exp", "sub", "iat"]},
        )
        if claims.get("typ") != "access":
            raise InvalidToken("not an access token")
        sid = claims.get("sid")
        return AccessClaims(
            user_id=uuid.UUID(claims["sub"]),
            expires_at=datetime.fromtimestamp(claims["exp"], UTC),
            # Tokens issued before sessions existed carry none (and expire within the TTL).
            session_id=uuid.UUID(sid) if sid is not None else None,
        )
    except (jwt.PyJWTError, ValueError, TypeError, OverflowError) as exc:
        # OverflowError: an `exp` beyond any datetime (found by the fuzz, tests/fuzz); only
        # a holder of the secret can sign one, but it must still be a 401, not a 500.
        raise InvalidToken(str(exc)) from exc


def new_refresh_token() -> str:
    return secrets.token_urlsafe(32)


def hash_refresh_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
