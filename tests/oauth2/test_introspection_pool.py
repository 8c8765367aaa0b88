"""Introspection under more concurrent callers than pool connections (PostgreSQL)."""

from __future__ import annotations

import asyncio

import httpx2
import pytest

from app.config import Settings
from app.main import create_app
from tests.conftest import make_plan, migrated_pg_database
from tests.helpers import create_gateway_client

pytestmark = pytest.mark.asyncio


async def test_concurrent_introspection_does_not_starve_the_pool(clock) -> None:
    """Pins d7ff222: with the cache off, each request reads its caller and then its token.
    No request may hold a pool connection while it waits for another (both reads are batched
    now, each batch on a connection of its own); otherwise 20 requests on a pool of one
    connection hold it while waiting for another, and hang."""
    async with migrated_pg_database(pool_size=1) as db:
        settings = Settings(database_url=db.url, issuer="https://tessera.test",
                            secret_key="test-secret-key-for-signing-cookies",
                            token_cache_size=0, db_pool_size=1)
        app = create_app(settings, clock=clock, engine=db.engine)
        transport = httpx2.ASGITransport(app=app)
        async with httpx2.AsyncClient(transport=transport, base_url="https://tessera.test") as c:
            plan = await make_plan(db, clock)
            creds = await create_gateway_client(c, plan)
            token = (await plan.add_user()).token

            async def one() -> httpx2.Response:
                return await c.post("/oauth2/introspect", data={"token": token}, auth=creds)

            answers = await asyncio.wait_for(asyncio.gather(*(one() for _ in range(20))),
                                             timeout=20)  # a deadlock guard, not a speed test
        assert all(r.status_code == 200 and r.json()["active"] is True for r in answers), \
            [(r.status_code, r.text) for r in answers]
