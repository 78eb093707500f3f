"""Password hashing with argon2id, off the event loop.

argon2 is deliberately slow (tens of milliseconds of CPU and 64 MiB per hash). On the event
loop it stalled every other request; here it runs in a small thread pool (argon2-cffi
releases the GIL while hashing), whose size bounds the CPU and memory that logins and
registrations can take at once. Callers beyond that wait in the pool's queue.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_hasher = PasswordHasher()

# Verifying against this keeps unknown-email logins as slow as wrong-password ones, so
# response times do not reveal which emails are registered.
_DUMMY_HASH = _hasher.hash("concord-timing-equaliser")

HASH_WORKERS = 2
_pool = ThreadPoolExecutor(max_workers=HASH_WORKERS, thread_name_prefix="argon2")


def hash_password_sync(password: str) -> str:
    return _hasher.hash(password)


def verify_password_sync(password_hash: str | None, password: str) -> bool:
    try:
        return _hasher.verify(password_hash or _DUMMY_HASH, password) and password_hash is not None
    except (VerificationError, InvalidHashError):
        return False


async def hash_password(password: str) -> str:
    """The argon2id hash of `password`, computed in the hashing pool."""
    return await asyncio.get_running_loop().run_in_executor(_pool, hash_password_sync, password)


async def verify_password(password_hash: str | None, password: str) -> bool:
    """Whether `password` matches (False for a missing hash), in the hashing pool."""
    return await asyncio.get_running_loop().run_in_executor(
        _pool, verify_password_sync, password_hash, password
    )
