"""Request field types shared by the API's schemas."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator, AwareDatetime, BaseModel, model_validator


def _in_utc(value: datetime) -> datetime:
    """An instant a UTC column can hold: `0001-01-01T00:00:00+01:00` is a valid ISO 8601 time
    whose UTC value lies before year 1, and would fail the statement that stores it."""
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("the instant is out of range once in UTC (years 1 to 9999)") from None


# An aware instant, in UTC, that every backend stores.
Instant = Annotated[AwareDatetime, AfterValidator(_in_utc)]


def _encodable(value: object) -> bool:
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return False
        return True
    if isinstance(value, dict):
        return all(_encodable(k) and _encodable(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return all(_encodable(v) for v in value)
    return True


class Input(BaseModel):
    """A request body. JSON may carry lone surrogates (`"\\ud800"`), which no store, no encoder
    and no answer can hold: refused as a whole (422), before any field is looked at."""

    @model_validator(mode="before")
    @classmethod
    def _unicode(cls, data: object) -> object:
        if not _encodable(data):
            raise ValueError("the text is not valid Unicode (a lone surrogate)")
        return data
