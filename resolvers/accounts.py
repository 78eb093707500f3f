"""Accounts created by an operator (`concord create-user`, `concord seed-demo`).

The same rules as `register` (a valid email, a password of 10 to 1024 characters, a display
name, one account per email), without starting a session: no tokens are issued and no
refresh token is stored for somebody who is not signing in.
"""

from __future__ import annotations

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from auth.passwords import hash_password
from models import user as user_repo
from models.tables import User
from models.transaction import run_in_transaction
from resolvers import validation
from resolvers.context import Services
from resolvers.errors import InvalidInput

TAKEN = "This email is already registered."


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
