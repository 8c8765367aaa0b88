"""Introspections answered in front of the application (app/oauth2/fast_path.py): the same
answer as the route, byte for byte; refusals, failures and odd requests handed to the
application with their body intact."""

from __future__ import annotations

from typing import Any

import httpx2
import pytest

from app.oauth2.fast_path import FastIntrospection
from tests.helpers import Counting, answer, create_gateway_client, set_period
from tests.integrations.test_token_client_cache import serve_cache

pytestmark = pytest.mark.asyncio

PATH = "/oauth2/introspect"


@pytest.fixture
async def served(app) -> Any:  # noqa: ANN001, ANN401
    inner = Counting(app)
    transport = httpx2.ASGITransport(app=FastIntrospection(inner))
    async with httpx2.AsyncClient(transport=transport, base_url="https://tessera.test") as c:
        c.inner = inner
        yield c


@pytest.mark.parametrize("cached", [False, True], ids=["read", "cached"])
async def test_introspections_get_the_routes_answer_without_the_application(
        app, client, served, plan, other_plan, clock, cached) -> None:
    if cached:
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
        {"data": {"token": "nonsense"}, "auth": creds},  # inactive
    ]
    for request in requests:
        calls = served.inner.calls
        fast, route = await served.post(PATH, **request), await client.post(PATH, **request)
        assert fast.status_code == 200 and answer(fast) == answer(route), request
        assert served.inner.calls == calls, request
    assert (await served.post(PATH, **requests[0])).json()["exp"] == \
        int(clock.now().timestamp()) + 7200
    assert [(await served.post(PATH, **r)).json()["active"] for r in requests] == \
        [True, True, True, False, False]

    clock.advance(hours=2)  # judged at the request's time: the period has ended it
    fast = await served.post(PATH, **requests[0])
    assert fast.json() == {"active": False}


async def test_refusals_and_failures_reach_the_application_with_their_body(
        app, client, served, plan, monkeypatch) -> None:
    creds = await create_gateway_client(client, plan)
    weak = await create_gateway_client(client, plan, can_introspect=False)
    user = await plan.add_user()
    cases = [
        ({"data": {"token": user.token}, "auth": (creds[0], "tss_wrong")}, 401),
        ({"data": {"token": user.token}}, 401),  # no credentials
        ({"data": {"token": user.token}, "auth": weak}, 403),  # may not introspect
        ({"data": {}, "auth": creds}, 400),  # no token
        ({"content": f"token={user.token}&token=x", "auth": creds,
          "headers": {"Content-Type": "application/x-www-form-urlencoded"}}, 400),  # repeated
        ({"json": {"token": user.token}, "auth": creds}, 400),  # not a form
        ({"data": {"token": user.token, "pad": "x" * 5000}, "auth": creds}, 200),  # large
    ]
    for request, status in cases:
        calls = served.inner.calls
        fast, route = await served.post(PATH, **request), await client.post(PATH, **request)
        assert fast.status_code == status, (request, fast.text)
        assert answer(fast) == answer(route), request
        assert served.inner.calls == calls + 1, request

    async def lost(_key: str) -> None:
        raise ConnectionRefusedError("the database went away")

    # The fast path read the body, failed, and handed both on: the application, reading the
    # same body, fails the same way and answers 503 (fail closed), not 400 for a lost body.
    monkeypatch.setattr(app.state.token_batches.reader, "find", lost)
    calls = served.inner.calls
    r = await served.post(PATH, data={"token": user.token}, auth=creds)
    assert r.status_code == 503, r.text
    assert served.inner.calls == calls + 1
    monkeypatch.undo()
    r = await served.post(PATH, data={"token": user.token}, auth=creds)
    assert r.status_code == 200 and r.json()["active"] is True
