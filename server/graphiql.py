"""GraphiQL that works offline: the page, and the routes that serve its vendored assets.

Developers open GraphiQL at `GET /graphql` on machines that may have no internet access, so
every script and stylesheet comes from `server/static/graphiql/` (pinned copies, listed with
their versions, licenses and digests in VERSIONS.txt there) and the page names no other host.

Queries and mutations go over HTTP POST to the endpoint; subscriptions go over WebSocket to
the same path (`graphql-transport-ws`, via the vendored graphql-ws client). A WebSocket carries
no headers of its own, so the page copies the Authorization header typed in GraphiQL's headers
editor into the `connection_init` payload as `{"authorization": "Bearer …"}`. A socket the
server closes with 4400, 4401, 4403 or 1009 is not retried (graphql-ws would retry 4403 for
about 40 s): the subscription fails at once with the code, the reason and what to do.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
from functools import cache
from pathlib import Path
from string import Template

from starlette.datastructures import URL
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

STATIC_PREFIX = "/graphiql-static"
STATIC_DIR = Path(__file__).resolve().parent / "static" / "graphiql"

# Load order matters: graphiql.min.js expects the React and ReactDOM globals to exist.
SCRIPTS = (
    "react.production.min.js",
    "react-dom.production.min.js",
    "graphql-ws.min.js",
    "graphiql.min.js",
)
STYLESHEETS = ("graphiql.min.css",)

# Shown in the headers editor as a hint; the page never sends it (see `usableHeaders`), because
# the server refuses a malformed token with 401 even for queries that anonymous callers may run.
HEADERS_PLACEHOLDER = "Bearer <access token>"

# Asset URLs carry a digest of the file's content, so a changed file gets a new URL and the
# old one may be cached for good.
IMMUTABLE = "public, max-age=31536000, immutable"

_PAGE = Template(
    """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex">
