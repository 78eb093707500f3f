"""Operator commands that change data through the use cases: create-user and seed-demo.

They open the same services an API process has (database, broker, token settings), so what
they write goes through the same validation, version and event rules as a mutation, and the
events are published: with REDIS_URL set, browsers watching the workspace see the demo data
arrive live. The embedded SQLite database is migrated first, as `concord serve` does.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from auth.backend import Viewer
from models.database import Database
from models.migrate import upgrade
from models.tables import User
from resolvers import accounts, board, card, comment, member, validation, workspace
from resolvers.context import Context, Services
from server.app import token_config
from server.settings import Settings
from subscriptions.backends import broker_from_url


@asynccontextmanager
async def open_services(settings: Settings) -> AsyncIterator[Services]:
    """The services of one API process, for the length of one command."""
    services = Services(
        db=Database(settings.write_url, settings.read_url),
        broker=broker_from_url(settings.redis_url),
        tokens=token_config(settings),
    )
    try:
        if services.db.dialect == "sqlite":
            await upgrade(services.db.write_engine)
        await services.broker.connect()
        yield services
    finally:
        await services.broker.disconnect()
        await services.db.dispose()


def acting_as(services: Services, user_id: uuid.UUID) -> Context:
    """A context in which the use cases act as this user (as if signed in for a minute)."""
    viewer = Viewer(user_id=user_id, expires_at=datetime.now(UTC) + timedelta(minutes=1))
    return Context.create(services, viewer)


async def create_user(settings: Settings, email: str, password: str, display_name: str) -> User:
    async with open_services(settings) as services:
        return await accounts.create_account(services, email, password, display_name)


# ---- the demo workspace -----------------------------------------------------------------


@dataclass(frozen=True)
class Person:
    email: str
    display_name: str
    role: str


@dataclass(frozen=True)
class DemoCard:
    title: str
    description: str
    status: str
    assignee: str | None  # an email of PEOPLE
    comments: tuple[tuple[str, str], ...] = ()  # (author email, body)


PEOPLE = (
    Person("ada@demo.example.com", "Ada Lovelace", "OWNER"),
    Person("grace@demo.example.com", "Grace Hopper", "EDITOR"),
    Person("alan@demo.example.com", "Alan Turing", "EDITOR"),
    Person("katherine@demo.example.com", "Katherine Johnson", "VIEWER"),
)
WORKSPACE = "Demo: product launch"
BOARDS: dict[str, tuple[DemoCard, ...]] = {
    "Launch plan": (
        DemoCard(
            "Write the announcement",
            "Blog post, changelog and the e-mail to early users.",
            "DOING",
            "grace@demo.example.com",
            (
                ("grace@demo.example.com", "First draft is in; the pricing paragraph is open."),
                ("ada@demo.example.com", "Looks good. Mention live updates first."),
            ),
        ),
        DemoCard(
            "Load test the live updates",
            "10,000 subscribers on one workspace, two API processes, Redis in between.",
            "TODO",
            "alan@demo.example.com",
        ),
        DemoCard("Pick the launch date", "", "DONE", "ada@demo.example.com"),
        DemoCard(
            "Rehearse the demo",
            "Two windows side by side: edit a card in one and watch it change in the other.",
            "TODO",
            None,
        ),
    ),
    "Bugs": (
        DemoCard(
            "Resume after a laptop sleeps",
            "The client should reconnect with its last cursor and miss nothing.",
            "DOING",
            "alan@demo.example.com",
            (("alan@demo.example.com", "Cannot reproduce with the cursor passed as `after`."),),
        ),
        DemoCard("Typo on the sign-in page", "", "TODO", None),
    ),
}


class DemoExists(Exception):
    """The demo's people are already registered in this database."""


@dataclass(frozen=True)
class Demo:
    workspace_id: uuid.UUID
    workspace_name: str
    people: tuple[Person, ...]
    password: str
    boards: int
    cards: int
    comments: int


def demo_password() -> str:
    """A fresh password for the demo accounts: 16 URL-safe characters."""
    return secrets.token_urlsafe(12)


async def seed_demo(settings: Settings, password: str) -> Demo:
    """Create the demo's people, workspace, boards, cards and comments.

    Refuses (DemoExists, nothing written) when any of the demo's people is registered, and
    (InvalidInput, nothing written) a password that `register` would refuse.
    """
    validation.password(password)
    async with open_services(settings) as services:
        taken = await accounts.registered(services, [p.email for p in PEOPLE])
        if taken:
            raise DemoExists(
                f"the demo is already seeded in this database ({', '.join(taken)} registered); "
                "use a fresh database or create-user"
            )
        ids: dict[str, uuid.UUID] = {}
        for person in PEOPLE:
            user = await accounts.create_account(
                services, person.email, password, person.display_name
            )
            ids[person.email] = user.id
        owner = next(p for p in PEOPLE if p.role == "OWNER")
        as_owner = acting_as(services, ids[owner.email])
        space = await workspace.create_workspace(as_owner, WORKSPACE)
        for person in PEOPLE:
            if person is not owner:
                await member.add_member(as_owner, str(space.id), person.email, person.role)
        cards = comments = 0
        for name, demo_cards in BOARDS.items():
            created = await board.create_board(as_owner, str(space.id), name)
            for demo in demo_cards:
                assignee = str(ids[demo.assignee]) if demo.assignee else None
                made = await card.create_card(
                    as_owner,
                    str(created.id),
                    demo.title,
                    demo.description,
                    demo.status,
                    assignee,
                    None,
                )
                cards += 1
                for author, body in demo.comments:
                    await comment.add_comment(acting_as(services, ids[author]), str(made.id), body)
                    comments += 1
        return Demo(space.id, WORKSPACE, PEOPLE, password, len(BOARDS), cards, comments)
