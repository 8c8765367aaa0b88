"""Settings, read once from `TESSERA_*` environment variables (pydantic-settings)."""

from __future__ import annotations

import secrets
from functools import lru_cache

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TESSERA_", extra="ignore")

    database_url: str = "sqlite+aiosqlite:///./tessera.db"
    # The public base URL the service is reached at; the RFC 8414 issuer.
    issuer: str = "http://localhost:8000"
    # Signs the login session and CSRF cookies of the consent screen. A random per-process
    # default keeps a first run safe; set it for more than one replica.
    secret_key: SecretStr = Field(default_factory=lambda: SecretStr(secrets.token_urlsafe(32)))
    access_token_ttl_seconds: int = Field(default=3600, ge=60, le=86400)
    authorization_code_ttl_seconds: int = Field(default=60, ge=10, le=600)
    # How long a newly registered third-party integration works before its review must be done.
    review_period_days: int = Field(default=30, ge=1, le=3650)
    # Days before a token's effective expiry that its owner is told.
    notice_lead_days: int = Field(default=7, ge=1, le=365)
    # Outgoing mail (expiry notices). No host: notices wait in the outbox until one is set
    # (or, with `mail_log_only`, are written to the log and count as delivered).
    smtp_host: str | None = None
    mail_log_only: bool = False
    smtp_port: int = Field(default=25, ge=1, le=65535)
    smtp_starttls: bool = False  # upgrade with STARTTLS (usually port 587)
    smtp_tls: bool = False  # implicit TLS from the first byte (usually port 465)
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_from: str = "Tessera <tessera@localhost>"
    smtp_timeout_seconds: float = Field(default=30, gt=0, le=600)
    # The background worker (`tessera worker`, or inside `tessera serve` when enabled).
    worker_interval_seconds: float = Field(default=60, gt=0, le=86400)
    worker_batch_size: int = Field(default=500, ge=1, le=10_000)
    run_worker_in_serve: bool = False
    # Sent, failed and skipped notices keep their recipient, text and last error this many days
    # after they were written; then only the key that stops a second notice is kept.
    outbox_retention_days: int = Field(default=90, ge=1, le=36500)
    db_pool_size: int = Field(default=20, ge=1, le=200)  # connections per process, no overflow
    # How long a request waits for a pool connection before its 503: shorter than a gateway's
    # own timeout (the documented Envoy config: 2 s), so the gateway passes on Tessera's answer.
    db_pool_timeout_seconds: float = Field(default=1.5, gt=0, le=60)
    # The longest one statement of a request may run, and the longest a new connection may take
    # to open: a database that hangs (a partition, a stuck primary) is then a 503 within about
    # twice the statement timeout (the driver also waits that long for its cancel request),
    # like one that is down. The worker and `tessera migrate` are not bound by it.
    db_statement_timeout_seconds: float = Field(default=1.0, gt=0, le=600)
    db_connect_timeout_seconds: float = Field(default=1.0, gt=0, le=60)
    # In-process cache of token facts (app/tokens/cache.py); 0 turns it off. PostgreSQL only.
    token_cache_size: int = Field(default=100_000, ge=0, le=10_000_000)
    # The longest a cached answer may outlive a change made on another replica: the cache serves
    # only while its LISTEN connection answered a heartbeat within this many seconds.
    token_cache_bound_seconds: float = Field(default=1.0, gt=0, le=60)
    token_cache_heartbeat_seconds: float = Field(default=0.25, gt=0, le=30)
    # Password checks (argon2id) running at once in a process, and waiting beyond them; past
    # that a sign-in is answered 503 at once (app/throttle/hashing.py).
    password_hash_concurrency: int = Field(default=1, ge=1, le=64)
    password_hash_queue: int = Field(default=32, ge=0, le=10_000)
    # The share of a core each running check may take over time: after a check its slot rests
    # (1 / share - 1) times as long as the check took.
    password_hash_share: float = Field(default=0.25, gt=0, le=1)
    # Addresses (IPs or CIDR networks) of proxies whose X-Forwarded-For is believed: the source
    # address that guessing is counted against. None: the peer itself.
    trusted_proxies: str = ""
    # Slow clients (`tessera serve`, app/serving.py): a request's headers must arrive within
    # this many seconds of its first byte, its body within this many of its headers, and a
    # kept-alive connection may sit idle this long between requests.
    header_timeout_seconds: float = Field(default=10, gt=0, le=600)
    body_timeout_seconds: float = Field(default=30, gt=0, le=3600)
    keep_alive_timeout_seconds: float = Field(default=5, gt=0, le=600)
    log_level: str = "info"
    # Cookies marked Secure; turn off only for plain-http local runs.
    secure_cookies: bool = False


@lru_cache
def get_settings() -> Settings:
    return Settings()
