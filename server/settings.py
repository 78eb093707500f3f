"""Every setting Concord reads, from the environment, once at start.

The defaults are the embedded mode: a SQLite file in the data directory, an in-process
broker, a JWT secret generated on first start and kept beside the database.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def default_data_dir() -> Path:
    """Where the embedded database and the development JWT secret live."""
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg) if xdg else Path.home() / ".local" / "share"
    return base / "concord"


class Settings(BaseSettings):
    """Concord's configuration; each field is one environment variable (upper case)."""

    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="ignore")

    data_dir: Path = Field(default_factory=default_data_dir, alias="CONCORD_DATA_DIR")
    database_url: str | None = None
    database_read_url: str | None = None
    redis_url: str | None = None

    jwt_secret: str | None = None
    jwt_issuer: str = "concord"
    jwt_audience: str = "concord"
    access_token_ttl_seconds: int = Field(default=900, ge=10)
    refresh_token_ttl_seconds: int = Field(default=30 * 24 * 3600, ge=60)
    # An external identity provider (OAuth 2.0 / OIDC): its key set, switching on RS256 and
    # ES256 bearer tokens beside our own, and the `iss` and `aud` its tokens must carry
    # (both required with the URL; JWT_ISSUER/JWT_AUDIENCE stay those of our own tokens).
    jwt_jwks_url: str | None = None
    jwt_jwks_issuer: str | None = None
    jwt_jwks_audience: str | None = None

    max_query_depth: int = Field(default=12, ge=1)
    max_aliases: int = Field(default=30, ge=1)
    max_tokens: int = Field(default=2000, ge=10)
    max_body_bytes: int = Field(default=1_048_576, ge=1024)

    # SQL Server: how long a statement waits for a lock before error 1222 (retried).
    database_lock_timeout_seconds: float = Field(default=5.0, gt=0, le=600)
    # Bounds on the serving process's database calls (see models/database.py `Timeouts`):
    # opening a connection, one statement (below REQUEST_TIMEOUT_SECONDS, so that a stalled
    # database is noticed before the request's own deadline), waiting for a pooled one.
    database_connect_timeout_seconds: float = Field(default=5.0, gt=0, le=600)
    database_statement_timeout_seconds: float = Field(default=5.0, gt=0, le=3600)
    database_pool_timeout_seconds: float = Field(default=5.0, gt=0, le=600)
    # Circuit breakers (database, Redis publishes): consecutive failures that open one, and
    # how long it stays open before one trial call may go through.
    breaker_failure_threshold: int = Field(default=5, ge=1)
    breaker_recovery_seconds: float = Field(default=10.0, gt=0, le=3600)

    ws_connection_init_timeout_seconds: float = Field(default=10.0, gt=0)
    subscriber_queue_size: int = Field(default=1000, ge=1)
    # Per-message deflate on WebSockets: off, so that one encoded frame serves every socket.
    ws_compression: bool = False
    # workspaceEvents over graphql-transport-ws through the per-workspace fan-out groups.
    ws_fanout: bool = True

    # Reads: the compiled path for the contract's queries, and the response cache.
    compiled_reads: bool = True
    # On PostgreSQL, the compiled path reads a plan's rows with one statement when it can
    # (schema/compiled/single.py); off: one statement per planned field.
    compiled_single_statement: bool = True
    response_cache: bool = True
    response_cache_max_bytes: int = Field(default=64 * 1024 * 1024, ge=0)
    response_cache_ttl_seconds: float = Field(default=300.0, gt=0)
    # Freeze the start-up heap out of the garbage collector's sight (see server/app.py).
    gc_freeze: bool = True

    # Comma-separated origins (https://app.example.com) whose pages may call the API;
    # unset: no cross-origin access (same-origin pages such as GraphiQL need none).
    cors_origins: str | None = None

    # SIGTERM: how long in-flight requests may run on before they are cancelled and the
    # process exits (WebSockets close with 1001 and SSE streams end at once: server/shutdown.py).
    shutdown_grace_seconds: int = Field(default=10, ge=1, le=3600)

    log_level: str = "INFO"
    # OpenTelemetry traces go to this OTLP/HTTP collector (e.g. http://collector:4318);
    # unset, tracing is off and its SDK is never set up.
    otel_exporter_otlp_endpoint: str | None = None
    debug: bool = False

    # Security (issue 10): limits checked before execution, time per request.
    max_query_cost: int = Field(default=5000, ge=1)
    request_timeout_seconds: float = Field(default=10.0, gt=0)
    # Slow clients: the request line and headers (`concord serve`), then the body.
    request_header_timeout_seconds: float = Field(default=10.0, gt=0)
    request_body_timeout_seconds: float = Field(default=10.0, gt=0)
    ws_max_operations: int = Field(default=100, ge=1)
    # How long an Idempotency-Key (and the answer stored with it) is kept (server/idempotency).
    idempotency_key_ttl_seconds: float = Field(default=24 * 3600, gt=0)
    # `limits` syntax ("100/minute", "10 per 5 minutes"); shared through REDIS_URL if set.
    rate_limit_auth_per_ip: str = "100/minute"
    rate_limit_login_failures: str = "10 per 5 minutes"
    rate_limit_unknown_emails: str = "20 per hour"
    rate_limit_registered_emails: str = "20 per hour"
    # Every GraphQL operation (HTTP, SSE, WebSocket), per user; per address when anonymous.
    rate_limit_operations: str = "600/minute"
    rate_limit_key_prefix: str = "concord"
    # "production": no introspection, GraphiQL or open /metrics; unsafe settings refused.
    concord_env: Literal["development", "production"] = "development"
    metrics_token: str | None = None

    @field_validator(
        "rate_limit_auth_per_ip",
        "rate_limit_login_failures",
        "rate_limit_unknown_emails",
        "rate_limit_registered_emails",
        "rate_limit_operations",
    )
    @classmethod
    def _rate(cls, value: str) -> str:
        from limits import parse

        parse(value)  # raises ValueError naming the malformed rate
        return value

    @field_validator(
        "database_url",
        "database_read_url",
        "redis_url",
        "jwt_secret",
        "jwt_jwks_url",
        "jwt_jwks_issuer",
        "jwt_jwks_audience",
        "otel_exporter_otlp_endpoint",
    )
    @classmethod
    def _blank_is_unset(cls, value: str | None) -> str | None:
        # `REDIS_URL=` in an env file means "not set", not "a Redis at ''".
        return value or None

    @field_validator("log_level")
    @classmethod
    def _upper(cls, value: str) -> str:
        return value.upper()

    @property
    def write_url(self) -> str:
        """The primary database; the embedded SQLite file when DATABASE_URL is unset."""
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{self.data_dir / 'concord.db'}"

    @property
    def read_url(self) -> str:
        return self.database_read_url or self.write_url

    @property
    def cors_origin_list(self) -> list[str]:
        """The browser origins allowed to call the API from other sites (CORS_ORIGINS)."""
        return [o.strip() for o in (self.cors_origins or "").split(",") if o.strip()]

    @property
    def production(self) -> bool:
        return self.concord_env == "production"

    @property
    def embedded(self) -> bool:
        return self.write_url.startswith("sqlite")


def load_settings() -> Settings:
    return Settings()
