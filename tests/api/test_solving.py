"""Routes whose parameters and dependencies are solved by a plan made once
(`app.api.solving`) answer exactly as FastAPI's own handler of the same route would: the same
requests, good and bad, through both, give the same answers."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

import httpx2
import pytest
from fastapi import Depends, FastAPI, Request
from fastapi.routing import APIRouter, request_response

from app.api.routing import UnitOfWorkRoute
from app.main import create_app

pytestmark = pytest.mark.asyncio


@pytest.mark.filterwarnings("ignore::pytest.PytestWarning")
def test_every_route_of_the_application_is_solved_by_its_plan() -> None:
    routes = [r for r in create_app().routes if isinstance(r, UnitOfWorkRoute)]
    assert len(routes) > 60
    assert [r.path for r in routes if not r.solved] == []


def _through_fastapi(app: FastAPI, monkeypatch: pytest.MonkeyPatch) -> None:
    for route in app.routes:
        if isinstance(route, UnitOfWorkRoute):
            monkeypatch.setattr(route, "app", request_response(route.fastapi_handler()))
            monkeypatch.setattr(route, "direct", None)  # the index takes `app` then


def _shape(value: Any) -> Any:  # noqa: ANN401
    """What of a success must agree: its structure (ids, secrets and times differ)."""
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in value.items() if k not in {"id", "token", "name"}}
    if isinstance(value, list):
        return [_shape(v) for v in value[:1]]
    return type(value).__name__


def _answer(r: httpx2.Response) -> tuple[Any, ...]:
    kind = r.headers.get("content-type", "")
    body: Any = r.json() if kind.startswith("application/json") and r.content else r.content
    if r.status_code < 300:
        body = _shape(body)
    elif not kind.startswith("application/json"):
        body = len(r.content)  # a page: its size is enough here
    return (r.status_code, body, r.headers.get("www-authenticate"), r.headers.get("location"),
            r.headers.get("cache-control"))


async def test_the_plan_answers_as_fastapi_does(client, plan, other_plan, monkeypatch) -> None:
    member = await plan.add_user()
    admin, mine = plan.admin.auth, member.auth
    period = f"/v1/plans/{plan.plan_id}/token-expiration"
    json_type = {"content-type": "application/json"}
    cases: list[tuple[str, str, dict[str, Any]]] = [
        ("GET", "/v1/me", {}),
        ("GET", "/v1/me", {"headers": {"Authorization": "Bearer nonsense"}}),
        ("GET", "/v1/me", {"headers": {"Authorization": "DPoP nonsense"}}),
        ("GET", "/v1/me", {"headers": mine}),
        ("GET", f"/v1/plans/{plan.plan_id}/users", {"headers": admin}),
        ("GET", f"/v1/plans/{plan.plan_id}/users", {"headers": mine}),
        ("GET", f"/v1/plans/{other_plan.plan_id}/users", {"headers": admin}),
        ("GET", "/v1/plans/not-a-uuid/users", {"headers": admin}),
        ("GET", "/v1/plans/not-a-uuid/users", {}),  # who asks is settled first
        ("GET", "/v1/me/tokens", {"headers": mine}),
        ("GET", "/v1/me/tokens?limit=abc&offset=-1", {"headers": mine}),
        ("GET", "/v1/me/tokens?limit=0", {"headers": mine}),
        ("GET", "/v1/me/tokens?limit=100000", {"headers": mine}),
        ("GET", "/v1/me/tokens?limit=2&limit=3", {"headers": mine}),
        ("GET", f"/v1/plans/{plan.plan_id}/tokens?kind=bogus&user_id=x", {"headers": admin}),
        ("GET", f"/v1/plans/{plan.plan_id}/tokens?kind=personal&limit=5", {"headers": admin}),
        ("GET", f"/v1/plans/{plan.plan_id}/audit?cursor=garbage", {"headers": admin}),
        ("GET", f"/v1/plans/{plan.plan_id}/audit?limit=500", {"headers": admin}),
        ("GET", f"/v1/me/tokens/{uuid.uuid4()}/status", {"headers": mine}),
        ("DELETE", "/v1/me/tokens/not-a-uuid", {"headers": mine}),
        ("GET", period, {"headers": admin}),
        ("PUT", period, {"headers": admin}),  # no body
        ("PUT", period, {"headers": {**admin, **json_type}, "content": b'{"value": 1,'}),
        ("PUT", period, {"headers": json_type, "content": b'{"value": 1,'}),  # no caller
        ("PUT", period, {"headers": {**admin, **json_type}, "content": b"[]"}),
        ("PUT", period, {"headers": {**admin, **json_type}, "content": b"null"}),
        ("PUT", period, {"headers": admin, "json": {"value": 1, "unit": "eons"}}),
        ("PUT", period, {"headers": admin, "json": {"value": "1", "unit": "days", "x": 1}}),
        ("PUT", period, {"headers": admin, "json": {"value": 2, "unit": "days"}}),
        ("PUT", period, {"headers": mine, "json": {"value": 2, "unit": "days"}}),
        ("PUT", period, {"headers": {**admin, "content-type": "text/plain"}, "content": b"x"}),
        ("POST", f"{period}/preview", {"headers": admin, "json": {"value": 1, "unit": "years"}}),
        ("POST", "/v1/me/tokens", {"headers": mine, "json": {"name": "solved"}}),
        ("POST", "/v1/me/tokens", {"headers": mine, "json": {"name": ""}}),
        ("POST", "/v1/me/tokens", {"headers": mine, "json": {"name": "x", "scopes": 7}}),
        ("POST", f"/v1/plans/{plan.plan_id}/users",
         {"headers": admin, "json": {"email": "nope", "name": "x", "password": "p" * 12}}),
        ("POST", f"/v1/plans/{plan.plan_id}/integrations",
         {"headers": admin, "json": {"name": 5}}),
        ("POST", "/v1/integrations", {"headers": admin, "json": {"name": "x"}}),
        ("GET", f"/v1/integrations/{uuid.uuid4()}", {"headers": admin}),
        ("GET", "/console/me/api-access", {}),
        ("GET", "/console/login", {}),
        ("GET", "/healthz", {}),
    ]

    # The one success that changes what others answer, made before either run.
    r = await client.put(period, headers=admin, json={"value": 2, "unit": "days"})
    assert r.status_code == 200, r.text

    async def run() -> list[tuple[Any, ...]]:
        answers = []
        for method, url, kwargs in cases:
            answers.append(_answer(await client.request(method, url, **kwargs)))
        return answers

    solved = await run()
    _through_fastapi(client._transport.app, monkeypatch)
    by_fastapi = await run()
    for case, one, other in zip(cases, solved, by_fastapi, strict=True):
        assert one == other, case
    assert {a[0] for a in solved} >= {200, 201, 303, 401, 403, 404, 400, 415, 422}


CALLS = {"shared": 0, "fresh": 0}


async def _shared(request: Request) -> object:
    CALLS["shared"] += 1
    return object()


async def _fresh() -> int:
    CALLS["fresh"] += 1
    return CALLS["fresh"]


async def _left(value: Annotated[object, Depends(_shared)],
                n: Annotated[int, Depends(_fresh, use_cache=False)]) -> tuple[object, int]:
    return value, n


async def _right(value: Annotated[object, Depends(_shared)],
                 n: Annotated[int, Depends(_fresh, use_cache=False)]) -> tuple[object, int]:
    return value, n


async def _with_yield() -> Any:  # noqa: ANN401
    yield "yielded"


async def _leaf() -> int:
    CALLS["leaf"] = CALLS.get("leaf", 0) + 1
    return CALLS["leaf"]


async def _mid(n: Annotated[int, Depends(_leaf, use_cache=False)]) -> int:
    CALLS["mid"] = CALLS.get("mid", 0) + 1
    return n


_router = APIRouter(route_class=UnitOfWorkRoute)


@_router.get("/both/{n}")
async def _both(n: int, a: Annotated[tuple, Depends(_left)],
                b: Annotated[tuple, Depends(_right)], q: str = "-") -> dict[str, Any]:
    return {"same": a[0] is b[0], "fresh": [a[1], b[1]], "n": n, "q": q}


@_router.get("/twice")
async def _twice(a: Annotated[int, Depends(_mid)],
                 b: Annotated[int, Depends(_mid)]) -> dict[str, int]:
    return {"a": a, "b": b}


@_router.get("/yielding")
async def _yielding(value: Annotated[str, Depends(_with_yield)]) -> dict[str, str]:
    return {"value": value}


async def test_a_dependency_is_called_once_per_request_unless_it_asks_not_to_be() -> None:
    app = FastAPI()
    app.include_router(_router)
    calls = CALLS
    routes = {r.path: r for r in _router.routes}
    assert routes["/both/{n}"].solved
    assert not routes["/yielding"].solved  # `yield`: FastAPI's handler keeps it
    transport = httpx2.ASGITransport(app=app)
    async with httpx2.AsyncClient(transport=transport, base_url="http://t") as c:
        r = await c.get("/both/7?q=x")
        assert r.json() == {"same": True, "fresh": [1, 2], "n": 7, "q": "x"}
        assert calls == {"shared": 1, "fresh": 2}
        r = await c.get("/both/seven")
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["path", "n"]
        assert calls == {"shared": 2, "fresh": 4}  # dependencies first, as FastAPI does
        r = await c.get("/yielding")
        assert r.json() == {"value": "yielded"}
        # A cached dependency's own uncached dependency is called again, as FastAPI does.
        r = await c.get("/twice")
        assert r.json() == {"a": 1, "b": 1} and (CALLS["leaf"], CALLS["mid"]) == (2, 1)


async def _real() -> str:
    return "real"


async def test_dependency_overrides_go_to_fastapi_s_handler_behind_the_index() -> None:
    """A route whose router has an overrides provider keeps FastAPI's request wrapper, which
    its handler needs when overrides are set."""
    from app.api.routing import RouteIndex

    app = FastAPI()
    router = APIRouter(route_class=UnitOfWorkRoute, dependency_overrides_provider=app)

    @router.get("/which")
    async def which(value: Annotated[str, Depends(_real)]) -> dict[str, str]:
        return {"value": value}

    route = router.routes[0]
    assert route.solved and route.direct is None
    app.router.routes.extend(router.routes)
    app.router.routes.insert(0, RouteIndex(list(app.router.routes)))
    transport = httpx2.ASGITransport(app=app)
    async with httpx2.AsyncClient(transport=transport, base_url="http://t") as c:
        assert (await c.get("/which")).json() == {"value": "real"}
        app.dependency_overrides[_real] = lambda: "overridden"
        assert (await c.get("/which")).json() == {"value": "overridden"}
