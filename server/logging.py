"""JSON logs, one object per line, with whatever `extra=` a call site passed.

Every operation logs a line (`server.observe`), so formatting is on the request path:
orjson (about a quarter of the standard library's cost per line).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import orjson

# Attributes every LogRecord has; anything else came from `extra=` and is logged as a field.
_STANDARD = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "color_message"}


def _fallback(value: object) -> str:
    return str(value)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and key[0] != "_":
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=_fallback, option=orjson.OPT_NON_STR_KEYS).decode()


class NoQueryStrings(logging.Filter):
    """uvicorn's request lines without their query strings.

    A GraphQL GET carries the document and its variables in the query string (and a
    client could put anything there): uvicorn's access line and its WebSocket line
    would log them whole. The path is enough; `server.observe` logs the operation.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and any(_has_query(a) for a in args):
            record.args = tuple(_path(a) for a in args)
        return True


def _has_query(value: object) -> bool:
    return isinstance(value, str) and value.startswith("/") and "?" in value


def _path(value: object) -> object:
    return value.split("?", 1)[0] if isinstance(value, str) and _has_query(value) else value


_NO_QUERY_STRINGS = NoQueryStrings()


def redact_request_lines() -> None:
    """Install `NoQueryStrings` on uvicorn's loggers (idempotent)."""
    for name in ("uvicorn.access", "uvicorn.error"):
        logger = logging.getLogger(name)
        if _NO_QUERY_STRINGS not in logger.filters:
            logger.addFilter(_NO_QUERY_STRINGS)


def configure_logging(level: str) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
