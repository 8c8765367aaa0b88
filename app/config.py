"""Settings, read once from `TESSERA_*` environment variables (pydantic-settings), checked at
start: a wrong value stops the process with one line per problem, naming the variable
(`SettingsError`); an unknown `TESSERA_*` variable is warned about (`unknown_variables`)."""

from __future__ import annotations

import difflib
import os
import secrets
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PREFIX = "TESSERA_"


def default_database_url() -> str:
    """The embedded database, in the user's data directory (`$XDG_DATA_HOME`, else
    ~/.local/share): the same file whatever directory a command runs from."""
    base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return f"sqlite+aiosqlite:///{base / 'tessera' / 'tessera.db'}"


# Scheme spellings people paste, and the driver Tessera uses for each.
_SCHEMES = {"postgres": "postgresql+asyncpg", "postgresql": "postgresql+asyncpg",
            "postgresql+asyncpg": "postgresql+asyncpg", "sqlite": "sqlite+aiosqlite",
            "sqlite+aiosqlite": "sqlite+aiosqlite"}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=PREFIX, extra="ignore")

    database_url: str = Field(default_factory=default_database_url)
    # The public base URL the service is reached at; the RFC 8414 issuer.
    issuer: str = "http://localhost:8000"
    # Signs the login session and CSRF cookies of the consent screen: one key, or several
    # separated by commas (the first signs, every one verifies: rotation with an overlap). A
    # random per-process default keeps a first run safe; set it for more than one process.
    secret_key: SecretStr = Field(default_factory=lambda: SecretStr(secrets.token_urlsafe(32)))
    access_token_ttl_seconds: int = Field(default=3600, ge=60, le=86400)
    authorization_code_ttl_seconds: int = Field(default=60, ge=10, le=600)
    # How long a newly registered third-party integration works before its review must be done.
    review_period_days: int = Field(default=30, ge=1, le=3650)
    # Days before a token's effective expiry that its owner is told.
    notice_lead_days: int = Field(default=7, ge=1, le=365)
    # Days before an integration's review deadline that the plan's admins are reminded, e.g.
    # "30,7" (`app.notifications.reminders`); empty: no such reminder.
    reminder_days: str = "30,7"
    # Outgoing mail (expiry notices). No host: notices wait in the outbox until one is set
    # (or, with `mail_log_only`, are written to the log and count as delivered).
    smtp_host: str | None = None
    mail_log_only: bool = False
    # RFC 9449 §8: every DPoP proof must carry a nonce from the server (`DPoP-Nonce`); off by
    # default (replays are refused by the proofs' store either way).
    dpop_nonce_required: bool = False
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
    # What pages kept as answered (tokens, the audit trail, the console's) may hold at most,
    # per process, in MB; 0 keeps none. Kept only while the token cache serves. A user's page
    # of 100 tokens is about 40 kB of JSON and 65 kB of the console's rows: a thousand users
    # reading both hold about 105 MB.
    token_listings_megabytes: int = Field(default=128, ge=0, le=4096)
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
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"
    # One JSON object per line (for log collectors), or `text` for a person at a terminal.
    log_format: Literal["json", "text"] = "json"
    # One log line per request (`tessera serve --access-log` sets it).
    access_log: bool = False
    # Prometheus metrics at /metrics; with a token, only for `Authorization: Bearer <token>`.
    metrics_enabled: bool = True
    metrics_token: SecretStr | None = None
    # Cookies marked Secure; unset: when the issuer is https.
    secure_cookies: bool | None = None

    @field_validator("reminder_days")
    @classmethod
    def _days(cls, value: str) -> str:
        parts = [p.strip() for p in value.split(",") if p.strip()]
        if not all(p.isdigit() and 1 <= int(p) <= 365 for p in parts):
            raise ValueError("a comma-separated list of days between 1 and 365, e.g. 30,7")
        return ",".join(parts)

    @property
    def reminder_lead_days(self) -> tuple[int, ...]:
        """The reminders' days before a deadline, longest first."""
        return tuple(sorted({int(p) for p in self.reminder_days.split(",") if p}, reverse=True))

    @field_validator("log_level", "log_format", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @field_validator("database_url")
    @classmethod
    def _driver(cls, value: str) -> str:
        """`postgres://…` and `postgresql://…` (as hosting providers print them) mean
        PostgreSQL through asyncpg; `sqlite:///…` SQLite through aiosqlite."""
        scheme, sep, rest = value.partition("://")
        if not sep or scheme not in _SCHEMES:
            raise ValueError("expected postgresql://… (or postgres://, postgresql+asyncpg://) "
                             "or sqlite:///path")
        return f"{_SCHEMES[scheme]}://{rest}"

    @property
    def secret_key_is_random(self) -> bool:
        """No key was set: one was drawn for this process alone."""
        return "secret_key" not in self.model_fields_set

    @property
    def secret_keys(self) -> list[str]:
        """The keys, the signing one first."""
        return [k.strip() for k in self.secret_key.get_secret_value().split(",") if k.strip()]

    @property
    def cookies_secure(self) -> bool:
        if self.secure_cookies is not None:
            return self.secure_cookies
        return self.issuer.startswith("https://")


class SettingsError(Exception):
    """The settings cannot be used: one line per problem, each naming its variable."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def load() -> Settings:
    try:
        settings = Settings()
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            name = PREFIX + str(err["loc"][0]).upper() if err.get("loc") else PREFIX + "?"
            message = str(err.get("msg", "invalid")).removeprefix("Value error, ")
            problems.append(f"{name}: {message}")
        raise SettingsError(problems) from None
    return settings


def unknown_variables(environ: dict[str, str] | None = None) -> list[str]:
    """A line for each `TESSERA_*` variable no setting reads (a misspelling, most likely)."""
    environ = os.environ if environ is None else environ
    known = {PREFIX + name.upper() for name in Settings.model_fields}
    lines = []
    for name in sorted(environ):
        if name.startswith(PREFIX) and name not in known \
                and not name.startswith(PREFIX + "TEST_"):  # the test suite's own
            close = difflib.get_close_matches(name, sorted(known), n=1)
            lines.append(f"{name} is not a Tessera setting; it is ignored"
                         + (f" (did you mean {close[0]}?)" if close else ""))
    return lines


@lru_cache
def get_settings() -> Settings:
    return load()
