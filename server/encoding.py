"""The JSON every answer is written in, over HTTP, SSE and WebSocket alike.

orjson is several times faster than the standard library for the large answers of nested
reads and writes UTF-8 (json escapes non-ASCII); one function, so that the compiled read
path, the fan-out's pre-encoded frames and Strawberry's own messages are byte-equal.
"""

from __future__ import annotations

import json

import orjson


def dumps(data: object) -> bytes:
    """Compact JSON; the standard library only for what orjson refuses (integers beyond
    64 bits in a JSON value)."""
    try:
        return orjson.dumps(data)
    except TypeError:
        return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()
