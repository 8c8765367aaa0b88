"""A route's parameters and dependencies, solved by a plan made once.

FastAPI solves a route's dependencies anew for every request: for each dependency it looks up
whether the callable is a generator or a coroutine, computes a cache key from its security
scopes, checks for overrides, and builds query parameters and a scratch `Response` whether the
route takes them or not. For the management API's reads that bookkeeping cost more than the
request's own work outside the database (bench/NOTES.md, fourteenth pass). `solver` looks at a
route once, when it is made, and returns a handler doing the same things in the same order:

1. the body read and parsed as JSON (a malformed one answered `json_invalid` at once);
2. the dependencies, depth first, each called once per request (a dependency two others take
   is shared, as FastAPI's cache shares it), so a dependency that refuses (the caller's
   credentials) refuses before any parameter is looked at;
3. the path, query, header and cookie parameters and the body validated by FastAPI's own
   functions, every error gathered into one `RequestValidationError`;
4. the endpoint called, and what it returns rendered as FastAPI would: a `Response` as it is,
   anything else validated against the route's response model and serialized by it.

A route it cannot read this way (a dependency with `yield`, a plain `def`, security scopes, a
form body, a streamed answer, a parameter FastAPI fills itself like `Response` or
`BackgroundTasks`) keeps FastAPI's handler, as does every request while dependency overrides
are set. The answer is the same either way; the tests run the whole API through both
(`tests/api/test_solving.py`).
"""

from __future__ import annotations

import email.message
import inspect
import json
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from fastapi import params
from fastapi.datastructures import DefaultPlaceholder
from fastapi.dependencies.models import Dependant
from fastapi.dependencies.utils import request_body_to_args, request_params_to_args
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute, serialize_response
from fastapi.utils import is_body_allowed_for_status_code
from pydantic_core import PydanticUndefined
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

Handler = Callable[[Request], Coroutine[Any, Any, Response]]

_UNDEFINED = PydanticUndefined  # FastAPI's mark of a body that is not there


@dataclass(frozen=True, slots=True)
class _Step:
    """One dependency: where its value goes, and what it needs first."""

    name: str | None
    call: Callable[..., Coroutine[Any, Any, Any]]
    request_name: str | None
    needs: tuple[_Step, ...]
    cached: bool


def _plainly_async(call: Any) -> bool:  # noqa: ANN401
    return inspect.iscoroutinefunction(call) and not inspect.isasyncgenfunction(call)


def _beyond_plan(dependant: Dependant) -> bool:
    """Whether the callable is not a plain coroutine function, or takes something only
    FastAPI's handler fills (a websocket, the connection, a `Response` to add headers to,
    `BackgroundTasks`, security scopes)."""
    return bool(not _plainly_async(dependant.call)
                or dependant.websocket_param_name or dependant.http_connection_param_name
                or dependant.response_param_name or dependant.background_tasks_param_name
                or dependant.security_scopes_param_name or dependant.own_oauth_scopes
                or dependant.parent_oauth_scopes)


def _step(dependant: Dependant) -> _Step | None:
    """A dependency's plan, or None if it takes anything but the request and other such
    dependencies."""
    if (_beyond_plan(dependant) or dependant.path_params or dependant.query_params
            or dependant.header_params or dependant.cookie_params or dependant.body_params
            or dependant.concurrency is not None):
        return None
    needs = []
    for sub in dependant.dependencies:
        step = _step(sub)
        if step is None:
            return None
        needs.append(step)
    return _Step(dependant.name, dependant.call, dependant.request_param_name, tuple(needs),
                 dependant.use_cache)


async def _solved(step: _Step, request: Request, cache: dict[Any, Any]) -> Any:  # noqa: ANN401
    """The values of `step`'s own dependencies, as FastAPI solves them: each dependency's own
    dependencies first (so one asking not to be cached is called again even under a cached
    one), then the dependency itself, from the request's cache when it may be."""
    kwargs: dict[str, Any] = {}
    for need in step.needs:
        sub = await _solved(need, request, cache)
        if need.cached and need.call in cache:
            value = cache[need.call]
        else:
            value = await need.call(**sub)
            cache.setdefault(need.call, value)
        if need.name is not None:
            kwargs[need.name] = value
    if step.request_name is not None:
        kwargs[step.request_name] = request
    return kwargs


