"""Shared fixtures: real databases (PostgreSQL and SQLite), an injected clock, an HTTP client.

Every database test runs once per backend. With TESSERA_TEST_REQUIRE_ALL=1 (CI), anything a
test needs that is missing (PostgreSQL, nginx, Chromium, ...) fails the run instead of skipping.
"""

from __future__ import annotations

import asyncio
import functools
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import httpx2
import pytest
from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncEngine

from app import credentials
from app.cli import migrate
from app.clock import FrozenClock
from app.config import Settings
from app.credentials import SecretKind
from app.db import make_engine, make_sessionmaker, session_scope
from app.main import create_app
from app.operators.models import Operator
from app.plans.models import Plan
from app.throttle.models import Throttle
from app.tokens import service as tokens
from app.tokens.rules import TokenKind
from app.users.models import User

REQUIRE_ALL = os.environ.get("TESSERA_TEST_REQUIRE_ALL") == "1"
PG_HOST = os.environ.get("TESSERA_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
T0 = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)


def require(available: bool, what: str) -> None:
    """Skip when a real dependency is missing, except in CI where that is a failure."""
    if available:
        return
    if REQUIRE_ALL:
        pytest.fail(f"{what} is required (TESSERA_TEST_REQUIRE_ALL=1)")
    pytest.skip(f"{what} not available")


async def _pg_reachable() -> bool:
    try:
        conn = await asyncpg.connect(PG_HOST, timeout=3)
    except (OSError, asyncpg.PostgresError):
        return False
    await conn.close()
    return True


@dataclass
class Database:
    backend: str
    url: str
    engine: AsyncEngine


async def create_pg_database(prefix: str = "tessera_test") -> str:
    name = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    conn = await asyncpg.connect(PG_HOST)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return name


async def drop_pg_database(name: str) -> None:
    conn = await asyncpg.connect(PG_HOST)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


def pg_url(name: str) -> str:
    base = PG_HOST.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
    return f"{base}/{name}"


@asynccontextmanager
async def migrated_pg_database(prefix: str = "tessera_test",
                               pool_size: int = 5) -> AsyncIterator[Database]:
    """A throwaway PostgreSQL database, migrated to head, dropped afterwards."""
    require(await _pg_reachable(), f"PostgreSQL at {PG_HOST}")
    name = await create_pg_database(prefix)
    url = pg_url(name)
    try:
        await asyncio.to_thread(migrate, url)
        engine = make_engine(url, pool_size=pool_size)
        yield Database("postgresql", url, engine)
        await engine.dispose()
    finally:
        await drop_pg_database(name)


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
async def database(request: pytest.FixtureRequest) -> AsyncIterator[Database]:
    if request.param == "postgresql":
        async with migrated_pg_database() as db:
            yield db
    else:
        folder = tempfile.mkdtemp(prefix="tessera-test-")
        url = f"sqlite+aiosqlite:///{folder}/tessera.db"
        await asyncio.to_thread(migrate, url)
        engine = make_engine(url)
        yield Database("sqlite", url, engine)
        await engine.dispose()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(T0)


@pytest.fixture
def settings(database: Database) -> Settings:
    # Password checks take their whole core here: the share that keeps a flood of guesses from
    # the token checks (bench: "beside password guessers") would only make tests wait.
    return Settings(database_url=database.url, issuer="https://tessera.test",
                    secret_key="test-secret-key-for-signing-cookies", password_hash_share=1.0)


@pytest.fixture
async def app(settings: Settings, clock: FrozenClock, database: Database):  # noqa: ANN201
    yield create_app(settings, clock=clock, engine=database.engine)
    # Failed attempts are counted in the database every test shares, each test's clock starting
    # at the same instant: what one test's guessing counted must not throttle the next.
    async with database.engine.begin() as conn:
        await conn.execute(delete(Throttle))


@pytest.fixture
async def lane(app):  # noqa: ANN001, ANN201
    """`tessera serve`'s composition of `app` behind uvicorn and its HTTP protocol, in this
    process, with the token cache serving (`tests.helpers.served_by_uvicorn`)."""
    from tests.helpers import served_by_uvicorn
    from tests.integrations.test_token_client_cache import serve_cache

    serve_cache(app)
    async with served_by_uvicorn(app) as outer:
        yield outer


