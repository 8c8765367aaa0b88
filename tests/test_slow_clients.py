"""Slow clients are timed out (rule 12): `tessera serve` answers 408 and closes a connection
whose request headers, or body, do not arrive in time (`TESSERA_HEADER_TIMEOUT_SECONDS`,
`TESSERA_BODY_TIMEOUT_SECONDS`), so half-sent requests cannot hold its connections; a request
sent in time is served as always. Real sockets against a real process; the limits are set to
one second so the test waits about that long."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from urllib.parse import urlsplit

import pytest

from tests.gateway.processes import ROOT, tessera
from tests.helpers import read_answer

pytestmark = pytest.mark.asyncio

LIMIT = 1.0
KEEP_ALIVE = 2 * LIMIT


@pytest.fixture(scope="module")
def served(tmp_path_factory):  # noqa: ANN201
    folder = tmp_path_factory.mktemp("slow")
    url = f"sqlite+aiosqlite:///{folder}/slow.db"
    subprocess.run([sys.executable, "-m", "app.cli", "migrate"], cwd=ROOT, check=True,
                   capture_output=True, env={**os.environ, "TESSERA_DATABASE_URL": url},
                   timeout=120)
    with tessera(url, folder, "slow", header_timeout_seconds=str(LIMIT),
                 body_timeout_seconds=str(LIMIT),
                 keep_alive_timeout_seconds=str(KEEP_ALIVE)) as base:
        yield urlsplit(base)


async def answer_within(reader: asyncio.StreamReader, seconds: float) -> bytes:
    """Everything the server sends until it closes the connection."""
    return await asyncio.wait_for(reader.read(), seconds)


async def test_half_sent_headers_are_answered_408_and_closed(served) -> None:  # noqa: ANN001
    started = time.monotonic()
    conns = [await asyncio.open_connection(served.hostname, served.port) for _ in range(50)]
    for i, (_reader, writer) in enumerate(conns):
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n" if i % 2 else b"GET /hea")
        await writer.drain()
    answers = await asyncio.gather(*[answer_within(r, LIMIT + 5) for r, _w in conns])
    took = time.monotonic() - started
    assert all(a.startswith(b"HTTP/1.1 408 ") for a in answers), answers[:2]
    assert took >= LIMIT * 0.9  # not before the limit
    for _r, writer in conns:
        writer.close()


async def test_a_connection_that_sends_nothing_is_closed(served) -> None:  # noqa: ANN001
    reader, writer = await asyncio.open_connection(served.hostname, served.port)
    assert (await answer_within(reader, LIMIT + 5)).startswith(b"HTTP/1.1 408 ")
    writer.close()


async def test_a_body_that_never_ends_is_answered_408(served) -> None:  # noqa: ANN001
    reader, writer = await asyncio.open_connection(served.hostname, served.port)
    writer.write(b"POST /oauth2/token HTTP/1.1\r\nHost: x\r\n"
                 b"Content-Type: application/x-www-form-urlencoded\r\n"
                 b"Content-Length: 100\r\n\r\ngrant_type")
    await writer.drain()
    answer = await answer_within(reader, LIMIT + 5)
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
    writer.close()


async def test_requests_sent_in_time_are_served_and_kept_alive(served) -> None:  # noqa: ANN001
    reader, writer = await asyncio.open_connection(served.hostname, served.port)
    for _ in range(3):
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        await writer.drain()
        status = (await read_answer(reader))[0]
        assert status.startswith(b"HTTP/1.1 200"), status
        await asyncio.sleep(LIMIT / 2)  # idle between requests: the keep-alive limit, not ours
    writer.close()


async def test_blank_lines_between_requests_do_not_keep_a_connection(served) -> None:  # noqa: ANN001
    """Bytes that begin no request (CRLF, which HTTP lets a server ignore before a request) do
    not reset any deadline: a client trickling them is closed like one sending nothing."""
    reader, writer = await asyncio.open_connection(served.hostname, served.port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")  # one request, answered
    await writer.drain()
    assert (await read_answer(reader))[0].startswith(b"HTTP/1.1 200")
    started = time.monotonic()

    async def trickle() -> None:
        while not writer.is_closing():
            writer.write(b"\r\n")
            try:
                await writer.drain()
            except ConnectionError:
                return
            await asyncio.sleep(LIMIT / 5)

    task = asyncio.create_task(trickle())
    try:
        answer = await answer_within(reader, LIMIT + 5)
    finally:
        task.cancel()
        writer.close()
    assert time.monotonic() - started < LIMIT + 3  # closed at the header deadline
    assert answer == b"" or answer.startswith(b"HTTP/1.1 408 "), answer[:200]


async def test_a_client_that_does_not_read_its_answers_is_let_go(served) -> None:  # noqa: ANN001
    """Pipelined requests for a large answer, none of it read: once the server's buffers are
    full and stay full for the body limit, the connection is dropped (its request task with
    it), instead of waiting forever for the client to read."""
    import socket

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((served.hostname, served.port))
    sock.setblocking(False)
    reader, writer = await asyncio.open_connection(sock=sock)
    # Few enough to arrive whole (no request left half-read, whose own deadline would fire),
    # many enough that their answers (about 100 kB each) fill every buffer on the way.
    count = 40
    request = b"GET /openapi.json HTTP/1.1\r\nHost: x\r\n\r\n"
    writer.write(request * count)
    try:
        await asyncio.wait_for(writer.drain(), 5)
    except (ConnectionError, TimeoutError):
        pass
    await asyncio.sleep(LIMIT + 2)  # nothing read: the server's send buffer stays full
    received, dropped = b"", False
    try:
        while chunk := await asyncio.wait_for(reader.read(1 << 20), 5):
            received += chunk
        dropped = True  # the server closed
    except ConnectionError:
        dropped = True
    except TimeoutError:
        dropped = False
    writer.close()
    answered = received.count(b"HTTP/1.1 200 OK\r\n")
    assert dropped, f"the connection was still open after {answered} answers"
    assert answered < count  # dropped on the way, not once everything was read


@pytest.mark.parametrize("path", ["/oauth2/introspect", "/oauth2/token", None])
async def test_a_slow_request_after_an_answered_one_is_answered_408(served, path) -> None:  # noqa: ANN001
    """The deadline's 408 does not depend on what the connection did before: after a request
    answered in full, a body that does not arrive in time is answered 408 like the first
    request's would be (on the path the HTTP protocol collects itself, introspection, and on
    the application's), and so are headers (`None`)."""
    reader, writer = await asyncio.open_connection(served.hostname, served.port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    await writer.drain()
    assert (await read_answer(reader))[0].startswith(b"HTTP/1.1 200")
    writer.write(b"GET /healthz HTTP/1.1\r\nHo" if path is None else
                 f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-"
                 "urlencoded\r\nContent-Length: 10\r\n\r\ntoken".encode())
    await writer.drain()
    answer = await answer_within(reader, LIMIT + 5)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]


@pytest.mark.parametrize("path", ["/healthz", "/v1/gateway/check"])
async def test_an_idle_connection_is_closed_at_the_keep_alive_limit(served, path) -> None:  # noqa: ANN001
    """Between requests a connection may stay idle for `TESSERA_KEEP_ALIVE_TIMEOUT_SECONDS`,
    then it is closed, whoever answered its last request (the application, or the HTTP
    protocol itself: a check with no token)."""
    reader, writer = await asyncio.open_connection(served.hostname, served.port)
    for _ in range(2):
        writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        await writer.drain()
        assert (await read_answer(reader))[0].startswith(b"HTTP/1.1 ")
    started = time.monotonic()
    rest = await answer_within(reader, KEEP_ALIVE + 5)  # up to the close
    idle = time.monotonic() - started
    writer.close()
    assert rest == b"" and KEEP_ALIVE - 0.3 <= idle < KEEP_ALIVE + 2, idle
