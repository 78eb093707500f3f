"""Accounts created by an operator (`concord create-user`, `concord seed-demo`).

The same rules as `register` (a valid email, a password of 10 to 1024 characters, a display
name, one account per email), without starting a session: no tokens are issued and no
refresh token is stored for somebody who is not signing in.
"""

from __future__ import annotations

import hashlib
import uuid

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from auth.external import ExternalIdentity
from auth.passwords import hash_password
from models import user as user_repo
from models.tables import User
from models.transaction import run_in_transaction
from resolvers import validation
from resolvers.context import Services
from resolvers.errors import InvalidInput

TAKEN = "This email is already registered."
# Not an argon2 hash: a password login to an external user never matches.
NO_PASSWORD = "!external"
PLACEHOLDER_DOMAIN = "external.invalid"  # RFC 2606: never delivered, never anyone's


async def create_account(services: Services, email: str, password: str, display_name: str) -> User:
    """A new user who can sign in with `login`; InvalidInput for bad input or a taken email."""
    email = validation.email(email)
    password = validation.password(password)
    display_name = validation.name(display_name, "displayName")
    password_hash = await hash_password(password)  # slow by design: outside the transaction

    async def work(session: AsyncSession) -> User:
        if await user_repo.user_by_email(session, email) is not None:
            raise InvalidInput("email", TAKEN)
        return await user_repo.create_user(
            session, email=email, display_name=display_name, password_hash=password_hash
        )

    try:
        return await run_in_transaction(services.db.writer, work)
    except IntegrityError as exc:
        raise InvalidInput("email", TAKEN) from exc


async def registered(services: Services, emails: list[str]) -> list[str]:
    """Which of these emails already have an account."""

    async def work(session: AsyncSession) -> list[str]:
        found = []
        for email in emails:
            if await user_repo.user_by_email(session, validation.email(email)) is not None:
                found.append(email)
        return found

    return await run_in_transaction(services.db.writer, work)


def identity_key(issuer: str, subject: str) -> str:
    return hashlib.sha256(f"{issuer}\0{subject}".encode()).hexdigest()


def _adopted_email(identity: ExternalIdentity) -> str | None:
    """The token's email, when the provider vouches for it (`email_verified: true`).

    An unverified address could be anyone's: adopting it would let a stranger take the
    email before its owner registers, and receive what `addMember` meant for the owner.
    """
    if identity.email is None or not identity.email_verified:
        return None
    try:
        return validation.email(identity.email)
    except InvalidInput:
        return None


def _display_name(identity: ExternalIdentity, email: str | None) -> str:
    for candidate in (identity.name, email):
        if candidate:
            cleaned = candidate.replace("\0", "").strip()[:200]
            if cleaned:
                return cleaned
    return "External user"


async def external_user(services: Services, identity: ExternalIdentity) -> uuid.UUID:
    """The Concord user of an external identity, created the first time it is seen.

    The user has no password. Its email is the provider's verified one unless another
    account has it (accounts are never merged by email: the existing one's owner did not
    agree), else a placeholder under `external.invalid`.
    """
    key = identity_key(identity.issuer, identity.subject)

    async def work(session: AsyncSession) -> uuid.UUID:
        found = await user_repo.user_of_external_identity(session, key)
        if found is not None:
            return found
        email = _adopted_email(identity)
        if email is None or await user_repo.user_by_email(session, email) is not None:
            email = None
        user = await user_repo.create_user(
            session,
            email=email or f"{uuid.uuid4().hex}@{PLACEHOLDER_DOMAIN}",
            display_name=_display_name(identity, email),
            password_hash=NO_PASSWORD,
        )
        await user_repo.store_external_identity(
            session, key=key, issuer=identity.issuer, subject=identity.subject, user_id=user.id
        )
        return user.id

    try:
        return await run_in_transaction(services.db.writer, work)
    except IntegrityError:
        # The same identity's first requests raced (the unique key decides), or someone
        # registered the email meanwhile: once more, the winner is found or the email left.
        return await run_in_transaction(services.db.writer, work)
