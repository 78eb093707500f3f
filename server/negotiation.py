"""GraphQL over HTTP media types: which one a client accepts, and what status goes with it.

The GraphQL-over-HTTP specification defines two response media types:

* `application/json`, the traditional one: every well-formed request answers 200, request
  errors included (`data: null`), because intermediaries may replace non-2xx JSON bodies.
* `application/graphql-response+json`: the status code says what happened. A request
  error (the document does not parse or validate, the variables do not coerce: nothing was
  executed) answers 4xx and the body has no `data` entry; an executed operation answers 200,
  also with field errors.

A client that lists `application/graphql-response+json` at least as high as
`application/json` in `Accept` gets it; everyone else gets `application/json`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.responses import JSONResponse

GRAPHQL_RESPONSE = "application/graphql-response+json"
JSON = "application/json"


def _accepted(accept: str) -> dict[str, float]:
    """Media type → its highest quality value in an Accept header."""
    weights: dict[str, float] = {}
    for part in accept.split(","):
        media, *params = (piece.strip() for piece in part.split(";"))
        quality = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        media = media.lower()
        if media:
            weights[media] = max(weights.get(media, 0.0), quality)
    return weights


def wants_graphql_response(headers: Mapping[str, str]) -> bool:
    """Whether to answer `application/graphql-response+json` rather than `application/json`."""
    weights = _accepted(headers.get("accept", ""))
    preferred = weights.get(GRAPHQL_RESPONSE, 0.0)
    return preferred > 0 and preferred >= weights.get(JSON, 0.0)


def response_media_type(headers: Mapping[str, str]) -> str:
    """The media type to answer a request with these headers in."""
    return GRAPHQL_RESPONSE if wants_graphql_response(headers) else JSON


def graphql_error_response(
    message: str,
    status: int,
    code: str,
    *,
    headers: Mapping[str, str] | None = None,
    media_type: str = JSON,
) -> JSONResponse:
    """A GraphQL error body (one error with its code) answered outside execution."""
    return JSONResponse(
        {"errors": [{"message": message, "extensions": {"code": code}}]},
        status_code=status,
        headers=headers,
        media_type=media_type,
    )


def is_request_error(result: Mapping[str, Any]) -> bool:
    """No data and only errors outside execution (no `path`): nothing was executed.

    A field error always carries the path of its field, also when it nulled `data` itself.
    """
    errors = result.get("errors") or []
    return result.get("data") is None and bool(errors) and all("path" not in e for e in errors)


def request_error_status(result: Mapping[str, Any]) -> int:
    """400 for a request the client got wrong; 500 when the server failed before executing."""
    codes = {(e.get("extensions") or {}).get("code") for e in result.get("errors") or []}
    return 500 if "INTERNAL_SERVER_ERROR" in codes else 400
