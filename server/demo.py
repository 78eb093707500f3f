"""The live demo board at /demo: a small web app on the public GraphQL API, for development.

Sign in, pick a board, edit a card, and watch a second window see the change live (over
`graphql-transport-ws`), see who else is looking (presence), and, for a stale edit, the
`VersionConflict` with a choice to merge or reload. It is served only where Concord runs for
development (the embedded SQLite database, or DEBUG=true), never next to a production
database. Every file comes from `server/static/demo/` and GraphiQL's vendored graphql-ws
client: no CDN, works offline. The page's Content-Security-Policy allows this origin only.
"""

from __future__ import annotations

import hashlib
from functools import cache
from pathlib import Path
from string import Template

from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from server.graphiql import asset_url as graphiql_asset_url
from server.settings import Settings

DEMO_DIR = Path(__file__).resolve().parent / "static" / "demo"
DEMO_PREFIX = "/demo-static"

# 'self' covers same-origin ws:/wss: in current browsers; nothing else may load or connect.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)

_PAGE = Template((DEMO_DIR / "index.html").read_text(encoding="utf-8"))


def demo_enabled(settings: Settings) -> bool:
    """Development only: the embedded database, or DEBUG explicitly on."""
    return settings.embedded or settings.debug


@cache
def _digest(name: str) -> str:
    return hashlib.sha256((DEMO_DIR / name).read_bytes()).hexdigest()[:16]


def demo_asset_url(name: str) -> str:
    return f"{DEMO_PREFIX}/{name}?v={_digest(name)}"


def demo_html() -> str:
    return _PAGE.substitute(
        stylesheet=demo_asset_url("demo.css"),
        graphql_ws=graphiql_asset_url("graphql-ws.min.js"),
        script=demo_asset_url("demo.js"),
    )


async def demo_page(request: Request) -> HTMLResponse:
    return HTMLResponse(
        demo_html(),
        headers={
            "content-security-policy": CONTENT_SECURITY_POLICY,
            "cache-control": "no-cache",
            "x-content-type-options": "nosniff",
        },
    )


def demo_routes(settings: Settings) -> list[BaseRoute]:
    """The page and its assets where the demo is enabled; nothing otherwise (404)."""
    if not demo_enabled(settings):
        return []
    return [
        Route("/demo", demo_page, methods=["GET"]),
        Mount(DEMO_PREFIX, app=StaticFiles(directory=DEMO_DIR), name="demo-static"),
    ]
