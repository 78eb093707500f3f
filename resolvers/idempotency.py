"""What a mutation's transaction needs to know about the request's Idempotency-Key."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

# The key in the request scope's `state` under which the HTTP layer leaves the claim.
IDEMPOTENCY_STATE = "idempotency"


@dataclass
class IdempotencyClaim:
    """One HTTP mutation request's key, checked and not yet held by anyone when it starts.

    `row_id` is set once a mutation of the request committed the key's row along with its
    event; `lost` once another request with the key turned out to have committed first
    (every later mutation of this request then applies nothing).
    """

    user_id: uuid.UUID
    key: str
    request_hash: str
    ttl_seconds: float
    row_id: uuid.UUID | None = None
    lost: bool = False
