"""`Rendered` answers a plain model with orjson and anything else with pydantic: the bytes are
the same either way."""

from __future__ import annotations

import functools
import sys
import uuid
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

import pytest
from asyncpg.pgproto.pgproto import UUID as DriverUUID
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    RootModel,
    computed_field,
    field_serializer,
)

from app.api.responses import Rendered, _is_plain
from app.main import create_app


class Colour(StrEnum):
    red = "red"
    blue = "blue"


class Inner(BaseModel):
    at: datetime | None
    tags: list[str]


class Plain(BaseModel):
    id: uuid.UUID
    other: uuid.UUID | None
    text: str
    count: int
    flag: bool
    at: datetime
    day: date
    colour: Colour
    kind: Literal["a", "b"]
    inner: Inner
    inners: list[Inner]
    pair: tuple[int, str]
    labels: dict[str, str]
    nothing: None = None


def _plain(at: datetime, *, text: str = "héllo \"quoted\" \\ </script>",
           driver_uuid: bool = False) -> Plain:
    ident = uuid.UUID("12345678-1234-5678-1234-567812345678")
    return Plain(id=DriverUUID(str(ident)) if driver_uuid else ident, other=None, text=text,
                 count=-(2 ** 62), flag=True, at=at, day=date(2026, 2, 28), colour=Colour.blue,
                 kind="b", inner=Inner(at=None, tags=[]), inners=[Inner(at=at, tags=["x", "y"])],
                 pair=(1, "one"), labels={"k": "v"})


def _by_pydantic(model: BaseModel | list[BaseModel]) -> bytes:
    if isinstance(model, list):
        return b"[" + b",".join(m.__pydantic_serializer__.to_json(m) for m in model) + b"]"
    return model.__pydantic_serializer__.to_json(model)


_INSTANTS = [
    datetime(2026, 1, 15, 12, 0, tzinfo=UTC),
    datetime(2026, 1, 15, 12, 0, 0, 1, tzinfo=UTC),
    datetime(2026, 1, 15, 12, 0, 0, 999_999, tzinfo=timezone(timedelta(0))),
    datetime(2026, 1, 15, 12, 0, 0, 500_000, tzinfo=ZoneInfo("UTC")),
    datetime(2026, 7, 1, 0, 0, tzinfo=ZoneInfo("Europe/Berlin")),
    datetime(2026, 1, 15, 12, 0, tzinfo=timezone(timedelta(hours=-5, minutes=-30))),
    datetime(1, 1, 1, tzinfo=UTC),
    datetime(9999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC),
    datetime(2026, 1, 15, 12, 0),  # naive
]


def test_a_plain_model_renders_to_the_bytes_pydantic_gives() -> None:
    assert _is_plain(Plain)
    for at in _INSTANTS:
        for driver_uuid in (False, True):
            model = _plain(at, driver_uuid=driver_uuid)
            assert Rendered(model).body == _by_pydantic(model), at
            assert Rendered([model, model]).body == _by_pydantic([model, model]), at
    assert Rendered([]).body == b"[]"


def test_text_orjson_refuses_is_rendered_by_pydantic_or_escaped() -> None:
    model = _plain(_INSTANTS[0], text="lone \ud800 surrogate")
    body = Rendered(model).body
    assert b"surrogate" in body and b"\\ud800" in body


class Aliased(BaseModel):
    value: str = Field(serialization_alias="Value")


class Computed(BaseModel):
    value: str

    @computed_field
    def twice(self) -> str:
        return self.value * 2


class Serialized(BaseModel):
    value: str

    @field_serializer("value")
    def _upper(self, value: str) -> str:
        return value.upper()


class Hidden(BaseModel):
    value: str
    secret: str = Field(exclude=True)


class Numbers(BaseModel):
    ratio: float
    amount: Decimal
    span: timedelta


class Anything(BaseModel):
    detail: dict[str, Any]


