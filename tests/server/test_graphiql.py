"""GraphiQL is served whole by Concord: the page names no other host, and it loads only assets
that Concord serves.

The browser test (skipped on a laptop without Debian's chromium, failed under CI) loads the
page with every other host unreachable, then runs queries and subscriptions through the
page's own fetcher against a small Strawberry app, to see which Authorization reaches the
server on each path.
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import pytest
import strawberry
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import BaseRoute, Route, WebSocketRoute
from strawberry.asgi import GraphQL
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL
from strawberry.types import Info
from websockets.sync.client import ClientConnection, connect

from server.graphiql import (
    STATIC_DIR,
    STATIC_PREFIX,
    graphiql_html,
    graphiql_routes,
    security_headers,
)
from tests.services import unavailable

CHROMIUM = Path("/usr/bin/chromium")


class _AssetRefs(HTMLParser):
    """Collects the src of every <script> and the href of every <link>."""

    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[str] = []
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "script" and values.get("src"):
            self.scripts.append(values["src"] or "")
        if tag == "link" and values.get("href"):
            self.links.append(values["href"] or "")


def asset_refs(html: str) -> _AssetRefs:
    parser = _AssetRefs()
    parser.feed(html)
    return parser


def page_app(extra_routes: list[BaseRoute] | None = None) -> Starlette:
    async def page(request: Request) -> HTMLResponse:
        # With Concord's security headers: the browser test runs the page under its CSP.
        html = graphiql_html()
        return HTMLResponse(html, headers=security_headers(html, request.url))

    routes: list[BaseRoute] = [*graphiql_routes(), Route("/graphql", page, methods=["GET"])]
    return Starlette(routes=routes + (extra_routes or []))


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    # httpx over ASGI, not starlette.testclient: that one warns about httpx, and warnings fail.
    transport = httpx.ASGITransport(app=page_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        yield http


async def test_page_names_no_other_host(client: httpx.AsyncClient) -> None:
    response = await client.get("/graphql")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    refs = asset_refs(response.text)
    assert len(refs.scripts) >= 4
    assert len(refs.links) >= 1
    for ref in refs.scripts + refs.links:
        assert ref.startswith(STATIC_PREFIX + "/"), ref
    # Not only in src/href: no URL with a scheme or protocol-relative host anywhere on the page.
    assert re.search(r"(?i)\b(?:https?|wss?)://|[\"'=]//", response.text) is None


async def test_every_asset_on_the_page_is_served(client: httpx.AsyncClient) -> None:
    refs = asset_refs((await client.get("/graphql")).text)

    for ref, kind in [(src, "javascript") for src in refs.scripts] + [
        (href, "css") for href in refs.links
    ]:
        response = await client.get(ref)
        assert response.status_code == 200, ref
        assert kind in response.headers["content-type"], (ref, response.headers["content-type"])
        assert len(response.content) > 5_000, ref
        # The URLs carry a content digest, so browsers may keep them.
        assert "immutable" in response.headers["cache-control"], ref


async def test_unversioned_asset_urls_revalidate(client: httpx.AsyncClient) -> None:
    response = await client.get(f"{STATIC_PREFIX}/graphiql.min.css")

    assert response.status_code == 200
    assert "immutable" not in response.headers.get("cache-control", "")
    assert (await client.get(f"{STATIC_PREFIX}/nothing.js")).status_code == 404


def test_page_talks_to_the_endpoint_over_http_and_graphql_ws() -> None:
    html = graphiql_html("/api/graphql")

    assert '"/api/graphql"' in html
    assert "graphqlWs.createClient" in html
    assert "connectionParams" in html
    assert 'wsUrl.protocol = httpUrl.protocol === "https:" ? "wss:" : "ws:"' in html
    assert "graphql-ws.min.js" in html


def test_endpoint_cannot_break_out_of_the_script() -> None:
    hostile = '/x"</script><script>alert(1)</script><!--\u2028'

    html = graphiql_html(hostile)

    assert "alert(1)</script>" not in html
    assert "<!--" not in html
    assert "\u2028" not in html
    # Every </script> closes a <script>: the payload opened none.
    assert html.count("</script>") == html.count("<script")
    literal = re.search(r"var endpoint = (.*);", html)
    assert literal is not None
    assert json.loads(literal.group(1)) == hostile


def test_vendored_files_match_versions_txt() -> None:
    versions = (STATIC_DIR / "VERSIONS.txt").read_text(encoding="utf-8")
    rows = re.findall(r"^(\S+)\s+(\S+)\s+(\S+)\s+\S+\s+(\S+)\s+([0-9a-f]{64})$", versions, re.M)

    served = {path.name for path in STATIC_DIR.iterdir() if path.suffix in {".js", ".css"}}
    assert {row[3] for row in rows} == served
    for package, _version, license_name, file_name, sha256 in rows:
        digest = hashlib.sha256((STATIC_DIR / file_name).read_bytes()).hexdigest()
        assert digest == sha256, file_name
        assert license_name == "MIT"
        assert (STATIC_DIR / f"LICENSE-{package}.txt").is_file(), package
    assert "://" not in versions
    assert all(path.is_file() for path in STATIC_DIR.iterdir()), "the package-data glob is flat"


# --- in a real browser -------------------------------------------------------------------


@strawberry.type
class Query:
    @strawberry.field(description="The Authorization header of this HTTP request.")
    def authorization(self, info: Info) -> str | None:
        request: Request = info.context["request"]
        return request.headers.get("authorization")


@strawberry.type
class Subscription:
    @strawberry.subscription(description="The authorization sent in connection_init.")
    async def authorization(self, info: Info) -> AsyncGenerator[str | None, None]:
        params = info.context.get("connection_params") or {}
        yield params.get("authorization")


def browser_app() -> Starlette:
    graphql = GraphQL(
        strawberry.Schema(query=Query, subscription=Subscription),
        graphql_ide=None,
        subscription_protocols=(GRAPHQL_TRANSPORT_WS_PROTOCOL,),
    )
    return page_app(
        [Route("/graphql", graphql, methods=["POST"]), WebSocketRoute("/graphql", graphql)]
    )


@pytest.fixture
def live_server() -> Iterator[str]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        browser_app(), log_level="warning", lifespan="off", ws="websockets-sansio"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()


class _DevTools:
    """The few Chrome DevTools Protocol calls this test needs, over one flat session."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.next_id = 0
        self.events: list[dict[str, Any]] = []
        self.session_id: str | None = None

    def call(self, method: str, timeout: float = 30, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        message: dict[str, Any] = {"id": self.next_id, "method": method, "params": params}
        if self.session_id is not None and not method.startswith("Target."):
            message["sessionId"] = self.session_id
        self.ws.send(json.dumps(message))
        deadline = time.monotonic() + timeout
        while True:
            reply = json.loads(self.ws.recv(timeout=max(deadline - time.monotonic(), 0.01)))
            if reply.get("id") == self.next_id:
                assert "error" not in reply, reply
                result: dict[str, Any] = reply["result"]
                return result
            self.events.append(reply)

    def evaluate(self, expression: str, timeout: float = 30) -> Any:
        result = self.call(
            "Runtime.evaluate",
            timeout=timeout,
            expression=expression,
            awaitPromise=True,
            returnByValue=True,
        )
        assert "exceptionDetails" not in result, result["exceptionDetails"]
        return result["result"].get("value")


@pytest.fixture
def devtools() -> Iterator[_DevTools]:
    if not CHROMIUM.exists():
        unavailable(f"Debian's chromium is not installed at {CHROMIUM} (scripts/install-chromium)")
    with tempfile.TemporaryDirectory() as profile:
        browser = subprocess.Popen(
            [
                str(CHROMIUM),
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--no-first-run",
                # Offline: any host but this machine fails to resolve.
                "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
                "--remote-debugging-port=0",
                f"--user-data-dir={profile}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            port_file = Path(profile) / "DevToolsActivePort"
            deadline = time.monotonic() + 30
            while not port_file.exists() or len(port_file.read_text().splitlines()) < 2:
                assert browser.poll() is None, "chromium exited"
                assert time.monotonic() < deadline, "chromium did not open DevTools"
                time.sleep(0.1)
            port, path = port_file.read_text().splitlines()[:2]
            with connect(f"ws://127.0.0.1:{port}{path}", max_size=None, open_timeout=15) as ws:
                tools = _DevTools(ws)
                target = tools.call("Target.createTarget", url="about:blank")
                attached = tools.call(
                    "Target.attachToTarget", targetId=target["targetId"], flatten=True
                )
                tools.session_id = attached["sessionId"]
                yield tools
        finally:
            browser.terminate()
            try:
                browser.wait(timeout=15)
            except subprocess.TimeoutExpired:
                browser.kill()
                browser.wait(timeout=15)


_RUN = """
(async () => {
  const run = async (query, headers) => {
    const documentAST = GraphiQL.GraphQL.parse(query);
    const result = await concordGraphiQL.fetcher({ query }, { headers, documentAST });
    if (result && typeof result[Symbol.asyncIterator] === "function") {
      const all = [];
      for await (const item of result) all.push(item);
      return all;
    }
    return result;
  };
  const sub = "subscription { authorization }";
  return {
    query: await run("{ authorization }", { Authorization: "Bearer abc" }),
    queryWithHint: await run("{ authorization }", { Authorization: "Bearer <access token>" }),
    subscription: await run(sub, { Authorization: "Bearer abc" }),
    subscriptionNewToken: await run(sub, { authorization: "Bearer xyz" }),
    subscriptionAnonymous: await run(sub, {}),
  };
})()
"""


def test_graphiql_renders_offline_and_forwards_authorization(
    devtools: _DevTools, live_server: str
) -> None:
    devtools.call("Network.enable")
    devtools.call("Page.enable")
    devtools.call("Page.navigate", url=f"{live_server}/graphql")
    deadline = time.monotonic() + 60
    while not devtools.evaluate("!!document.querySelector('.graphiql-container .CodeMirror')"):
        assert time.monotonic() < deadline, devtools.evaluate("document.body.innerText")
        time.sleep(0.2)

    # The headers editor is open, showing the hint.
    assert "Bearer <access token>" in devtools.evaluate("document.body.innerText")
    results = devtools.evaluate(_RUN, timeout=60)

    assert results["query"] == {"data": {"authorization": "Bearer abc"}}
    assert results["queryWithHint"] == {"data": {"authorization": None}}
    assert results["subscription"] == [{"data": {"authorization": "Bearer abc"}}]
    assert results["subscriptionNewToken"] == [{"data": {"authorization": "Bearer xyz"}}]
    assert results["subscriptionAnonymous"] == [{"data": {"authorization": None}}]
    requested = [
        event["params"]["request"]["url"]
        for event in devtools.events
        if event.get("method") == "Network.requestWillBeSent"
    ]
    assert requested, "DevTools saw no requests"
    for url in requested:
        assert url.startswith((live_server, "data:", "blob:")), url
    assert f"{live_server}/graphql" in requested
    assert sum(STATIC_PREFIX in url for url in requested) >= 5
    # Subscriptions went to the same path over WebSocket, one connection per credential.
    sockets = [
        event["params"]["url"]
        for event in devtools.events
        if event.get("method") == "Network.webSocketCreated"
    ]
    assert sockets == [live_server.replace("http:", "ws:", 1) + "/graphql"] * 3
