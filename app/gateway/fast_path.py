"""The gateway check answered before the application's stack.

A gateway asks about every request it passes. The answer is `service.decide` (a pure judgement
of the token's facts, from the cache or one batched read), yet the request used to cross
Starlette's error and exception middleware, FastAPI's exit stack, the router and a `Request`
object first: about half of a cached check's own CPU in process (bench/NOTES.md). This wrapper
sits in front of the application (`tessera serve`, `app.main.serve`) and answers a `GET` or
`HEAD` of exactly `/v1/gateway/check` itself, through the same `decide` and with the same
response. A lost database is answered 503 at once, by the error mapping's own
`errors.outage_response` (fail closed, without waiting out a second connection attempt).
Anything else (another method or path, a malformed scope, a repeated `Authorization`, any other
failure) goes to the application untouched, which answers it afresh.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

from app.api import errors
from app.api.responses import JSON
from app.gateway import service
from app.gateway.endpoints import CHECK, dpop_state

_METHODS = frozenset({"GET", "HEAD"})
# What a DPoP-bound token's check reads of the request the gateway asks about.
_FORWARDED = frozenset({b"dpop", b"x-forwarded-method", b"x-original-method", b"x-original-url",
                        b"x-forwarded-proto", b"x-forwarded-host", b"host", b"x-forwarded-uri",
                        b"x-original-uri"})


class FastChecks:
    """ASGI middleware around the FastAPI application of `app.main.create_app`."""

    def __init__(self, app: Any) -> None:  # noqa: ANN401 - an ASGI application
        self.app = app
        self.state = app.state

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:  # noqa: ANN401
        if scope["type"] == "http" and scope["path"] == CHECK and scope["method"] in _METHODS:
            response = await errors.fast_response(self.respond(scope), CHECK)
            if response is not None:
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)

    async def respond(self, scope: dict[str, Any]) -> JSON | None:
        decision = await self.decision(scope)
        if decision is None:
            return None
        return JSON(decision.body, status_code=decision.status, headers=decision.headers)

    async def decision(self, scope: dict[str, Any]) -> service.Decision | None:
        """The route's decision (`gateway_check`), or None for the application to answer."""
        request = _read(scope["headers"], scope["query_string"])
        if request is None:
            return None
        authorization, required, forwarded = request
        state = self.state
        # Read only for a DPoP-bound request: a bearer token's check does nothing more.
        dpop_scheme = authorization is not None and authorization[:5].lower() == "dpop "
        return await service.decide(
            authorization, required, state.clock.now(), cache=state.token_cache,
            reader=state.token_batches.reader,
            forwarded=service.Forwarded.of((forwarded or {}).get, scope["method"])
            if dpop_scheme else None,
            dpop_state=dpop_state(state) if dpop_scheme else None)

    def decided(self, headers: list[tuple[bytes, bytes]], query: bytes) -> service.Decision | None:
        """The decision for a check that needs no I/O (`service.decide_cached`: a cached bearer
        token, or no usable `Authorization`), the same as `decision`'s; None otherwise. For
        the HTTP protocol, which answers these without an ASGI request (`app.serving`)."""
        request = _read(headers, query)
        if request is None:
            return None
        state = self.state
        return service.decide_cached(request[0], request[1], state.clock.now(),
                                     cache=state.token_cache)


def _read(headers: list[tuple[bytes, bytes]], query: bytes,
          ) -> tuple[str | None, frozenset[str], dict[str, str] | None] | None:
    """(authorization, required scopes, forwarded headers) of a check, or None for the
    application to answer it (a repeated header, a malformed required scope)."""
    authorization, scope_headers = None, []
    forwarded: dict[str, str] | None = None
    for name, value in headers:
        if name == b"authorization":
            if authorization is not None:
                return None  # two of them: the application decides
            authorization = value.decode("latin-1")
        elif name == b"x-required-scope":
            scope_headers.append(value.decode("latin-1"))
        elif name in _FORWARDED:
            if forwarded is None:
                forwarded = {}
            elif name.decode() in forwarded:
                return None  # a repeated one (two DPoP proofs): the application decides
            forwarded[name.decode()] = value.decode("latin-1")
    try:
        required = service.required_scopes(
            ",".join(v for k, v in parse_qsl(query.decode("latin-1"), keep_blank_values=True)
                     if k == "scope") if query else None,
            ",".join(scope_headers))
    except service.BadScope:
        return None  # the route answers 400
    return authorization, required, forwarded
