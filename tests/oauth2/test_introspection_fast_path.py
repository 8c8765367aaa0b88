"""Introspections of cached tokens by cached clients answered in front of the application
(app/oauth2/fast_path.py): the same answer as the route, byte for byte, and everything else
handed to the application with its body intact."""

from __future__ import annotations

from typing import Any

import httpx2
import pytest

from app.oauth2.fast_path import CachedIntrospection
from tests.helpers import Counting, answer, create_gateway_client, set_period
from tests.integrations.test_token_client_cache import serve_cache

pytestmark = pytest.mark.asyncio

PATH = "/oauth2/introspect"


@pytest.fixture
async def served(app) -> Any:  # noqa: ANN001, ANN401
    inner = Counting(app)
    transport = httpx2.ASGITransport(app=CachedIntrospection(inner))
    async with httpx2.AsyncClient(transport=transport, base_url="https://tessera.test") as c:
        c.inner = inner
        yield c


async def test_cached_client_and_token_get_the_routes_answer_without_the_application(
        app, client, served, plan, other_plan, clock) -> None:
    serve_cache(app)
    creds = await create_gateway_client(client, plan)
    user, stranger = await plan.add_user(), await other_plan.add_user()
    await set_period(client, plan, 2, "hours")
    post = {"client_id": creds[0], "client_secret": creds[1]}
    requests: list[dict[str, Any]] = [
        {"data": {"token": user.token}, "auth": creds},
        {"data": {"token": user.token, "token_type_hint": "access_token"}, "auth": creds},
        {"data": {"token": user.token, **post}},  # client_secret_post
        {"data": {"token": stranger.token}, "auth": creds},  # another plan's: inactive
    ]
    for request in requests:  # the first call of each caches the client and the token
        assert (await client.post(PATH, **request)).status_code == 200
    before = served.inner.calls
    for request in requests:
        fast, route = await served.post(PATH, **request), await client.post(PATH, **request)
        assert answer(fast) == answer(route), request
    assert served.inner.calls == before
    assert (await served.post(PATH, **requests[0])).json()["exp"] == \
        int(clock.now().timestamp()) + 7200
    assert (await served.post(PATH, **requests[3])).json() == {"active": False}

    clock.advance(hours=2)  # judged at the request's time: the period has ended it
    fast = await served.post(PATH, **requests[0])
    assert fast.json() == {"active": False} and served.inner.calls == before


async def test_what_the_cache_cannot_answer_reaches_the_application_with_its_body(
        app, client, served, plan) -> None:
    creds = await create_gateway_client(client, plan)
    weak = await create_gateway_client(client, plan, can_introspect=False)
    user = await plan.add_user()
    r = await served.post(PATH, data={"token": user.token}, auth=creds)  # cache not serving
    assert r.status_code == 200 and r.json()["active"] is True and served.inner.calls == 1
    serve_cache(app)
    await client.post(PATH, data={"token": user.token}, auth=creds)  # now cached
    await client.post(PATH, data={"token": user.token}, auth=weak)
    cases = [
        ({"data": {"token": user.token}, "auth": (creds[0], "tss_wrong")}, 401),
        ({"data": {"token": user.token}}, 401),  # no credentials
        ({"data": {"token": user.token}, "auth": weak}, 403),  # may not introspect
        ({"data": {}, "auth": creds}, 400),  # no token
        ({"content": f"token={user.token}&token=x", "auth": creds,
          "headers": {"Content-Type": "application/x-www-form-urlencoded"}}, 400),  # repeated
        ({"json": {"token": user.token}, "auth": creds}, 400),  # not a form
        ({"data": {"token": (await plan.add_user()).token}, "auth": creds}, 200),  # a miss
        ({"data": {"token": user.token, "pad": "x" * 5000}, "auth": creds}, 200),  # large
    ]
    for request, status in cases:
        calls = served.inner.calls
        fast, route = await served.post(PATH, **request), await client.post(PATH, **request)
        assert fast.status_code == status, (request, fast.text)
        assert answer(fast) == answer(route), request
        assert served.inner.calls == calls + 1, request
    miss = await served.post(PATH, data={"token": (await plan.add_user()).token}, auth=creds)
    assert miss.json()["active"] is True  # the application read the body handed on
