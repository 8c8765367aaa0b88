"""The application as `tessera serve` runs it: its startup heap is frozen out of the garbage
collector's generations and its young generation is collected less often; an application made
for a test changes neither."""

from __future__ import annotations

import gc

from app.main import YOUNG_THRESHOLD, create_app


async def test_a_served_app_freezes_its_startup_heap(settings, database) -> None:  # noqa: ANN001
    gc.unfreeze()
    default = gc.get_threshold()
    plain = create_app(settings, engine=database.engine)
    async with plain.router.lifespan_context(plain):
        assert gc.get_freeze_count() == 0
        assert gc.get_threshold() == default
    served = create_app(settings, engine=database.engine, freeze_heap=True)
    try:
        async with served.router.lifespan_context(served):
            # Everything alive at startup (modules, routes, mappers, the application) is frozen.
            assert gc.get_freeze_count() > 10_000
            assert gc.get_threshold() == (YOUNG_THRESHOLD, *default[1:])
    finally:
        gc.unfreeze()
        gc.set_threshold(*default)
    assert gc.get_freeze_count() == 0
