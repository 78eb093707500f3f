"""nginx with the repository's config (deploy/nginx/concord.conf) in front of two real Concord
processes, as compose.yaml runs it: WebSocket subscriptions pass through it, events written
on either process reach subscribers behind it, and what it answers itself is right.

The compose service names are replaced by the processes' loopback ports and nginx listens on
a free port; nothing else in the config changes. Needs Debian's nginx (scripts/install-nginx),
PostgreSQL and Redis: a laptop without one skips, CI fails.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.api import Api
from tests.deploy.container_files import ROOT
from tests.live import socket
from tests.server.test_live_cluster import (
    EVENTS,
    ServerProcess,
    concord_processes,
    last_cursor,
    take_events,
    title,
)
from tests.services import (
    free_port,
    reachable_redis_url,
    scratch_postgres_database,
    unavailable,
)

CONFIG = ROOT / "deploy" / "nginx" / "concord.conf"


@dataclass
class Stack:
    url: str  # nginx
    servers: list[ServerProcess]

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://") + "/graphql"


def render(port: int, servers: list[ServerProcess], directory: Path) -> Path:
    """The repository's config with this machine's ports, inside a minimal nginx.conf."""
    site = CONFIG.read_text()
    for n, server in enumerate(servers, start=1):
        assert f"server concord-{n}:8000 " in site
        site = site.replace(f"server concord-{n}:8000 ", f"server 127.0.0.1:{server.port} ")
    assert "listen 80 default_server;" in site
    site = site.replace("listen 80 default_server;", f"listen 127.0.0.1:{port} default_server;")
    (directory / "concord.conf").write_text(site)
    main = directory / "nginx.conf"
    main.write_text(
        f"""daemon off;
master_process off;
pid {directory}/nginx.pid;
error_log {directory}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {directory}/body;
    proxy_temp_path {directory}/proxy;
    include {directory}/concord.conf;
}}
"""
    )
    return main


def nginx_binary() -> str:
    found = shutil.which("nginx") or (
        "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
    )
    if found is None:
        unavailable("nginx is not installed (scripts/install-nginx)")
    assert found is not None
    return found


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    binary = nginx_binary()
    reachable_redis_url()
    directory = tmp_path_factory.mktemp("nginx")
    with (
        scratch_postgres_database() as database_url,
        concord_processes(2, database_url, directory) as servers,
    ):
        port = free_port()
        config = render(port, servers, directory)
        checked = subprocess.run(
            [binary, "-t", "-p", str(directory), "-c", str(config)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert checked.returncode == 0, checked.stderr
        nginx = subprocess.Popen(
            [binary, "-p", str(directory), "-c", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 30
            while True:
                assert nginx.poll() is None, (directory / "error.log").read_text()
                try:
                    if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert time.monotonic() < deadline, "nginx did not answer"
                time.sleep(0.1)
            yield Stack(url, servers)
        finally:
            nginx.terminate()
            try:
                nginx.wait(timeout=10)
            except subprocess.TimeoutExpired:
                nginx.kill()
                nginx.wait(timeout=10)


async def test_subscriptions_through_nginx_see_writes_on_both_processes(stack: Stack) -> None:
    async with (
        httpx.AsyncClient(base_url=stack.url, timeout=30) as through_nginx,
        httpx.AsyncClient(base_url=stack.servers[0].url, timeout=30) as first,
        httpx.AsyncClient(base_url=stack.servers[1].url, timeout=30) as second,
    ):
        api = Api(through_nginx, None)
        ada = await api.register("ada_nginx")
        workspace = await api.workspace(ada)
        board = await api.board(ada, workspace["id"])
        cursor = await last_cursor(api, ada, workspace["id"])
        # Two sockets through nginx: least_conn sends them to different processes.
        async with socket(stack.ws_url) as one, socket(stack.ws_url) as two:
            for s in (one, two):
                assert (await s.init(ada.token))["type"] == "connection_ack"
                await s.subscribe("events", EVENTS, {"w": workspace["id"], "a": cursor})
            await Api(first, None).card(ada, board["id"], "written on process 1")
            await Api(second, None).card(ada, board["id"], "written on process 2")
            await api.card(ada, board["id"], "written through nginx")
            expected = ["written on process 1", "written on process 2", "written through nginx"]
            for s in (one, two):
                events = await take_events(s, 3)
                assert [title(e) for e in events] == expected
                assert [e["seq"] for e in events] == sorted(e["seq"] for e in events)


async def test_nginx_answers_health_hides_metrics_and_limits_bodies(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.url, timeout=30) as client:
        assert (await client.get("/healthz")).json() == {"status": "ok"}
        assert (await client.get("/readyz")).status_code == 200
        assert (await client.get("/metrics")).status_code == 404
        too_big = await client.post(
            "/graphql",
            content=b"x" * (3 * 1024 * 1024),
            headers={"content-type": "application/json"},
        )
        assert too_big.status_code == 413
    # Straight to a process, /metrics is there: nginx is what hides it.
    async with httpx.AsyncClient(base_url=stack.servers[0].url, timeout=30) as direct:
        assert (await direct.get("/metrics")).status_code == 200


async def test_a_websocket_upgrade_is_passed_not_answered_by_nginx(stack: Stack) -> None:
    # Without the Upgrade and Connection headers forwarded, uvicorn would never see the
    # handshake and the client would get a plain HTTP answer instead of 101.
    async with socket(stack.ws_url) as s:
        response = s.connection.response
        assert response is not None
        assert response.status_code == 101
        assert response.headers["upgrade"].lower() == "websocket"
        assert response.headers["sec-websocket-protocol"] == "graphql-transport-ws"
        # And the server behind it speaks: an anonymous connection_init is refused with 4403.
        await s.send_init(None)
        assert await s.closed_with(10) == 4403
