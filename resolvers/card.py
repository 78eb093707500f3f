"""Cards: create, update (with field-level merge), move, delete, read, list, history."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from models import board as board_repo
from models import card as card_repo
from models import workspace as workspace_repo
from models.base import new_id
from models.tables import Card
from resolvers import validation
from resolvers.access import Role, can_read, require_role
from resolvers.context import Context
from resolvers.errors import InvalidInput, NotFoundError, VersionConflictError
from resolvers.lists import CARDS
from resolvers.pagination import Page
from resolvers.unit_of_work import Recorder, diff, write
from resolvers.versions import Expected, conflict, expected

STATUSES = ("TODO", "DOING", "DONE")
# GraphQL field (as in events and conflicts) -> column.
COLUMNS = {
    "title": "title",
    "description": "description",
    "status": "status",
    "assignee": "assignee_id",
    "dueDate": "due_date",
    "board": "board_id",
    "position": "position",
}
# How many times a MERGE re-reads after losing a race before it reports the conflict.
MERGE_ATTEMPTS = 3


def snapshot(card: Card) -> dict[str, Any]:
    """The card's editable fields with GraphQL names and JSON values (ids as strings)."""
    return {
        "title": card.title,
        "description": card.description,
        "status": card.status,
        "assignee": None if card.assignee_id is None else str(card.assignee_id),
        "dueDate": None if card.due_date is None else card.due_date.isoformat(),
        "board": str(card.board_id),
        "position": card.position,
    }


def _plain(field: str, value: Any) -> Any:
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    return value


def _status(value: str) -> str:
    if value not in STATUSES:
        raise InvalidInput("status", "status must be TODO, DOING or DONE.")
    return value


async def _card_for_write(session: AsyncSession, card_id: uuid.UUID, user_id: uuid.UUID) -> Card:
    card = await card_repo.card_by_id(session, card_id)
    if card is None:
        raise NotFoundError("Card not found.")
    await require_role(session, card.workspace_id, user_id, Role.EDITOR, "Card")
    return card


async def _check_assignee(
    session: AsyncSession, workspace_id: uuid.UUID, assignee: uuid.UUID | None
) -> None:
    if (
        assignee is not None
        and await workspace_repo.membership(session, workspace_id, assignee) is None
    ):
        raise InvalidInput("assigneeId", "The assignee must be a member of the workspace.")


async def create_card(
    ctx: Context,
    board_id: str,
    title: str,
    description: str,
    status: str,
    assignee_id: str | None,
    due_date: datetime | None,
) -> Card:
    user_id = ctx.user_id()
    board = validation.entity_id(board_id, "boardId")
    values: dict[str, Any] = {
        "title": validation.text(title, "title", maximum=validation.TITLE_MAX),
        "description": validation.text(
            description, "description", maximum=validation.DESCRIPTION_MAX, allow_empty=True
        ),
        "status": _status(status),
        "assignee_id": None
        if assignee_id is None
        else validation.entity_id(assignee_id, "assigneeId"),
        "due_date": validation.due_date(due_date),
    }

    async def work(session: AsyncSession, events: Recorder) -> Card:
        parent = await board_repo.board_by_id(session, board)
        if parent is None:
            raise NotFoundError("Board not found.")
        await require_role(session, parent.workspace_id, user_id, Role.EDITOR, "Board")
        await _check_assignee(session, parent.workspace_id, values["assignee_id"])
        last = await card_repo.last_position(session, board)
        card_id = new_id()
        version = await card_repo.create_card(
            session,
            {
                **values,
                "id": card_id,
                "workspace_id": parent.workspace_id,
                "board_id": board,
                "position": 1.0 if last is None else last + 1.0,
            },
        )
        card = await card_repo.card_by_id(session, card_id)
        assert card is not None
        await events.record(
            parent.workspace_id,
            "card.created",
            "Card",
            card_id,
            version,
            diff({}, snapshot(card)),
        )
        return card

    return await write(ctx, work)


async def _apply(
    session: AsyncSession,
    events: Recorder,
    card_id: uuid.UUID,
    expected_version: str,
    guard: int | bytes,
    requested: dict[str, Any],
    event_type: str,
    merge: bool,
) -> Card:
    """Write `requested` (GraphQL field -> JSON value) if the caller's version allows it.

    At the caller's version the write is guarded by that version. With `merge`, a card that
    moved on is still written when none of the fields changed since the caller's version
    is among the requested ones; the write is then guarded by the version just read, and a
    lost race re-reads.
    """
    for _ in range(MERGE_ATTEMPTS):
        card = await card_repo.card_by_id(session, card_id)
        if card is None:
            raise NotFoundError("Card not found.")
        base = card.version
        if base != guard:
            failure = await conflict(
                session, "Card", card_id, expected_version, card_repo.card_by_id
            )
            if not merge or not isinstance(failure, VersionConflictError):
                raise failure
            if not failure.changes_known or set(failure.changed_fields) & set(requested):
                # Overlapping, or not provably disjoint (the caller's version was pruned
                # from the log, or never recorded): merging could overwrite a change.
                raise failure
        before = snapshot(card)
        changes = diff(before, {k: _plain(k, v) for k, v in requested.items()})
        if not changes:
            return card
        values = {COLUMNS[k]: requested[k] for k in requested}
        version = await card_repo.update_card(session, card_id, base, values)
        if version is None:
            if not merge:
                raise await conflict(
                    session, "Card", card_id, expected_version, card_repo.card_by_id
                )
            continue
        await events.record(card.workspace_id, event_type, "Card", card_id, version, changes)
        after = await card_repo.card_by_id(session, card_id)
        assert after is not None
        return after
    raise await conflict(session, "Card", card_id, expected_version, card_repo.card_by_id)


