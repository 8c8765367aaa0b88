"""Finding a request's route without walking every route.

The application's router tries its routes one after the other, each with a regular expression
and, for FastAPI's routes, some bookkeeping of its own; with some fifty routes a request to one
of the last paid more for finding its route than a bare endpoint pays for all its work
(bench/NOTES.md). `RouteIndex` sits at the front of the router's table and tries only the
routes whose path has as many segments as the request's and the same literal segments where
they have literals (usually one route, or one per method): the same routes, matched by their
own `matches`, in their own order, so the answer is the one the full walk would have given.
The routes stay in the table behind it too, where the OpenAPI document and `url_for` find
them, and where a request no route takes (a 404, a redirect of a trailing slash) is looked for
as before.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from starlette._utils import get_route_path
from starlette.exceptions import HTTPException
from starlette.routing import BaseRoute, Match, NoMatchFound
from starlette.types import Receive, Scope, Send

from app.api.deps import SESSION, get_session, unit_of_work
from app.api.openapi import operation_id
from app.api.responses import JSON
from app.api.solving import Handler, solver

_CHOSEN = "tessera.route"
_ALLOWED = "tessera.allowed"

# A route: where its literal segments are, and what they say.
_Shape = tuple[tuple[int, str], ...]


def _shape(path: str) -> tuple[int, _Shape] | None:
    """Segment count and literal segments of a route's path; None when a parameter may span
    several segments (`{name:path}`) or shares a segment with text, which only its regular
    expression can tell."""
    segments = path.split("/")
    literals = []
    for i, segment in enumerate(segments):
        if "{" in segment:
            if not (segment.startswith("{") and segment.endswith("}")
                    and segment.count("{") == 1 and ":path" not in segment):
                return None
            continue
        literals.append((i, segment))
    return len(segments), tuple(literals)


class RouteIndex(BaseRoute):
    def __init__(self, routes: Iterable[BaseRoute]) -> None:
        shaped: list[tuple[int, BaseRoute, int | None, _Shape]] = []
        for position, route in enumerate(routes):
            path = getattr(route, "path", None)
            shape = _shape(path) if isinstance(path, str) else None
            # A route whose path the index cannot read is tried for every request, in its turn.
            count, literals = shape if shape is not None else (None, ())
            shaped.append((position, route, count, literals))
        anywhere = [entry for entry in shaped if entry[2] is None]
        self._anywhere = [(route, literals) for _p, route, _c, literals in anywhere]
        self._buckets: dict[int, list[tuple[BaseRoute, _Shape]]] = {}
        for count in {entry[2] for entry in shaped if entry[2] is not None}:
            entries = sorted([e for e in shaped if e[2] == count] + anywhere,
                             key=lambda e: e[0])
            self._buckets[count] = [(route, literals) for _p, route, _c, literals in entries]

    def matches(self, scope: dict[str, Any]) -> tuple[Match, dict[str, Any]]:
        if scope["type"] != "http":
            return Match.NONE, {}
        segments = get_route_path(scope).split("/")
        partial: tuple[BaseRoute, dict[str, Any]] | None = None
        allowed: set[str] = set()
        for route, literals in self._buckets.get(len(segments), self._anywhere):
            for i, literal in literals:
                if segments[i] != literal:
                    break
            else:
                match, child = route.matches(scope)
                if match is Match.FULL:
                    child[_CHOSEN] = route
                    return match, child
                if match is Match.PARTIAL:
                    allowed.update(getattr(route, "methods", None) or ())
                    if partial is None:
                        partial = (route, child)
        if partial is not None:
            # The path is a resource, the method not one of its routes': RFC 9110 §15.5.6,
            # the 405 names every method the resource allows, not the first route's.
            partial[1][_CHOSEN] = partial[0]
            partial[1][_ALLOWED] = allowed
            return Match.PARTIAL, partial[1]
        return Match.NONE, {}

    async def handle(self, scope: dict[str, Any], receive: Any, send: Any) -> None:  # noqa: ANN401
        allowed = scope.pop(_ALLOWED, None)
        route = scope.pop(_CHOSEN)
        if allowed:
            raise HTTPException(status_code=405, headers={"Allow": ", ".join(sorted(allowed))})
        direct = getattr(route, "direct", None)
        if direct is not None:
            await direct(scope, receive, send)
        else:
            await route.handle(scope, receive, send)

    def url_path_for(self, name: str, /, **path_params: Any) -> Any:  # noqa: ANN401
        raise NoMatchFound(name, path_params)  # the routes behind the index answer it


def _uses(dependant: Dependant, call: Any) -> bool:  # noqa: ANN401
    return dependant.call is call or any(_uses(d, call) for d in dependant.dependencies)


class UnitOfWorkRoute(APIRoute):
    """A route whose handler (or a dependency of it) takes the `Session` runs inside its unit
    of work (`app.api.deps.unit_of_work`): committed when the handler has made its response and
    before that response is sent, rolled back when it raises. The same as a dependency with
    `yield` and `scope="function"`, without FastAPI's exit stacks and shielded cancel scope
    for it: a third of what `/v1/me` cost on top of its own work (bench/NOTES.md). Its
    parameters and dependencies are solved by a plan made once (`app.api.solving`)."""

    solved: bool = False
    """Whether its parameters and dependencies are solved by a plan (`app.api.solving`)."""
    direct: Callable[[Scope, Receive, Send], Awaitable[None]] | None = None
    """The route as an ASGI application for `RouteIndex`, which has matched its path and
    method, when its plan needs none of what FastAPI's request wrapper sets up: no exit
    stacks (no dependency has `yield`, and no dependency overrides may send a request to
    FastAPI's handler), and no exception handling of its own, since the application's
    `ExceptionMiddleware`, just outside the router, maps an error with the same handlers
    (`app.api.errors`)."""

    def get_route_handler(self) -> Handler:
        fastapi_handler = super().get_route_handler()
        solved = solver(self, fastapi_handler)
        self.solved = solved is not None
        handler = self._in_unit_of_work(solved or fastapi_handler)
        # With an overrides provider a request may go to FastAPI's handler after all
        # (`app.api.solving`), which needs the request wrapper's exit stacks.
        if solved is not None and self.dependency_overrides_provider is None:
            async def direct(scope: Scope, receive: Receive, send: Send) -> None:
                response = await handler(Request(scope, receive, send))
                await response(scope, receive, send)

            self.direct = direct
        return handler

    def fastapi_handler(self) -> Handler:
        """The same route's handler with FastAPI solving its parameters and dependencies: what
        the tests compare the plan's answers with."""
        return self._in_unit_of_work(super().get_route_handler())

    def _in_unit_of_work(self, handler: Handler) -> Handler:
        if not _uses(self.dependant, get_session):
            return handler

        async def in_unit_of_work(request: Request) -> Response:
            async with unit_of_work(request) as session:
                request.scope[SESSION] = session
                return await handler(request)

        return in_unit_of_work


def api_router(**kwargs: Any) -> APIRouter:  # noqa: ANN401
    """A router for one of the application's packages. Its routes are put into the
    application's table as they are (`app.main`), not through `include_router`, so they are
    made here with what the application would have given them: its JSON responses and its
    operation ids; and each runs in its unit of work (`UnitOfWorkRoute`)."""
    return APIRouter(generate_unique_id_function=operation_id, default_response_class=JSON,
                     route_class=UnitOfWorkRoute, **kwargs)
