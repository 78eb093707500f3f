"""Idempotency-Key on HTTP mutations: a retry gets the first answer instead of a second change.

A client that lost the answer to a mutation (a timeout, a dropped connection) cannot tell
whether it was applied. Sent again with the same `Idempotency-Key` header, the mutation
is not applied a second time: the answer stored for the key is returned, byte for byte,
with `Idempotent-Replayed: true`. Keys are per user and kept IDEMPOTENCY_KEY_TTL_SECONDS.

How it holds across processes: the key's row (unique per user and key) is inserted in
the transaction of the request's first mutation that records an event
(resolvers/unit_of_work.py), so it commits with the change. A concurrent request with the
same key blocks on that row until the first commits, then fails to insert it, rolls back
(applying nothing) and waits here for the first one's answer to be stored. A request that
committed nothing (a validation error, a version conflict) stores its answer afterwards,
so a retry sees the same answer too; answers that invite a retry (a timeout, an internal
error, a rate limit) are not stored when nothing was committed.

Only authenticated HTTP POSTs of a mutation answered with JSON use the key. On a query
(nothing to repeat), from an anonymous caller (login and register answers hold tokens
that must never be replayed to whoever guesses a key), over SSE or a WebSocket (no
per-operation headers) a well-formed key is ignored. A malformed key is a 400 anywhere.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from typing import Any

from graphql import GraphQLError, OperationDefinitionNode, OperationType, parse
from starlette.requests import Request
from starlette.responses import Response

from auth.backend import Viewer
from models import idempotency as store
from models.database import Database
from models.tables import IdempotencyKey
from models.transaction import run_in_transaction
from resolvers.idempotency import IDEMPOTENCY_STATE, IdempotencyClaim
from resolvers.reads import SEEN_HEADER
from server.negotiation import graphql_error_response, response_media_type
from server.sse import accepts_event_stream

log = logging.getLogger(__name__)

HEADER = "idempotency-key"
REPLAYED_HEADER = "Idempotent-Replayed"
MAX_KEY_LENGTH = 255
# The first answer's headers a replay repeats.
KEPT_HEADERS = ("content-type", SEEN_HEADER.lower())
# Answers not stored when nothing was committed: the same request may succeed next time.
RETRY_INVITED = frozenset(
    {"TIMEOUT", "INTERNAL_SERVER_ERROR", "RATE_LIMITED", "IDEMPOTENCY_KEY_IN_PROGRESS"}
)
FIRST_POLL = 0.05
LAST_POLL = 0.5


def key_problem(value: str) -> str | None:
    """Why `value` is not a usable key, or None: 1 to 255 visible ASCII characters."""
    if not value:
        return "The Idempotency-Key header is empty: send 1 to 255 visible ASCII characters."
    if len(value) > MAX_KEY_LENGTH:
        return f"The Idempotency-Key header is longer than {MAX_KEY_LENGTH} characters."
    if not all("!" <= c <= "~" for c in value):
        return (
            "The Idempotency-Key header may only hold visible ASCII characters "
            "(no spaces or control characters); a UUID is a good key."
        )
    return None


def request_hash(query: str, variables: object, operation_name: str | None) -> str:
    """SHA-256 of the request's document, variables and operation name (canonical JSON)."""
    canonical = json.dumps(
        {"query": query, "variables": variables or {}, "operationName": operation_name},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def is_mutation(query: str, operation_name: str | None, max_tokens: int) -> bool:
    """Whether the operation the request runs is a mutation (False if none can be chosen:
    the view reports that request's error, and nothing is applied)."""
    try:
        document = parse(query, no_location=True, max_tokens=max_tokens)
    except GraphQLError:
        return False
    operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    if operation_name is not None:
        operations = [o for o in operations if o.name and o.name.value == operation_name]
    return len(operations) == 1 and operations[0].operation is OperationType.MUTATION


def _error_codes(body: bytes) -> set[str]:
    try:
        decoded = json.loads(body)
    except ValueError:
        return set()
    errors = decoded.get("errors") if isinstance(decoded, dict) else None
    codes: set[str] = set()
    for error in errors if isinstance(errors, list) else []:
        extensions = error.get("extensions") if isinstance(error, dict) else None
        code = extensions.get("code") if isinstance(extensions, dict) else None
        codes.add(code if isinstance(code, str) else "INTERNAL_SERVER_ERROR")
    return codes


def final_answer(status: int, body: bytes) -> bool:
    """Whether an answer that committed nothing is what every retry would get anyway.

    A validation error or a version conflict is; a timeout, an internal error or a rate
    limit invites the retry, which must then run again rather than replay the failure.
    """
    if status >= 500 or status in (408, 429):
        return False
    return not _error_codes(body) & RETRY_INVITED


class IdempotentMutations:
    """The Idempotency-Key checks before a mutation request runs, and its answer after."""

    def __init__(
        self, db: Database, *, ttl_seconds: float, wait_seconds: float, max_tokens: int
    ) -> None:
        self.db = db
        self.ttl_seconds = ttl_seconds
        # How long a retry waits for a concurrent request with its key to be answered.
        self.wait_seconds = wait_seconds
        self.max_tokens = max_tokens

    async def prepare(self, request: Request) -> Response | IdempotencyClaim | None:
        """Before the request runs: None (no key to honour: run it as usual), an answer
        to send now (a bad or reused key, a stored answer), or the claim to run it with."""
        values = request.headers.getlist(HEADER)
        if not values:
            return None
        if len(values) > 1:
            return _refused(request, "Send one Idempotency-Key header.", 400, "BAD_REQUEST")
        key = values[0]
        problem = key_problem(key)
        if problem is not None:
            return _refused(request, problem, 400, "BAD_REQUEST")
        claim = await self._claim_for(request, key)
        if claim is None:
            return None
        row = await self._lookup(claim)
        if row is None:
            setattr(request.state, IDEMPOTENCY_STATE, claim)
            return claim
        return await self._settled(request, claim, row)

    async def finish(
        self, request: Request, claim: IdempotencyClaim, response: Response
    ) -> Response:
        """After the request ran: store its answer for the key, or answer with the one
        stored by the request that committed first."""
        body = getattr(response, "body", None)
        if not isinstance(body, bytes):
            return response
        if claim.lost:
            row = await self._find(claim)
            if row is None:
                return self._in_progress(request)
            return await self._settled(request, claim, row)
        text = body.decode()
        headers = {k: response.headers[k] for k in KEPT_HEADERS if k in response.headers}
        status = response.status_code
        row_id = claim.row_id
        if row_id is not None:
            try:
                await run_in_transaction(
                    self.db.writer, lambda s: store.answer(s, row_id, status, text, headers)
                )
            except Exception:
                # The change is committed; a retry will hear IDEMPOTENCY_KEY_IN_PROGRESS.
                log.warning("storing an idempotent answer failed", exc_info=True)
            return response
        if not final_answer(status, body):
            return response
        try:
            await run_in_transaction(
                self.db.writer,
                lambda s: store.claim(
                    s,
                    claim.user_id,
                    claim.key,
                    claim.request_hash,
                    claim.ttl_seconds,
                    status_code=status,
                    body=text,
                    headers=headers,
                ),
            )
        except store.KeyTaken:
            # A concurrent request with the key answered first: one answer for the key.
            row = await self._find(claim)
            if row is not None:
                return await self._settled(request, claim, row)
        except Exception:
            log.warning("storing an idempotent answer failed", exc_info=True)
        return response

    async def _claim_for(self, request: Request, key: str) -> IdempotencyClaim | None:
        """The claim when the request is an authenticated JSON POST of a mutation."""
        user = request.scope.get("user")
        if (
            request.method != "POST"
            or not isinstance(user, Viewer)
            or accepts_event_stream(request.headers.get("accept", ""))
            or "json" not in request.headers.get("content-type", "")
        ):
            return None
        try:
            body = json.loads(await request.body())
        except ValueError:
            return None
        if not isinstance(body, dict):
            return None
        query, operation_name = body.get("query"), body.get("operationName")
        variables = body.get("variables")
        if not isinstance(query, str) or not isinstance(operation_name, str | None):
            return None
        if not is_mutation(query, operation_name, self.max_tokens):
            return None
        digest = request_hash(query, variables, operation_name)
        return IdempotencyClaim(user.user_id, key, digest, self.ttl_seconds)

    async def _lookup(self, claim: IdempotencyClaim) -> IdempotencyKey | None:
        """The key's live row; the user's expired keys are deleted on the way."""

        async def work(session: Any) -> IdempotencyKey | None:
            await store.delete_expired(session, user_id=claim.user_id)
            return await store.find(session, claim.user_id, claim.key)

        return await run_in_transaction(self.db.writer, work)

    async def _find(self, claim: IdempotencyClaim) -> IdempotencyKey | None:
        async with self.db.writer() as session:
            return await store.find(session, claim.user_id, claim.key)

    async def _settled(
        self, request: Request, claim: IdempotencyClaim, row: IdempotencyKey
    ) -> Response:
        """The answer for a key someone else holds: reused, stored, or still coming."""
        if row.request_hash != claim.request_hash:
            return _refused(
                request,
                "This Idempotency-Key was used for a different request (another document, "
                "variables or operation name); nothing was applied. Use a new key for a new "
                "request.",
                422,
                "IDEMPOTENCY_KEY_REUSED",
            )
        answered = await self._answered(claim, row)
        if answered is None:
            return self._in_progress(request)
        return replay(answered)

    async def _answered(
        self, claim: IdempotencyClaim, row: IdempotencyKey
    ) -> IdempotencyKey | None:
        """The row once its answer is stored; None if that takes longer than the wait."""
        delay = FIRST_POLL
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.wait_seconds
        current: IdempotencyKey | None = row
        while current is not None and current.status_code is None:
            if loop.time() >= deadline:
                return None
            await asyncio.sleep(delay)
            delay = min(delay * 2, LAST_POLL)
            current = await self._find(claim)
        return current

    def _in_progress(self, request: Request) -> Response:
        return _refused(
            request,
            "A request with this Idempotency-Key was applied and its answer is not stored yet "
            "(or the process answering it stopped); retry later, or read the current state.",
            409,
            "IDEMPOTENCY_KEY_IN_PROGRESS",
            headers={"Retry-After": "1"},
        )


def _refused(
    request: Request,
    message: str,
    status: int,
    code: str,
    headers: dict[str, str] | None = None,
) -> Response:
    return graphql_error_response(
        message, status, code, headers=headers, media_type=response_media_type(request.headers)
    )


def replay(row: IdempotencyKey) -> Response:
    """The stored answer, as it was sent the first time, marked as a replay."""
    assert row.status_code is not None
    assert row.response_body is not None
    headers = {**(row.response_headers or {}), REPLAYED_HEADER: "true"}
    return Response(row.response_body.encode(), status_code=row.status_code, headers=headers)