@pytest.fixture
async def client(app) -> AsyncIterator[httpx2.AsyncClient]:  # noqa: ANN001
    transport = httpx2.ASGITransport(app=app)
    async with httpx2.AsyncClient(transport=transport, base_url="https://tessera.test") as c:
        yield c


@pytest.fixture
async def uncached(settings, clock, database) -> AsyncIterator[httpx2.AsyncClient]:  # noqa: ANN001
    """A second application on the same database, whose cache never serves: what a page is
    when read whole from the database, to compare with one whose cache serves."""
    fresh = create_app(settings, clock=clock, engine=database.engine)
    transport = httpx2.ASGITransport(app=fresh)
    async with httpx2.AsyncClient(transport=transport, base_url="https://tessera.test") as c:
        yield c


@dataclass
class Member:
    user_id: uuid.UUID
    email: str
    password: str
    token: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    async def renew(self, client: httpx2.AsyncClient) -> str:
        """A new personal token, had with the password (HTTP Basic), as a locked-out user does."""
        r = await client.post("/v1/me/tokens", json={"name": "renewed"},
                              auth=(self.email, self.password))
        assert r.status_code == 201, r.text
        self.token = r.json()["token"]
        return self.token


@dataclass
class PlanFixture:
    plan_id: uuid.UUID
    admin: Member
    db: Database
    clock: FrozenClock

    async def add_user(self, role: str = "member", *, token: bool = True) -> Member:
        return await _add_user(self.db, self.plan_id, role, self.clock.now(), token=token)


PASSWORD = "correct horse battery staple"


@functools.cache
def _password_hash() -> str:
    """The fixtures' one password, hashed once (a real argon2id hash, checked for real at each
    sign-in): hashing it anew for every user of every test cost most of the suite's time."""
    return credentials.hash_password(PASSWORD)


async def _add_user(db: Database, plan_id: uuid.UUID, role: str, now: datetime, *,
                    token: bool = True) -> Member:
    email = f"{role}-{uuid.uuid4().hex[:10]}@example.com"
    password = PASSWORD
    async with session_scope(make_sessionmaker(db.engine)) as session:
        user = User(id=uuid.uuid4(), plan_id=plan_id, email=email, name=role.title(),
                    role=role, password_hash=_password_hash(), created_at=now)
        session.add(user)
        await session.flush()  # before its token, which refers to it
        secret = ""
        if token:
            _t, secret = tokens.issue(session, kind=TokenKind.personal, plan_id=plan_id,
                                      user_id=user.id, name="test", now=now)
    return Member(user.id, email, password, secret)


async def make_plan(db: Database, clock: FrozenClock, name: str = "Acme") -> PlanFixture:
    plan_id = uuid.uuid4()
    async with session_scope(make_sessionmaker(db.engine)) as session:
        session.add(Plan(id=plan_id, name=name, created_at=clock.now()))
    admin = await _add_user(db, plan_id, "admin", clock.now())
    return PlanFixture(plan_id, admin, db, clock)


@pytest.fixture
async def plan(database: Database, clock: FrozenClock) -> PlanFixture:
    return await make_plan(database, clock)


@pytest.fixture
async def other_plan(database: Database, clock: FrozenClock) -> PlanFixture:
    return await make_plan(database, clock, "Other")


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@pytest.fixture
async def operator(database, clock) -> dict[str, str]:
    secret = credentials.generate(SecretKind.operator)
    async with session_scope(make_sessionmaker(database.engine)) as s:
        s.add(Operator(id=uuid.uuid4(), email=f"ops-{uuid.uuid4().hex[:8]}@example.com",
                       token_digest=credentials.digest(secret),
                       token_hint=credentials.hint(secret), created_at=clock.now()))
    return {"Authorization": f"Bearer {secret}"}


@pytest.fixture
async def browser(app):  # noqa: ANN001, ANN201
    from tests.oauth2.browser import Browser

    b = Browser(app)
    yield b
    await b.close()
