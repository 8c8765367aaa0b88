"""Headers every answer of the application carries, whatever route made it.

- `Cache-Control: no-store` on every `/v1`, `/oauth2` and `/console` answer that does not set
  its own: they carry secrets (a new token, a client secret), token data or a caller's
  identity, and no cache between the caller and Tessera may keep them (RFC 9111 §5.2.2.5). The
  RFC 8414 metadata sets its own (public, short-lived).
- Anti-framing and no sniffing on every HTML page, the API documentation included: no page of
  Tessera is meant to be shown inside another site's frame (clickjacking). (JSON answers are
  left as the hot paths in front of the application send them, so both answer alike.)

The hot paths answered in front of the application (`app.main.serve`) set `no-store`
themselves.
"""

from __future__ import annotations

from typing import Any

_PRIVATE = ("/v1/", "/oauth2/", "/console/")
_ALWAYS = [
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
]
_NO_FRAMES = (b"content-security-policy", b"frame-ancestors 'none'")
_NO_STORE = (b"cache-control", b"no-store")


class SafeHeaders:
    def __init__(self, app: Any) -> None:  # noqa: ANN401 - an ASGI application
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:  # noqa: ANN401
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        private = scope["path"].startswith(_PRIVATE)

        async def _send(message: Any) -> None:  # noqa: ANN401
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                present = {name.lower(): value for name, value in headers}
                extra = []
                if present.get(b"content-type", b"").startswith(b"text/html"):
                    extra = [h for h in _ALWAYS if h[0] not in present]
                    if _NO_FRAMES[0] not in present:
                        extra.append(_NO_FRAMES)
                if private and _NO_STORE[0] not in present:
                    extra.append(_NO_STORE)
                if extra:
                    message = {**message, "headers": headers + extra}
            await send(message)

        await self.app(scope, receive, _send)
