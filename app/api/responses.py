"""A JSON response rendered with orjson: the hot paths (introspection, gateway check) use it."""

from __future__ import annotations

import json
from typing import Any

import orjson
from pydantic import BaseModel
from starlette.responses import JSONResponse, Response


class JSON(JSONResponse):
    """`JSONResponse` rendered by orjson. (A `JSONResponse` subclass, so that FastAPI documents
    each route's response model rather than a string.)"""

    def render(self, content: Any) -> bytes:
        return render(content)


def render(content: Any) -> bytes:  # noqa: ANN401
    """JSON by orjson; a lone surrogate somewhere is escaped, never a failed answer."""
    try:
        return orjson.dumps(content)
    except TypeError:
        return json.dumps(content, default=str).encode()


NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


class Rendered(Response):
    """An answer built from a response model the handler made itself from stored values:
    rendered once, by pydantic's own serializer. Returned as the model, FastAPI would validate
    it again field by field and render it a second time, which for a page of a hundred tokens
    cost more than everything else the request did (bench/NOTES.md). The route still declares
    its `response_model`, for the OpenAPI document; the tests check answers against it."""

    media_type = "application/json"

    def __init__(self, model: BaseModel | list[BaseModel], status_code: int = 200,
                 headers: dict[str, str] | None = None) -> None:
        try:
            body = _rendered(model)
        except ValueError:  # text no encoder takes (a lone surrogate): escaped, never a 500
            body = json.dumps(_dumped(model)).encode()
        super().__init__(body, status_code=status_code, headers=headers)


def _rendered(model: BaseModel | list[BaseModel]) -> bytes:
    if isinstance(model, list):
        return b"[" + b",".join(m.__pydantic_serializer__.to_json(m) for m in model) + b"]"
    return model.__pydantic_serializer__.to_json(model)


def _dumped(model: BaseModel | list[BaseModel]) -> Any:  # noqa: ANN401
    if isinstance(model, list):
        return [m.model_dump(mode="json", fallback=str) for m in model]
    return model.model_dump(mode="json", fallback=str)
