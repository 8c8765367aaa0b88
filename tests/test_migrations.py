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
