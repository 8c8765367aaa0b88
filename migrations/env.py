"""Alembic environment: async engines for PostgreSQL (asyncpg) and SQLite (aiosqlite)."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
from collections.abc import Iterator
from logging.config import fileConfig

from alembic import context
from sqlalchemy import text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import AsyncConnection

from app.config import get_settings
from app.db import make_engine
from app.models import Base

config = context.config
if config.config_file_name is not None and config.attributes.get("configure_logger", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = Base.metadata


def _url() -> str:
    return config.attributes.get("database_url") or get_settings().database_url


def _configure(connection: Connection | None = None, url: str | None = None) -> None:
    context.configure(
        connection=connection,
        url=url,
        target_metadata=target_metadata,
        render_as_batch=True,  # SQLite alters tables by copying them
        compare_type=True,
        literal_binds=connection is None,
    )


def run_migrations_offline() -> None:
    _configure(url=_url())
    with context.begin_transaction():
        context.run_migrations()


def _run_sync(connection: Connection) -> None:
    _configure(connection=connection)
    with context.begin_transaction():
        context.run_migrations()


# Any number of replicas may run `tessera migrate` at once: on PostgreSQL they take turns on
# this session-level advisory lock (a key of our own), so one migrates and the others find the
# schema at head; on SQLite, on a lock file beside the database.
_LOCK_KEY = 0x7E55E7A  # "tessera"


async def run_migrations_online() -> None:
    url = _url()
    engine = make_engine(url, pool_size=1)
    try:
        async with engine.connect() as connection:
            if connection.dialect.name == "postgresql":
                await _take_turn(connection)
                await connection.run_sync(_run_sync)
                await connection.execute(text("SELECT pg_advisory_unlock(:key)"),
                                         {"key": _LOCK_KEY})
                await connection.commit()
            else:
                with _file_lock(url):
                    await connection.run_sync(_run_sync)
    finally:
        await engine.dispose()


async def _take_turn(connection: AsyncConnection) -> None:
    """Wait for the advisory lock, trying it in short transactions: a session blocked in
    `pg_advisory_lock` would hold a transaction open, and the migrating session's `CREATE INDEX
    CONCURRENTLY` waits for every open transaction to end (a deadlock)."""
    while True:
        took = (await connection.execute(text("SELECT pg_try_advisory_lock(:key)"),
                                         {"key": _LOCK_KEY})).scalar_one()
        await connection.commit()  # the lock, once taken, outlives the transaction
        if took:
            return
        await asyncio.sleep(0.2)


@contextlib.contextmanager
def _file_lock(url: str) -> Iterator[None]:
    path = make_url(url).database
    if not path or path == ":memory:":
        yield
        return
    with open(f"{path}.migrate-lock", "w") as lock:  # noqa: PTH123
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


if context.is_offline_mode():
    run_migrations_offline()
else:
    asyncio.run(run_migrations_online())
