"""Choosing the broker backend from `REDIS_URL`."""

from __future__ import annotations

from urllib.parse import urlsplit

from models.breaker import Breaker
from subscriptions.broker import Broker
from subscriptions.memory import MemoryBroker
from subscriptions.redis import RedisBroker, redact

REDIS_SCHEMES = frozenset({"redis", "rediss"})


def broker_from_url(url: str | None, *, breaker: Breaker | None = None) -> Broker:
    """None → in-process `MemoryBroker`; redis:// or rediss:// → `RedisBroker`.

    Anything else (including an empty string) raises ValueError, so that a mistyped
    setting fails at startup instead of silently falling back to a single process.
    """
    if url is None:
        return MemoryBroker()
    if is_redis_url(url):
        return RedisBroker(url, breaker=breaker)
    raise ValueError(
        f"unsupported broker URL {redact(url)!r}: expected redis://… or rediss://…, "
        "or no URL for the in-process broker"
    )


def is_redis_url(url: str) -> bool:
    return urlsplit(url).scheme.lower() in REDIS_SCHEMES
