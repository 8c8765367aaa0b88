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
