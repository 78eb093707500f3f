"""Where event archives live: a directory, or an S3 bucket and prefix.

Both hold the same keys (`manifest.json`, `workspace=<id>/date=<day>/events.jsonl.gz`, …)
and offer the same two calls, so the archive logic does not know which it writes to. S3
goes through boto3 with its usual configuration: credentials and region from the
environment or the task role, and `AWS_ENDPOINT_URL` for an S3-compatible store. Nothing
is ever deleted from a store: an object that must change is put again (a versioned bucket
keeps the old version).
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import uuid
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

# S3's rules for (general purpose) bucket names.
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


class ArchiveError(Exception):
    """The archive or restore could not be done as asked; the message says why (exit 1)."""


class UsageError(ArchiveError):
    """A bad argument, found before anything was read or written (exit 2)."""


class Store(Protocol):
    url: str

    def get(self, key: str) -> bytes | None:
        """The object's bytes, or None when there is no such object."""

    def put(self, key: str, data: bytes) -> None:
        """Store the object whole (replacing one with the same key)."""


class DirectoryStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.url = str(root)

    def get(self, key: str) -> bytes | None:
        path = self.root / key
        try:
            return path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ArchiveError(f"{path}: {exc.strerror or exc}") from exc

    def put(self, key: str, data: bytes) -> None:
        """Write to a temporary file beside the target, then rename it into place.

        A crash leaves the old object or the new one, never half of one.
        """
        path = self.root / key
        temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with temporary.open("wb") as file:
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, path)
        except OSError as exc:
            temporary.unlink(missing_ok=True)
            raise ArchiveError(f"{path}: {exc.strerror or exc}") from exc


class S3Store:
    def __init__(self, bucket: str, prefix: str) -> None:
        self.bucket = bucket
        self.prefix = prefix
        self.url = f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}"
        self._client: Any = None

    def client(self) -> Any:
        if self._client is None:
            import boto3

            # boto3 reads AWS_ENDPOINT_URL itself (an S3-compatible store, a VPC endpoint).
            self._client = boto3.client("s3")
        return self._client

    def key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _failed(self, key: str, exc: Exception) -> ArchiveError:
        from botocore.exceptions import ClientError

        if isinstance(exc, ClientError):
            error = exc.response.get("Error", {})
            code = error.get("Code", "")
            if code == "NoSuchBucket":
                return ArchiveError(f"{self.url}: there is no bucket {self.bucket!r}")
            return ArchiveError(f"{self.url}/{key}: {code}: {error.get('Message', '')}".rstrip())
        return ArchiveError(f"{self.url}/{key}: {exc}")

    def get(self, key: str) -> bytes | None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            answer = self.client().get_object(Bucket=self.bucket, Key=self.key(key))
            data: bytes = answer["Body"].read()
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in {"NoSuchKey", "404"}:
                return None
            raise self._failed(key, exc) from exc
        except BotoCoreError as exc:
            raise self._failed(key, exc) from exc
        return data

    def put(self, key: str, data: bytes) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        digest = base64.b64encode(hashlib.sha256(data).digest()).decode()
        try:
            # With ChecksumSHA256 the store itself refuses a body damaged on the way.
            self.client().put_object(
                Bucket=self.bucket,
                Key=self.key(key),
                Body=data,
                ChecksumSHA256=digest,
                ContentType="application/json" if key.endswith(".json") else "application/gzip",
            )
        except (ClientError, BotoCoreError) as exc:
            raise self._failed(key, exc) from exc


def open_store(location: str, option: str, *, must_exist: bool) -> Store:
    """The store named on the command line, or UsageError; nothing is created here."""
    if "://" in location:
        parts = urlsplit(location)
        if parts.scheme != "s3":
            raise UsageError(
                f"{option}: {location!r} is neither a directory nor s3://bucket/prefix"
            )
        bucket = parts.netloc
        if not _BUCKET.match(bucket) or ".." in bucket:
            raise UsageError(
                f"{option}: {bucket!r} is not an S3 bucket name (3-63 characters: lower-case "
                "letters, digits, dots and hyphens): write s3://bucket/prefix"
            )
        if parts.query or parts.fragment:
            raise UsageError(f"{option}: write s3://bucket/prefix, without ? or #")
        return S3Store(bucket, parts.path.strip("/"))
    root = Path(location)
    if root.exists() and not root.is_dir():
        raise UsageError(f"{option}: {location} is not a directory")
    if must_exist and not root.exists():
        raise UsageError(f"{option}: no such directory: {location}")
    return DirectoryStore(root)