async def update_card(
    ctx: Context,
    id: str,
    expected_version: str,
    fields: dict[str, Any],
    merge: bool,
) -> Card:
    """`fields` holds only what the client sent, by input name (assigneeId: None unassigns)."""
    user_id = ctx.user_id()
    card_id = validation.entity_id(id, "id")
    guard = expected(ctx.services.db.dialect, expected_version)
    requested: dict[str, Any] = {}
    for field in ("title", "status"):
        if field in fields and fields[field] is None:
            raise InvalidInput(field, f"{field} cannot be null.")
    if fields.get("description", "") is None:
        fields = {**fields, "description": ""}  # null clears it, as on createCard
    for name, value in fields.items():
        if name == "title":
            requested["title"] = validation.text(value, "title", maximum=validation.TITLE_MAX)
        elif name == "description":
            requested["description"] = validation.text(
                value, "description", maximum=validation.DESCRIPTION_MAX, allow_empty=True
            )
        elif name == "status":
            requested["status"] = _status(value)
        elif name == "assigneeId":
            requested["assignee"] = None if value is None else validation.entity_id(value, name)
        elif name == "dueDate":
            requested["dueDate"] = validation.due_date(value)
        else:
            raise InvalidInput(name, f"{name} cannot be updated.")
    if not requested:
        raise InvalidInput(None, "Nothing to update: send at least one field to change.")

    async def work(session: AsyncSession, events: Recorder) -> Card:
        card = await _card_for_write(session, card_id, user_id)
        if "assignee" in requested:
            await _check_assignee(session, card.workspace_id, requested["assignee"])
        return await _apply(
            session, events, card_id, expected_version, guard, requested, "card.updated", merge
        )

    return await write(ctx, work)


async def move_card(
    ctx: Context, id: str, expected_version: str, board_id: str, position: float
) -> Card:
    user_id = ctx.user_id()
    card_id = validation.entity_id(id, "id")
    target = validation.entity_id(board_id, "boardId")
    guard = expected(ctx.services.db.dialect, expected_version)
    requested = {"board": target, "position": validation.position(position)}

    async def work(session: AsyncSession, events: Recorder) -> Card:
        card = await _card_for_write(session, card_id, user_id)
        destination = await board_repo.board_by_id(session, target)
        if destination is None or destination.workspace_id != card.workspace_id:
            raise InvalidInput("boardId", "Cards move only between boards of their workspace.")
        return await _apply(
            session, events, card_id, expected_version, guard, requested, "card.moved", False
        )

    return await write(ctx, work)


async def delete_card(ctx: Context, id: str, expected_version: str) -> uuid.UUID:
    user_id = ctx.user_id()
    card_id = validation.entity_id(id, "id")
    version_of = Expected.parse(
        ctx.services.db.dialect, "Card", expected_version, card_repo.card_by_id
    )

    async def work(session: AsyncSession, events: Recorder) -> uuid.UUID:
        card = await _card_for_write(session, card_id, user_id)
        before = snapshot(card)
        await version_of.write(
            session, card, lambda: card_repo.delete_card(session, card_id, version_of.value)
        )
        await events.record(
            card.workspace_id,
            "card.deleted",
            "Card",
            card_id,
            None,
            [{"field": k, "old": v, "new": None} for k, v in before.items()],
        )
        return card_id

    return await write(ctx, work)


async def card(ctx: Context, id: str) -> Card | None:
    ctx.user_id()
    card_id = validation.entity_id(id, "id")
    found = await ctx.loaders.card_by_id.load(card_id)
    if found is None or not can_read(
        await ctx.loaders.viewer_role_by_workspace.load(found.workspace_id)
    ):
        return None
    return found


async def cards_of(
    ctx: Context, board_id: uuid.UUID, first: int | None, after: str | None
) -> Page[Card]:
    size, key = CARDS.request(first, after)
    rows = await ctx.loaders.cards_by_board.load((board_id, size, key))
    return CARDS.page(rows, size)
