"""The operation line written straight to the JSON stream is the line the logging chain writes.

`server.logging.log_fields` skips the LogRecord and the handler chain when the only place
a record would go is `configure_logging`'s JSON stream; with any other handler, filter or
record factory in the way it logs a record as before. Either way the stream gets the same
line.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from server.logging import configure_logging, json_stream_of, log_fields

FIELDS: dict[str, Any] = {
    "request_id": "req-1",
    "user_id": "5f0c1a5e-2b1c-4f53-9d55-2f5e4b8a9c10",
    "operation": "Me",
    "operation_type": "query",
    "transport": "http",
    "duration_ms": 1.234,
    "outcome": "ok",
}


@contextmanager
def json_logging() -> Iterator[io.StringIO]:
    """`configure_logging`'s set-up, writing into a buffer; pytest's capture handlers (on
    the root logger during the test) are off meanwhile."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    configure_logging("INFO")
    out = io.StringIO()
    root.handlers[0].setStream(out)  # type: ignore[attr-defined]
    try:
        yield out
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)


def lines(out: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def without_time(entry: dict[str, Any]) -> list[tuple[str, Any]]:
    return [(k, v) for k, v in entry.items() if k != "time"]


def test_the_direct_line_equals_the_logged_line() -> None:
    log = logging.getLogger("concord.operations")
    with json_logging() as stream:
        assert json_stream_of(log) is not None  # the direct way is taken
        log_fields(log, "operation", FIELDS)
        log.info("operation", extra=FIELDS)
    direct, logged = lines(stream)
    assert list(direct) == list(logged)  # same fields, same order
    assert without_time(direct) == without_time(logged)
    assert direct["level"] == "INFO"
    assert direct["logger"] == "concord.operations"


def test_other_handlers_and_filters_still_get_records() -> None:
    with json_logging() as stream:
        _other_handlers_and_filters(stream)


def _other_handlers_and_filters(stream: io.StringIO) -> None:
    log = logging.getLogger("concord.operations")
    seen: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record)

    extra = Keep()
    logging.getLogger("concord").addHandler(extra)
    try:
        assert json_stream_of(log) is None
        log_fields(log, "operation", FIELDS)
    finally:
        logging.getLogger("concord").removeHandler(extra)
    [record] = seen
    assert vars(record)["operation"] == "Me"
    [line] = lines(stream)  # and the stream still got its line
    assert line["outcome"] == "ok"

    dropped: list[str] = []

    def drop(record: logging.LogRecord) -> bool:
        dropped.append(record.getMessage())
        return False

    log.addFilter(drop)
    try:
        log_fields(log, "operation", FIELDS)
    finally:
        log.removeFilter(drop)
    assert dropped == ["operation"]
    assert len(lines(stream)) == 1  # filtered out: no second line
