"""Small helpers shared by HTTP tests."""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx2

from tests.conftest import PlanFixture


async def create_gateway_client(client: httpx2.AsyncClient, plan: PlanFixture,
                                **extra: Any) -> tuple[str, str]:
    body = {"name": f"gateway-{uuid.uuid4().hex[:6]}", "can_introspect": True, **extra}
    r = await client.post(f"/v1/plans/{plan.plan_id}/integrations", json=body,
                          headers=plan.admin.auth)
    assert r.status_code == 201, r.text
    return r.json()["client_id"], r.json()["client_secret"]


async def introspect(client: httpx2.AsyncClient, creds: tuple[str, str],
                     token: str) -> dict[str, Any]:
    r = await client.post("/oauth2/introspect", data={"token": token}, auth=creds)
    assert r.status_code == 200, r.text
    assert r.headers["cache-control"] == "no-store"
    return r.json()


async def set_period(client: httpx2.AsyncClient, plan: PlanFixture, value: int,
                     unit: str) -> httpx2.Response:
    return await client.put(f"/v1/plans/{plan.plan_id}/token-expiration",
                            json={"value": value, "unit": unit}, headers=plan.admin.auth)


class Counting:
    """An ASGI application wrapped to count the HTTP requests that reach it (the fast paths of
    `app.main.serve` answer some in front of it)."""

    def __init__(self, app: Any) -> None:  # noqa: ANN401
        self.app, self.state, self.calls = app, app.state, 0

    async def __call__(self, scope, receive, send) -> None:  # noqa: ANN001
        if scope["type"] == "http":
            self.calls += 1
        await self.app(scope, receive, send)


def answer(r: httpx2.Response) -> tuple[int, list[tuple[str, str]], bytes]:
    """Everything a response says, for comparing two of them."""
    return r.status_code, sorted(r.headers.multi_items()), r.content


async def read_answer(reader: asyncio.StreamReader) -> tuple[bytes, dict[bytes, bytes], bytes]:
    """One HTTP/1.1 answer read off an asyncio stream: status line, headers, body."""
    status = await asyncio.wait_for(reader.readline(), 5)
    headers = {}
    while (line := await asyncio.wait_for(reader.readline(), 5)) != b"\r\n":
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    body = await asyncio.wait_for(reader.readexactly(int(headers[b"content-length"])), 5)
    return status, headers, body


# What only the served stack adds (uvicorn's default headers, the request id of `Observed`).
_STACK = {"date", "server", "x-request-id"}


def answer_of_app(r: httpx2.Response) -> tuple[int, list[tuple[str, str]], bytes]:
    """`answer`, less what only the served stack adds: a served answer compared with the
    application's own."""
    return r.status_code, sorted((k, v) for k, v in r.headers.multi_items()
                                 if k not in _STACK), r.content


@asynccontextmanager
async def served_by_uvicorn(app: Any, protocol: type | None = None) -> AsyncIterator[Any]:  # noqa: ANN401
    """`tessera serve`'s composition of `app` (`create_served_app`) behind uvicorn and its
    protocol (`app.serving`), in this process, on a free port; yields the outermost layer,
    whose `.calls` counts the requests that reached the ASGI application at all (the protocol
    answers some itself), with `.url`, `.port` and `.server` (uvicorn's). `protocol`: a
    subclass of that protocol instead (other time limits, say)."""
    import uvicorn

    from app.main import serve
    from app.ops.observe import Observed
    from app.serving import SlowClientGuard

    outer = Counting(Observed(serve(app)))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(outer, host="127.0.0.1", port=port,
                                           http=protocol or SlowClientGuard, lifespan="off",
                                           log_level="warning", access_log=False))
    task = asyncio.create_task(server.serve())
    while not server.started:  # noqa: ASYNC110 - uvicorn's Server says so only by this flag
        await asyncio.sleep(0.01)
    outer.url, outer.port, outer.server = f"http://127.0.0.1:{port}", port, server
    try:
        yield outer
    finally:
        server.should_exit = True
        await task


@asynccontextmanager
async def served_through(wrapper: Any, app: Any) -> AsyncIterator[httpx2.AsyncClient]:  # noqa: ANN401
    """A client of `wrapper(Counting(app))` (a fast path in front of the application); its
    `inner` counts the requests that reached the application."""
    inner = Counting(app)
    transport = httpx2.ASGITransport(app=wrapper(inner))
    async with httpx2.AsyncClient(transport=transport, base_url="https://tessera.test") as c:
        c.inner = inner
        yield c
