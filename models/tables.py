"""Every table Concord keeps, in one place so that migrations and repositories agree.

Relationships are not declared: reads go through DataLoaders that batch by key, so
nothing may lazy-load a relation (and on asyncio nothing could).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Unicode,
    UniqueConstraint,
    Uuid,
)
from sqlalchemy.orm import Mapped, mapped_column

from models.base import LONG_TEXT, Base, UTCDateTime, Versioned, new_id, utcnow

# SQLite only auto-increments a column declared exactly INTEGER PRIMARY KEY.
AUTO_BIGINT = BigInteger().with_variant(Integer(), "sqlite")


class User(Base):
    __tablename__ = "users"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    # Stored lower-cased, so uniqueness is case-insensitive on every database.
    email: Mapped[str] = mapped_column(Unicode(320), unique=True)
    display_name: Mapped[str] = mapped_column(Unicode(200))
    password_hash: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ExternalIdentity(Base):
    """A person known to an external identity provider, and the Concord user they are.

    Looked up by `identity_key`, the SHA-256 of issuer and subject: one fixed-length, binary-safe
    unique column on every database (`sub` is case-sensitive; SQL Server's default
    collation is not), whatever lengths providers use.
    """

    __tablename__ = "external_identities"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    identity_key: Mapped[str] = mapped_column(String(64), unique=True)
    issuer: Mapped[str] = mapped_column(Unicode(1000))
    subject: Mapped[str] = mapped_column(Unicode(255))
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class RefreshToken(Base):
    __tablename__ = "refresh_tokens"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"), index=True)
    # SHA-256 of the token: a stolen table does not hand out sessions.
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # Tokens rotated from one login share a family; reuse of a rotated token revokes it.
    family_id: Mapped[uuid.UUID] = mapped_column(Uuid, index=True)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Workspace(Versioned, Base):
    __tablename__ = "workspaces"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(Unicode(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Membership(Base):
    __tablename__ = "memberships"
    __table_args__ = (UniqueConstraint("workspace_id", "user_id"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    workspace_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("workspaces.id"))
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"), index=True)
    role: Mapped[str] = mapped_column(String(10))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Board(Versioned, Base):
    __tablename__ = "boards"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    workspace_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("workspaces.id"), index=True)
    name: Mapped[str] = mapped_column(Unicode(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Card(Versioned, Base):
    __tablename__ = "cards"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    # Denormalised from the board: authorization and events need the workspace of a card
    # without a join, and a card only moves between boards of its own workspace.
    workspace_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("workspaces.id"))
    board_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("boards.id"), index=True)
    title: Mapped[str] = mapped_column(Unicode(500))
    description: Mapped[str] = mapped_column(LONG_TEXT)
    status: Mapped[str] = mapped_column(String(8))
    position: Mapped[float] = mapped_column(Float)
    assignee_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    due_date: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Comment(Versioned, Base):
    __tablename__ = "comments"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    workspace_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("workspaces.id"))
    card_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("cards.id"), index=True)
    author_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"))
    body: Mapped[str] = mapped_column(LONG_TEXT)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class EventStream(Base):
    """One row per workspace: the last sequence number handed out.

    Its row lock, taken by the UPDATE that increments it and held to commit, orders the
    workspace's writers, which makes sequence numbers gapless and in commit order.
    """

    __tablename__ = "event_streams"

    workspace_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("workspaces.id"), primary_key=True)
    last_seq: Mapped[int] = mapped_column(BigInteger, default=0)


class Event(Base):
    """The append-only log: audit trail, outbox and replay source."""

    __tablename__ = "events"
    __table_args__ = (
        UniqueConstraint("workspace_id", "seq"),
        Index("ix_events_entity_id_seq", "entity_id", "seq"),
    )

    id: Mapped[int] = mapped_column(AUTO_BIGINT, primary_key=True, autoincrement=True)
    workspace_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("workspaces.id"))
    seq: Mapped[int] = mapped_column(BigInteger)
    type: Mapped[str] = mapped_column(String(64))
    entity_type: Mapped[str] = mapped_column(String(32))
    entity_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    entity_version: Mapped[str | None] = mapped_column(String(40), nullable=True)
    actor_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, nullable=True)
    # [{"field": ..., "old": ..., "new": ...}] with GraphQL field names.
    changes: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class IdempotencyKey(Base):
    """A mutation request's Idempotency-Key, its request's hash and, once known, its answer.

    Unique per (user, key): the first of two requests with one key to insert the row wins,
    the other waits for (then replays) the winner's stored answer. A row without a status
    is a request whose mutation committed and whose answer is still being written.
    """

    __tablename__ = "idempotency_keys"
    __table_args__ = (UniqueConstraint("user_id", "idempotency_key"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"))
    idempotency_key: Mapped[str] = mapped_column(String(255))
    # SHA-256 (hex) of the request's document, variables and operation name.
    request_hash: Mapped[str] = mapped_column(String(64))
    status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    response_body: Mapped[str | None] = mapped_column(LONG_TEXT, nullable=True)
    # The response headers a replay repeats (content type, the seen-position header).
    response_headers: Mapped[dict[str, str] | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
