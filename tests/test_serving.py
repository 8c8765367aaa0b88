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


async def test_the_served_composition_answers_each_request_once(app, client, plan) -> None:  # noqa: ANN001
    """`serve` (what `tessera serve` runs): checks and introspections in front, everything
    else by the application, each request answered by exactly one of them."""
    import httpx2

    from app.main import serve
    from tests.helpers import Counting, create_gateway_client

    inner = Counting(app)
    creds = await create_gateway_client(client, plan)
    bearer = {"Authorization": f"Bearer {plan.admin.token}"}
    transport = httpx2.ASGITransport(app=serve(inner))
    async with httpx2.AsyncClient(transport=transport, base_url="https://tessera.test") as c:
        r = await c.get("/v1/gateway/check", headers=bearer)
        assert r.status_code == 200 and r.headers["x-tessera-plan"] == str(plan.plan_id)
        r = await c.post("/oauth2/introspect", data={"token": plan.admin.token}, auth=creds)
        assert r.status_code == 200 and r.json()["active"] is True
        assert inner.calls == 0
        r = await c.post("/v1/gateway/check", headers=bearer)  # Envoy forwards the method
        assert r.status_code == 200 and inner.calls == 1
        r = await c.get("/v1/me", headers=bearer)
        assert r.status_code == 200 and inner.calls == 2
