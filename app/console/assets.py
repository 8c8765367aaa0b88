"""The console's stylesheet and script, served by Tessera itself (the pages' Content Security
Policy allows nothing from elsewhere)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from starlette.responses import Response

from app.api.routing import api_router
from app.console.web import PREFIX
from app.errors import NotFound

router = api_router(tags=["console"], include_in_schema=False)

_TYPES = {"console.css": "text/css; charset=utf-8",
          "console.js": "text/javascript; charset=utf-8"}
_FILES = {name: (Path(__file__).parent / "static" / name).read_bytes() for name in _TYPES}
_ETAGS = {name: '"' + hashlib.sha256(body).hexdigest()[:16] + '"' for name, body in _FILES.items()}


@router.get(PREFIX + "/static/{name}")
async def asset(name: str) -> Response:
    if name not in _FILES:
        raise NotFound("no such file")
    return Response(_FILES[name], media_type=_TYPES[name], headers={
        "ETag": _ETAGS[name], "Cache-Control": "public, max-age=3600",
        "X-Content-Type-Options": "nosniff"})
