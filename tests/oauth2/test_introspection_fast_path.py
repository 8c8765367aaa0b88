"""Introspections answered in front of the application (app/oauth2/fast_path.py): the same
answer as the route, byte for byte; refusals, failures and odd requests handed to the
application with their body intact."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from app.oauth2.fast_path import FastIntrospection
from tests.helpers import answer, create_gateway_client, served_through, set_period
from tests.integrations.test_token_client_cache import serve_cache

pytestmark = pytest.mark.asyncio

PATH = "/oauth2/introspect"


@pytest.fixture
async def served(app) -> Any:  # noqa: ANN001, ANN401
    async with served_through(FastIntrospection, app) as c:
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

    # A lost database: 503 at once (fail closed), the error mapping's own answer.
    monkeypatch.setattr(app.state.token_batches.reader, "find", lost)
    calls = served.inner.calls
    fast = await served.post(PATH, data={"token": user.token}, auth=creds)
    route = await client.post(PATH, data={"token": user.token}, auth=creds)
    assert fast.status_code == 503 and answer(fast) == answer(route)
    assert fast.json()["error"] == "temporarily_unavailable"
    assert served.inner.calls == calls

    async def broken(_digest: str) -> None:
        raise RuntimeError("a bug")

    # Any other failure goes to the application with the body read: it fails the same way
    # reading the same body, and answers 500 (not 400, as it would for a lost body).
    monkeypatch.setattr(app.state.token_batches.reader, "find", broken)
    r = await served.post(PATH, data={"token": user.token}, auth=creds)
    assert r.status_code == 500 and served.inner.calls == calls + 1
    monkeypatch.undo()
    r = await served.post(PATH, data={"token": user.token}, auth=creds)
    assert r.status_code == 200 and r.json()["active"] is True


async def asgi_post(app: Any, chunks: list[bytes], auth: tuple[str, str],  # noqa: ANN401
                    length: int | None) -> tuple[int, dict[str, Any]]:
    """POST a body arriving in `chunks` straight to an ASGI application."""

    basic = base64.b64encode(f"{auth[0]}:{auth[1]}".encode())
    headers = [(b"content-type", b"application/x-www-form-urlencoded"),
               (b"authorization", b"Basic " + basic), (b"host", b"tessera.test")]
    if length is not None:
        headers.append((b"content-length", str(length).encode()))
    else:
        headers.append((b"transfer-encoding", b"chunked"))
    messages = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
                for i, c in enumerate(chunks)]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": "POST", "scheme": "https", "path": PATH, "raw_path": PATH.encode(),
             "query_string": b"", "root_path": "", "headers": headers,
             "client": ("127.0.0.1", 1), "server": ("tessera.test", 443), "state": {}}
    await app(scope, receive, send)
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return sent[0]["status"], json.loads(body)


async def test_bodies_in_several_chunks_and_long_ones_reach_the_same_answer(
        app, client, served, plan) -> None:
    creds = await create_gateway_client(client, plan)
    user = await plan.add_user()
    body = f"token={user.token}".encode()
    parts = [body[:10], body[10:30], body[30:]]
    expected = (await client.post(PATH, data={"token": user.token}, auth=creds)).json()
    assert expected["active"] is True
    fast = FastIntrospection(served.inner)
    calls = served.inner.calls
    assert await asgi_post(fast, parts, creds, len(body)) == (200, expected)
    assert served.inner.calls == calls  # read whole, answered in front
    assert await asgi_post(fast, parts, creds, None) == (200, expected)  # chunked: the app's
    assert served.inner.calls == calls + 1
    # Longer than the fast path reads, in chunks: the part it read, then the rest, both reach
    # the application in order (the padding would be lost otherwise, and the token with it).
    padded = b"pad=" + b"x" * 5000 + b"&" + body
    chunks = [padded[i:i + 1000] for i in range(0, len(padded), 1000)]
    assert await asgi_post(fast, chunks, creds, 4000) == (200, expected)
    assert served.inner.calls == calls + 2
