"""Seeding the benchmark database fast: a few hundred ORM rows (plans, users, integrations), then
tokens by COPY (those wrk presents, with their secrets) and by `INSERT ... SELECT
generate_series` (filler nobody can present, so the table and its index have the stated size)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import asyncpg

from app import credentials
from app.credentials import SecretKind
from app.db import make_engine, make_sessionmaker, session_scope
from app.integrations.models import Installation, Integration
from app.plans.models import Plan
from app.users.models import User

_TOKEN_COLUMNS = ("id", "kind", "digest", "hint", "name", "plan_id", "user_id", "integration_id",
                  "scopes", "issued_at", "expires_at", "family_id")


@dataclass
class Client:
    integration_id: uuid.UUID
    client_id: str
    secret: str
    plan_id: uuid.UUID | None


@dataclass
class Fixture:
    plans: list[uuid.UUID]
    users: list[uuid.UUID]  # `users_per_plan` per plan, in plan order
    users_per_plan: int
    gateway: Client  # a platform client allowed to introspect every plan's tokens
    app: Client  # a plan's own confidential integration: client_credentials, refresh, revoke
    app_user: uuid.UUID
    known: list[str] = field(default_factory=list)  # personal tokens, presentable


async def seed_base(url: str, *, plans: int = 100, users_per_plan: int = 10) -> Fixture:
    now = datetime.now(UTC)
    password_hash = credentials.hash_password("bench-password")
    engine = make_engine(url, pool_size=2)
    plan_ids = [uuid.uuid4() for _ in range(plans)]
    user_ids: list[uuid.UUID] = []
    async with session_scope(make_sessionmaker(engine)) as session:
        for i, plan_id in enumerate(plan_ids):
            # Half the plans have a period (long enough to keep every token valid): the check
            # then does the calendar arithmetic, as it would in production.
            period = (1, "years") if i % 2 == 0 else (None, None)
            session.add(Plan(id=plan_id, name=f"bench-{i}", created_at=now,
                             expiration_value=period[0], expiration_unit=period[1]))
        await session.flush()
        for i, plan_id in enumerate(plan_ids):
            for j in range(users_per_plan):
                user_id = uuid.uuid4()
                user_ids.append(user_id)
                session.add(User(id=user_id, plan_id=plan_id, email=f"u{i}-{j}-{user_id.hex[:6]}"
                                 "@bench.example", name=f"User {i}-{j}",
                                 role="admin" if j == 0 else "member",
                                 password_hash=password_hash, created_at=now))
        await session.flush()
        # A platform resource server: it introspects tokens of every plan.
        gateway = _client(session, now, name="bench gateway", kind="platform", plan_id=None,
                          can_introspect=True, review_status="not_reviewed")
        app = _client(session, now, name="bench app", kind="custom", plan_id=plan_ids[0],
                      can_introspect=False, review_status="not_reviewed")
        await session.flush()
        session.add(Installation(id=uuid.uuid4(), integration_id=app.integration_id,
                                 plan_id=plan_ids[0], state="active", installed_at=now,
                                 approved_scopes=["data:read", "data:write"]))
    await engine.dispose()
    return Fixture(plan_ids, user_ids, users_per_plan, gateway, app, app_user=user_ids[1])


def _client(session, now: datetime, *, name: str, kind: str,  # noqa: ANN001
            plan_id: uuid.UUID | None, can_introspect: bool, review_status: str) -> Client:
    secret = credentials.generate(SecretKind.client_secret)
    integ = Integration(
        id=uuid.uuid4(), client_id=f"bench_{uuid.uuid4().hex[:20]}",
        client_secret_digest=credentials.digest(secret), name=name, kind=kind, plan_id=plan_id,
        redirect_uris=[], scopes=["data:read", "data:write"], confidential=True,
        can_introspect=can_introspect, data_access="limited", review_status=review_status,
        review_deadline=now + timedelta(days=30), review_steps={}, created_at=now,
        created_by="bench")
    session.add(integ)
    return Client(integ.id, integ.client_id, secret, plan_id)


def _row(kind: SecretKind, secret: str, plan_id: uuid.UUID, user_id: uuid.UUID | None,
         integration_id: uuid.UUID | None, scopes: str, issued_at: datetime,
         expires_at: datetime | None, family_id: uuid.UUID | None) -> tuple:
    return (uuid.uuid4(), kind.name, credentials.digest(secret), credentials.hint(secret),
            "bench", plan_id, user_id, integration_id, scopes, issued_at, expires_at, family_id)


async def add_personal(conn: asyncpg.Connection, fx: Fixture, count: int) -> list[str]:
    """Personal tokens wrk can present, spread over every plan's users."""
    now = datetime.now(UTC)
    secrets, rows = [], []
    for i in range(count):
        secret = credentials.generate(SecretKind.personal)
        user_index = i % len(fx.users)
        plan_id = fx.plans[user_index // fx.users_per_plan]
        rows.append(_row(SecretKind.personal, secret, plan_id, fx.users[user_index], None, "",
                         now - timedelta(minutes=i % 10_000), None, None))
        secrets.append(secret)
    await conn.copy_records_to_table("tokens", records=rows, columns=_TOKEN_COLUMNS)
    fx.known.extend(secrets)
    return secrets


async def add_oauth(conn: asyncpg.Connection, fx: Fixture, kind: SecretKind,
                    count: int) -> list[str]:
    """The app's OAuth tokens: refresh tokens (one family each) to rotate, access tokens to
    revoke. Each is used once."""
    now = datetime.now(UTC)
    secrets, rows = [], []
    for _ in range(count):
        secret = credentials.generate(kind)
        expires = now + timedelta(hours=1) if kind is SecretKind.access else None
        rows.append(_row(kind, secret, fx.plans[0], fx.app_user, fx.app.integration_id,
                         "data:read", now, expires, uuid.uuid4()))
        secrets.append(secret)
    await conn.copy_records_to_table("tokens", records=rows, columns=_TOKEN_COLUMNS)
    return secrets


async def add_filler(conn: asyncpg.Connection, fx: Fixture, count: int) -> None:
    """Tokens nobody holds (digests of no token string), spread over every plan and user."""
    if count <= 0:
        return
    batch = 200_000
    for start in range(0, count, batch):
        n = min(batch, count - start)
        await conn.execute(
            """
            INSERT INTO tokens (id, kind, digest, hint, name, plan_id, user_id, scopes, issued_at)
            SELECT gen_random_uuid(), 'personal',
                   encode(sha256(convert_to($1 || g::text, 'UTF8')), 'hex'), 'fill', 'filler',
                   ($2::uuid[])[1 + (g / $4) % array_length($2::uuid[], 1)],
                   ($3::uuid[])[1 + ((g / $4) % array_length($2::uuid[], 1)) * $4 + g % $4],
                   '', now() - (g % 100000) * interval '1 minute'
            FROM generate_series($5::bigint, $6::bigint) AS g
            """,
            f"filler-{uuid.uuid4().hex}-", fx.plans, fx.users, fx.users_per_plan,
            start, start + n - 1)


async def count_tokens(conn: asyncpg.Connection) -> int:
    return await conn.fetchval("SELECT count(*) FROM tokens")


async def add_bound(conn: asyncpg.Connection, fx: Fixture, jkt: str, count: int) -> list[str]:
    """The app's access tokens bound to one DPoP key (`jkt`), as its token requests with a
    proof of that key get them (RFC 9449)."""
    now = datetime.now(UTC)
    secrets, rows = [], []
    for _ in range(count):
        secret = credentials.generate(SecretKind.access)
        rows.append((*_row(SecretKind.access, secret, fx.plans[0], None, fx.app.integration_id,
                           "data:read", now, now + timedelta(hours=1), None), jkt))
        secrets.append(secret)
    await conn.copy_records_to_table("tokens", records=rows,
                                     columns=(*_TOKEN_COLUMNS, "dpop_jkt"))
    return secrets
