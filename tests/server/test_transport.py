"""Transport: HTTPS served by `concord serve` itself, and the CORS allow-list."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import os
import ssl
import sys
import time
from pathlib import Path

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.api import migrate, running_app, settings_for
from tests.services import free_port


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, made for this test."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "concord test")])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


async def test_concord_serve_speaks_https_with_the_given_certificate(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'concord.db'}",
        "CONCORD_DATA_DIR": str(tmp_path),
        "JWT_SECRET": "test-secret-that-is-long-enough-for-hs256-0123456789",
    }
    concord = Path(sys.executable).with_name("concord")
    args = ["serve", "--port", str(port), "--ssl-certfile", str(cert), "--ssl-keyfile", str(key)]
    process = await asyncio.create_subprocess_exec(
        str(concord),
        *args,
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        trusted = ssl.create_default_context(cafile=str(cert))
        deadline = time.monotonic() + 30
        async with httpx.AsyncClient(verify=trusted) as client:
            while True:
                assert process.returncode is None, "concord serve exited"
                try:
                    response = await client.get(f"https://127.0.0.1:{port}/healthz")
                    break
                except httpx.ConnectError:
                    assert time.monotonic() < deadline, "concord serve did not start"
                    await asyncio.sleep(0.1)
        assert response.status_code == 200
        assert response.json() == {"status": "ok"}
        # Plain HTTP on the same port is not answered as HTTP.
        async with httpx.AsyncClient() as plain:
            try:
                answer = await plain.get(f"http://127.0.0.1:{port}/healthz")
            except httpx.HTTPError:
                pass
            else:
                assert answer.status_code == 400
    finally:
        process.terminate()
        await process.wait()


def test_a_certificate_without_its_key_is_refused(tmp_path: Path) -> None:
    from server.cli import main

    cert, _ = self_signed(tmp_path)
    assert main(["serve", "--ssl-certfile", str(cert)]) == 2


async def test_only_allowed_origins_get_cors_headers(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'concord.db'}"
    await migrate(url)
    settings = settings_for(url, tmp_path, cors_origins="https://app.example.com")
    preflight = {
        "access-control-request-method": "POST",
        "access-control-request-headers": "authorization, content-type",
    }
    async with running_app(settings) as api:
        allowed = await api.client.options(
            "/graphql", headers={"origin": "https://app.example.com", **preflight}
        )
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == "https://app.example.com"
        assert "authorization" in allowed.headers["access-control-allow-headers"].lower()

        other = await api.client.options(
            "/graphql", headers={"origin": "https://evil.example", **preflight}
        )
        assert other.status_code == 400
        assert "access-control-allow-origin" not in other.headers

        answer = await api.client.post(
            "/graphql", json={"query": "{ __typename }"}, headers={"origin": "https://evil.example"}
        )
        assert "access-control-allow-origin" not in answer.headers

    async with running_app(settings_for(url, tmp_path)) as api:  # CORS_ORIGINS unset
        none = await api.client.options(
            "/graphql", headers={"origin": "https://app.example.com", **preflight}
        )
        assert "access-control-allow-origin" not in none.headers