<title>Concord GraphiQL</title>
$stylesheets
<style>
html, body { height: 100%; margin: 0; overflow: hidden; }
#graphiql { height: 100vh; }
</style>
</head>
<body>
<div id="graphiql">Loading GraphiQL…</div>
<noscript>GraphiQL needs JavaScript.</noscript>
$scripts
<script>
(function () {
  "use strict";
  var endpoint = $endpoint;
  var placeholder = $placeholder;
  var httpUrl = new URL(endpoint, window.location.href);
  var wsUrl = new URL(httpUrl.href);
  wsUrl.protocol = httpUrl.protocol === "https:" ? "wss:" : "ws:";

  // The editor holds whatever the user typed: header names in any case, the hint untouched.
  function usableHeaders(headers) {
    var result = {};
    Object.keys(headers || {}).forEach(function (name) {
      var value = headers[name] == null ? "" : String(headers[name]).trim();
      if (name.toLowerCase() === "authorization" && (value === "" || value === placeholder)) {
        return;
      }
      result[name] = headers[name];
    });
    return result;
  }

  function authorizationOf(headers) {
    var found = null;
    Object.keys(headers).forEach(function (name) {
      if (name.toLowerCase() === "authorization") {
        found = String(headers[name]).trim();
      }
    });
    return found;
  }

  // Close codes that retrying cannot cure: a bad request or message (4400, 1009), no or a
  // refused token (4401, 4403). graphql-ws would retry 4403 for about 40 s before saying
  // anything; these fail the operation at once, with the reason.
  var FATAL = { 1009: true, 4400: true, 4401: true, 4403: true };
  var HINTS = {
    1009: "the message is larger than the server accepts.",
    4400: "the server could not accept a message on this socket.",
    4401: "the socket was not authenticated.",
    4403: "the access token is missing, invalid or expired: sign in again and put " +
      "'Bearer <accessToken>' in the Authorization header."
  };
  function isCloseEvent(value) {
    return value !== null && typeof value === "object" && typeof value.code === "number" &&
      "reason" in value;
  }
  function shouldRetry(closeEventOrError) {
    return !(isCloseEvent(closeEventOrError) && FATAL[closeEventOrError.code]);
  }
  function explain(closeEventOrError) {
    if (!isCloseEvent(closeEventOrError)) {
      return closeEventOrError;
    }
    var code = closeEventOrError.code;
    var reason = closeEventOrError.reason ? " " + closeEventOrError.reason : "";
    return new Error(
      "WebSocket closed (" + code + reason + ")" + (HINTS[code] ? ": " + HINTS[code] : ".")
    );
  }
  // GraphiQL shows a subscription's error as it gets it: hand it an explained one.
  function explainingClient(client) {
    return {
      subscribe: function (payload, sink) {
        return client.subscribe(payload, {
          next: function (value) { sink.next(value); },
          complete: function () { sink.complete(); },
          error: function (error) { sink.error(explain(error)); }
        });
      },
      dispose: function () { client.dispose(); }
    };
  }
  var lastClose = null;

  // One WebSocket client per credential: the server authenticates a socket once, at
  // connection_init, so a changed Authorization header needs a new connection.
  var current = null;
  function fetcherFor(authorization) {
    if (current !== null && current.authorization === authorization) {
      return current.fetcher;
    }
    if (current !== null) {
      current.client.dispose();
    }
    var client = graphqlWs.createClient({
      url: wsUrl.href,
      lazy: true,
      connectionParams: authorization === null ? {} : { authorization: authorization },
      retryAttempts: 5,
      shouldRetry: shouldRetry,
      on: {
        closed: function (event) {
          if (isCloseEvent(event) && FATAL[event.code]) {
            lastClose = { code: event.code, reason: event.reason, message: explain(event).message };
            if (window.console) { window.console.warn(lastClose.message); }
          }
        }
      }
    });
    current = {
      authorization: authorization,
      client: client,
      // Concord serves neither @defer nor @stream: plain JSON over POST, like any frontend.
      fetcher: GraphiQL.createFetcher({
        url: httpUrl.href,
        wsClient: explainingClient(client),
        enableIncrementalDelivery: false
      })
    };
    return current.fetcher;
  }

  function fetcher(params, options) {
    var headers = usableHeaders(options && options.headers);
    var forwarded = Object.assign({}, options, { headers: headers });
    return fetcherFor(authorizationOf(headers))(params, forwarded);
  }

  // For the browser console and the browser test: the same fetcher GraphiQL uses.
  window.concordGraphiQL = {
    fetcher: fetcher,
    httpUrl: httpUrl.href,
    wsUrl: wsUrl.href,
    shouldRetry: shouldRetry,
    explain: explain,
    lastClose: function () { return lastClose; }
  };
  ReactDOM.createRoot(document.getElementById("graphiql")).render(
    React.createElement(GraphiQL, {
      fetcher: fetcher,
      defaultHeaders: JSON.stringify({ Authorization: placeholder }, null, 2),
      defaultEditorToolsVisibility: "headers",
      shouldPersistHeaders: false
    })
  );
})();
</script>
</body>
</html>
"""
)


def graphiql_html(endpoint: str = "/graphql") -> str:
    """The GraphiQL page for `endpoint` (a path on this server), loading assets from here only."""
    stylesheets = "\n".join(
        f'<link rel="stylesheet" href="{asset_url(name)}">' for name in STYLESHEETS
    )
    scripts = "\n".join(f'<script src="{asset_url(name)}"></script>' for name in SCRIPTS)
    return _PAGE.substitute(
        stylesheets=stylesheets,
        scripts=scripts,
        endpoint=js_string(endpoint),
        placeholder=js_string(HEADERS_PLACEHOLDER),
    )


def graphiql_routes() -> list[BaseRoute]:
    """The route that serves the vendored assets under STATIC_PREFIX."""
    return [
        Mount(STATIC_PREFIX, app=_CachedStaticFiles(directory=STATIC_DIR), name="graphiql-static")
    ]


def asset_url(name: str) -> str:
    """The URL of a vendored asset, versioned by its content."""
    return f"{STATIC_PREFIX}/{name}?v={_digest(name)}"


def js_string(value: str) -> str:
    """`value` as a JavaScript string literal that is safe inside an HTML <script> element."""
    # JSON is valid JavaScript; escaping <, > and & keeps "</script>" and "<!--" from ending or
    # changing the script element. ensure_ascii also covers U+2028 and U+2029.
    literal = json.dumps(value, ensure_ascii=True)
    return literal.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


@cache
def _digest(name: str) -> str:
    return hashlib.sha256((STATIC_DIR / name).read_bytes()).hexdigest()[:16]


class _CachedStaticFiles(StaticFiles):
    """StaticFiles that lets browsers keep content-versioned assets for good."""

    def file_response(
        self,
        full_path: str | os.PathLike[str],
        stat_result: os.stat_result,
        scope: Scope,
        status_code: int = 200,
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        # Only URLs from asset_url() carry a version; others revalidate as usual.
        if scope.get("query_string", b"").startswith(b"v="):
            response.headers["cache-control"] = IMMUTABLE
        return response


_INLINE = re.compile(r"<script>(.*?)</script>", re.DOTALL)


def security_headers(html: str, url: URL) -> dict[str, str]:
    """The headers that keep the GraphiQL page from being framed, sniffed or injected into.

    The Content-Security-Policy allows scripts from this server and the page's own inline
    script by its hash (no 'unsafe-inline' for scripts), connections to this server over
    HTTP and WebSocket only, and no framing. Styles may be inline: GraphiQL and CodeMirror
    style elements as they build them, and styles cannot run code.
    """
    hashes = " ".join(
        "'sha256-" + base64.b64encode(hashlib.sha256(body.encode()).digest()).decode() + "'"
        for body in _INLINE.findall(html)
    )
    host = url.netloc
    policy = "; ".join(
        (
            "default-src 'none'",
            f"script-src 'self' {hashes}",
            "style-src 'self' 'unsafe-inline'",
            "img-src 'self' data:",
            "font-src 'self' data:",
            f"connect-src 'self' ws://{host} wss://{host}",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        )
    )
    return {
        "Content-Security-Policy": policy,
        "X-Frame-Options": "DENY",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
    }
