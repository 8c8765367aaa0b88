"""`/healthz` says the process answers; `/readyz` says it can serve: its database answers, its
schema is the one the code expects, and (PostgreSQL, cache on) its listener is connected."""

from __future__ import annotations

import asyncio

import httpx2
import pytest
from sqlalchemy import text

from app.db import make_engine
from app.main import create_app
from app.ops.health import expected_revision

pytestmark = pytest.mark.asyncio


async def test_ready_when_the_database_answers_at_head(app, client) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    async with app.router.lifespan_context(app):
        for _ in range(100):  # on PostgreSQL the listener connects in the background
            r = await client.get("/readyz")
            if r.status_code == 200:
                break
            await asyncio.sleep(0.05)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "ready" and r.json()["checks"]["schema"] == "ok"
    assert expected_revision() is not None


async def test_unready_when_the_schema_is_behind(database, settings, clock) -> None:
    app = create_app(settings, clock=clock, engine=database.engine)
    async with database.engine.begin() as conn:
        head = (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar()
        await conn.execute(text("UPDATE alembic_version SET version_num = '0001'"))
    try:
        async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app),
                                      base_url="https://tessera.test") as c:
            r = await c.get("/readyz")
            assert r.status_code == 503 and r.headers["retry-after"] == "1"
            assert r.json()["checks"]["schema"].startswith("at 0001, expected")
            assert (await c.get("/healthz")).status_code == 200  # alive all the same
    finally:
        async with database.engine.begin() as conn:
            await conn.execute(text("UPDATE alembic_version SET version_num = :v"), {"v": head})


async def test_unready_when_the_database_is_unreachable(settings, clock) -> None:
    dead = make_engine("postgresql+asyncpg://postgres@127.0.0.1:9/none", connect_timeout=1)
    app = create_app(settings, clock=clock, engine=dead)
    async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app),
                                  base_url="https://tessera.test") as c:
        r = await c.get("/readyz")
        assert r.status_code == 503
        assert r.json()["checks"]["database"].startswith("unreachable")
        assert (await c.get("/healthz")).status_code == 200
    await dead.dispose()
