"""The database goes away: introspection and the gateway check fail closed with 503, never
`active: false` nor a pass, and recover by themselves when it returns ("Storage and scale")."""

from __future__ import annotations

import asyncio
import time

import asyncpg
import httpx2
import pytest

from tests.conftest import PG_HOST, make_plan
from tests.gateway.conftest import real_clock
from tests.gateway.processes import tessera

pytestmark = pytest.mark.asyncio

BOUND = 1.0
CHECK = "/v1/gateway/check"


async def set_access(name: str, *, allowed: bool) -> None:
    """Cut (or restore) every connection to one database, as a lost database looks to us."""
    conn = await asyncpg.connect(PG_HOST)
    try:
        await conn.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {str(allowed).lower()}')
        if not allowed:
            await conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                               "WHERE datname = $1 AND pid <> pg_backend_pid()", name)
    finally:
        await conn.close()


async def test_outage_fails_closed_and_recovers(pg, tmp_path) -> None:
    name = pg.url.rsplit("/", 1)[1]
    plan = await make_plan(pg, real_clock(), "Outage")
    cached, uncached = await plan.add_user(), await plan.add_user()

    with tessera(pg.url, tmp_path, "outage") as api:
        async with httpx2.AsyncClient(base_url=api, timeout=30) as http:
            r = await http.post(f"/v1/plans/{plan.plan_id}/integrations", headers=plan.admin.auth,
                                json={"name": "gateway", "can_introspect": True})
            gateway = (r.json()["client_id"], r.json()["client_secret"])

            async def introspect(token: str) -> httpx2.Response:
                return await http.post("/oauth2/introspect", data={"token": token}, auth=gateway)

            assert (await http.get(CHECK, headers=cached.auth)).status_code == 200
            assert (await introspect(cached.token)).json()["active"] is True

            await set_access(name, allowed=False)
            try:
                # An uncached token: 503 at once, never a 401 (or `active: false`).
                r = await http.get(CHECK, headers=uncached.auth)
                assert r.status_code == 503, r.text
                assert r.headers["retry-after"] == "1"
                assert r.json()["error"] == "unavailable"
                r = await introspect(uncached.token)
                assert r.status_code == 503
                assert r.json()["error"] == "temporarily_unavailable"
                assert "active" not in r.json()
                # A cached token: at most the bound (the listener died with the database and
                # took the cache with it), then 503 too. Never a refusal.
                started = time.monotonic()
                while (r := await http.get(CHECK, headers=cached.auth)).status_code != 503:
                    assert r.status_code == 200
                    assert time.monotonic() - started < BOUND + 0.5
                    await asyncio.sleep(0.02)
                assert (await introspect(cached.token)).status_code == 503
                # Still closed a while later (the pool keeps trying, and failing).
                await asyncio.sleep(0.5)
                assert (await http.get(CHECK, headers=cached.auth)).status_code == 503
            finally:
                await set_access(name, allowed=True)

            # Back by itself: no restart.
            deadline = time.monotonic() + 15
            while (r := await http.get(CHECK, headers=cached.auth)).status_code != 200:
                assert r.status_code == 503, r.text
                assert time.monotonic() < deadline, "did not recover"
                await asyncio.sleep(0.1)
            assert (await http.get(CHECK, headers=uncached.auth)).status_code == 200
            assert (await introspect(cached.token)).json()["active"] is True

    log = (tmp_path / "outage.log").read_text()
    assert "database unavailable" in log
    assert "unhandled" not in log and "Traceback" not in log, log[-3000:]
    await pg.engine.dispose()  # its pooled connections were cut too


async def test_which_database_errors_are_an_outage() -> None:
    from sqlalchemy.exc import DBAPIError

    from app.api.errors import _is_db_outage

    class PgError(Exception):
        def __init__(self, sqlstate: str) -> None:
            self.sqlstate = sqlstate

    # Opening a connection failed, whatever the reason (55000: not accepting connections).
    assert _is_db_outage(DBAPIError(None, None, PgError("55000")))
    assert _is_db_outage(DBAPIError(None, None, PgError("3D000")))
    # A statement failed because the server went away or is overloaded.
    for sqlstate in ("57P01", "57P03", "08006", "53300"):
        assert _is_db_outage(DBAPIError("SELECT 1", {}, PgError(sqlstate)))
    # A statement's own error is not an outage.
    for sqlstate in ("55000", "23505", "42P01"):
        assert not _is_db_outage(DBAPIError("SELECT 1", {}, PgError(sqlstate)))
