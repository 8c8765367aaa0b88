"""`tessera serve` sends an answer's head with its body, in one write (`app.serving.OneWrite`):
uvicorn writes them apart. Real sockets against uvicorn with Tessera's protocol, in this
process; the application here is a bare ASGI one, so a test decides when its body is sent."""

from __future__ import annotations

import asyncio
import types
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest

from app.serving import SlowClientGuard
from tests.helpers import read_answer, served_by_uvicorn

pytestmark = pytest.mark.asyncio

Send = Callable[[dict[str, Any]], Awaitable[None]]


class Gated:
    """Starts each answer at once and sends its body when `go` is set (or fails instead)."""

    def __init__(self, *, fail: bool = False) -> None:
        self.go = asyncio.Event()
        self.started = asyncio.Event()
        self.fail = fail
        self.state = types.SimpleNamespace()  # what `tessera serve`'s layers look for

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Send) -> None:  # noqa: ANN401
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain"), (b"content-length", b"5")]})
        self.started.set()
        await self.go.wait()
        if self.fail:
            raise RuntimeError("failed after its answer began")
        await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD"
                    else b"hello"})


async def nothing_within(reader: asyncio.StreamReader, seconds: float) -> bool:
    try:
        got = await asyncio.wait_for(reader.read(1), seconds)
    except TimeoutError:
        return True
    raise AssertionError(f"the server sent {got!r} before the body")


class QuickLimits(SlowClientGuard):
    def __init__(self, *args: Any, **kwargs: Any) -> None:  # noqa: ANN401
        super().__init__(*args, **kwargs)
        self._body_seconds = 0.3


@asynccontextmanager
async def connected(app: Gated, protocol: type | None = None,
                    ) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    """A connection to `app` served as `tessera serve` serves it (`protocol`: other limits)."""
    async with served_by_uvicorn(app, protocol=protocol) as outer:
        reader, writer = await asyncio.open_connection("127.0.0.1", outer.port)
        try:
            yield reader, writer
        finally:
            app.go.set()  # a failed assertion does not leave the answer, and the server, waiting
            writer.close()


async def until_closed(app: Gated, request: bytes, protocol: type | None = None) -> bytes:
    """Everything the server sends after `request`, until it closes the connection."""
    async with connected(app, protocol) as (reader, writer):
        writer.write(request)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), 5)


async def test_the_head_waits_for_the_body_and_leaves_with_it() -> None:
    app = Gated()
    async with connected(app) as (reader, writer):
        for _ in range(2):  # and again on the kept-alive connection
            app.go.clear()
            app.started.clear()
            writer.write(b"GET /held HTTP/1.1\r\nHost: x\r\n\r\n")
            await writer.drain()
            await app.started.wait()
            assert await nothing_within(reader, 0.3)
            app.go.set()
            status, headers, body = await read_answer(reader)
            assert status.startswith(b"HTTP/1.1 200") and body == b"hello"
            assert headers[b"content-type"] == b"text/plain"


async def test_the_head_of_a_head_request_is_sent_at_once() -> None:
    """A `HEAD` answer has no body to wait for (uvicorn writes none): its head is not held."""
    app = Gated()
    app.go.set()
    async with connected(app) as (reader, writer):
        writer.write(b"HEAD /held HTTP/1.1\r\nHost: x\r\n\r\n")
        await writer.drain()
        status = await asyncio.wait_for(reader.readline(), 5)
        assert status.startswith(b"HTTP/1.1 200")
        while (line := await asyncio.wait_for(reader.readline(), 5)) != b"\r\n":
            assert line
        writer.write(b"GET /held HTTP/1.1\r\nHost: x\r\n\r\n")  # the connection goes on
        await writer.drain()
        assert (await read_answer(reader))[2] == b"hello"


async def test_a_100_continue_is_not_held() -> None:
    """A client that waits for `100 Continue` before its body gets it: only the answer's head
    is held."""
    app = Gated()
    app.go.set()
    async with connected(app) as (reader, writer):
        writer.write(b"POST /held HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
                     b"Expect: 100-continue\r\n\r\n")
        await writer.drain()
        assert await asyncio.wait_for(reader.readline(), 5) == b"HTTP/1.1 100 Continue\r\n"
        assert await asyncio.wait_for(reader.readline(), 5) == b"\r\n"
        writer.write(b"abc")
        await writer.drain()
        assert (await read_answer(reader))[2] == b"hello"


async def test_an_answer_that_closes_its_connection_is_sent_whole_first() -> None:
    app = Gated()
    app.go.set()
    everything = await until_closed(
        app, b"GET /held HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert everything.startswith(b"HTTP/1.1 200") and everything.endswith(b"\r\n\r\nhello")


async def test_an_application_failing_after_its_head_closes_with_the_head_sent() -> None:
    """As uvicorn does: the head already begun goes out, then the connection closes."""
    app = Gated(fail=True)
    app.go.set()
    everything = await until_closed(app, b"GET /held HTTP/1.1\r\nHost: x\r\n\r\n")
    assert everything.startswith(b"HTTP/1.1 200") and everything.endswith(b"\r\n\r\n")


class AnswersBeforeReading(Gated):
    """Begins its answer, then waits for a body the client never sends."""

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Send) -> None:  # noqa: ANN401
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", b"5")]})
        await receive()
        await send({"type": "http.response.body", "body": b"hello"})


async def test_a_client_too_slow_after_the_answer_began_gets_the_head_then_the_close() -> None:
    """The body deadline passes while the head is held: the connection is closed through the
    answer's `OneWrite`, so the head goes out first, as it did when it was written at once."""
    everything = await until_closed(
        AnswersBeforeReading(),
        b"POST /held HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n", QuickLimits)
    assert everything.startswith(b"HTTP/1.1 200") and everything.endswith(b"\r\n\r\n")


async def test_a_pipelined_request_too_slow_does_not_replace_the_answer_before_it() -> None:
    """The answer in progress has begun (its head held) when the next request's body stalls:
    that answer's head goes out and the connection closes; no 408, which the client would take
    for the first request's answer."""
    everything = await until_closed(
        Gated(), b"GET /held HTTP/1.1\r\nHost: x\r\n\r\n"
                 b"POST /next HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nab", QuickLimits)
    assert everything.startswith(b"HTTP/1.1 200") and b"408" not in everything
    assert everything.endswith(b"\r\n\r\n")  # its head, then the close


async def test_a_request_whose_own_body_is_too_slow_is_answered_408() -> None:
    app = Gated()
    app.go.set()
    everything = await until_closed(
        app, b"POST /held HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nab", QuickLimits)
    assert everything.startswith(b"HTTP/1.1 408 "), everything
