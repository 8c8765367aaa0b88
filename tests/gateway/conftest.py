"""A PostgreSQL database of the gateway tests' own: real servers run on it, and the outage test
cuts access to it."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import update

from app.clock import FrozenClock
from app.db import make_sessionmaker, session_scope
from app.integrations.models import Integration
from app.tokens import cache
from app.tokens import service as tokens
from app.tokens.rules import TokenKind
from tests.conftest import Database, migrated_pg_database


@pytest.fixture(scope="module")
async def pg() -> AsyncIterator[Database]:
    async with migrated_pg_database("tessera_gw", pool_size=2) as db:
        yield db


def real_clock(**ago: float) -> FrozenClock:
    """The wall clock (the servers run on it), or a moment before it."""
    return FrozenClock(datetime.now(UTC) - timedelta(**ago))


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def issue(db: Database, **fields) -> str:  # noqa: ANN003
    async with session_scope(make_sessionmaker(db.engine)) as session:
        _token, secret = tokens.issue(session, **fields)
    return secret


async def expired_access_token(db: Database, plan_id: uuid.UUID,
                               integration_id: uuid.UUID) -> str:
    """An OAuth access token whose own one-hour lifetime ended a minute ago."""
    now = datetime.now(UTC)
    return await issue(db, kind=TokenKind.access, plan_id=plan_id, integration_id=integration_id,
                       scopes="data:read", now=now - timedelta(minutes=61),
                       expires_at=now - timedelta(minutes=1))


async def revoke_review(db: Database, integration_id: uuid.UUID) -> None:
    """What the operator's review change does: the status, and `cache.changed` in the same
    transaction (its NOTIFY reaches the servers at commit)."""
    async with session_scope(make_sessionmaker(db.engine)) as session:
        await session.execute(update(Integration).where(Integration.id == integration_id)
                              .values(review_status="revoked"))
        await cache.changed(session, integration_id=integration_id)
