"""Input rules: every bad input is an InvalidInput naming the offending field."""

from __future__ import annotations

import math
import re
import uuid
from datetime import UTC, datetime

from resolvers.errors import InvalidInput

NAME_MAX = 200
TITLE_MAX = 500
DESCRIPTION_MAX = 20_000
COMMENT_MAX = 10_000
EMAIL_MAX = 320
PASSWORD_MIN = 10
# argon2 hashes whatever it is given; a cap keeps one request from costing seconds.
PASSWORD_MAX = 1024
PAGE_MIN, PAGE_MAX = 1, 100

# Deliberately simple: one @, no spaces, a dot in the domain. Deliverability is not ours
# to judge; obvious typos are.
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def no_nul(value: str, field: str) -> str:
    """`value`, or InvalidInput when it holds a NUL character (PostgreSQL refuses 0x00)."""
    if "\x00" in value:
        raise InvalidInput(field, f"{field} must not contain NUL characters.")
    return value


def text(value: str, field: str, *, maximum: int, allow_empty: bool = False) -> str:
    """Trimmed `value`, or InvalidInput when empty (unless allowed) or longer than `maximum`."""
    cleaned = no_nul(value, field).strip()
    if not cleaned and not allow_empty:
        raise InvalidInput(field, f"{field} must not be empty.")
    if len(cleaned) > maximum:
        raise InvalidInput(field, f"{field} must be at most {maximum} characters.")
    return cleaned


def name(value: str, field: str = "name") -> str:
    return text(value, field, maximum=NAME_MAX)


def email(value: str, field: str = "email") -> str:
    cleaned = no_nul(value, field).strip().lower()
    if len(cleaned) > EMAIL_MAX or not _EMAIL.match(cleaned):
        raise InvalidInput(field, "Enter a valid email address.")
    return cleaned


def password(value: str, field: str = "password") -> str:
    if len(value) < PASSWORD_MIN:
        raise InvalidInput(field, f"Passwords need at least {PASSWORD_MIN} characters.")
    if len(value) > PASSWORD_MAX:
        raise InvalidInput(field, f"Passwords may have at most {PASSWORD_MAX} characters.")
    return value


def entity_id(value: str, field: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except (ValueError, AttributeError, TypeError) as exc:
        raise InvalidInput(field, f"{field} is not a valid id.") from exc


def page_size(first: int | None, field: str = "first", default: int = 50) -> int:
    """`first` checked against 1 to 100; an explicit null means the default."""
    if first is None:
        return default
    if not PAGE_MIN <= first <= PAGE_MAX:
        raise InvalidInput(field, f"{field} must be between {PAGE_MIN} and {PAGE_MAX}.")
    return first


def position(value: float, field: str = "position") -> float:
    if not math.isfinite(value):
        raise InvalidInput(field, f"{field} must be a finite number.")
    return value


def due_date(value: datetime | None, field: str = "dueDate") -> datetime | None:
    if value is None:
        return None
    if value.tzinfo is None:
        raise InvalidInput(field, f"{field} needs a time zone (for example 2026-01-31T17:00:00Z).")
    try:
        return value.astimezone(UTC)
    except (OverflowError, ValueError) as exc:
        # 0001-01-01T00:00:00+14:00 is before year 1 in UTC, 9999-12-31T23:59-12:00 after 9999.
        raise InvalidInput(field, f"{field} is out of range once converted to UTC.") from exc
