"""Token requests and introspections answered in front of the application
(app/oauth2/fast_path.py): the same answer as the route, refusals and failures included, and
what it does not take handed to the application with its body intact."""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

import pytest

from app.oauth2.fast_path import FastForms
from app.tokens import service as tokens
from app.tokens.rules import TokenKind
from tests.helpers import answer, create_gateway_client, introspect, served_through, set_period
from tests.integrations.test_token_client_cache import serve_cache
from tests.oauth2.conftest import register_custom

pytestmark = pytest.mark.asyncio

PATH = "/oauth2/introspect"


@pytest.fixture
async def served(app) -> Any:  # noqa: ANN001, ANN401
    async with served_through(FastForms, app) as c:
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


async def test_refusals_and_failures_get_the_routes_answer_without_the_application(
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
    ]
    for request, status in cases:
        calls = served.inner.calls
        fast, route = await served.post(PATH, **request), await client.post(PATH, **request)
        assert fast.status_code == status, (request, fast.text)
        assert answer(fast) == answer(route), request
        assert served.inner.calls == calls, request
    # A body larger than the fast path reads is the application's.
    calls = served.inner.calls
    request = {"data": {"token": user.token, "pad": "x" * 5000}, "auth": creds}
    fast, route = await served.post(PATH, **request), await client.post(PATH, **request)
    assert fast.status_code == 200 and answer(fast) == answer(route)
    assert served.inner.calls == calls + 1

    async def lost(_key: str) -> None:
        raise ConnectionRefusedError("the database went away")

    async def broken(_digest: str) -> None:
        raise RuntimeError("a bug")

    # A lost database: 503 (fail closed); any other failure: 500. Both as the application's
    # error mapping answers them, and without running the request a second time.
    for failure, status, code in ((lost, 503, "temporarily_unavailable"),
                                  (broken, 500, "internal_error")):
        monkeypatch.setattr(app.state.token_batches.reader, "find", failure)
        calls = served.inner.calls
        fast = await served.post(PATH, data={"token": user.token}, auth=creds)
        route = await client.post(PATH, data={"token": user.token}, auth=creds)
        assert fast.status_code == status and answer(fast) == answer(route)
        assert fast.json()["error"] == code and served.inner.calls == calls
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
    fast = FastForms(served.inner)
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


TOKEN = "/oauth2/token"


async def refresh_token_of(database, plan, integration_id: str) -> str:  # noqa: ANN001
    """A committed, unused refresh token of the integration."""
    row, secret = tokens.new_row(kind=TokenKind.refresh, plan_id=plan.plan_id,
                                 now=plan.clock.now(), integration_id=uuid.UUID(integration_id),
                                 family_id=uuid.uuid4(), scopes="profile data:read")
    async with database.engine.begin() as conn:
        await tokens.insert_rows(conn, [row])
    return secret


def shape(r) -> tuple[int, set[str], set[str]]:  # noqa: ANN001
    """A token response without its secrets: status, header names, body keys."""
    return r.status_code, set(r.headers), set(r.json())


async def test_token_requests_get_the_routes_answer_without_the_application(
        client, served, plan, database) -> None:
    reg = await register_custom(client, plan)
    auth = (reg.client_id, reg.client_secret)
    cc = {"grant_type": "client_credentials"}
    calls = served.inner.calls
    fast, route = (await served.post(TOKEN, data=cc, auth=auth),
                   await client.post(TOKEN, data=cc, auth=auth))
    assert fast.status_code == 200 and shape(fast) == shape(route)
    assert fast.json()["token_type"] == "Bearer" and fast.headers["cache-control"] == "no-store"
    creds = await create_gateway_client(client, plan)
    assert (await introspect(client, creds, fast.json()["access_token"]))["active"] is True

    # Refresh: rotated in front of the application; the spent token's reuse revokes the grant.
    spent = await refresh_token_of(database, plan, reg.id)
    fast = await served.post(TOKEN, data={"grant_type": "refresh_token",
                                          "refresh_token": spent}, auth=auth)
    assert fast.status_code == 200 and set(fast.json()) >= {"access_token", "refresh_token"}
    issued = fast.json()
    reuse = await served.post(TOKEN, data={"grant_type": "refresh_token",
                                           "refresh_token": spent}, auth=auth)
    assert reuse.status_code == 400 and reuse.json()["error"] == "invalid_grant"
    assert "grant is revoked" in reuse.json()["error_description"]
    assert await introspect(client, creds, issued["access_token"]) == {"active": False}
    assert served.inner.calls == calls

    # Refusals: the route's answer, byte for byte.
    cases = [
        {"data": cc, "auth": (reg.client_id, "tss_wrong")},  # 401 invalid_client
        {"data": cc},  # no client authentication
        {"data": {"grant_type": "password"}, "auth": auth},  # unsupported_grant_type
        {"data": {}, "auth": auth},  # no grant_type
        {"data": {**cc, "scope": "plan:admin"}, "auth": auth},  # invalid_scope
        {"data": {"grant_type": "refresh_token", "refresh_token": "tsr_x"}, "auth": auth},
        {"json": cc, "auth": auth},  # not a form
    ]
    for request in cases:
        fast, route = await served.post(TOKEN, **request), await client.post(TOKEN, **request)
        assert fast.status_code in (400, 401), (request, fast.text)
        assert answer(fast) == answer(route), request
    assert served.inner.calls == calls
    r = await served.get(TOKEN)  # another method: the application's 405
    assert r.status_code == 405 and served.inner.calls == calls + 1
