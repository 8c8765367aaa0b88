"""Gateway checks answered in front of the application (app/gateway/fast_path.py): the same
answer as the route, byte for byte, and what it does not answer left to the application."""

from __future__ import annotations

from typing import Any

import pytest

from app.gateway.fast_path import FastChecks
from tests.gateway.test_check import CHECK, bearer, custom_integration_token
from tests.helpers import answer, served_through, set_period
from tests.integrations.test_token_client_cache import serve_cache

pytestmark = pytest.mark.asyncio


def mistyped(token: str) -> str:
    """The token with its last character changed (to another one, whatever it was)."""
    return token[:-1] + ("y" if token[-1] == "x" else "x")


@pytest.fixture
async def served(app) -> Any:  # noqa: ANN001, ANN401
    async with served_through(FastChecks, app) as c:
        yield c


@pytest.mark.parametrize("cached", [False, True], ids=["read", "cached"])
async def test_checks_get_the_routes_answer_without_the_application(
        app, client, served, plan, clock, cached) -> None:
    if cached:
        serve_cache(app)
    user = await plan.add_user()
    _id, client_id, integ_token = await custom_integration_token(client, plan)
    await set_period(client, plan, 2, "hours")
    requests: list[dict[str, Any]] = [
        {"headers": bearer(user.token)},
        {"headers": bearer(integ_token)},
        {"headers": bearer(integ_token), "params": {"scope": "data:read"}},
        {"headers": {**bearer(integ_token), "X-Required-Scope": "data:read, profile"}},  # 403
        {"headers": bearer(integ_token), "params": [("scope", "data:read"), ("scope", "x")]},
        {"headers": bearer(integ_token), "params": {"scope": "data:write"}},  # 403
        {"headers": {"Authorization": f"bearer  {user.token} "}},  # scheme case, spaces
        {},  # no token: 401 with a bare challenge
        {"headers": {"Authorization": "Basic dXNlcjpwYXNz"}},  # 401
        {"headers": bearer("tsp_not_a_real_token")},  # malformed: 401
        {"headers": bearer(mistyped(plan.admin.token))},  # checksum fails: 401
    ]
    statuses = []
    for request in requests:
        calls = served.inner.calls
        fast, route = await served.get(CHECK, **request), await client.get(CHECK, **request)
        assert answer(fast) == answer(route), request
        assert served.inner.calls == calls, request  # answered in front of the application
        statuses.append(fast.status_code)
    assert statuses == [200, 200, 200, 403, 403, 403, 200, 401, 401, 401, 401]
    calls = served.inner.calls
    fast, route = (await served.head(CHECK, headers=bearer(user.token)),
                   await client.head(CHECK, headers=bearer(user.token)))
    assert fast.status_code == 200 and answer(fast) == answer(route)
    assert fast.headers["x-tessera-subject"] == str(user.user_id)
    assert served.inner.calls == calls

    clock.advance(hours=2)  # judged at the request's time: the period has ended the token
    fast, route = (await served.get(CHECK, headers=bearer(user.token)),
                   await client.get(CHECK, headers=bearer(user.token)))
    assert fast.status_code == 401 and answer(fast) == answer(route)
    assert 'error_description="the token is expired"' in fast.headers["www-authenticate"]


async def test_what_the_fast_path_does_not_answer_goes_to_the_application(
        app, client, served, plan, monkeypatch) -> None:
    user = await plan.add_user()
    cases = [
        ("GET", {"headers": bearer(user.token), "params": {"scope": 'bad"scope'}}, 400),
        ("GET", {"headers": [("Authorization", f"Bearer {user.token}"),
                             ("Authorization", "Bearer other")]}, 200),
        ("POST", {"headers": bearer(user.token), "content": b"{}"}, 200),  # Envoy's method
    ]
    for method, request, status in cases:
        calls = served.inner.calls
        r = await served.request(method, CHECK, **request)
        assert r.status_code == status, (request, r.text)
        assert served.inner.calls == calls + 1, request
    calls = served.inner.calls
    r = await served.get(CHECK + "/orders/7", headers=bearer(user.token))  # Envoy's path
    assert r.status_code == 200 and served.inner.calls == calls + 1

    async def lost(_digest: str) -> None:
        raise ConnectionRefusedError("the database went away")

    # A lost database: 503 at once (fail closed), the error mapping's own answer, without a
    # second attempt through the application.
    monkeypatch.setattr(app.state.token_batches.reader, "find", lost)
    calls = served.inner.calls
    fast, route = (await served.get(CHECK, headers=bearer(user.token)),
                   await client.get(CHECK, headers=bearer(user.token)))
    assert fast.status_code == 503 and answer(fast) == answer(route)
    assert fast.json()["error"] == "unavailable" and fast.headers["retry-after"] == "1"
    assert served.inner.calls == calls

    async def broken(_digest: str) -> None:
        raise RuntimeError("a bug")

    # Any other failure goes to the application, which answers it in its one place.
    monkeypatch.setattr(app.state.token_batches.reader, "find", broken)
    r = await served.get(CHECK, headers=bearer(user.token))
    assert r.status_code == 500 and r.json()["error"] == "internal_error"
    assert served.inner.calls == calls + 1
