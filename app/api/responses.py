"""A JSON response rendered with orjson: the hot paths (introspection, gateway check) use it."""

from __future__ import annotations

import json
from typing import Any

import orjson
from starlette.responses import JSONResponse


class JSON(JSONResponse):
    """`JSONResponse` rendered by orjson. (A `JSONResponse` subclass, so that FastAPI documents
    each route's response model rather than a string.)"""

    def render(self, content: Any) -> bytes:
        try:
            return orjson.dumps(content)
        except TypeError:  # a lone surrogate somewhere: escaped, never a failed answer
            return json.dumps(content, default=str).encode()


NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
