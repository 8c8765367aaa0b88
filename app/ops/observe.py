"""The outermost layer of `tessera serve`: every request gets an id (its `X-Request-ID`, when
one came and is sane, or a new one, returned in the answer and on every log line meanwhile), is
counted and timed by route for `/metrics`, and, with the access log on, is logged in one line.

It wraps the fast paths too (`app.main.serve`), so the hottest requests count like the others,
and `quick_check` and `quick_introspection` do the same for the requests the HTTP protocol
answers itself (`app.serving`).
Cost, measured in `make bench` (a server with metrics off beside one with them on): see
bench/RESULTS.md.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable, Iterator
from typing import Any

from app.api.responses import NO_STORE, render
from app.gateway.endpoints import CHECK
from app.ops import logs, metrics

access = logging.getLogger("tessera.access")

_SANE_ID = re.compile(rb"[A-Za-z0-9._:\-]{1,128}")
# What uvicorn refuses in a header value.
_BAD_VALUE = re.compile(b"[\x00-\x08\x0a-\x1f\x7f]")
# Paths answered in front of the application: their own route label.
INTROSPECT = "/oauth2/introspect"
_FAST = frozenset({CHECK, "/oauth2/token", INTROSPECT})


class Observed:
    def __init__(self, app: Any, *, metrics_on: bool = True,  # noqa: ANN401 - ASGI app
                 access_log: bool = False) -> None:
        self.app = app
        self.state = getattr(app, "state", None)
        self.metrics_on, self.access_log = metrics_on, access_log
        # What the fast paths answer without I/O (app/gateway/fast_path.py, app/oauth2/...).
        self._decided = _find(app, "decided")
        self._introspected = _find(app, "introspected")

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
        answer (a token to read, a DPoP proof, anything unusual)."""
        if self._decided is None:
            return None

        def decided() -> tuple[int, dict[str, str], Any] | None:
            decision = self._decided(headers, query)
            return None if decision is None else \
                (decision.status, decision.headers, decision.body)

        return self._quick(CHECK, method, headers, decided)

    def quick_introspection(self, headers: list[tuple[bytes, bytes]], body: bytes,
                            ) -> tuple[int, list[tuple[bytes, bytes]], bytes] | None:
        """The same for an introspection (`POST /oauth2/introspect`, its form `body`)."""
        if self._introspected is None:
            return None

        def introspected() -> tuple[int, dict[str, str], Any] | None:
            answer = self._introspected(headers, body)
            return None if answer is None else (200, NO_STORE, answer)

        return self._quick(INTROSPECT, "POST", headers, introspected)

    def _quick(self, route: str, method: str, headers: list[tuple[bytes, bytes]],
               answer_of: Callable[[], tuple[int, dict[str, str], Any] | None],
               ) -> tuple[int, list[tuple[bytes, bytes]], bytes] | None:
        """Not with the access log on: its line names the client as the proxy-headers
        middleware sees it, which only the application's path does."""
        if self.access_log:
            return None
        started = time.perf_counter()
        rid = _request_id(headers)
        token = logs.request_id.set(rid)
        try:
            answer = answer_of()
            if answer is None:
                return None
            status, given, content = answer
            sent = [(name.lower().encode("latin-1"), value.encode("latin-1"))
                    for name, value in given.items()]
            body = render(content)
        except Exception:  # noqa: BLE001 - whatever it is, the application's path answers it
            return None
        finally:
            logs.request_id.reset(token)
        if _BAD_VALUE.search(b"\t".join(value for _, value in sent)):
            return None  # uvicorn fails such an answer; the application's path says how
        sent += [(b"content-length", str(len(body)).encode()),
                 (b"content-type", b"application/json"), (b"x-request-id", rid.encode())]
        if self.metrics_on:
            metrics.observe_request(route, method, status, time.perf_counter() - started)
        return status, sent, body


def _find(app: Any, name: str) -> Any:  # noqa: ANN401
    """Attribute `name` of the first ASGI application in the chain from `app` inward (each
    middleware's `.app`) that has one, or None."""
    return next((getattr(a, name) for a in _chain(app) if getattr(a, name, None) is not None),
                None)


def observed_in(app: Any) -> Observed | None:  # noqa: ANN401
    """The `Observed` layer in the chain from `app` inward (under whatever uvicorn wrapped it
    in: its proxy-headers middleware), or None."""
    return next((a for a in _chain(app) if isinstance(a, Observed)), None)


def _chain(app: Any) -> Iterator[Any]:  # noqa: ANN401
    for _ in range(8):
        if app is None:
            return
        yield app
        app = getattr(app, "app", None)


def _request_id(headers: list[tuple[bytes, bytes]]) -> str:
    """The request's `X-Request-ID` when it is sane, or a new one: 128 random bits in hex
    (`uuid.uuid4().hex` takes 2.1 µs, this 0.45)."""
    for name, value in headers:
        if name == b"x-request-id":
            return value.decode() if _SANE_ID.fullmatch(value) else os.urandom(16).hex()
    return os.urandom(16).hex()
