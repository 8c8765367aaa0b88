"""Gateway checks of cached tokens answered in front of the application
(app/gateway/fast_path.py): the same answer as the route, byte for byte, and everything it cannot
answer from the cache left to the application."""

from __future__ import annotations

from typing import Any

import httpx2
import pytest

from app.gateway.fast_path import CachedChecks
from tests.gateway.test_check import CHECK, bearer, custom_integration_token
from tests.helpers import Counting, answer, set_period
from tests.integrations.test_token_client_cache import serve_cache

pytestmark = pytest.mark.asyncio


@pytest.fixture
async def served(app) -> Any:  # noqa: ANN001, ANN401
    inner = Counting(app)
    transport = httpx2.ASGITransport(app=CachedChecks(inner))
    async with httpx2.AsyncClient(transport=transport, base_url="https://tessera.test") as c:
        c.inner = inner
        yield c


async def test_cached_tokens_get_the_routes_answer_without_the_application(
        app, client, served, plan, clock) -> None:
    serve_cache(app)
    user = await plan.add_user()
    _id, client_id, integ_token = await custom_integration_token(client, plan)
    await set_period(client, plan, 2, "hours")
    requests: list[dict[str, Any]] = [
        {"headers": bearer(user.token)},
        {"headers": bearer(integ_token)},
        {"headers": bearer(integ_token), "params": {"scope": "data:read"}},
        {"headers": {**bearer(integ_token), "X-Required-Scope": "data:read, profile"}},
        {"headers": bearer(integ_token), "params": [("scope", "data:read"), ("scope", "x")]},
        {"headers": bearer(integ_token), "params": {"scope": "data:write"}},  # 403
        {"headers": {"Authorization": f"bearer  {user.token} "}},  # scheme case, spaces
    ]
    for request in requests:  # the first call of each reads the token and caches it
        assert (await client.get(CHECK, **request)).status_code in (200, 403)
    before = served.inner.calls
    for request in requests:
        fast, route = await served.get(CHECK, **request), await client.get(CHECK, **request)
        assert answer(fast) == answer(route), request
    assert served.inner.calls == before  # all answered in front of the application
    head = await served.head(CHECK, headers=bearer(user.token))
    assert head.status_code == 200 and head.headers["x-tessera-subject"] == str(user.user_id)
    assert served.inner.calls == before

    # The cached facts are judged at the request's time: the period ends the token's life.
    clock.advance(hours=2)
    fast, route = (await served.get(CHECK, headers=bearer(user.token)),
                   await client.get(CHECK, headers=bearer(user.token)))
    assert fast.status_code == 401 and answer(fast) == answer(route)
    assert 'error_description="the token is expired"' in fast.headers["www-authenticate"]
    assert served.inner.calls == before


async def test_what_the_cache_cannot_answer_goes_to_the_application(
        app, client, served, plan) -> None:
    user = await plan.add_user()
    _id, _client_id, integ_token = await custom_integration_token(client, plan)
    # Not serving (no listener heartbeat): every check is the application's.
    r = await served.get(CHECK, headers=bearer(user.token))
    assert r.status_code == 200 and served.inner.calls == 1
    serve_cache(app)
    cases = [
        ({}, 401),  # no token
        ({"headers": {"Authorization": "Basic dXNlcjpwYXNz"}}, 401),
        ({"headers": bearer("tsp_not_a_real_token")}, 401),  # unknown: never cached
        ({"headers": bearer(user.token), "params": {"scope": "bad\"scope"}}, 400),
    ]
    for request, status in cases:
        calls = served.inner.calls
        r = await served.get(CHECK, **request)
        assert r.status_code == status, (request, r.text)
        assert served.inner.calls == calls + 1, request
    # Other methods and paths are the application's too (Envoy sends the original ones).
    calls = served.inner.calls
    assert (await served.post(CHECK, headers=bearer(user.token), content=b"{}")).status_code \
        == 200
    assert (await served.get(CHECK + "/orders/7", headers=bearer(user.token))).status_code \
        == 200
    assert served.inner.calls == calls + 2

    # A revoked token is evicted at once, so the application answers, and refuses it.
    await served.get(CHECK, headers=bearer(integ_token))  # cached now
    listed = (await client.get(f"/v1/plans/{plan.plan_id}/tokens",
                               params={"kind": "integration"}, headers=plan.admin.auth)).json()
    [row] = [t for t in listed["items"] if t["hint"] == integ_token[-4:]]
    assert (await client.delete(f"/v1/plans/{plan.plan_id}/tokens/{row['id']}",
                                headers=plan.admin.auth)).status_code == 204
    calls = served.inner.calls
    r = await served.get(CHECK, headers=bearer(integ_token))
    assert r.status_code == 401 and served.inner.calls == calls + 1
    assert 'error_description="the token is revoked"' in r.headers["www-authenticate"]
