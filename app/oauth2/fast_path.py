"""Introspection of a cached token by a cached client, answered before the application's stack.

As for the gateway check (`app/gateway/fast_path.py`): a resource server introspects the same
tokens all day, with the same credentials, and for those the answer is a pure function of cached
facts and the clock (`introspection.answer_for`). This wrapper answers a `POST
/oauth2/introspect` whose client credentials and token the cache both hold, with the answer and
response the route gives. Anything else (a miss, a client the cache does not know, a malformed
or oversized body, the cache not serving) goes to the application, with the body it read
handed on unchanged; the application authenticates, reads and maps errors in its one place.
"""

from __future__ import annotations

from typing import Any

from authlib.oauth2.rfc6749.errors import OAuth2Error

from app import credentials
from app.api.responses import JSON, NO_STORE
from app.oauth2 import clients, introspection, requests

PATH = "/oauth2/introspect"
# A larger body is left to the application, which streams it against its own limit.
_MAX_BODY = 4096


class CachedIntrospection:
    """ASGI middleware around the FastAPI application of `app.main.create_app`."""

    def __init__(self, app: Any) -> None:  # noqa: ANN401 - an ASGI application
        self.app = app
        self.state = app.state

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:  # noqa: ANN401
        if not (scope["type"] == "http" and scope["path"] == PATH and scope["method"] == "POST"
                and self.state.token_cache is not None and self.state.token_cache.serving):
            await self.app(scope, receive, send)
            return
        headers = _headers(scope)
        body = None
        if headers is not None:
            body = await _read(receive)
            if body is not None and (answer := self.cached(headers, body)) is not None:
                await JSON(answer, headers=NO_STORE)(scope, receive, send)
                return
        await self.app(scope, _replay(body, receive) if body is not None else receive, send)

    def cached(self, headers: dict[bytes, str], body: bytes) -> dict[str, Any] | None:
        """The route's answer when the client and the token are both cached, else None."""
        if not requests.is_form(headers.get(b"content-type", "")):
            return None
        try:
            form = requests.parse_form(body)
        except OAuth2Error:
            return None
        cache = self.state.token_cache
        key = clients.credentials_key(headers.get(b"authorization"), form, "introspect")
        client = cache.get_client(key) if key is not None else None
        token = form.get("token")
        if client is None or not client.integration.can_introspect or not token:
            return None
        stored = cache.get(credentials.digest(token))
        if stored is None:
            return None
        return introspection.answer_for(client.integration, stored, self.state.clock.now())


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
