"""A JSON response rendered with orjson: the hot paths (introspection, gateway check) use it."""

from __future__ import annotations

import functools
import json
import uuid
from datetime import date, datetime
from enum import Enum
from types import UnionType
from typing import Any, Literal, Union, get_args, get_origin

import annotated_types
import orjson
from pydantic import BaseModel, Field, Strict
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
    its `response_model`, for the OpenAPI document; the tests check answers against it.
    Models of plain fields are rendered by orjson, three to four times faster for a list of
    rows, to the same bytes (`_is_plain`; tests/api/test_responses.py)."""

    media_type = "application/json"

    def __init__(self, model: BaseModel | list[BaseModel], status_code: int = 200,
                 headers: dict[str, str] | None = None) -> None:
        try:
            body = _rendered(model)
        except ValueError:  # text no encoder takes (a lone surrogate): escaped, never a 500
            body = json.dumps(_dumped(model)).encode()
        super().__init__(body, status_code=status_code, headers=headers)


    @classmethod
    def fields(cls, model: type[BaseModel], values: dict[str, Any], status_code: int = 200,
               headers: dict[str, str] | None = None) -> Rendered:
        """`model`'s answer from `values` already of the types its fields declare (a page of
        rows: no model made per row), rendered as the model would be; when orjson cannot
        render them so (a model that is not plain, text it refuses), the model is made after
        all and rendered as `Rendered` renders it."""
        if _is_plain(model):
            try:
                body = _by_orjson(values)
            except TypeError:
                pass
            else:
                return cls.of_body(body, status_code=status_code, headers=headers)
        return cls(model.model_validate(values), status_code=status_code, headers=headers)

    @classmethod
    def of_body(cls, body: bytes, status_code: int = 200,
                headers: dict[str, str] | None = None) -> Rendered:
        """An answer rendered before (`body`: a `Rendered`'s, kept: `cache.read_listing`)."""
        answer = cls.__new__(cls)
        Response.__init__(answer, body, status_code=status_code, headers=headers)
        return answer


def _by_orjson(value: Any) -> bytes:  # noqa: ANN401
    """`value` as pydantic would write it, with plain models as their fields (`_plainly`);
    a TypeError when orjson cannot (a model that is not plain, text it refuses)."""
    return orjson.dumps(value, default=_plainly, option=orjson.OPT_UTC_Z)


def _rendered(model: BaseModel | list[BaseModel]) -> bytes:
    try:
        return _by_orjson(model)
    except TypeError:  # a model orjson cannot render as pydantic would, or text it refuses
        pass
    if isinstance(model, list):
        return b"[" + b",".join(m.__pydantic_serializer__.to_json(m) for m in model) + b"]"
    return model.__pydantic_serializer__.to_json(model)


def _plainly(value: Any) -> Any:  # noqa: ANN401
    """orjson's fallback for what it does not know: a plain model (`_is_plain`) as its fields,
    a UUID of the driver's own class as text; anything else refused, for pydantic to render."""
    if isinstance(value, uuid.UUID):  # first: three per row of a listing of tokens
        return str(value)
    if isinstance(value, BaseModel):
        cls = type(value)
        # Of a class some field declares, or of none such: pydantic renders a field by the
        # class it declares, so a subclass's value there (more fields) stays with pydantic.
        if _is_plain(cls) and _DECLARED.isdisjoint(cls.__mro__[1:]):
            return value.__dict__
    raise TypeError


# Model classes that fields of plain models declare (`_same_json`).
_DECLARED: set[type[BaseModel]] = set()

# What may annotate a field of a plain model besides its type: constraints on input, which
# change nothing of its JSON. (A serializer, or a type with a schema of its own, may.)
_CONSTRAINTS = (annotated_types.BaseMetadata, Strict, type(Field(pattern="x").metadata[0]))

# Settings of a model's own that change how pydantic writes it.
_SERIALIZING = {"json_encoders", "ser_json_timedelta", "ser_json_temporal", "ser_json_bytes",
                "ser_json_inf_nan", "use_enum_values", "serialize_by_alias", "alias_generator",
                "json_schema_serialization_defaults_required", "val_json_bytes"}

# The types whose JSON is the same from orjson (with `OPT_UTC_Z`) as from pydantic's serializer.
# (Not float: the two may spell a number differently.)
_SAME_JSON: frozenset[Any] = frozenset({str, int, bool, type(None), datetime, date, uuid.UUID})


def _same_json(annotation: Any) -> bool:  # noqa: ANN401
    if annotation in _SAME_JSON:
        return True
    if isinstance(annotation, type):
        if issubclass(annotation, BaseModel) and _is_plain(annotation):
            _DECLARED.add(annotation)  # `_plainly` refuses its subclasses' values
            return True
        return issubclass(annotation, Enum) and issubclass(annotation, (str, int))
    origin = get_origin(annotation)
    args = get_args(annotation)
    if origin is Literal:
        return all(isinstance(a, str | int | bool) for a in args)
    if origin in (list, tuple, Union, UnionType) or (origin is dict and args[:1] == (str,)):
        return all(a is Ellipsis or _same_json(a) for a in args)
    return False


@functools.cache
def _is_plain(cls: type[BaseModel]) -> bool:
    """Whether the model's fields (`__dict__`) rendered by orjson are exactly its JSON from
    pydantic: every field of a type both render alike, under its own name, none left out or
    added, and nothing of the model's own serializing (a root model, a computed field, a
    serializer of a field or of the model, a setting of its JSON, extra fields, a cached
    property). Anything else is rendered by pydantic."""
    decorators = cls.__pydantic_decorators__
    return (not getattr(cls, "__pydantic_root_model__", False)
            and not cls.model_computed_fields and not decorators.field_serializers
            and not decorators.model_serializers
            and not (_SERIALIZING & cls.model_config.keys())
            and cls.model_config.get("extra") != "allow"
            # what `functools.cached_property` keeps goes into `__dict__` beside the fields
            and not any(isinstance(v, functools.cached_property)
                        for klass in cls.__mro__ for v in vars(klass).values())
            and all(field.serialization_alias in (None, name) and field.alias in (None, name)
                    and not field.exclude and field.exclude_if is None
                    and all(isinstance(m, _CONSTRAINTS) for m in field.metadata)
                    and _same_json(field.annotation)
                    for name, field in cls.model_fields.items()))


def _dumped(model: BaseModel | list[BaseModel]) -> Any:  # noqa: ANN401
    if isinstance(model, list):
        return [m.model_dump(mode="json", fallback=str) for m in model]
    return model.model_dump(mode="json", fallback=str)
