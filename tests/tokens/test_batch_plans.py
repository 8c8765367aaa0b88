"""A group write finds the rows it updates by their primary key, whatever PostgreSQL's statistics
say of the table (app/tokens/batches.py, `_BY_KEY`).

Joined only to the batch's values, a rotation was planned from the estimated number of unused,
unrevoked tokens; statistics taken when few were (a stale estimate of one row) gave a
sequential scan of the whole table, joined in a loop to the batch: 43 ms for 32 rotations of
8,800 tokens, and more as the table grows. PostgreSQL only (the statements are its own).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from app.tokens import service as tokens
from app.tokens.batches import _LOCK_FAMILIES_SQL, _REVOKE_SQL, _rotate_sql
from app.tokens.rules import TokenKind
from tests.conftest import Database, PlanFixture, make_plan, migrated_pg_database


@pytest.fixture(scope="module")
async def pg() -> AsyncIterator[Database]:
    async with migrated_pg_database() as database:
        yield database


def _scans(node: dict[str, Any]) -> list[tuple[str, str | None]]:
    found = [(node["Node Type"], node.get("Relation Name"))]
    for child in node.get("Plans", ()):
        found += _scans(child)
    return found


async def _plan(pg: Database, sql: str, *params: object) -> list[tuple[str, str | None]]:
    async with pg.engine.connect() as conn:
        plan = (await conn.exec_driver_sql(f"EXPLAIN (FORMAT JSON) {sql}", params)).scalar()
    return _scans((json.loads(plan) if isinstance(plan, str) else plan)[0]["Plan"])


@pytest.mark.asyncio
async def test_a_batch_finds_its_rows_by_key_whatever_the_statistics(pg, clock) -> None:
    plan: PlanFixture = await make_plan(pg, clock)
    families = [uuid.uuid4() for _ in range(300)]  # grants of ten tokens each
    rows = [tokens.new_row(kind=TokenKind.refresh, plan_id=plan.plan_id, now=clock.now(),
                           family_id=families[i % 300])[0] for i in range(3000)]
    family_id = families[0]
    async with pg.engine.begin() as conn:
        await tokens.insert_rows(conn, rows)
        await conn.exec_driver_sql("ALTER TABLE tokens SET (autovacuum_enabled = false)")
        # Statistics taken while every token was used and revoked ...
        await conn.exec_driver_sql("UPDATE tokens SET used_at = now(), revoked_at = now()")
        await conn.exec_driver_sql("ANALYZE tokens")
        # ... and then none is.
        await conn.exec_driver_sql("UPDATE tokens SET used_at = NULL, revoked_at = NULL")
    at = clock.now().isoformat()
    batch = rows[:32]
    try:
        fresh = [dict(tokens.new_row(kind=TokenKind.refresh, plan_id=plan.plan_id,
                                     now=clock.now(), family_id=family_id)[0],
                      rotates=str(r["id"])) for r in batch]
        columns = tuple(k for k in fresh[0] if k != "rotates")
        for row in fresh:
            row.update({k: str(v) if isinstance(v, uuid.UUID) else v for k, v in row.items()})
            row.update({k: v.isoformat() for k, v in row.items() if hasattr(v, "isoformat")})
        rotation = await _plan(pg, _rotate_sql(columns),
                               json.dumps([{"id": str(r["id"]), "at": at} for r in batch]),
                               json.dumps(fresh), "nobody", "[]")
        revocation = await _plan(pg, _REVOKE_SQL, json.dumps(
            [{"id": str(r["id"]), "family_id": None, "at": at, "reason": "test",
              "actor": "test"} for r in batch]), "[]", "nobody", "[]")
        family = await _plan(pg, _REVOKE_SQL, json.dumps(
            [{"id": str(batch[0]["id"]), "family_id": str(family_id), "at": at,
              "reason": "test", "actor": "test"}]), "[]", "nobody", "[]")
        locks = await _plan(pg, _LOCK_FAMILIES_SQL, json.dumps([str(family_id)]))
    finally:
        async with pg.engine.begin() as conn:
            await conn.exec_driver_sql("ALTER TABLE tokens RESET (autovacuum_enabled)")
    for what, scans in (("rotation", rotation), ("revocation", revocation),
                        ("a grant's revocation", family), ("a grant's locks", locks)):
        assert ("Seq Scan", "tokens") not in scans, (what, scans)
        # ... but an index walk: a bitmap of the primary key, or an index scan.
        assert any(relation == "tokens" and ("Index" in node or node == "Bitmap Heap Scan")
                   for node, relation in scans), (what, scans)
