"""Registration, login, refresh-token rotation and logout."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from auth.passwords import hash_password, verify_password
from auth.tokens import hash_refresh_token, issue_access_token, new_refresh_token
from models import user as user_repo
from models.tables import User
from models.transaction import run_in_transaction
from resolvers import validation
from resolvers.context import Context
from resolvers.errors import InvalidCredentialsError, InvalidInput, RateLimitedError

BAD_LOGIN = "Email or password is wrong."
BAD_REFRESH = "This refresh token is invalid, expired or already used: sign in again."


@dataclass(frozen=True)
class Session:
    access_token: str
    refresh_token: str
    expires_in: int
    user: User


async def _start_session(
    ctx: Context, session: AsyncSession, user: User, family_id: uuid.UUID | None = None
) -> Session:
    config = ctx.services.tokens
    refresh = new_refresh_token()
    # The family is the login: its id goes into every access token of the login (`sid`),
    # so that signing out denies them all.
    family_id = family_id or uuid.uuid4()
    await user_repo.store_refresh_token(
        session,
        user_id=user.id,
        token_hash=hash_refresh_token(refresh),
        family_id=family_id,
        expires_at=datetime.now(UTC) + config.refresh_ttl,
    )
    return Session(
        access_token=issue_access_token(config, user.id, session_id=family_id),
        refresh_token=refresh,
        expires_in=int(config.access_ttl.total_seconds()),
        user=user,
    )


async def _count_attempt(ctx: Context) -> None:
    """One more anonymous attempt from the caller's address; RateLimited when over."""
    limits = ctx.services.auth_limits
    if limits is not None and (refusal := await limits.attempt(ctx.client_ip())) is not None:
        raise RateLimitedError(refusal.limit, refusal.retry_after)


class _AlreadyRegistered(InvalidInput):
    """The answer that reveals an email has an account: counted per client address."""

    def __init__(self) -> None:
        super().__init__("email", "This email is already registered.")


async def register(ctx: Context, email: str, password: str, display_name: str) -> Session:
    email = validation.email(email)
    password = validation.password(password)
    display_name = validation.name(display_name, "displayName")
    await _count_attempt(ctx)
    limits = ctx.services.auth_limits
    ip = ctx.client_ip()
    # Before the email is looked at: a refusal must not depend on whether it is taken.
    if limits is not None and (refusal := await limits.registrations_exhausted(ip)):
        raise RateLimitedError(refusal.limit, refusal.retry_after)
    # Hash outside the transaction: argon2 is deliberately slow.
    password_hash = await hash_password(password)

    async def work(session: AsyncSession) -> Session:
        if await user_repo.user_by_email(session, email) is not None:
            raise _AlreadyRegistered()
        user = await user_repo.create_user(
            session, email=email, display_name=display_name, password_hash=password_hash
        )
        return await _start_session(ctx, session, user)

    try:
        try:
            return await run_in_transaction(ctx.services.db.writer, work)
        except IntegrityError as exc:
            # Two registrations of one email at once: the unique constraint decides.
            raise _AlreadyRegistered() from exc
    except _AlreadyRegistered:
        if limits is not None:
            await limits.registered_email(ip)
        raise


async def login(ctx: Context, email: str, password: str) -> Session:
    if not validation.no_nul(email, "email").strip():
        raise InvalidInput("email", "email must not be empty.")
    if not password:
        raise InvalidInput("password", "password must not be empty.")
    if len(password) > validation.PASSWORD_MAX:
        raise InvalidCredentialsError(BAD_LOGIN)
    normalized = email.strip().lower()
    await _count_attempt(ctx)
    limits = ctx.services.auth_limits
    if limits is not None and (refusal := await limits.account_locked(normalized)) is not None:
        raise RateLimitedError(refusal.limit, refusal.retry_after)
    async with ctx.services.db.writer() as session:
        user = await user_repo.user_by_email(session, normalized)
    if not await verify_password(user.password_hash if user else None, password) or user is None:
        if limits is not None:
            await limits.failed_login(normalized)
        raise InvalidCredentialsError(BAD_LOGIN)

    async def work(session: AsyncSession) -> Session:
        return await _start_session(ctx, session, user)

    return await run_in_transaction(ctx.services.db.writer, work)


async def refresh(ctx: Context, token: str) -> Session:
    """Rotate: the presented token dies and a new one of the same family is issued.

    Presenting an already rotated token means it leaked (or a client raced itself): the
    whole family is revoked, so a thief's copy dies with the owner's — and so do the
    family's access tokens and open sockets, the thief's included.
    """
    token_hash = hash_refresh_token(token)

    async def work(session: AsyncSession) -> Session | uuid.UUID | None:
        stored = await user_repo.refresh_token_by_hash(session, token_hash)
        if stored is None or stored.expires_at <= datetime.now(UTC):
            return None
        if stored.revoked_at is not None or not await user_repo.revoke_refresh_token(
            session, stored.id
        ):
            await user_repo.revoke_refresh_family(session, stored.family_id)
            return stored.family_id
        users = await user_repo.users_by_ids(session, [stored.user_id])
        return await _start_session(ctx, session, users[0], stored.family_id)

    result = await run_in_transaction(ctx.services.db.writer, work)
    if isinstance(result, uuid.UUID):
        await _sign_out(ctx, result)
        result = None
    if result is None:
        raise InvalidCredentialsError(BAD_REFRESH)
    return result


async def _sign_out(ctx: Context, family_id: uuid.UUID) -> None:
    """After the family's revocation committed: its access tokens and sockets too."""
    revocations = ctx.services.revocations
    if revocations is not None:
        await revocations.revoke(family_id)


async def logout(ctx: Context, token: str) -> None:
    """Revoke the caller's refresh token (its family: every rotation of that login), the
    login's access tokens, and close its open sockets and streams."""
    user_id = ctx.user_id()
    token_hash = hash_refresh_token(token)

    async def work(session: AsyncSession) -> uuid.UUID | None:
        stored = await user_repo.refresh_token_by_hash(session, token_hash)
        if stored is None or stored.user_id != user_id or stored.revoked_at is not None:
            return None
        await user_repo.revoke_refresh_family(session, stored.family_id)
        return stored.family_id

    family_id = await run_in_transaction(ctx.services.db.writer, work)
    if family_id is None:
        raise InvalidCredentialsError("This refresh token is not a live token of yours.")
    await _sign_out(ctx, family_id)
