"""The token endpoint and introspection answered before the application's stack.

Integrations call the token endpoint and resource servers introspect on every request they
serve. The answers are `token_endpoint.handle` and `introspection.handle` (authenticate the
client, then grant or look up and judge), yet each request used to cross Starlette's error and
exception middleware, FastAPI's exit stack, the router and a `Request` object first: about half
of a cached introspection's own CPU in process (bench/NOTES.md). This wrapper sits in front of
the application (`tessera serve`, `app.main.serve`) and answers a `POST` of either with a form
body of at most 4 KiB itself: through the same `handle`, with the same response, and, when
`handle` raises, with the answer the application's error mapping gives (`errors.
failure_response`: the RFC 6749 error, or the last resort's 409, 503 or 500). A request is
never run twice: one the wrapper does not take (another method, a body of unstated or larger
size) goes to the application as it came, the part of the body already read handed on first.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from app.api import errors
from app.api.responses import JSON, NO_STORE
from app.oauth2 import introspection, requests, token_endpoint

Handler = Callable[..., Awaitable[dict[str, Any]]]
HANDLERS: dict[str, Handler] = {
    "/oauth2/token": token_endpoint.handle,
    "/oauth2/introspect": introspection.handle,
}
# A larger body is left to the application, which streams it against its own limit.
MAX_BODY = 4096


class FastForms:
    """ASGI middleware around the FastAPI application of `app.main.create_app`."""

    def __init__(self, app: Any) -> None:  # noqa: ANN401 - an ASGI application
        self.app = app
        self.state = app.state

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:  # noqa: ANN401
        handler = HANDLERS.get(scope["path"]) if scope["type"] == "http" else None
        if handler is None or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        headers = _headers(scope)
        if headers is None:
            await self.app(scope, receive, send)
            return
        read = await _read(receive)
        if read is None:
            return  # the client went away while sending its body: nobody to answer
        body, complete = read
        if not complete:
            await self.app(scope, _replay(body, receive), send)
            return
        client = scope.get("client")
        response = await self.respond(handler, headers, body, scope["path"],
                                      client[0] if client else None)
        await response(scope, receive, send)

    async def respond(self, handler: Handler, headers: dict[bytes, str], body: bytes,
                      path: str, source: str | None = None) -> JSON:
        try:
            requests.require_form(headers.get(b"content-type", ""))
            extra = {"dpop_header": headers[b"dpop"]} if b"dpop" in headers else {}
            answer = await handler(self.state, headers.get(b"authorization"),
                                   requests.parse_form(body), self.state.clock.now(),
                                   source=source, **extra)
        except Exception as exc:  # noqa: BLE001 - mapped as the application maps it
            return errors.failure_response(exc, "POST", path)
        return JSON(answer, headers=NO_STORE)

    def introspected(self, headers: list[tuple[bytes, bytes]], body: bytes,
                     ) -> dict[str, Any] | None:
        """The answer to an introspection that needs no I/O (`introspection.handle_cached`),
        the same as `respond`'s; None otherwise, errors included. For the HTTP protocol, which
        answers these without an ASGI request (`app.serving`)."""
        found = _read_headers(headers)
        if found is None or b"dpop" in found:
            return None
        try:
            requests.require_form(found.get(b"content-type", ""))
            form = requests.parse_form(body)
        except Exception:  # noqa: BLE001 - the application's path says what is wrong
            return None
        return introspection.handle_cached(self.state, found.get(b"authorization"), form,
                                           self.state.clock.now())


def _headers(scope: dict[str, Any]) -> dict[bytes, str] | None:
    """The headers this path reads, or None when it should not try (a repeated one, or a body
    of unstated or too large a length)."""
    return _read_headers(scope["headers"])


def _read_headers(headers: list[tuple[bytes, bytes]]) -> dict[bytes, str] | None:
    found: dict[bytes, str] = {}
    for name, value in headers:
        if name in (b"authorization", b"content-type", b"content-length", b"dpop"):
            if name in found:
                return None
            found[name] = value.decode("latin-1")
        elif name == b"transfer-encoding":
            return None
    length = found.get(b"content-length", "")
    if not (length.isascii() and length.isdigit()) or int(length) > MAX_BODY:
        return None
    return found


async def _read(receive: Any) -> tuple[bytes, bool] | None:  # noqa: ANN401
    """The body and whether it is whole, or None if the client went away while sending it.
    Reading stops past `MAX_BODY`, whatever the server let through: the application is
    handed the part read and reads the rest itself, against its own limit."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunk = message.get("body", b"")
        chunks.append(chunk)
        size += len(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks), True
        if size > MAX_BODY:
            return b"".join(chunks), False


def _replay(start: bytes, receive: Any) -> Any:  # noqa: ANN401
    """A `receive` that hands the application the start of the body already read, then the
    rest and the client's other messages from the client's own `receive`."""
    pending = [{"type": "http.request", "body": start, "more_body": True}]

    async def replayed() -> dict[str, Any]:
        return pending.pop() if pending else await receive()

    return replayed
