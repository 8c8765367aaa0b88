"""The gateway check answered from the token cache before the application's stack.

A gateway asks about every request it passes, and on a busy one nearly every token is cached.
For those, the answer is a pure function of the cached facts and the clock (`service.judge`),
yet the request used to cross Starlette's error and exception middleware, FastAPI's exit stack,
the router and a `Request` object first: about half of a cached check's own CPU in process
(bench/NOTES.md). This wrapper sits in front of the application (`tessera serve`) and answers a
`GET`/`HEAD` of exactly `/v1/gateway/check` whose bearer token the cache holds, with the same
decision and the same response the route would give. Everything else (no token, a miss, a
malformed scope, the cache not serving, any error) goes to the application untouched, which
reads it afresh and maps errors to the wire in its one place.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

from app import credentials
from app.api.responses import JSON
from app.gateway import service
from app.gateway.endpoints import CHECK

_METHODS = frozenset({"GET", "HEAD"})


class CachedChecks:
    """ASGI middleware around the FastAPI application of `app.main.create_app`."""

    def __init__(self, app: Any) -> None:  # noqa: ANN401 - an ASGI application
        self.app = app
        self.state = app.state

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:  # noqa: ANN401
        if scope["type"] == "http" and scope["path"] == CHECK and scope["method"] in _METHODS:
            decision = self.cached(scope)
            if decision is not None:
                response = JSON(decision.body, status_code=decision.status,
                                headers=decision.headers)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def cached(self, scope: dict[str, Any]) -> service.Decision | None:
        """The route's decision when the token's facts are cached, else None (the application
        answers). The same steps as `gateway_check` and `service.decide`, none skipped."""
        cache = self.state.token_cache
        if cache is None or not cache.serving:
            return None
        authorization, scope_headers = None, []
        for name, value in scope["headers"]:
            if name == b"authorization":
                if authorization is not None:
                    return None  # two of them: the application decides
                authorization = value.decode("latin-1")
            elif name == b"x-required-scope":
                scope_headers.append(value.decode("latin-1"))
        secret = service.bearer_token(authorization)
        if secret is None:
            return None
        stored = cache.get(credentials.digest(secret))
        if stored is None or stored.kind not in service.BEARER_TOKEN_KINDS:
            return None
        query = scope["query_string"]
        try:
            required = service.required_scopes(
                ",".join(v for k, v in parse_qsl(query.decode("latin-1"), keep_blank_values=True)
                         if k == "scope") if query else None,
                ",".join(scope_headers))
        except service.BadScope:
            return None
        return service.judge(stored, required, self.state.clock.now())
