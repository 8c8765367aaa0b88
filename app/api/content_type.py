"""The management API speaks JSON: any other request body is refused before parsing (415).

The gateway check is exempt: it reads headers only, and a gateway (Envoy's ext_authz) may
forward the original request's method and body, whatever they are.
"""

from __future__ import annotations

from typing import Any

from app.api.responses import JSON

_BODY_METHODS = {"POST", "PUT", "PATCH"}
_EXEMPT = "/v1/gateway/check"


class JSONBodiesOnly:
    def __init__(self, app: Any, prefix: str = "/v1/") -> None:
        self.app = app
        self.prefix = prefix

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if (scope["type"] == "http" and scope["method"] in _BODY_METHODS
                and scope["path"].startswith(self.prefix)
                and not scope["path"].startswith(_EXEMPT)):
            headers = dict(scope["headers"])
            has_body = headers.get(b"content-length", b"0") != b"0" or \
                b"transfer-encoding" in headers
            ctype = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
            if has_body and ctype != b"application/json":
                response = JSON({"error": "unsupported_media_type",
                                 "message": "the request body must be application/json"},
                                status_code=415)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
