"""The listings' reads straight on asyncpg (`app.db.DirectReads`, PostgreSQL): the same rows as
SQLAlchemy's, and a failed read leaves the pool as sound as SQLAlchemy would."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import asyncpg
import pytest
from sqlalchemy import bindparam, func, literal, select, update
from sqlalchemy.exc import DBAPIError

from app.api.errors import _is_db_outage
from app.audit import service as audit
from app.db import (
    DirectReads,
    is_data_error,
    make_engine,
    make_read_sessionmaker,
    make_sessionmaker,
    read_alone,
    rows,
    session_scope,
)
from app.integrations import lifecycle
from app.tokens import repository
from app.users import service as users
from app.users.models import User
from tests.conftest import PG_HOST, _pg_reachable, pg_url, require


async def _world(client, plan) -> dict[str, object]:  # noqa: ANN001
    """A plan with an installed integration, a revoked token and an audit trail."""
    r = await client.post(f"/v1/plans/{plan.plan_id}/integrations", headers=plan.admin.auth,
                          json={"name": "reader", "can_introspect": True})
    assert r.status_code == 201, r.text
    integration = r.json()["id"]
    member = await plan.add_user()
    listed = await client.get("/v1/me/tokens", headers=member.auth)
    token_id = listed.json()["items"][0]["id"]
    r = await client.delete(f"/v1/plans/{plan.plan_id}/tokens/{token_id}",
                            headers=plan.admin.auth)
    assert r.status_code == 204, r.text
    return {"plan_id": plan.plan_id, "user_id": member.user_id, "kind": "personal",
            "limit": 100, "offset": 0, "installed": [integration],
            "at": plan.clock.now() + timedelta(days=1), "ident": uuid.uuid4(),
            "pattern": "%"}


def _statements() -> dict[str, object]:
    return {
        "users": users._IN_PLAN,
        "plan tokens": repository._listing(frozenset({"plan_id"})),
        "a user's tokens": repository._listing(frozenset({"user_id", "kind"})),
        "integrations": lifecycle._LISTED,
        "installed": audit._INSTALLED,
        "an audit page": audit._page_query(True, False, False, True),
        "an audit page after a cursor": audit._page_query(True, True, True, True),
    }


@pytest.mark.asyncio
async def test_direct_reads_give_the_rows_sqlalchemy_gives(database, client, plan) -> None:
    params = await _world(client, plan)
    maker = make_read_sessionmaker(database.engine)
    if database.backend != "postgresql":
        assert maker.direct is None  # SQLite: the read-only session reads
        return
    for what, statement in _statements().items():
        wanted = {k: v for k, v in params.items() if k in statement.compile().params}
        async with database.engine.connect() as conn:
            expected = (await conn.execute(statement, wanted)).all()
        async with session_scope(maker) as session:
            got = await rows(session, statement, wanted)
            assert session.made is None, what  # no session was made for it
        assert expected, what
        assert [tuple(r) for r in got] == [tuple(r) for r in expected], what
        for name in expected[0]._fields:
            if list(expected[0]._fields).count(name) == 1:
                assert [getattr(r, name) for r in got] == [getattr(r, name) for r in expected]
        # Aware datetimes, as SQLAlchemy's column types give them.
        assert all(v.tzinfo is not None for r in got for v in r if hasattr(v, "tzinfo"))


@pytest.mark.asyncio
async def test_a_statement_with_an_expanding_list_is_read_by_sqlalchemy(database, plan) -> None:
    statement = select(User.email).where(User.id.in_(bindparam("ids", expanding=True)))
    maker = make_read_sessionmaker(database.engine)
    if database.backend == "postgresql":
        assert maker.direct is not None and not maker.direct.takes(statement)
        assert maker.direct.takes(users._IN_PLAN)
    async with session_scope(maker) as session:
        got = await rows(session, statement, {"ids": [plan.admin.user_id]})
    assert [r.email for r in got] == [plan.admin.email]


@pytest.mark.asyncio
async def test_a_failed_direct_read_leaves_the_pool_sound() -> None:
    """A refused value is the caller's error (class 22), a statement past its timeout an
    outage (503), a read cancelled half way (its client gone) a connection thrown away: after
    each, every connection is back or gone, and the next read works."""
    require(await _pg_reachable(), "PostgreSQL")
    engine = make_engine(pg_url("postgres"), pool_size=2, statement_timeout=0.3)
    reads, pool = DirectReads(engine), engine.sync_engine.pool
    one = select(literal(1).label("one"))
    try:
        with pytest.raises(DBAPIError) as refused:
            await reads.all(select((literal(1) / bindparam("zero")).label("x")), {"zero": 0})
        assert is_data_error(refused.value) and not _is_db_outage(refused.value)
        assert pool.checkedout() == 0

        with pytest.raises((DBAPIError, TimeoutError)) as slow:
            await reads.all(select(func.pg_sleep(bindparam("s")).label("slept")), {"s": 2})
        assert _is_db_outage(slow.value)
        assert pool.checkedout() == 0

        task = asyncio.ensure_future(
            reads.all(select(func.pg_sleep(bindparam("s")).label("slept")), {"s": 0.25}))
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert pool.checkedout() == 0

        for _ in range(4):  # more reads than the pool has connections: none was left broken
            assert [tuple(r) for r in await reads.all(one)] == [(1,)]
        assert pool.checkedout() == 0
    finally:
        await engine.dispose()


@pytest.mark.asyncio
async def test_a_read_alone_never_holds_one_connection_while_waiting_for_another(
        database, plan) -> None:
    """`read_alone` on a session that has read gives the session's connection back first: with
    a pool of one connection it still reads (holding it, it would wait for a second one until
    the pool's timeout). A session that wrote reads through itself, and sees its own write."""
    engine = make_engine(database.url, pool_size=1, pool_timeout=2) \
        if database.backend == "postgresql" else database.engine
    maker = make_sessionmaker(engine)
    by_id = select(User.email, User.name).where(User.id == bindparam("user_id"))
    try:
        async with session_scope(maker) as session:
            assert (await session.execute(select(User.id).limit(1))).first() is not None
            got = await read_alone(session, by_id, {"user_id": plan.admin.user_id})
            assert [r.email for r in got] == [plan.admin.email]
            if database.backend == "postgresql":
                assert engine.sync_engine.pool.checkedout() == 0  # both given back
        with pytest.raises(RuntimeError, match="rolled back"):
            async with session_scope(maker) as session:
                await session.execute(update(User).where(User.id == plan.admin.user_id)
                                      .values(name="renamed in this transaction"))
                got = await read_alone(session, by_id, {"user_id": plan.admin.user_id})
                assert [r.name for r in got] == ["renamed in this transaction"]
                raise RuntimeError("rolled back")
        async with session_scope(maker) as session:
            got = await read_alone(session, by_id, {"user_id": plan.admin.user_id})
            assert [r.name for r in got] != ["renamed in this transaction"]
    finally:
        if engine is not database.engine:
            await engine.dispose()


@pytest.mark.asyncio
async def test_a_database_that_refuses_or_drops_connections_is_an_outage() -> None:
    """A database refusing new connections (here: it does not exist; a restarting or full
    server the same way) and a connection the server closes mid-read (a terminated backend,
    as a restart does) are outages (503), not 500s; the closed connection is never handed to
    another read."""
    require(await _pg_reachable(), "PostgreSQL")
    refused = make_engine(pg_url(f"tessera_none_{uuid.uuid4().hex[:8]}"), pool_size=1)
    try:
        with pytest.raises(DBAPIError) as no_database:
            await DirectReads(refused).all(select(literal(1).label("one")))
        assert _is_db_outage(no_database.value)
    finally:
        await refused.dispose()

    engine = make_engine(pg_url("postgres"), pool_size=1)
    reads = DirectReads(engine)
    slept = select(func.pg_sleep(bindparam("s")).label("slept"))
    try:
        # The pool's one connection: its backend, then a read on it that the server ends.
        (backend,), = await reads.all(select(func.pg_backend_pid().label("pid")))
        task = asyncio.ensure_future(reads.all(slept, {"s": 5}))
        killer = await asyncpg.connect(PG_HOST)
        try:
            for _ in range(200):  # until the read is running, then its backend is terminated
                if await killer.fetchval(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                        " WHERE pid = $1 AND state = 'active'", backend):
                    break
                await asyncio.sleep(0.02)
            else:
                raise AssertionError("the read never ran")
        finally:
            await killer.close()
        with pytest.raises(DBAPIError) as dropped:
            await task
        assert _is_db_outage(dropped.value)
        assert engine.sync_engine.pool.checkedout() == 0
        # The pool's one connection was the closed one: the next read opens a new one.
        assert [tuple(r) for r in await reads.all(select(literal(1).label("one")))] == [(1,)]
        # A connection the driver finds unusable on its own (as asyncpg does when a
        # terminated backend's goodbye reaches a connection between two statements: "cannot
        # switch to state 12; another operation (2) is in progress"): an outage, thrown away.
        real = asyncpg.Connection.fetch

        async def broken(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
            asyncpg.Connection.fetch = real
            raise asyncpg.InternalClientError(
                "cannot switch to state 12; another operation (2) is in progress")

        asyncpg.Connection.fetch = broken
        try:
            with pytest.raises(DBAPIError) as unusable:
                await reads.all(select(literal(1).label("one")))
        finally:
            asyncpg.Connection.fetch = real
        assert _is_db_outage(unusable.value) and unusable.value.connection_invalidated
        assert [tuple(r) for r in await reads.all(select(literal(1).label("one")))] == [(1,)]
        assert engine.sync_engine.pool.checkedout() == 0
    finally:
        await engine.dispose()


@pytest.mark.asyncio
async def test_a_read_alone_after_a_locking_read_keeps_the_lock(database, plan) -> None:
    """A session that locked rows (FOR UPDATE) counts as one that wrote: `read_alone` reads
    through it, so its transaction and its locks go on (giving its connection back would end
    them). And a direct read missing a value the statement needs is refused, never run with
    NULL in its place (a page without its LIMIT)."""
    maker = make_sessionmaker(database.engine)
    by_id = select(User.email).where(User.id == bindparam("user_id"))
    async with session_scope(maker) as session:
        await session.execute(select(User.id).where(User.id == plan.admin.user_id)
                              .with_for_update())
        got = await read_alone(session, by_id, {"user_id": plan.admin.user_id})
        assert [r.email for r in got] == [plan.admin.email]
        assert session.made.in_transaction()
        if database.backend == "postgresql":
            other = await asyncpg.connect(database.url.replace("postgresql+asyncpg", "postgresql"))
            try:
                with pytest.raises(asyncpg.LockNotAvailableError):
                    await other.execute("SELECT 1 FROM users WHERE id = $1 FOR UPDATE NOWAIT",
                                        plan.admin.user_id)
            finally:
                await other.close()
    if database.backend == "postgresql":
        with pytest.raises(ValueError, match="limit"):
            await make_read_sessionmaker(database.engine).direct.all(
                repository._listing(frozenset({"plan_id"})), {"plan_id": plan.plan_id,
                                                              "offset": 0})
