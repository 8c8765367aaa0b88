"""A batch PostgreSQL aborts for the sake of a concurrent transaction (app/tokens/batches.py):
run again, it succeeds; out of attempts, its requests get a 503 to retry, and nothing of it is
written.

The deadlocks here are real: another transaction holds a row the batch needs, the batch locks
one that transaction then asks for, and PostgreSQL's deadlock check (after `deadlock_timeout`,
3 s on the batch's connections here; the other one's is set far higher) aborts the batch.
Row locks only exist on PostgreSQL, so these tests run there only.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError

from app import db
from app.api import errors
from app.audit.models import AuditEvent
from app.clock import FrozenClock
from app.tokens import service as tokens
from app.tokens.batches import Batches
from app.tokens.models import Token
from app.tokens.rules import TokenKind
from tests.conftest import Database, PlanFixture, make_plan, migrated_pg_database
from tests.tokens.test_batches import statements


@pytest.fixture(scope="module")
async def pg() -> AsyncIterator[Database]:
    async with migrated_pg_database(pool_size=4) as database:
        # The batch's side checks for a deadlock this long after it starts waiting: the other
        # transaction has that long to close the cycle, on a loaded machine too.
        async with database.engine.connect() as conn:
            await conn.exec_driver_sql(
                f'ALTER DATABASE "{database.url.rsplit("/", 1)[1]}" SET deadlock_timeout = \'3s\'')
        await database.engine.dispose()  # connections from now on take the setting
        yield database


@pytest.fixture
async def pg_plan(pg: Database, clock: FrozenClock) -> PlanFixture:
    return await make_plan(pg, clock)


async def family(pg: Database, plan: PlanFixture, count: int,
                 kind: TokenKind = TokenKind.refresh) -> list[dict[str, Any]]:
    """`count` committed tokens of one grant, in id order."""
    family_id = uuid.uuid4()
    rows = [tokens.new_row(kind=kind, plan_id=plan.plan_id, now=plan.clock.now(),
                           family_id=family_id)[0] for _ in range(count)]
    async with pg.engine.begin() as conn:
        await tokens.insert_rows(conn, rows)
    return sorted(rows, key=lambda row: row["id"])


async def waiting_for_a_lock(pg: Database) -> None:
    """Until some session of this database waits for a row lock. Each look in a transaction of
    its own: within one, PostgreSQL answers `pg_stat_activity` from the snapshot its first
    look took, so a first look before the wait began never saw it (a flaky failure)."""
    async with pg.engine.connect() as conn:
        for _ in range(500):
            waiting = (await conn.execute(text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND wait_event_type = 'Lock'"))).scalar_one()
            await conn.commit()
            if waiting:
                return
            await asyncio.sleep(0.01)
    raise AssertionError("nothing waits for a lock")


async def deadlock(pg: Database, first: uuid.UUID, second: uuid.UUID,
                   batch: Callable[[], Awaitable[Any]]) -> Any:  # noqa: ANN401
    """Run `batch`, which locks `first` and then `second`, into a deadlock with a transaction
    holding `second` and then asking for `first`; that transaction ends once it has `first`.
    Answers what the batch answered (or raises what it raised)."""
    other = await pg.engine.connect()
    try:
        await other.begin()
        await other.execute(text("SET LOCAL deadlock_timeout = '60s'"))
        lock = text("SELECT 1 FROM tokens WHERE id = :id FOR UPDATE")
        await other.execute(lock, {"id": second})
        running = asyncio.ensure_future(batch())
        await waiting_for_a_lock(pg)  # the batch holds `first` and waits for `second`
        # This waits until PostgreSQL aborts the batch, which frees `first`.
        await asyncio.wait_for(other.execute(lock, {"id": first}), 30)
        await other.commit()
        return await asyncio.wait_for(running, 30)
    finally:
        await other.close()


async def revoked(pg: Database, ids: list[uuid.UUID]) -> dict[uuid.UUID, bool]:
    async with pg.engine.connect() as conn:
        return dict((await conn.execute(
            select(Token.id, Token.revoked_at.is_not(None)).where(Token.id.in_(ids)))).all())


async def audit_events(pg: Database, target: uuid.UUID) -> int:
    async with pg.engine.connect() as conn:
        return (await conn.execute(select(func.count()).select_from(AuditEvent)
                                   .where(AuditEvent.target_id == str(target)))).scalar_one()


async def test_a_revocation_batch_aborted_by_a_deadlock_runs_again(pg, pg_plan, clock) -> None:
    batches = Batches.for_engine(pg.engine)
    rows = await family(pg, pg_plan, 2)
    stored = await batches.reader.find(rows[0]["digest"])
    assert stored is not None

    # The grant's rows are locked in id order: rows[0], then rows[1].
    with statements(pg.engine) as seen:
        await deadlock(pg, rows[0]["id"], rows[1]["id"], lambda: batches.revoker.revoke(
            stored, actor="test", reason="revoked", at=clock.now()))
    locks = [q for q in seen if q.startswith("SELECT 1 FROM TOKENS WHERE FAMILY_ID = ANY")]
    assert len(locks) == 2  # the run the deadlock aborted, and the one that committed

    assert await revoked(pg, [r["id"] for r in rows]) == {r["id"]: True for r in rows}
    assert await audit_events(pg, stored.id) == 1  # the aborted run left nothing behind


async def test_a_rotation_batch_aborted_by_a_deadlock_runs_again(pg, pg_plan, clock) -> None:
    batches = Batches.for_engine(pg.engine)
    old = [(await family(pg, pg_plan, 1))[0] for _ in range(2)]
    old.sort(key=lambda row: row["id"])
    fresh = [tokens.new_row(kind=TokenKind.access, plan_id=pg_plan.plan_id, now=clock.now())[0]
             for _ in old]

    async def both() -> list[bool]:  # one batch: both calls queue in the same tick
        return list(await asyncio.gather(*(
            batches.writer.write([new], rotate=row["id"], at=clock.now())
            for row, new in zip(old, fresh, strict=True))))

    with statements(pg.engine) as seen:
        assert await deadlock(pg, old[0]["id"], old[1]["id"], both) == [True, True]
    assert len([q for q in seen if q.startswith("WITH ROTATING AS")]) == 2  # aborted, then run
    async with pg.engine.connect() as conn:
        used = (await conn.execute(select(func.count()).select_from(Token).where(
            Token.id.in_([r["id"] for r in old]), Token.used_at.is_not(None)))).scalar_one()
        written = (await conn.execute(select(func.count()).select_from(Token).where(
            Token.id.in_([r["id"] for r in fresh])))).scalar_one()
    assert (used, written) == (2, 2)


async def test_out_of_attempts_the_batch_fails_with_a_503_to_retry_and_writes_nothing(
        pg, pg_plan, clock) -> None:
    batches = Batches.for_engine(pg.engine)
    batches.revoker.attempts = 1
    rows = await family(pg, pg_plan, 2)
    stored = await batches.reader.find(rows[0]["digest"])
    assert stored is not None

    with pytest.raises(DBAPIError) as raised:
        await deadlock(pg, rows[0]["id"], rows[1]["id"], lambda: batches.revoker.revoke(
            stored, actor="test", reason="revoked", at=clock.now()))

    assert db.is_concurrency_abort(raised.value)
    assert raised.value.orig.sqlstate == "40P01"
    assert await revoked(pg, [r["id"] for r in rows]) == {r["id"]: False for r in rows}
    assert await audit_events(pg, stored.id) == 0
    oauth = errors.failure_response(raised.value, "POST", "/oauth2/revoke")
    assert oauth.status_code == 503 and oauth.headers["Retry-After"] == "1"
    assert oauth.body.startswith(b'{"error":"temporarily_unavailable"')
    other = errors.failure_response(raised.value, "DELETE", "/v1/me/tokens/x")
    assert other.status_code == 503 and b'"error":"unavailable"' in other.body
