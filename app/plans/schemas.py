from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, model_validator
from pydantic_core import PydanticCustomError

from app.api.types import Input
from app.plans.expiry import Period, Unit

# Keys that would scope a period below the plan; refused with a clear word (the period is
# per plan: docs/design.md).
_NARROWER_SCOPES = {"role", "roles", "user", "user_id", "users", "token", "token_id", "tokens",
                    "domain", "domains", "kind", "scope"}


class PeriodIn(Input):
    model_config = ConfigDict(extra="forbid", json_schema_extra={
        "examples": [{"value": 90, "unit": "days"}, {"value": 1, "unit": "years"}]})

    value: StrictInt
    unit: Unit

    @model_validator(mode="before")
    @classmethod
    def _per_plan_only(cls, data: Any) -> Any:
        if isinstance(data, dict) and _NARROWER_SCOPES & set(data):
            raise PydanticCustomError(
                "per_plan_only",
                "the expiration period is set per plan; it cannot be limited to a role, "
                "user, token or domain",
            )
        return data

    @model_validator(mode="after")
    def _in_range(self) -> PeriodIn:
        try:
            Period(self.value, self.unit)
        except ValueError as exc:
            raise PydanticCustomError("invalid_period", str(exc)) from None
        return self

    def period(self) -> Period:
        return Period(self.value, self.unit)


class PolicyOut(BaseModel):
    plan_id: uuid.UUID
    period: PeriodOut | None
    description: str
    updated_at: datetime | None
    expired_through: datetime | None = Field(
        description="tokens generated at or before this instant expired under an earlier "
                    "period and stay expired whatever the period is now (expiry is final)")


class PeriodOut(BaseModel):
    value: int
    unit: Unit


class DyingTokenOut(BaseModel):
    id: uuid.UUID
    kind: str
    name: str | None
    hint: str
    user_id: uuid.UUID | None
    user_email: str | None
    created_at: datetime = Field(description="original generation time")
    dies_at: datetime = Field(description="when the proposed period would expire it for good "
                                          "(now, if it has already run out)")


class PreviewOut(BaseModel):
    plan_id: uuid.UUID
    period: PeriodOut
    evaluated_at: datetime
    expire_immediately: int
    expire_within_7_days: int
    expire_later: int
    never_expire: int
    dying: list[DyingTokenOut] = Field(
        description="the tokens the proposed period would expire now or within 7 days, the "
                    "soonest first (at most 100)")
    dying_truncated: bool = Field(description="more tokens would die than are listed")
    final: str = Field(description="what expiring means: for good")


PolicyOut.model_rebuild()


class DPoPPolicy(Input):
    model_config = ConfigDict(extra="forbid", json_schema_extra={
        "examples": [{"required_for_custom_integrations": True}]})

    required_for_custom_integrations: StrictBool
