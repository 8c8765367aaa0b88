"""The outermost layer of `tessera serve`: every request gets an id (its `X-Request-ID`, when
one came and is sane, or a new one, returned in the answer and on every log line meanwhile), is
counted and timed by route for `/metrics`, and, with the access log on, is logged in one line.

It wraps the fast paths too (`app.main.serve`), so the hottest requests count like the others,
and `quick_check` does the same for the checks the HTTP protocol answers itself (`app.serving`).
Cost, measured in `make bench` (a server with metrics off beside one with them on): see
bench/RESULTS.md.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from typing import Any

from app.api.responses import render
from app.gateway.endpoints import CHECK
from app.ops import logs, metrics

access = logging.getLogger("tessera.access")

_SANE_ID = re.compile(rb"[A-Za-z0-9._:\-]{1,128}")
# What uvicorn refuses in a header value.
_BAD_VALUE = re.compile(b"[\x00-\x08\x0a-\x1f\x7f]")
# Paths answered in front of the application: their own route label.
_FAST = frozenset({"/v1/gateway/check", "/oauth2/token", "/oauth2/introspect"})


class Observed:
    def __init__(self, app: Any, *, metrics_on: bool = True,  # noqa: ANN401 - ASGI app
                 access_log: bool = False) -> None:
        self.app = app
        self.state = getattr(app, "state", None)
        self.metrics_on, self.access_log = metrics_on, access_log
        self._decided = getattr(app, "decided", None)  # app.gateway.fast_path.FastChecks

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:  # noqa: ANN401
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        rid = _request_id(scope["headers"])
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

    def quick_check(self, method: str, query: bytes, headers: list[tuple[bytes, bytes]],
                    ) -> tuple[int, list[tuple[bytes, bytes]], bytes] | None:
        """(status, headers, body) of a gateway check that needs no I/O, as the application
        would answer it, with its request id and counted the same; None for the application to
        answer (a token to read, a DPoP proof, anything unusual) or when the access log is on
        (its line names the client as the proxy-headers middleware sees it)."""
        if self._decided is None or self.access_log:
            return None
        started = time.perf_counter()
        rid = _request_id(headers)
        token = logs.request_id.set(rid)
        try:
            decision = self._decided(headers, query)
            if decision is None:
                return None
            answer = [(name.lower().encode("latin-1"), value.encode("latin-1"))
                      for name, value in decision.headers.items()]
            body = render(decision.body)
        except Exception:  # noqa: BLE001 - whatever it is, the application's path answers it
            return None
        finally:
            logs.request_id.reset(token)
        if _BAD_VALUE.search(b"\t".join(value for _, value in answer)):
            return None  # uvicorn fails such an answer; the application's path says how
        answer += [(b"content-length", str(len(body)).encode()),
                   (b"content-type", b"application/json"), (b"x-request-id", rid.encode())]
        if self.metrics_on:
            metrics.observe_request(CHECK, method, decision.status, time.perf_counter() - started)
        return decision.status, answer, body


def _request_id(headers: list[tuple[bytes, bytes]]) -> str:
    """The request's `X-Request-ID` when it is sane, or a new one."""
    for name, value in headers:
        if name == b"x-request-id":
            return value.decode() if _SANE_ID.fullmatch(value) else uuid.uuid4().hex
    return uuid.uuid4().hex
