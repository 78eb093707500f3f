"""JSON logs, one object per line, with whatever `extra=` a call site passed.

Every operation logs a line (`server.observe`), so formatting is on the request path:
orjson (about a quarter of the standard library's cost per line).
"""

from __future__ import annotations

import contextlib
import logging
import time
from datetime import UTC, datetime
from typing import Any

import orjson

# Attributes every LogRecord has; anything else came from `extra=` and is logged as a field.
_STANDARD = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "color_message"}


def _fallback(value: object) -> str:
    return str(value)


def _line(entry: dict[str, Any]) -> str:
    return orjson.dumps(entry, default=_fallback, option=orjson.OPT_NON_STR_KEYS).decode()


def _head(created: float, level: str, logger: str, message: str) -> dict[str, Any]:
    return {
        "time": datetime.fromtimestamp(created, UTC).isoformat(),
        "level": level,
        "logger": logger,
        "message": message,
    }


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = _head(record.created, record.levelname, record.name, record.getMessage())
        for key, value in vars(record).items():
            if key not in _STANDARD and key[0] != "_":
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return _line(entry)


def json_stream_of(logger: logging.Logger) -> logging.StreamHandler[Any] | None:
    """The one handler a record of `logger` reaches, when that is `configure_logging`'s
    plain JSON stream handler with no filters (else None: other handlers want records)."""
    found: logging.StreamHandler[Any] | None = None
    current: logging.Logger | None = logger
    while current is not None:
        if current.filters and current is logger:
            return None
        for handler in current.handlers:
            if (
                found is not None
                or type(handler) is not logging.StreamHandler
                or type(handler.formatter) is not JsonFormatter
                or handler.filters
            ):
                return None
            found = handler
        if not current.propagate:
            break
        current = current.parent
    return found


def log_fields(logger: logging.Logger, message: str, fields: dict[str, Any]) -> None:
    """Log an INFO line with `fields` as `logger.info(message, extra=fields)` would, the
    same bytes; straight to the stream when that is all the record would reach.

    Every operation logs a line: a `LogRecord` (a dozen attributes looked up: thread,
    process, …), the handler chain and the formatter's scan of the record's attributes
    cost about as much as the rest of a cached read's bookkeeping. The caller checks
    `logger.isEnabledFor(logging.INFO)` first.
    """
    handler = None
    if not logger.disabled and logging.getLogRecordFactory() is logging.LogRecord:
        # (A record factory of someone else's may add fields to every record.)
        handler = json_stream_of(logger)
    if handler is None or handler.level > logging.INFO:
        logger.handle(
            logger.makeRecord(
                logger.name, logging.INFO, __file__, 0, message, (), None, extra=fields
            )
        )
        return
    entry = _head(time.time(), "INFO", logger.name, message)
    entry.update(fields)
    text = _line(entry) + handler.terminator
    with handler.lock or contextlib.nullcontext():
        try:
            handler.stream.write(text)
            handler.flush()
        except Exception:
            handler.handleError(
                logger.makeRecord(
                    logger.name, logging.INFO, __file__, 0, message, (), None, extra=fields
                )
            )


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