def _json_body(content_type: str | None, strict: bool) -> bool:
    """Whether FastAPI would parse a body with this content type as JSON."""
    if not content_type:
        return not strict
    message = email.message.Message()
    message["content-type"] = content_type
    if message.get_content_maintype() != "application":
        return False
    subtype = message.get_content_subtype()
    return subtype == "json" or subtype.endswith("+json")


async def _read_body(request: Request, strict: bool) -> Any:  # noqa: ANN401
    """The body as FastAPI's handler reads it for a JSON body parameter."""
    try:
        raw = await request.body()
        if not raw:
            return _UNDEFINED
        if _json_body(request.headers.get("content-type"), strict):
            return await request.json()
        return raw
    except json.JSONDecodeError as exc:
        raise RequestValidationError(
            [{"type": "json_invalid", "loc": ("body", exc.pos), "msg": "JSON decode error",
              "input": {}, "ctx": {"error": exc.msg}}], body=exc.doc) from exc
    except HTTPException:
        raise
    except Exception as exc:
        raise HTTPException(status_code=400,
                            detail="There was an error parsing the body") from exc


def solver(route: APIRoute, fallback: Handler) -> Handler | None:  # noqa: C901
    """The route's handler solved by a plan made now, or None where FastAPI's handler must
    stay (`fallback`, also taken by each request while dependency overrides are set)."""
    dependant = route.dependant
    body_field = route.body_field
    if (route.is_sse_stream or route.is_json_stream or _beyond_plan(dependant)
            or (body_field is not None and isinstance(body_field.field_info, params.Form))):
        return None
    top = _step(Dependant(dependencies=dependant.dependencies, call=_nothing,
                          request_param_name=dependant.request_param_name))
    if top is None:
        return None
    endpoint = dependant.call
    overrides = route.dependency_overrides_provider
    path_params, query_params = dependant.path_params, dependant.query_params
    header_params, cookie_params = dependant.header_params, dependant.cookie_params
    body_params, embed = dependant.body_params, route._embed_body_fields
    strict = route.strict_content_type
    strict = strict.value if isinstance(strict, DefaultPlaceholder) else strict
    response_field = route.response_field
    response_class = route.response_class
    dump_json = response_field is not None and isinstance(response_class, DefaultPlaceholder)
    if isinstance(response_class, DefaultPlaceholder):
        response_class = response_class.value
    status_code = route.status_code
    rendering = {
        "include": route.response_model_include, "exclude": route.response_model_exclude,
        "by_alias": route.response_model_by_alias,
        "exclude_unset": route.response_model_exclude_unset,
        "exclude_defaults": route.response_model_exclude_defaults,
        "exclude_none": route.response_model_exclude_none,
    }

    async def solved(request: Request) -> Response:
        if overrides is not None and overrides.dependency_overrides:
            return await fallback(request)
        body = await _read_body(request, strict) if body_field is not None else _UNDEFINED
        values = await _solved(top, request, {})
        errors: list[Any] = []
        for fields, received in ((path_params, request.path_params),
                                 (query_params, query_params and request.query_params),
                                 (header_params, header_params and request.headers),
                                 (cookie_params, cookie_params and request.cookies)):
            if fields:
                found, wrong = request_params_to_args(fields, received)
                values.update(found)
                errors += wrong
        if body_params:
            found, wrong = await request_body_to_args(
                body_fields=body_params,
                received_body=body,
                embed_body_fields=embed)
            values.update(found)
            errors += wrong
        if errors:
            raise RequestValidationError(errors, body=None if body is _UNDEFINED else body)
        answer = await endpoint(**values)
        if isinstance(answer, Response):
            return answer
        content = await serialize_response(field=response_field, response_content=answer,
                                           dump_json=dump_json, **rendering)
        extra = {"status_code": status_code} if status_code else {}
        response = Response(content=content, media_type="application/json", **extra) \
            if dump_json else response_class(content, **extra)
        if not is_body_allowed_for_status_code(response.status_code):
            response.body = b""
        return response

    return solved


async def _nothing() -> None:
    """The root of a route's dependency plan (the endpoint itself is called with the values)."""
