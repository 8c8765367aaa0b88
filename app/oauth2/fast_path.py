"""Introspection answered before the application's stack.

A resource server introspects on every request it serves. The answer is `introspection.handle`
(authenticate the caller, look the token up, judge it), yet the request used to cross
Starlette's error and exception middleware, FastAPI's exit stack, the router and a `Request`
object first: about half of a cached introspection's own CPU in process (bench/NOTES.md). This
wrapper sits in front of the application (`tessera serve`, `app.main.serve`) and answers a
`POST /oauth2/introspect` with a small form body itself, through the same `handle` and with the
same response. A lost database is answered 503 at once, by the error mapping's own
`errors.outage_response` (fail closed, without waiting out a second connection attempt).
Anything else, and any request `handle` refuses or fails on otherwise (bad credentials, a
missing token), goes to the application with the body it read handed on unchanged: the
application answers it afresh and maps the error to the wire in its one place.
"""

from __future__ import annotations

from typing import Any

from authlib.oauth2.rfc6749.errors import OAuth2Error

from app.api import errors
from app.api.responses import JSON, NO_STORE
from app.oauth2 import introspection, requests

PATH = "/oauth2/introspect"
# A larger body is left to the application, which streams it against its own limit.
_MAX_BODY = 4096


class FastIntrospection:
    """ASGI middleware around the FastAPI application of `app.main.create_app`."""

    def __init__(self, app: Any) -> None:  # noqa: ANN401 - an ASGI application
        self.app = app
        self.state = app.state

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:  # noqa: ANN401
        if not (scope["type"] == "http" and scope["path"] == PATH
                and scope["method"] == "POST"):
            await self.app(scope, receive, send)
            return
        headers = _headers(scope)
        read = await _read(receive) if headers is not None else None
        if read is not None:
            body, complete = read
            if complete:
                response = await errors.fast_response(self.respond(headers, body), PATH)
                if response is not None:
                    await response(scope, receive, send)
                    return
            receive = _replay(body, complete, receive)
        await self.app(scope, receive, send)

    async def respond(self, headers: dict[bytes, str], body: bytes) -> JSON | None:
        answer = await self.answer(headers, body)
        return JSON(answer, headers=NO_STORE) if answer is not None else None

    async def answer(self, headers: dict[bytes, str], body: bytes) -> dict[str, Any] | None:
        """The route's answer to a request it would answer 200; None when the route would
        refuse it (the application then answers). A failure is raised."""
        if not requests.is_form(headers.get(b"content-type", "")):
            return None
        try:
            form = requests.parse_form(body)
            return await introspection.handle(self.state, headers.get(b"authorization"), form,
                                              self.state.clock.now())
        except OAuth2Error:
            return None


def _headers(scope: dict[str, Any]) -> dict[bytes, str] | None:
    """The headers this path reads, or None when it should not try (a repeated one, or a body
    of unstated or too large a length)."""
    found: dict[bytes, str] = {}
    for name, value in scope["headers"]:
        if name in (b"authorization", b"content-type", b"content-length"):
            if name in found:
                return None
            found[name] = value.decode("latin-1")
        elif name == b"transfer-encoding":
            return None
    length = found.get(b"content-length", "")
    if not (length.isascii() and length.isdigit()) or int(length) > _MAX_BODY:
        return None
    return found


async def _read(receive: Any) -> tuple[bytes, bool] | None:  # noqa: ANN401
    """The body and whether it is whole, or None if the client went away while sending it.
    Reading stops past `_MAX_BODY`, whatever the server let through: the application is
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
        if size > _MAX_BODY:
            return b"".join(chunks), False


def _replay(body: bytes, complete: bool, receive: Any) -> Any:  # noqa: ANN401
    """A `receive` that hands the application the body already read (and, if that was not all
    of it, the rest from the client's own `receive`), then the client's own messages."""
    pending = [{"type": "http.request", "body": body, "more_body": not complete}]

    async def replayed() -> dict[str, Any]:
        return pending.pop() if pending else await receive()

    return replayed
