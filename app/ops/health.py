"""`/healthz` (the process answers) and `/readyz` (it can serve: its database answers, its schema
is the one this code expects, and, where the token cache is on, its listener is connected).

An orchestrator restarts a process whose `/healthz` fails, and sends traffic only to those whose
`/readyz` passes; a database that is down makes every replica unready, not dead.
"""

from __future__ import annotations

import asyncio
import functools
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app import db

# How long readiness waits for the database: an answer within it, or unready.
READY_TIMEOUT_SECONDS = 2.0


@functools.cache
def expected_revision() -> str | None:
    """The schema revision this code expects (Alembic's head), or None when the migrations are
    not where `tessera migrate` looks for them."""
    try:
        from alembic.script import ScriptDirectory

        from app.cli import alembic_config

        return ScriptDirectory.from_config(alembic_config()).get_current_head()
    except (SystemExit, Exception):  # noqa: BLE001 - no migrations to read: not checked
        return None


@dataclass(frozen=True, slots=True)
class Readiness:
    ready: bool
    checks: dict[str, Any]


async def schema_revision(engine: AsyncEngine) -> str | None:
    async with db.connection(engine) as conn:
        return (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar()


async def readiness(engine: AsyncEngine, *, listener_expected: bool,
                    listener_connected: bool) -> Readiness:
    checks: dict[str, Any] = {}
    try:
        revision = await asyncio.wait_for(schema_revision(engine), READY_TIMEOUT_SECONDS)
        checks["database"] = "ok"
    except Exception as exc:  # noqa: BLE001 - any failure is the answer
        checks["database"] = f"unreachable ({type(exc).__name__})"
        revision = None
    expected = expected_revision()
    if checks["database"] == "ok":
        checks["schema"] = ("ok" if expected is None or revision == expected else
                            f"at {revision or 'nothing'}, expected {expected}: run tessera migrate")
    if listener_expected:
        checks["cache_listener"] = "ok" if listener_connected else "not connected"
    return Readiness(all(v == "ok" for v in checks.values()), checks)
