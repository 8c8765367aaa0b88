"""Introspection answered before the application's stack.

A resource server introspects on every request it serves. The answer is `introspection.handle`
(authenticate the caller, look the token up, judge it), yet the request used to cross
Starlette's error and exception middleware, FastAPI's exit stack, the router and a `Request`
object first: about half of a cached introspection's own CPU in process (bench/NOTES.md). This
wrapper sits in front of the application (`tessera serve`, `app.main.serve`) and answers a
`POST /oauth2/introspect` with a small form body itself, through the same `handle` and with the
same response. Anything else, and any request `handle` refuses or fails on (bad credentials, a
missing token, a lost database), goes to the application with the body it read handed on
unchanged: the application answers it afresh and maps the error to the wire in its one place.
"""

from __future__ import annotations

from typing import Any

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
        body = None
        if headers is not None:
            body = await _read(receive)
            if body is not None and (answer := await self.answer(headers, body)) is not None:
                await JSON(answer, headers=NO_STORE)(scope, receive, send)
                return
        await self.app(scope, _replay(body, receive) if body is not None else receive, send)

    async def answer(self, headers: dict[bytes, str], body: bytes) -> dict[str, Any] | None:
        """The route's answer to a request it would answer 200, else None."""
        if not requests.is_form(headers.get(b"content-type", "")):
            return None
        try:
            form = requests.parse_form(body)
            return await introspection.handle(self.state, headers.get(b"authorization"), form,
                                              self.state.clock.now())
        except Exception:  # noqa: BLE001 - refusals and failures are the application's to answer
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
    if not length.isdigit() or int(length) > _MAX_BODY:
        return None
    return found


async def _read(receive: Any) -> bytes | None:  # noqa: ANN401
    """The whole body, or None if the client went away while sending it."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes, receive: Any) -> Any:  # noqa: ANN401
    """A `receive` that hands the application the body already read, then the client's own."""
    pending = [{"type": "http.request", "body": body, "more_body": False}]

    async def replayed() -> dict[str, Any]:
        return pending.pop() if pending else await receive()

    return replayed
