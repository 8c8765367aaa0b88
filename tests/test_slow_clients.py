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

pytestmark = pytest.mark.asyncio

LIMIT = 1.0


@pytest.fixture(scope="module")
def served(tmp_path_factory):  # noqa: ANN201
    folder = tmp_path_factory.mktemp("slow")
    url = f"sqlite+aiosqlite:///{folder}/slow.db"
    subprocess.run([sys.executable, "-m", "app.cli", "migrate"], cwd=ROOT, check=True,
                   capture_output=True, env={**os.environ, "TESSERA_DATABASE_URL": url},
                   timeout=120)
    with tessera(url, folder, "slow", header_timeout_seconds=str(LIMIT),
                 body_timeout_seconds=str(LIMIT)) as base:
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
        status = await asyncio.wait_for(reader.readline(), 5)
        assert status.startswith(b"HTTP/1.1 200"), status
        length = 0
        while (line := await reader.readline()) != b"\r\n":
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        await reader.readexactly(length)
        await asyncio.sleep(LIMIT / 2)  # idle between requests: the keep-alive limit, not ours
    writer.close()
