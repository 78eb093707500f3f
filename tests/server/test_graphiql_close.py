"""GraphiQL's WebSocket client gives up at once on a close that retrying cannot cure.

graphql-ws retries a socket closed with 4403 (a missing, invalid or expired token) for
about 40 seconds before GraphiQL shows anything. The served page's own script is run in
node (tests/server/js/graphiql_page.cjs) with the vendored libraries replaced by
recorders, to see how it configures the client and what it shows for such a close.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from server.graphiql import graphiql_html
from tests.npm import node

SCRIPT = Path(__file__).with_name("js") / "graphiql_page.cjs"


def run_page() -> dict[str, Any]:
    result = subprocess.run(
        [node(), str(SCRIPT)],
        input=graphiql_html("/graphql"),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    report: dict[str, Any] = json.loads(result.stdout)
    return report


def test_graphiql_stops_retrying_on_refusals_and_shows_the_reason() -> None:
    report = run_page()
    retry = report["shouldRetry"]
    # Refused (4400 bad message, 4401 not authenticated, 4403 bad token, 1009 too big):
    # no retry. A dropped connection or a server restart: retried as before.
    assert {code: retry[code] for code in ("1009", "4400", "4401", "4403")} == {
        "1009": False,
        "4400": False,
        "4401": False,
        "4403": False,
    }
    assert retry["1006"] is True
    assert retry["1001"] is True
    assert retry["1011"] is True
    assert retry["networkError"] is True
    assert report["retryAttempts"] >= 1
    # GraphiQL is handed an error that says what happened and what to do.
    message = report["shown"]["error"]
    assert message.startswith("WebSocket closed (4403 Forbidden)")
    assert "sign in again" in message
    assert report["onClosed"] is True
    assert report["lastClose"]["code"] == 4403
    assert report["warnings"] == [message]
