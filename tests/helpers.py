"""Small helpers shared by HTTP tests."""

from __future__ import annotations

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


@asynccontextmanager
async def served_through(wrapper: Any, app: Any) -> AsyncIterator[httpx2.AsyncClient]:  # noqa: ANN401
    """A client of `wrapper(Counting(app))` (a fast path in front of the application); its
    `inner` counts the requests that reached the application."""
    inner = Counting(app)
    transport = httpx2.ASGITransport(app=wrapper(inner))
    async with httpx2.AsyncClient(transport=transport, base_url="https://tessera.test") as c:
        c.inner = inner
        yield c
