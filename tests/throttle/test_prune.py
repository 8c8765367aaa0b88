"""Throttle rows do not pile up: the worker forgets keys with nothing in force (no block, no
failure within a day), so a guesser trying many names or addresses leaves no lasting rows,
and a key still counting or blocked is kept."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select

from app.throttle.models import Throttle
from app.throttle.policy import LIMITS, Guarded
from app.throttle.store import Key, Throttles
from app.worker.jobs import THROTTLE_MEMORY, prune_throttles
from tests.notifications.support import make_worker

pytestmark = pytest.mark.asyncio


async def _keys(database) -> set[str]:  # noqa: ANN001
    async with database.engine.connect() as conn:
        return set((await conn.execute(select(Throttle.key))).scalars())


async def test_the_worker_forgets_keys_left_alone_and_keeps_those_in_force(database,
                                                                           clock) -> None:
    throttles = Throttles(database.engine)
    old = [Key(Guarded.password_account, f"guess-{i}@example.com") for i in range(5)]
    for key in old:
        await throttles.failed([key], clock.now())
    clock.advance(hours=12)
    counting = Key(Guarded.password_source, "198.51.100.9")
    await throttles.failed([counting], clock.now())
    blocked = Key(Guarded.secret_client, "tsc_target")
    for _ in range(LIMITS[Guarded.secret_client].failures):
        await throttles.failed([blocked], clock.now())
    clock.advance(seconds=(THROTTLE_MEMORY - timedelta(hours=12)).total_seconds() + 1)

    stats = await prune_throttles(make_worker(database, clock, None))
    assert stats["forgotten"] == len(old)
    assert await _keys(database) == {str(counting), str(blocked)}
    # A key counting still counts where it was: pruning forgot nothing it needs.
    async with database.engine.connect() as conn:
        failures = (await conn.execute(select(Throttle.failures)
                                       .where(Throttle.key == str(counting)))).scalar_one()
    assert failures == 1

    clock.advance(seconds=THROTTLE_MEMORY.total_seconds())
    stats = await prune_throttles(make_worker(database, clock, None))
    assert stats["forgotten"] == 2
    async with database.engine.connect() as conn:
        assert (await conn.execute(select(func.count()).select_from(Throttle))).scalar() == 0