class Base(BaseModel):
    value: str


class Derived(Base):
    secret: str


class HoldsBase(BaseModel):
    item: Base


class Rooted(RootModel[list[str]]):
    pass


class Masked(BaseModel):
    secret: Annotated[str, PlainSerializer(lambda v: "***")]


class Conditional(BaseModel):
    value: str
    secret: str = Field(exclude_if=lambda v: True)


class Remembering(BaseModel):
    value: str

    @functools.cached_property
    def shout(self) -> str:
        return self.value.upper()


class Encoded(BaseModel):
    model_config = ConfigDict(ser_json_temporal="seconds")
    at: datetime


class Declared(BaseModel):
    value: str


class HoldsDeclared(BaseModel):
    item: Declared


def test_models_pydantic_writes_its_own_way_stay_with_pydantic() -> None:
    remembering = Remembering(value="v")
    assert remembering.shout == "V"  # now in its __dict__
    cases = [Rooted(["a"]), Masked(secret="s3cret"), Conditional(value="v", secret="s3cret"),
             remembering, Encoded(at=_INSTANTS[0])]
    for model in cases:
        assert not _is_plain(type(model)), type(model)
        assert Rendered(model).body == _by_pydantic(model), type(model)
        assert b"s3cret" not in Rendered(model).body
    # A subclass made after its parent was first rendered as a field's declared class.
    assert _is_plain(HoldsDeclared)
    assert Rendered(HoldsDeclared(item=Declared(value="v"))).body == b'{"item":{"value":"v"}}'

    class Later(Declared):
        secret: str

    holder = HoldsDeclared(item=Later(value="v", secret="s3cret"))
    assert Rendered(holder).body == _by_pydantic(holder)
    assert b"s3cret" not in Rendered(holder).body


def test_models_orjson_would_render_otherwise_stay_with_pydantic() -> None:
    derived = Derived(value="v", secret="do not show")
    cases = [Aliased(value="v"), Computed(value="v"), Serialized(value="v"),
             Hidden(value="v", secret="s"), Numbers(ratio=1e16, amount=Decimal("1.10"),
                                                    span=timedelta(seconds=90)),
             Anything(detail={"x": Decimal("2")})]
    for model in cases:
        assert not _is_plain(type(model)), type(model)
        assert Rendered(model).body == _by_pydantic(model), type(model)
    # A field declared as a class with subclasses renders the declared fields only.
    holder = HoldsBase(item=derived)
    assert Rendered(holder).body == _by_pydantic(holder)
    assert b"do not show" not in Rendered(holder).body


def test_the_application_s_plain_response_models_render_alike() -> None:
    """Every model of the application's that is plain, with every field filled from its type:
    the same bytes both ways."""
    create_app()  # every module of the application imported
    models = [cls for name, module in sys.modules.items() if name.startswith("app.")
              for cls in vars(module).values()
              if isinstance(cls, type) and issubclass(cls, BaseModel)
              and cls.__module__ == name and _is_plain(cls)]
    assert {"TokenList", "TokenOut", "IssuedTokenOut", "UserOut",
            "InstallationOut"} <= {m.__name__ for m in models}
    for cls in models:
        for at in _INSTANTS[:6]:
            model = _filled(cls, at)
            assert Rendered(model).body == _by_pydantic(model), cls


def _filled(cls: type[BaseModel], at: datetime) -> BaseModel:
    return cls.model_construct(**{name: _value(field.annotation, at)
                                  for name, field in cls.model_fields.items()})


