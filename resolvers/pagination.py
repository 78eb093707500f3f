"""Opaque cursors and pages.

A cursor is base64url of a small JSON array: the kind of list it belongs to, then the sort
key of the row it points at. The kind makes a cursor from one list useless in another
(a clear error instead of a silently wrong page).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from resolvers.errors import InvalidInput

T = TypeVar("T")


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    cursors: list[str]
    has_next: bool

    @property
    def end_cursor(self) -> str | None:
        return self.cursors[-1] if self.cursors else None


def _plain(value: Any) -> Any:
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def encode_cursor(kind: str, key: Sequence[Any]) -> str:
    raw = json.dumps([kind, *(_plain(v) for v in key)], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(
    kind: str, cursor: str, types: Sequence[Callable[[Any], Any]], field: str = "after"
) -> tuple[Any, ...]:
    """The sort key inside `cursor`, converted by `types`; InvalidInput when it is not ours."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded.encode()))
        if not isinstance(data, list) or data[0] != kind or len(data) != len(types) + 1:
            raise ValueError("wrong kind")
        return tuple(convert(value) for convert, value in zip(types, data[1:], strict=True))
    except (
        ValueError,
        TypeError,
        IndexError,
        OverflowError,
        binascii.Error,
        UnicodeDecodeError,
    ) as exc:
        raise InvalidInput(field, f"{field} is not a valid cursor for this list.") from exc


def parse_datetime(value: Any) -> datetime:
    if not isinstance(value, str):
        raise TypeError("expected a timestamp")
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        raise ValueError("expected an aware timestamp")
    if not 1900 <= parsed.astimezone(UTC).year <= 9999:
        raise ValueError("timestamp out of range")
    return parsed


def parse_float(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError("expected a number")
    if not math.isfinite(value):
        raise ValueError("expected a finite number")
    return float(value)


def parse_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError("expected an integer")
    if not 0 <= value < 2**62:
        raise ValueError("integer out of range")
    return value


def page_of(rows: Sequence[T], limit: int, kind: str, key: Callable[[T], Sequence[Any]]) -> Page[T]:
    """A page from up to `limit + 1` rows: the extra row only says there is more."""
    items = list(rows[:limit])
    return Page(
        items=items,
        cursors=[encode_cursor(kind, key(item)) for item in items],
        has_next=len(rows) > limit,
    )
