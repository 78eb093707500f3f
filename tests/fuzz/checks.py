"""What every answer to a fuzzed request must be: a well-formed GraphQL response, no 5xx,
nothing unexpected and no internals in it."""

from __future__ import annotations

import json
import re
from typing import Any

import httpx

JSON_TYPES = {"application/json", "application/graphql-response+json"}
# Python exception text, tracebacks and SQL: what a masked error must never show.
PYTHON_ERRORS = (
    "KeyError|TypeError|ValueError|AttributeError|IndexError|RecursionError|OverflowError"
    "|Unicode(En|De)codeError|ZeroDivisionError|AssertionError|RuntimeError|NotImplementedError"
    "|IntegrityError|DataError|ProgrammingError|OperationalError|InterfaceError|DBAPIError"
    "|StatementError|InvalidRequestError|CharacterNotInRepertoire|UntranslatableCharacter"
    "|NumericValueOutOfRange|InvalidTextRepresentation|StringDataRightTruncation"
)
LEAKS = re.compile(
    rf"Traceback|File \"[^\"]+\.py\"|\b({PYTHON_ERRORS})\b|maximum recursion depth"
    r"|\b(sqlalchemy|asyncpg|aiosqlite|sqlite3|psycopg|pyodbc)\b|\(Background on this error"
    r"|\bSELECT\b.+\bFROM\b|\bINSERT INTO\b|\bUPDATE\b.+\bSET\b|\bDELETE FROM\b"
    r"|object has no attribute|NoneType|codec can't|positional argument|unexpected keyword",
    re.DOTALL,
)


EVENT_STREAM = "text/event-stream"


def problems(response: httpx.Response) -> list[str]:
    """Everything wrong with `response`; empty when it is an acceptable answer."""
    found: list[str] = []
    if response.status_code >= 500:
        found.append(f"HTTP {response.status_code}")
    media = response.headers.get("content-type", "").split(";")[0].strip()
    if media == EVENT_STREAM:
        return found + _stream_problems(response.text)
    if media not in JSON_TYPES:
        found.append(f"content-type {media!r}")
    try:
        body = json.loads(response.content)
    except ValueError:
        return [*found, f"not JSON: {response.content[:300]!r}"]
    return found + _body_problems(body)


def _events(text: str) -> list[tuple[str, str]]:
    """The (event, data) of each message of a GraphQL-over-SSE stream."""
    events = []
    for block in text.split("\n\n"):
        fields = dict(
            line.split(": ", 1) if ": " in line else (line.rstrip(":"), "")
            for line in block.splitlines()
            if line and not line.startswith(":")
        )
        if fields:
            events.append((fields.get("event", ""), fields.get("data", "")))
    return events


def _stream_problems(text: str) -> list[str]:
    """A query or mutation over SSE: `next` events with a well-formed result, then `complete`."""
    events = _events(text)
    if not events or events[-1][0] != "complete":
        return [f"stream does not end with complete: {text[-300:]!r}"]
    found = []
    for event, data in events[:-1]:
        if event != "next":
            found.append(f"unexpected event {event!r}")
            continue
        try:
            found += _body_problems(json.loads(data))
        except ValueError:
            found.append(f"next event is not JSON: {data[:300]!r}")
    return found


def bodies(response: httpx.Response) -> list[Any]:
    """The GraphQL response bodies of a well-formed answer (several over SSE)."""
    if response.headers.get("content-type", "").startswith(EVENT_STREAM):
        return [json.loads(data) for event, data in _events(response.text) if event == "next"]
    return [response.json()]


def _body_problems(body: Any) -> list[str]:
    if not isinstance(body, dict):
        return [f"body is not an object: {body!r:.300}"]
    found = []
    extra = set(body) - {"data", "errors", "extensions"}
    if extra:
        found.append(f"unexpected keys {sorted(extra)}")
    if "data" not in body and "errors" not in body:
        found.append("neither data nor errors")
    if "data" in body and not isinstance(body["data"], dict | None):
        found.append(f"data is {type(body['data']).__name__}")
    errors = body.get("errors", [])
    if not isinstance(errors, list) or ("errors" in body and not errors):
        return [*found, f"errors is {errors!r:.300}"]
    for error in errors:
        if not isinstance(error, dict) or not isinstance(error.get("message"), str):
            found.append(f"malformed error {error!r:.300}")
            continue
        code = (error.get("extensions") or {}).get("code")
        if not isinstance(code, str):
            found.append(f"error without a code: {error!r:.300}")
        if code == "INTERNAL_SERVER_ERROR" or error["message"] == "Unexpected error.":
            found.append(f"unexpected error: {error!r:.300}")
        leak = LEAKS.search(error["message"])
        if leak:
            found.append(f"internals in {error['message']!r:.500} ({leak.group(0)!r})")
    return found


def error_codes(response: httpx.Response) -> list[str]:
    """The `extensions.code` of each error of a well-formed answer ("data" when none)."""
    errors = [error for body in bodies(response) for error in body.get("errors") or []]
    return [error["extensions"]["code"] for error in errors] or ["data"]