def _value(annotation: Any, at: datetime) -> Any:  # noqa: ANN401, PLR0911
    from typing import get_args, get_origin
    if annotation is str:
        return "text é"
    if annotation is bool:
        return False
    if annotation is int:
        return 7
    if annotation is datetime:
        return at
    if annotation is date:
        return at.date()
    if annotation is uuid.UUID:
        return DriverUUID("12345678-1234-5678-1234-567812345678")
    if annotation is type(None):
        return None
    if isinstance(annotation, type) and issubclass(annotation, StrEnum):
        return next(iter(annotation))
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return _filled(annotation, at)
    args = [a for a in get_args(annotation) if a is not type(None)] or [type(None)]
    origin = get_origin(annotation)
    if origin is Literal:
        return args[0]
    if origin is list:
        return [_value(args[0], at), _value(args[0], at)]
    if origin is dict:
        return {"key": _value(args[1], at)}
    if origin is tuple:
        return [_value(a, at) for a in args if a is not Ellipsis]
    return _value(args[0], at)  # a union: its first type that is not None


def test_fields_render_as_their_model_or_through_it() -> None:
    at = _INSTANTS[1]
    inner = {"at": at, "tags": ["x"]}
    values = {"id": DriverUUID("12345678-1234-5678-1234-567812345678"), "other": None,
              "text": "t", "count": 3, "flag": False, "at": at, "day": at.date(),
              "colour": Colour.red, "kind": "a", "inner": inner, "inners": [inner],
              "pair": (1, "x"), "labels": {}, "nothing": None}
    expected = _by_pydantic(Plain.model_validate(values))
    assert Rendered.fields(Plain, values).body == expected
    # Text orjson refuses: the model is made after all, and answers as `Rendered` does.
    odd = {**values, "text": "lone \ud800"}
    assert Rendered.fields(Plain, odd).body == Rendered(Plain.model_validate(odd)).body
    # A model that is not plain is always made.
    assert Rendered.fields(Aliased, {"value": "v"}).body == Rendered(Aliased(value="v")).body
    assert Rendered.fields(Plain, values, status_code=201).status_code == 201


@pytest.mark.asyncio
async def test_token_pages_render_as_pages_of_models(client, plan, monkeypatch) -> None:
    """The API's token listings, rows as values (`fields_of`), give the bytes the same page
    made of `TokenOut` models gives: tokens active, revoked, expired under a period since
    removed (their death read from the plan's history), and an integration's."""
    from app.tokens.schemas import TokenList
    from tests.helpers import create_gateway_client, set_period

    member = await plan.add_user()
    await create_gateway_client(client, plan)
    for name in ("kept", "revoked", "named \"é\" <b>"):
        r = await client.post("/v1/me/tokens", json={"name": name}, headers=member.auth)
        assert r.status_code == 201, r.text
        if name == "revoked":
            r = await client.delete(f"/v1/me/tokens/{r.json()['id']}", headers=member.auth)
            assert r.status_code == 204, r.text
    plan.clock.advance(days=3)
    r = await set_period(client, plan, 1, "days")  # every token so far dies
    assert r.status_code == 200, r.text
    r = await client.delete(f"/v1/plans/{plan.plan_id}/token-expiration",
                            headers=await _fresh(client, plan))
    assert r.status_code == 204, r.text
    admin = await _fresh(client, plan)
    pages = [f"/v1/plans/{plan.plan_id}/tokens", f"/v1/plans/{plan.plan_id}/tokens?limit=2",
             f"/v1/plans/{plan.plan_id}/tokens?kind=integration"]
    fast = [(await client.get(p, headers=admin)).content for p in pages]
    statuses = {item.status for item in TokenList.model_validate_json(fast[0]).items}
    assert {"active", "expired", "revoked"} <= statuses

    def through_models(cls, model, values, **kw):  # noqa: ANN001, ANN003, ANN202
        return cls(model.model_validate(values), **kw)

    monkeypatch.setattr(Rendered, "fields", classmethod(through_models))
    assert [(await client.get(p, headers=admin)).content for p in pages] == fast


async def _fresh(client, plan) -> dict[str, str]:  # noqa: ANN001
    """A new token of the admin's, had with the password (the old one died with the rest)."""
    return {"Authorization": f"Bearer {await plan.admin.renew(client)}"}
