"""The connection pool serves requests in the order they began to wait (`app.db.FairQueue`).

With SQLAlchemy's asyncio queue a connection put back went to whoever asked next, not to the
request woken for it; a request reading in several statements (a read-only session gives its
connection back after each) took it again and again, and requests already waiting timed out
into 503s under load (bench/NOTES.md, eleventh pass)."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import event, exc

from app.db import make_engine
from tests.conftest import migrated_pg_database

pytestmark = pytest.mark.asyncio


async def test_a_connection_given_back_goes_to_the_longest_waiter() -> None:
    """Five requests wait, in turn, for the one connection. As it is given back, a sixth asks
    (its task runs before the first waiter's, as other requests' tasks do under load): it
    queues behind the five instead of taking the connection from them."""
    async with migrated_pg_database(pool_size=1) as db:
        engine = make_engine(db.url, pool_size=1, pool_timeout=10)
        order: list[str] = []
        released = asyncio.Event()
        tasks: list[asyncio.Task] = []

        holding = asyncio.Event()

        async def use(name: str, until: asyncio.Event | None = None) -> None:
            async with engine.connect() as conn:
                order.append(name)
                await conn.exec_driver_sql("SELECT 1")
                if until is not None:
                    holding.set()
                    await until.wait()

        @event.listens_for(engine.sync_engine.pool, "checkin")
        def _newcomer(*_args: object) -> None:  # just before the connection is put back
            if released.is_set() and not tasks:
                tasks.append(asyncio.get_running_loop().create_task(use("newcomer")))

        try:
            first = asyncio.create_task(use("first", until=released))
            await asyncio.wait_for(holding.wait(), 10)
            waiting = []
            for n in range(5):  # queued one after another, in this order
                waiting.append(asyncio.create_task(use(f"w{n}")))
                await asyncio.sleep(0.02)
            released.set()
            await asyncio.wait_for(asyncio.gather(first, *waiting), 10)
            await asyncio.wait_for(tasks[0], 10)
            assert order == ["first", "w0", "w1", "w2", "w3", "w4", "newcomer"]
        finally:
            await engine.dispose()


async def test_a_wait_that_times_out_or_is_cancelled_loses_no_connection() -> None:
    async with migrated_pg_database(pool_size=1) as db:
        engine = make_engine(db.url, pool_size=2, pool_timeout=0.2)
        try:
            async def hold(seconds: float) -> None:
                async with engine.connect() as conn:
                    await conn.exec_driver_sql("SELECT 1")
                    await asyncio.sleep(seconds)

            holders = [asyncio.create_task(hold(0.5)) for _ in range(2)]
            await asyncio.sleep(0.05)
            with pytest.raises(exc.TimeoutError):  # the pool's timeout: answered 503
                await hold(0)
            cancelled = asyncio.create_task(hold(0))
            await asyncio.sleep(0.05)
            cancelled.cancel()
            await asyncio.gather(*holders)
            with pytest.raises(asyncio.CancelledError):
                await cancelled
            # Every connection is back: twenty uses at once all get one, in turn.
            await asyncio.wait_for(asyncio.gather(*(hold(0.01) for _ in range(20))), 5)
            assert engine.pool.checkedout() == 0
            assert engine.pool.checkedin() == 2
        finally:
            await engine.dispose()
