"""Introspections answered by the HTTP protocol itself (`app.serving`): over real sockets to a
real uvicorn serving `tessera serve`'s composition, an introspection that needs no I/O (its
caller's credentials and the token cached) is answered as the application answers it, without
reaching it; every other one still reaches it, whatever its shape."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import httpx2
import pytest

from app.ops import metrics
from tests.helpers import answer_of_app, create_gateway_client, read_answer

pytestmark = pytest.mark.asyncio

INTROSPECT = "/oauth2/introspect"
def introspection_request(creds: tuple[str, str], token: str) -> bytes:
    """An introspection of `token` as raw HTTP/1.1, authenticated with `creds` (Basic)."""
    basic = base64.b64encode(f"{creds[0]}:{creds[1]}".encode())
    form = f"token={token}".encode()
    return (b"POST " + INTROSPECT.encode() + b" HTTP/1.1\r\nHost: x\r\nAuthorization: Basic "
            + basic + b"\r\nContent-Type: application/x-www-form-urlencoded\r\n"
            b"Content-Length: " + str(len(form)).encode() + b"\r\n\r\n" + form)


async def test_introspections_needing_no_io_are_answered_as_by_the_application(
        app, client, lane, plan, other_plan, clock) -> None:  # noqa: ANN001
    creds = await create_gateway_client(client, plan)
    user, stranger = await plan.add_user(), await other_plan.add_user()
    post = {"client_id": creds[0], "client_secret": creds[1]}
    requests: list[dict[str, Any]] = [
        {"data": {"token": user.token}, "auth": creds},  # active
        {"data": {"token": user.token, "token_type_hint": "access_token"}, "auth": creds},
        {"data": {"token": user.token, **post}},  # client_secret_post
        # A custom integration sees its own plan's tokens only: inactive, from its facts.
        {"data": {"token": stranger.token}, "auth": creds},
    ]
    async with httpx2.AsyncClient(base_url=lane.url) as http:
        for request in requests:
            await http.post(INTROSPECT, **request)  # the caller and the token, read and cached
            calls = lane.calls
            fast, route = (await http.post(INTROSPECT, **request),
                           await client.post(INTROSPECT, **request))
            assert answer_of_app(fast) == answer_of_app(route), request
            assert lane.calls == calls, request  # no ASGI request was made for it
        assert (await http.post(INTROSPECT, **requests[0])).json()["sub"] == str(user.user_id)
        assert (await http.post(INTROSPECT, **requests[3])).json() == {"active": False}

        def counted() -> int:
            return sum(metrics.REQUESTS.children.get((INTROSPECT, "POST", "200"), [0])[:-1])
        before = counted()
        await http.post(INTROSPECT, **requests[0])
        assert counted() == before + 1

        # Revoked: inactive at once, still without the application.
        r = await client.delete(f"/v1/me/tokens/{(await my_token_id(client, user.token))}",
                                headers={"Authorization": f"Bearer {user.token}"})
        assert r.status_code in (200, 204), r.text
        calls = lane.calls
        r = await http.post(INTROSPECT, **requests[0])
        assert r.json() == {"active": False} and lane.calls == calls + 1  # evicted: read again
        r = await http.post(INTROSPECT, **requests[0])
        assert r.json() == {"active": False} and lane.calls == calls + 1  # and cached as it is


async def my_token_id(client: httpx2.AsyncClient, token: str) -> str:
    r = await client.get("/v1/me/tokens", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200, r.text
    return r.json()["items"][0]["id"]


async def test_what_needs_io_or_is_unusual_reaches_the_application(
        app, client, lane, plan) -> None:  # noqa: ANN001
    creds = await create_gateway_client(client, plan)
    user = await plan.add_user()
    async with httpx2.AsyncClient(base_url=lane.url) as http:
        r = await http.post(INTROSPECT, data={"token": user.token}, auth=creds)
        assert r.json()["active"] is True
        cases: list[tuple[dict[str, Any], int]] = [
            ({"data": {"token": user.token}, "auth": (creds[0], "wrong")}, 401),
            ({"data": {}, "auth": creds}, 400),  # no token
            ({"data": {"token": "tsp_not_a_real_token"}, "auth": creds}, 200),  # never cached
            ({"content": b"token=" + user.token.encode(), "auth": creds,
              "headers": {"Content-Type": "application/json"}}, 400),
            ({"content": f"token={user.token}&token={user.token}".encode(), "auth": creds,
              "headers": {"Content-Type": "application/x-www-form-urlencoded"}}, 400),
            ({"data": {"token": user.token, "pad": "x" * 5000}, "auth": creds}, 200),  # large
            ({"data": {"token": user.token}, "auth": creds, "params": {"a": "b"}}, 200),
            ({"data": {"token": user.token}, "auth": creds, "headers": {"DPoP": "x"}}, 200),
        ]
        for request, status in cases:
            calls = lane.calls
            r = await http.post(INTROSPECT, **request)
            assert r.status_code == status, (request, r.text)
            assert lane.calls == calls + 1, request
    # Chunked, and a body announced with `Expect: 100-continue`: the application's path, which
    # sends the 100 and reads the body as it comes.
    basic = base64.b64encode(f"{creds[0]}:{creds[1]}".encode())
    form = f"token={user.token}".encode()
    head = (b"POST " + INTROSPECT.encode() + b" HTTP/1.1\r\nHost: x\r\nAuthorization: Basic "
            + basic + b"\r\nContent-Type: application/x-www-form-urlencoded\r\n")
    for request in (head + b"Transfer-Encoding: chunked\r\n\r\n"
                    + f"{len(form):x}\r\n".encode() + form + b"\r\n0\r\n\r\n",
                    head + b"Expect: 100-continue\r\nContent-Length: "
                    + str(len(form)).encode() + b"\r\n\r\n" + form):
        reader, writer = await asyncio.open_connection("127.0.0.1", lane.port)
        calls = lane.calls
        writer.write(request)
        await writer.drain()
        answer = await asyncio.wait_for(reader.readuntil(b'"active":true'), 5)
        writer.close()
        assert b"HTTP/1.1 200 OK" in answer and lane.calls == calls + 1


async def test_a_body_in_pieces_and_pipelined_requests(client, lane, plan) -> None:  # noqa: ANN001
    creds = await create_gateway_client(client, plan)
    user = await plan.add_user()
    request = introspection_request(creds, user.token)
    me = (b"GET /v1/me HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + user.token.encode()
          + b"\r\n\r\n")
    reader, writer = await asyncio.open_connection("127.0.0.1", lane.port)
    try:
        writer.write(request)  # caller and token read once, cached from here on
        assert b'"active":true' in (await read_answer(reader))[2]
        calls = lane.calls
        # The body in three pieces, a moment apart: answered when it is whole.
        cut = len(request) - 10
        for piece in (request[:cut - 20], request[cut - 20:cut], request[cut:]):
            writer.write(piece)
            await writer.drain()
            await asyncio.sleep(0.05)
        assert b'"active":true' in (await read_answer(reader))[2]
        assert lane.calls == calls
        # Pipelined behind a request the application answers: after it, in order.
        writer.write(me + request + me)
        await writer.drain()
        answers = [await read_answer(reader) for _ in range(3)]
    finally:
        writer.close()
    assert [b'"active":true' in body for _status, _headers, body in answers] == \
        [False, True, False]
    assert all(status.startswith(b"HTTP/1.1 200 ") for status, _h, _b in answers)


async def test_cache_lookups_are_counted_once_per_request(client, lane, plan) -> None:  # noqa: ANN001
    """/metrics counts each lookup once, whichever path answers: the protocol counts its hits
    when it answers, and counts nothing when it leaves the request to the application."""
    creds = await create_gateway_client(client, plan)
    user, other = await plan.add_user(), await plan.add_user()

    def counts() -> dict[tuple[str, str], int]:
        return {k: metrics.CACHE.children.get(k, 0) for k in
                [("token", "hit"), ("token", "miss"), ("client", "hit"), ("client", "miss")]}

    async with httpx2.AsyncClient(base_url=lane.url) as http:
        await http.post(INTROSPECT, data={"token": user.token}, auth=creds)  # all cached now
        before = counts()
        await http.post(INTROSPECT, data={"token": user.token}, auth=creds)  # the protocol's
        after = counts()
        assert {k: after[k] - before[k] for k in after} == {
            ("token", "hit"): 1, ("token", "miss"): 0, ("client", "hit"): 1,
            ("client", "miss"): 0}
        calls = lane.calls
        await http.post(INTROSPECT, data={"token": other.token}, auth=creds)  # token unread
        assert lane.calls == calls + 1
        again = counts()
        assert {k: again[k] - after[k] for k in again} == {
            ("token", "hit"): 0, ("token", "miss"): 1, ("client", "hit"): 1,
            ("client", "miss"): 0}


async def test_a_graceful_shutdown_answers_an_introspection_being_read(client, lane,
                                                                       plan) -> None:  # noqa: ANN001
    """uvicorn's shutdown closes idle connections and lets requests being answered finish; an
    introspection whose body is still coming is one of those: answered, then closed."""
    creds = await create_gateway_client(client, plan)
    user = await plan.add_user()
    request = introspection_request(creds, user.token)
    for repeat in (False, True):  # read by the application, then answered by the protocol
        reader, writer = await asyncio.open_connection("127.0.0.1", lane.port)
        writer.write(request)
        await writer.drain()
        assert b'"active":true' in (await read_answer(reader))[2]
        writer.close()
        if repeat:
            break
    reader, writer = await asyncio.open_connection("127.0.0.1", lane.port)
    writer.write(request[:-5])
    await writer.drain()
    await asyncio.sleep(0.1)
    lane.server.should_exit = True  # what SIGTERM does
    await asyncio.sleep(0.3)
    writer.write(request[-5:])
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 5)  # everything, up to the close
    writer.close()
    assert answer.startswith(b"HTTP/1.1 200 OK") and b'"active":true' in answer
    assert b"connection: close" in answer.lower()
