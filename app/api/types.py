"""Request field types shared by the API's schemas."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator, AwareDatetime


def _in_utc(value: datetime) -> datetime:
    """An instant a UTC column can hold: `0001-01-01T00:00:00+01:00` is a valid ISO 8601 time
    whose UTC value lies before year 1, and would fail the statement that stores it."""
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("the instant is out of range once in UTC (years 1 to 9999)") from None


# An aware instant, in UTC, that every backend stores.
Instant = Annotated[AwareDatetime, AfterValidator(_in_utc)]
