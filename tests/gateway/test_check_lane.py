"""Gateway checks answered by the HTTP protocol itself (`app.serving`): over real sockets to a
real uvicorn serving `tessera serve`'s composition, a check that needs no I/O is answered as
the application answers it, without reaching it; everything else still reaches it, and a
connection's answers keep their order."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import httpx2
import pytest

from app.ops import metrics
from tests.gateway.test_check import CHECK, bearer, custom_integration_token
from tests.helpers import answer_of_app, read_answer, set_period

pytestmark = pytest.mark.asyncio

async def test_checks_needing_no_io_are_answered_by_the_protocol_as_by_the_application(
        app, client, lane, plan, clock) -> None:  # noqa: ANN001
    user = await plan.add_user()
    _id, _client_id, integ_token = await custom_integration_token(client, plan)
    await set_period(client, plan, 2, "hours")
    requests: list[dict[str, Any]] = [
        {"headers": bearer(user.token)},
        {"headers": bearer(integ_token), "params": {"scope": "data:read"}},
        {"headers": {**bearer(integ_token), "X-Required-Scope": "data:read, profile"}},  # 403
        {"headers": bearer(integ_token), "params": [("scope", "data:read"), ("scope", "x")]},
        {"headers": {"Authorization": f"bearer  {user.token}"}},  # scheme case, spaces
        {},  # no token: 401 with a bare challenge
        {"headers": {"Authorization": "Basic dXNlcjpwYXNz"}},  # 401
    ]
    async with httpx2.AsyncClient(base_url=lane.url) as http:
        for request in requests:
            await http.get(CHECK, **request)  # a token's first check reads it, and caches it
            calls = lane.calls
            fast, route = await http.get(CHECK, **request), await client.get(CHECK, **request)
            assert answer_of_app(fast) == answer_of_app(route), request
            assert lane.calls == calls, request  # no ASGI request was made for it
            assert fast.headers["server"] == "uvicorn" and fast.headers["date"]
        # Counted for /metrics like every request.
        def counted() -> int:
            return sum(metrics.REQUESTS.children.get((CHECK, "GET", "200"), [0])[:-1])
        before = counted()
        await http.get(CHECK, headers=bearer(user.token))
        assert counted() == before + 1
        # HEAD: the same headers, no body.
        calls = lane.calls
        head = await http.head(CHECK, headers=bearer(user.token))
        assert lane.calls == calls and head.content == b""
        route = await client.head(CHECK, headers=bearer(user.token))
        assert answer_of_app(head)[:2] == answer_of_app(route)[:2]
        assert head.headers["x-tessera-subject"] == str(user.user_id)
        # The request id it was given, or one of its own, as on every other answer.
        given = await http.get(CHECK, headers={**bearer(user.token), "X-Request-ID": "req-42"})
        assert given.headers["x-request-id"] == "req-42"
        made = await http.get(CHECK, headers={**bearer(user.token), "X-Request-ID": "a b"})
        assert len(made.headers["x-request-id"]) == 32

        clock.advance(hours=2)  # judged at the request's time: the period has ended the token
        calls = lane.calls
        fast = await http.get(CHECK, headers=bearer(user.token))
        assert fast.status_code == 401 and lane.calls == calls
        assert 'error_description="the token is expired"' in fast.headers["www-authenticate"]
        route = await client.get(CHECK, headers=bearer(user.token))
        assert answer_of_app(fast) == answer_of_app(route)


async def test_what_needs_io_or_is_unusual_reaches_the_application(app, client, lane,
                                                                   plan) -> None:  # noqa: ANN001
    user = await plan.add_user()
    key = ("token", "miss")
    async with httpx2.AsyncClient(base_url=lane.url) as http:
        cases: list[tuple[str, str, dict[str, Any], int]] = [
            ("GET", CHECK, {"headers": bearer("tsp_not_a_real_token")}, 401),  # never cached
            ("GET", CHECK, {"headers": bearer(user.token), "params": {"scope": 'bad"'}}, 400),
            ("GET", CHECK, {"headers": [("Authorization", f"Bearer {user.token}"),
                                        ("Authorization", "Bearer other")]}, 200),
            ("POST", CHECK, {"headers": bearer(user.token), "content": b"{}"}, 200),
            ("GET", CHECK, {"headers": bearer(user.token), "content": b"x"}, 200),  # a body
            ("GET", CHECK + "/orders/7", {"headers": bearer(user.token)}, 200),
            ("GET", "/v1/me", {"headers": bearer(user.token)}, 200),
        ]
        for method, path, request, status in cases:
            calls = lane.calls
            r = await http.request(method, path, **request)
            assert r.status_code == status, (path, request, r.text)
            assert lane.calls == calls + 1, (path, request)
        # A token's first check is read (by the application's path) and its miss counted once.
        other = await plan.add_user()
        calls, misses = lane.calls, metrics.CACHE.children.get(key, 0)
        r = await http.get(CHECK, headers=bearer(other.token))
        assert r.status_code == 200 and lane.calls == calls + 1
        assert metrics.CACHE.children.get(key, 0) == misses + 1
        r = await http.get(CHECK, headers=bearer(other.token))
        assert r.status_code == 200 and lane.calls == calls + 1
    # HTTP/1.0: the application's path, which closes the connection after its answer.
    reader, writer = await asyncio.open_connection("127.0.0.1", lane.port)
    calls = lane.calls
    writer.write(f"GET {CHECK} HTTP/1.0\r\nAuthorization: Bearer {other.token}\r\n\r\n".encode())
    answer = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 200 ") and lane.calls == calls + 1


async def test_pipelined_answers_keep_their_order_and_close_is_honoured(lane, plan) -> None:  # noqa: ANN001
    user = await plan.add_user()
    auth = f"Authorization: Bearer {user.token}\r\n".encode()
    check = b"GET " + CHECK.encode() + b" HTTP/1.1\r\nHost: x\r\n" + auth + b"\r\n"
    me = b"GET /v1/me HTTP/1.1\r\nHost: x\r\n" + auth + b"\r\n"
    reader, writer = await asyncio.open_connection("127.0.0.1", lane.port)
    try:
        writer.write(check)  # read once: cached from here on
        await writer.drain()
        await read_answer(reader)
        # An application request still being answered, then checks the protocol could answer
        # at once: they wait their turn. Then the other way round.
        writer.write(me + check + check + me + check)
        await writer.drain()
        answers = [await read_answer(reader) for _ in range(5)]
    finally:
        writer.close()
    kinds = [b"x-tessera-subject" in headers for _status, headers, _body in answers]
    assert kinds == [False, True, True, False, True]
    assert all(status.startswith(b"HTTP/1.1 200 ") for status, _h, _b in answers)
    assert all(b'"email"' in body for _s, headers, body in answers
               if b"x-tessera-subject" not in headers)

    # `Connection: close`: answered, then closed, as uvicorn does.
    reader, writer = await asyncio.open_connection("127.0.0.1", lane.port)
    calls = lane.calls
    writer.write(check.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n"))
    answer = await asyncio.wait_for(reader.read(), 5)  # everything, up to the close
    writer.close()
    assert answer.startswith(b"HTTP/1.1 200 ") and b"connection: close" in answer.lower()
    assert lane.calls == calls


async def test_checks_sent_twenty_at_once_are_all_answered(lane, plan) -> None:  # noqa: ANN001
    users = [await plan.add_user() for _ in range(4)]
    async with httpx2.AsyncClient(base_url=lane.url) as http:
        for user in users:
            await http.get(CHECK, headers=bearer(user.token))
        answers = await asyncio.gather(*(http.get(CHECK, headers=bearer(users[i % 4].token))
                                         for i in range(20)))
    assert [r.headers["x-tessera-subject"] for r in answers] == \
        [str(users[i % 4].user_id) for i in range(20)]


async def test_answers_never_read_do_not_pile_up(lane) -> None:  # noqa: ANN001
    """Checks the protocol could answer at once (no token: 401, no I/O), pipelined by the
    thousand and never read: once the connection's write buffer is past its high-water mark
    the protocol leaves them to the application's path, which waits for the client (and lets
    it go at the body limit, tests/test_slow_clients.py), so the server holds about that
    mark, not every answer (40,000 of them would be ~13 MB)."""
    import socket

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", lane.port))
    sock.setblocking(False)
    reader, writer = await asyncio.open_connection(sock=sock)
    writer.write((b"GET " + CHECK.encode() + b" HTTP/1.1\r\nHost: x\r\n\r\n") * 40_000)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(writer.drain(), 2)
    await asyncio.sleep(0.5)
    held = [p.transport.get_write_buffer_size() for p in lane.server.server_state.connections]
    writer.close()
    assert held and max(held) < 512 * 1024, held
