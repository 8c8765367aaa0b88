"""The route index (`app.api.routing`) finds, for every request, the route the router's full
walk would have found; GET requests to /v1 read through sessions that cannot write."""

from __future__ import annotations

import re
import uuid

import pytest
from fastapi.routing import APIRoute
from sqlalchemy import select, update
from starlette.routing import Match, Route

from app.api.deps import get_session
from app.api.routing import RouteIndex, UnitOfWorkRoute, _uses
from app.db import make_read_sessionmaker, session_scope
from app.main import create_app
from app.users.models import User


def _concrete(path: str) -> str:
    return re.sub(r"\{[^}:]+(:path)?\}", lambda m: "a/b" if m.group(1) else str(uuid.uuid4()),
                  path)


def _walk(routes: list, scope: dict) -> tuple[object | None, Match]:
    """What the router's own walk finds: the first full match, else the first partial."""
    partial = None
    for route in routes:
        match, _child = route.matches(scope)
        if match is Match.FULL:
            return route, match
        if match is Match.PARTIAL and partial is None:
            partial = route
    return partial, Match.PARTIAL if partial else Match.NONE


def _scope(method: str, path: str) -> dict:
    return {"type": "http", "method": method, "path": path, "root_path": "", "headers": []}


def test_the_index_finds_what_the_walk_finds_for_every_route_and_method() -> None:
    app = create_app()
    index = app.router.routes[0]
    assert isinstance(index, RouteIndex)
    behind = app.router.routes[1:]
    paths = {r.path for r in behind if isinstance(r, APIRoute | Route)}
    tried = 0
    for path in sorted(paths):
        concrete = _concrete(path)
        for method in ("GET", "POST", "PUT", "DELETE", "PATCH", "HEAD"):
            scope = _scope(method, concrete)
            expected, kind = _walk(behind, scope)
            match, child = index.matches(dict(scope))
            if kind is Match.NONE:
                assert match is Match.NONE, (method, path)
                continue
            assert match is kind, (method, path)
            assert child["tessera.route"] is expected, (method, path)
            tried += 1
    assert tried > len(paths)  # every path, some with several methods
    for miss in ("/v1/nothing", "/v1/plans", f"/v1/plans/{uuid.uuid4()}/nothing", "/"):
        assert index.matches(_scope("GET", miss))[0] is Match.NONE or \
            _walk(behind, _scope("GET", miss))[1] is not Match.NONE



@pytest.mark.asyncio
async def test_a_read_only_session_refuses_every_write(database, plan) -> None:
    maker = make_read_sessionmaker(database.engine)
    with pytest.raises(RuntimeError, match="read-only"):
        async with session_scope(maker) as session:
            await session.execute(update(User).values(name="changed"))
    with pytest.raises(RuntimeError, match="read-only"):
        async with session_scope(maker) as session:
            user = (await session.execute(select(User).limit(1))).scalar_one()
            user.name = "changed"
            await session.flush()
    async with session_scope(maker) as session:  # and reads, as many as it likes
        names = (await session.execute(select(User.name))).scalars().all()
        again = (await session.execute(select(User.name))).scalars().all()
    assert names == again and "changed" not in names


@pytest.mark.asyncio
async def test_wrong_methods_and_unknown_paths_are_answered_as_before(client, plan) -> None:
    r = await client.patch("/v1/me", headers=plan.admin.auth)
    assert r.status_code == 405 and "GET" in r.headers["allow"]
    r = await client.get(f"/v1/plans/{plan.plan_id}/nothing", headers=plan.admin.auth)
    assert r.status_code == 404
    r = await client.get("/v1/me", headers=plan.admin.auth)
    assert r.status_code == 200 and r.json()["email"] == plan.admin.email


async def test_a_405_names_every_method_the_resource_allows(client, plan) -> None:  # noqa: ANN001
    """RFC 9110 §15.5.6: `Allow` lists the methods of every route of the path, not only the
    first route's."""
    period = f"/v1/plans/{plan.plan_id}/token-expiration"
    for method, path, allowed in [("POST", period, "DELETE, GET, PUT"),
                                  ("PATCH", "/v1/me/tokens", "GET, POST"),
                                  ("PUT", f"/v1/plans/{plan.plan_id}/users", "GET, POST"),
                                  ("PUT", "/v1/integrations", "GET, POST"),
                                  ("PATCH", "/v1/me", "GET")]:
        r = await client.request(method, path, headers=plan.admin.auth)
        assert r.status_code == 405, (method, path)
        assert r.headers["allow"] == allowed, (method, path)
        assert r.json()["error"] == "method_not_allowed"


def test_every_route_taking_the_session_runs_in_its_unit_of_work(settings) -> None:
    """`Session` is the session of the unit of work the route opens (`UnitOfWorkRoute`): a
    route made otherwise would find none, so every such route must be one."""
    app = create_app(settings)
    taking = [r for r in app.routes if isinstance(r, APIRoute) and _uses(r.dependant, get_session)]
    assert len(taking) > 30  # the management API, the OAuth endpoints, the console
    assert all(isinstance(r, UnitOfWorkRoute) for r in taking), \
        [r.path for r in taking if not isinstance(r, UnitOfWorkRoute)]
    assert any(r.path == "/v1/me" for r in taking)
