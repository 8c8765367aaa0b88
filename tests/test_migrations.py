"""The schema is only ever changed by a migration: models and migrations must agree."""

from __future__ import annotations

import asyncio

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from app.models import Base

pytestmark = pytest.mark.asyncio


async def test_models_match_migrations(database) -> None:
    def diff(connection):  # noqa: ANN001, ANN202
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return compare_metadata(context, Base.metadata)

    async with database.engine.connect() as conn:
        changes = await conn.run_sync(diff)
    assert changes == []


async def test_migrations_downgrade_and_upgrade_cleanly(tmp_path) -> None:
    from alembic import command

    from app.cli import alembic_config

    url = f"sqlite+aiosqlite:///{tmp_path}/roundtrip.db"
    cfg = alembic_config(url)
    await asyncio.to_thread(command.upgrade, cfg, "head")
    await asyncio.to_thread(command.downgrade, cfg, "base")
    await asyncio.to_thread(command.upgrade, cfg, "head")


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
async def test_replicas_may_all_migrate_at_once(tmp_path, backend) -> None:
    """Three `tessera migrate` started together on a fresh database (every replica runs it at
    start): all succeed, one after the other, and the schema ends at head."""
    import os
    import subprocess
    import sys

    from tests.conftest import _pg_reachable, create_pg_database, drop_pg_database, pg_url, require

    name = None
    if backend == "postgresql":
        require(await _pg_reachable(), "PostgreSQL")
        name = await create_pg_database("tessera_migrate")
        url = pg_url(name)
    else:
        url = f"sqlite+aiosqlite:///{tmp_path}/replicas.db"
    env = {**os.environ, "TESSERA_DATABASE_URL": url}
    try:
        procs = [await asyncio.create_subprocess_exec(
            sys.executable, "-m", "app.cli", "migrate", env=env,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for _ in range(3)]
        outputs = [(await p.communicate())[0].decode() for p in procs]
        assert [p.returncode for p in procs] == [0, 0, 0], outputs
        assert sum("Running upgrade 0003 -> 0004" in out for out in outputs) == 1, outputs
    finally:
        if name:
            await drop_pg_database(name)


async def test_an_index_build_left_invalid_is_built_again(tmp_path) -> None:
    """Migration 0009 builds its indexes concurrently on PostgreSQL. A build that stops half way
    (here: a unique build refused by duplicates, as a killed `tessera migrate` would leave it)
    leaves an invalid index of the new name; the next run drops and builds it again, and only
    then drops the old indexes, instead of keeping the invalid one (IF NOT EXISTS) and listing
    a plan's tokens with no usable index."""
    import asyncpg
    from alembic import command

    from app.cli import alembic_config
    from tests.conftest import (
        PG_HOST,
        _pg_reachable,
        create_pg_database,
        drop_pg_database,
        pg_url,
        require,
    )

    require(await _pg_reachable(), "PostgreSQL")
    name = await create_pg_database("tessera_invalid")
    cfg = alembic_config(pg_url(name))
    dsn = PG_HOST.rsplit("/", 1)[0] + f"/{name}"
    try:
        await asyncio.to_thread(command.upgrade, cfg, "0008")
        conn = await asyncpg.connect(dsn)
        try:
            plan = await conn.fetchval(
                "INSERT INTO plans (id, name, created_at) VALUES (gen_random_uuid(), 'p', now()) "
                "RETURNING id")
            for n in range(2):
                await conn.execute(
                    "INSERT INTO tokens (id, kind, digest, hint, plan_id, scopes, issued_at) "
                    "VALUES (gen_random_uuid(), 'personal', $1, 'x', $2, '', now())",
                    f"d{n}", plan)
            with pytest.raises(asyncpg.UniqueViolationError):
                await conn.execute("CREATE UNIQUE INDEX CONCURRENTLY "
                                   "ix_tokens_plan_id_issued_at_id ON tokens (plan_id)")
            assert await conn.fetchval(
                "SELECT indisvalid FROM pg_index "
                "WHERE indexrelid = 'ix_tokens_plan_id_issued_at_id'::regclass") is False
            await asyncio.to_thread(command.upgrade, cfg, "head")
            rows = await conn.fetch(
                "SELECT c.relname, i.indisvalid, pg_get_indexdef(i.indexrelid) AS def "
                "FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                "WHERE i.indrelid = 'tokens'::regclass")
        finally:
            await conn.close()
        found = {r["relname"]: (r["indisvalid"], r["def"]) for r in rows}
        assert found["ix_tokens_plan_id_issued_at_id"][0] is True
        assert "(plan_id, issued_at, id)" in found["ix_tokens_plan_id_issued_at_id"][1]
        assert "UNIQUE" not in found["ix_tokens_plan_id_issued_at_id"][1]
        assert found["ix_tokens_user_id_kind_issued_at_id"][0] is True
        assert "ix_tokens_plan_id_issued_at" not in found
        assert "ix_tokens_user_id" not in found
    finally:
        await drop_pg_database(name)
