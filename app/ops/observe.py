"""The outermost layer of `tessera serve`: every request gets an id (its `X-Request-ID`, when
one came and is sane, or a new one, returned in the answer and on every log line meanwhile), is
counted and timed by route for `/metrics`, and, with the access log on, is logged in one line.

It wraps the fast paths too (`app.main.serve`), so the hottest requests count like the others.
Cost, measured in `make bench` (a server with metrics off beside one with them on): see
bench/RESULTS.md.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from typing import Any

from app.ops import logs, metrics

access = logging.getLogger("tessera.access")

_SANE_ID = re.compile(rb"[A-Za-z0-9._:\-]{1,128}")
# Paths answered in front of the application: their own route label.
_FAST = frozenset({"/v1/gateway/check", "/oauth2/token", "/oauth2/introspect"})


class Observed:
    def __init__(self, app: Any, *, metrics_on: bool = True,  # noqa: ANN401 - ASGI app
                 access_log: bool = False) -> None:
        self.app = app
        self.state = getattr(app, "state", None)
        self.metrics_on, self.access_log = metrics_on, access_log

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:  # noqa: ANN401
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        given = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                given = value
                break
        rid = given.decode() if given is not None and _SANE_ID.fullmatch(given) \
            else uuid.uuid4().hex
        token = logs.request_id.set(rid)
        header = (b"x-request-id", rid.encode())
        status = 500

        async def _send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message = {**message, "headers": [*message.get("headers", ()), header]}
            await send(message)

        try:
            await self.app(scope, receive, _send)
        finally:
            seconds = time.perf_counter() - started
            path = scope["path"]
            route = path if path in _FAST else getattr(scope.get("route"), "path", "unmatched")
            if self.metrics_on:
                metrics.observe_request(route, scope["method"], status, seconds)
            if self.access_log:
                client = scope.get("client")
                access.info("%s %s %s", scope["method"], path, status, extra={
                    "route": route, "status": status, "duration_ms": round(seconds * 1000, 2),
                    "client": client[0] if client else None})
            logs.request_id.reset(token)
